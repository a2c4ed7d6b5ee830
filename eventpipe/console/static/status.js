// eventpipe console: live numbers on the overview and on a pipeline page.  The
// pages are complete without this file (reload them for new numbers); with it they
// poll the status every 3 s and the history every 10 s and update in place.  The
// charts are drawn as the server draws them (console/render.py, spark).
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) return;
  var W = 120, H = 24;
  var statusUrl = root.getAttribute("data-status-url");
  var historyUrl = root.getAttribute("data-history-url");
  var stopped = false;

  function rate(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }

  function when(iso) {
    return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
  }

  function spark(values) {
    if (!values || !values.length) return "";
    if (values.length === 1) values = [values[0], values[0]];
    var top = Math.max.apply(null, values) || 1;
    var step = W / (values.length - 1);
    return values.map(function (v, i) {
      return (i * step).toFixed(1) + "," + (H - 1 - (v / top) * (H - 2)).toFixed(1);
    }).join(" ");
  }

  // The element of component `check` (of worker `worker`, under --workers).
  function group(check, worker) {
    var all = root.querySelectorAll("[data-check]");
    var w = worker === undefined || worker === null ? null : String(worker);
    for (var i = 0; i < all.length; i++) {
      if (all[i].getAttribute("data-check") === check &&
          all[i].getAttribute("data-worker") === w) return all[i];
    }
    return null;
  }

  // The element of `scope` marked data-field=name that belongs to `child` (a sink's
  // row), or to the component itself when `child` is null.
  function field(scope, name, child) {
    var all = scope.querySelectorAll('[data-field="' + name + '"]');
    for (var i = 0; i < all.length; i++) {
      if (all[i].closest("[data-child]") === child) return all[i];
    }
    return null;
  }

  function set(scope, name, child, text) {
    var el = field(scope, name, child);
    text = String(text);
    if (el && el.textContent !== text) el.textContent = text;
    return el;
  }

  function stages(dead) {
    return Object.keys(dead).sort().filter(function (k) { return dead[k] > 0; })
      .map(function (k) { return k + " " + dead[k]; }).join(", ");
  }

  function apply(scope, c, child) {
    var state = set(scope, "state", child, c.state);
    if (state) state.className = "state state-" + c.state;
    var health = field(scope, "health", child);
    if (health) {
      health.hidden = c.health === "ok";
      health.textContent = c.health === "ok" ? "" : c.health;
    }
    set(scope, "rate_in", child, rate(c.rate_in));
    set(scope, "rate_out", child, rate(c.rate_out));
    set(scope, "total_in", child, c.total_in);
    set(scope, "total_out", child, c.total_out);
    set(scope, "lag_total", child, c.lag_total === undefined ? "" : c.lag_total);
    set(scope, "facts", child, (c.facts || []).join(" \u00b7 "));
    var dead = c.dead_letters || {};
    set(scope, "dead_total", child, Object.keys(dead).reduce(function (n, k) { return n + dead[k]; }, 0));
    set(scope, "dead_by_stage", child, stages(dead));
    var err = set(scope, "last_error", child, c.last_error ? c.last_error.message : "");
    if (err) err.title = c.last_error ? c.last_error.message : "";
    set(scope, "last_error_at", child, c.last_error ? when(c.last_error.at) : "");
    var circuit = set(scope, "circuit", child, (c.details && c.details.circuit) || "-");
    if (circuit && circuit.classList.contains("circuit")) {
      circuit.className = "circuit circuit-" + ((c.details && c.details.circuit) || "none");
    }
  }

  function lagRows(scope, c) {
    var body = scope.querySelector('[data-field-rows="lag"]');
    var keys = Object.keys(c.lag || {}).sort();
    if (!body || !keys.length) return;
    var stalled = (c.details && c.details.stalled) || [];
    body.textContent = "";
    keys.forEach(function (tp) {
      var tr = document.createElement("tr");
      var name = document.createElement("td");
      var code = document.createElement("code");
      code.textContent = tp;
      name.appendChild(code);
      var n = document.createElement("td");
      n.className = "num";
      n.textContent = c.lag[tp];
      var flag = document.createElement("td");
      if (stalled.indexOf(tp) >= 0) {
        var s = document.createElement("span");
        s.className = "state state-stalled";
        s.textContent = "stalled";
        flag.appendChild(s);
      }
      tr.appendChild(name); tr.appendChild(n); tr.appendChild(flag);
      body.appendChild(tr);
    });
  }

  function summary(snap) {
    var p = document.getElementById("summary");
    if (p && snap.components.length) {
      p.className = snap.ok ? "notice" : "note";
      p.textContent = snap.ok ? "All " + snap.components.length + " components work" +
        (snap.workers ? " (" + snap.workers.length + " workers)." : ".")
        : "Needs attention: " + snap.attention.join(", ") + ".";
    }
    var note = document.getElementById("scope-note");
    if (snap.note && !note) {
      note = document.createElement("p");
      note.id = "scope-note";
      note.className = "note";
      var h1 = root.querySelector("h1");
      h1.parentNode.insertBefore(note, h1.nextSibling);
    }
    if (note) {
      note.hidden = !snap.note;
      note.textContent = snap.note || "";
    }
    var at = document.getElementById("as-of");
    if (at) at.textContent = when(snap.at);
    var stale = document.getElementById("live-error");
    if (stale) stale.hidden = true;
  }

  function onStatus(snap) {
    snap.components.forEach(function (c) {
      var scope = group(c.check, c.worker);
      if (!scope) return;
      apply(scope, c, null);
      lagRows(scope, c);
      (c.children || []).forEach(function (s) {
        var rows = scope.querySelectorAll("[data-child]");
        for (var i = 0; i < rows.length; i++) {
          if (rows[i].getAttribute("data-child") === s.name) apply(rows[i], s, rows[i]);
        }
      });
    });
    summary(snap);
  }

  function charts(components, worker) {
    Object.keys(components || {}).forEach(function (check) {
      var scope = group(check, worker);
      if (!scope) return;
      var series = components[check];
      ["rate_in", "rate_out", "lag"].forEach(function (name) {
        var line = scope.querySelector('[data-spark="' + name + '"]');
        if (line) line.setAttribute("points", spark(series[name]));
      });
    });
  }

  // A process's history, or every worker's (`workers`: index -> its history).
  function onHistory(h) {
    if (!h.workers) return charts(h.components, null);
    Object.keys(h.workers).forEach(function (w) { charts(h.workers[w].components, w); });
  }

  function failed(why) {
    var stale = document.getElementById("live-error");
    if (!stale) {
      stale = document.createElement("p");
      stale.id = "live-error";
      stale.className = "error";
      root.insertBefore(stale, root.firstChild);
    }
    stale.hidden = false;
    stale.textContent = why;
  }

  function get(url, then) {
    if (stopped) return;
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) {
          stopped = true;
          failed("Your login ended: log in again to see live numbers.");
          return null;
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (body) { if (body) then(body); })
      .catch(function (err) { failed("Live update failed (" + err.message + "); retrying."); });
  }

  get(statusUrl, onStatus);
  get(historyUrl, onHistory);
  setInterval(function () { get(statusUrl, onStatus); }, 3000);
  setInterval(function () { get(historyUrl, onHistory); }, 10000);
})();
