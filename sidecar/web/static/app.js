// Progressive enhancement only: every page works without this file.
// "Copy" buttons copy the named read-only input (their words come translated from the page: the button's
// own text, and data-copied-text once copied); read-only link fields select themselves on focus.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".select-on-focus").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
  document.querySelectorAll(".copy-button").forEach(function (button) {
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    var label = button.textContent;
    button.addEventListener("click", function () {
      input.focus();
      input.select();
      var done = function () {
        button.textContent = button.getAttribute("data-copied-text") || label;
        setTimeout(function () { button.textContent = label; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {});
      } else if (document.execCommand && document.execCommand("copy")) {
        done();
      }
    });
  });
});

// ---- settings page ----------------------------------------------------------------------------------
// Live preview of the event text (templates/settings/_events_preview.html): while the admin edits the
// "Events in Google" form, its fields are posted to the preview URL (CSRF token included, nothing saved)
// and the made-up appointment's event is redrawn from the JSON answer. Colour choices show a swatch.
// Without this script the form's "Preview" button draws the same preview on the page.
(function () {
  function setSwatch(el, colorId) {
    if (!el) { return; }
    el.className = el.className.replace(/\bswatch-\S+/g, "").trim() + " swatch-" + (colorId || "none");
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select[id]").forEach(function (select) {
      var swatch = document.querySelector('[data-swatch-for="' + select.id + '"]');
      if (!swatch) { return; }
      select.addEventListener("change", function () { setSwatch(swatch, select.value); });
    });

    var box = document.getElementById("event-preview");
    if (!box || !window.fetch || !window.FormData) { return; }
    var form = document.getElementById(box.getAttribute("data-form"));
    var url = box.getAttribute("data-preview-url");
    var status = box.querySelector("[data-preview-status]");
    if (!form || !url) { return; }
    var timer = null;
    var latest = 0;

    function show(data) {
      var preview = data.preview || {};
      ["title", "description", "location", "when", "color_name"].forEach(function (name) {
        var el = box.querySelector('[data-preview="' + name + '"]');
        if (el && typeof preview[name] === "string") { el.textContent = preview[name]; }
      });
      setSwatch(box.querySelector("[data-preview-swatch]"), preview.color_id);
      var problems = Object.keys(data.errors || {}).map(function (key) { return data.errors[key]; });
      if (status) {
        status.textContent = problems.join(" ");
        status.className = problems.length ? "error" : "help";
      }
    }

    function update() {
      var mine = ++latest;
      fetch(url, { method: "POST", body: new FormData(form), credentials: "same-origin",
                   headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.json();
        })
        .then(function (data) { if (mine === latest) { show(data); } })
        .catch(function () {
          if (mine === latest && status) {
            status.textContent = box.getAttribute("data-error-text") || "";
            status.className = "error";
          }
        });
    }

    function soon() {
      clearTimeout(timer);
      timer = setTimeout(update, 350);
    }
    form.addEventListener("input", soon);
    form.addEventListener("change", soon);
  });
})();
