// eventpipe console: the live patch preview of a dead letter.  The pages work
// without this file (the Preview button reloads the page); with it, the preview
// follows the typing, and Replay stays off until the patch typed is the one
// previewed, so what is sent is always what was shown.
(function () {
  "use strict";
  var form = document.getElementById("patch-form");
  if (!form) return;
  var area = form.querySelector("textarea[name=patch]");
  var api = form.getAttribute("data-preview-url");
  var errorBox = document.getElementById("preview-error");
  var result = document.getElementById("preview-result");
  var patched = document.getElementById("patched");
  var diff = document.getElementById("diff");
  var sent = document.getElementById("replay-patch");
  var sentShown = document.getElementById("replay-patch-shown");
  var buttons = [document.getElementById("dry-run-button"), document.getElementById("replay-button")];
  var timer = null;
  var seq = 0;

  function ready(on) {
    buttons.forEach(function (b) { if (b) b.disabled = !on; });
  }

  function use(patch) {
    sent.value = patch;
    sentShown.textContent = patch.trim() ? patch : "none: the record as it is";
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    result.hidden = true;
  }

  function showResult(body) {
    errorBox.hidden = true;
    patched.textContent = body.text;
    diff.textContent = "";
    var lines = body.diff.length ? body.diff : ["no change"];
    lines.forEach(function (line) {
      var span = document.createElement("span");
      var c = line.charAt(0);
      span.className = line.indexOf("+++") === 0 || line.indexOf("---") === 0 ? "meta"
        : c === "+" ? "add" : c === "-" ? "del" : c === "@" ? "hunk" : "same";
      span.textContent = line;
      diff.appendChild(span);
    });
    result.hidden = false;
  }

  function run() {
    var patch = area.value;
    var mine = ++seq;
    if (!patch.trim()) {
      errorBox.hidden = true;
      result.hidden = true;
      use("");
      ready(true);
      return;
    }
    ready(false);
    fetch(api + "?patch=" + encodeURIComponent(patch), {
      headers: { Accept: "application/json" },
      credentials: "same-origin"
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (answer) {
      if (mine !== seq) return;  // a newer preview is on its way
      if (answer.ok) {
        showResult(answer.body);
        use(patch);
        ready(true);
      } else {
        showError(answer.body.detail || "the patch cannot be applied");
      }
    }).catch(function (err) {
      if (mine === seq) showError("preview failed: " + err);
    });
  }

  area.addEventListener("input", function () {
    ready(false);
    clearTimeout(timer);
    timer = setTimeout(run, 300);
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearTimeout(timer);
    run();
    var url = new URL(window.location.href);
    url.searchParams.set("patch", area.value);
    url.searchParams.delete("done");
    window.history.replaceState(null, "", url);
  });
})();
