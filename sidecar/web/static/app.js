// Progressive enhancement only: every page works without this file.
// "Copy" buttons copy the named read-only input; read-only link fields select themselves on focus.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".select-on-focus").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });
  document.querySelectorAll(".copy-button").forEach(function (button) {
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    button.addEventListener("click", function () {
      input.focus();
      input.select();
      var done = function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(done, function () {});
      } else if (document.execCommand && document.execCommand("copy")) {
        done();
      }
    });
  });
});
