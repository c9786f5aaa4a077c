// Dashboard, progressive enhancement only: while first syncs or resets run ("Syncing now"), read
// /api/status every few seconds and move their progress bars. Without this file the page shows the
// figures of the moment it was loaded. Words come from the page (data-* attributes), already translated.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("sync-progress");
  if (!box || !window.fetch) { return; }
  var template = box.getAttribute("data-text") || "{done} / {total}";
  var doneText = box.getAttribute("data-done-text") || "Done";
  var every = 5000;
  var timer = null;

  function update(doctors) {
    var running = 0;
    box.querySelectorAll(".progress-item").forEach(function (item) {
      var id = Number(item.getAttribute("data-doctor"));
      var bar = item.querySelector("progress");
      var text = item.querySelector(".progress-text");
      var doctor = doctors.filter(function (d) { return d.id === id; })[0];
      var progress = doctor && doctor.progress;
      if (progress) {
        running += 1;
        bar.max = progress.total;
        bar.value = progress.done;
        text.textContent = template.replace("{done}", progress.done).replace("{total}", progress.total);
      } else if (bar.value < bar.max || !item.classList.contains("is-done")) {
        bar.value = bar.max;
        text.textContent = doneText;
        item.classList.add("is-done");
      }
    });
    return running;
  }

  function poll() {
    fetch(box.getAttribute("data-source"), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (data) {
        if (data && update(data.doctors || []) > 0) { timer = setTimeout(poll, every); }
      })
      .catch(function () { timer = setTimeout(poll, every * 3); });
  }
  timer = setTimeout(poll, every);
});
