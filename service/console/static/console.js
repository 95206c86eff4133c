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
    // After an exchange the card's PIN has done its job: do not leave it on the cashier's screen.
    if (event.target.closest && event.target.closest("#exchange-result, #desk-result form.inline")) {
      var pin = document.getElementById("card-pin");
      if (pin && document.getElementById("exchange-result")) pin.value = "";
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
