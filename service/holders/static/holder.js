// The holders' pages work without this file; it adds the copy button and announces a revealed code.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var status = button.parentNode.querySelector(".copied");
        var done = function () { if (status) { status.textContent = button.getAttribute("data-copied"); } };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(button.getAttribute("data-copy")).then(done, function () {});
        }
      });
    });
    // A live region filled after the page has loaded is read out by screen readers.
    var live = document.querySelector("[data-announce]");
    if (live) {
      window.setTimeout(function () { live.textContent = live.getAttribute("data-announce"); }, 300);
    }
  });
})();
