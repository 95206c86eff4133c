// The console's own script: the upload progress bar (htmx reports the bytes sent) and the card
// desk's clean-up. Everything else is plain forms and htmx attributes.
(function () {
  "use strict";
  document.addEventListener("htmx:xhr:progress", function (event) {
    var form = event.target.closest ? event.target.closest("#upload-form") : null;
    if (!form || !event.detail.lengthComputable) return;
    var label = document.getElementById("upload-progress-label");
    var bar = document.getElementById("upload-progress");
    label.hidden = false;
    bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.target.id === "upload-form") {
      document.getElementById("upload-progress").value = 0;
      document.getElementById("upload-progress-label").hidden = false;
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.target.id === "upload-form") {
      document.getElementById("upload-progress").value = 100;
    }
  });
  // After an exchange the card has done its job: do not leave its number and PIN on the screen.
  document.addEventListener("htmx:afterSwap", function () {
    if (document.getElementById("exchange-result") || document.getElementById("desk-already")) {
      ["card-number", "card-pin"].forEach(function (id) {
        var field = document.getElementById(id);
        if (field) field.value = "";
      });
    }
  });
  // Refusals come back as 4xx pages or fragments: show them where the answer goes, like a success.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status >= 400 && status < 500 && status !== 401) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
})();
