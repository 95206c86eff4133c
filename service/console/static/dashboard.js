// The live dashboard: asks /console/dashboard/data every few seconds and redraws the counters, the
// per-minute chart (uPlot, served from the app's own static files) and the bars.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root) return;
  var url = root.dataset.url;
  var every = parseInt(root.dataset.every, 10) || 3000;
  var labels = JSON.parse(root.dataset.labels || "{}");
  var chart = null;
  var chartPrograms = "";
  var palette = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04"];
  var nbsp = "\u00a0";
  var zone = root.dataset.zone || "Asia/Almaty";
  var clock = new Intl.DateTimeFormat(root.dataset.locale || "ru", {
    hour: "2-digit", minute: "2-digit", hour12: false, timeZone: zone,
  });
  function hhmm(ts) {
    return clock.format(new Date(ts * 1000));
  }

  function group(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, nbsp);
  }
  function setText(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value;
  }
  function decimal(v) {
    var text = String(v);
    return root.dataset.locale === "en" ? text : text.replace(".", ",");
  }
  function seconds(v) {
    return v === null || v === undefined ? "—" : decimal(v.toFixed(1));
  }

  function drawChart(data) {
    var el = document.getElementById("per-minute-chart");
    if (!el || !window.uPlot || !data.per_minute) return;
    var programs = Object.keys(data.per_minute.series);
    var rows = [data.per_minute.minutes];
    programs.forEach(function (p) { rows.push(data.per_minute.series[p]); });
    var key = programs.join(",");
    var width = Math.max(240, el.clientWidth);
    if (chart && key === chartPrograms) {
      chart.setData(rows);
      if (Math.abs(chart.width - width) > 4) chart.setSize({ width: width, height: 220 });
      return;
    }
    if (chart) chart.destroy();
    chartPrograms = key;
    var series = [{ label: labels.time, value: function (u, v) { return v === null ? "—" : hhmm(v); } }];
    programs.forEach(function (p, i) {
      series.push({ label: p, stroke: palette[i % palette.length], width: 2, points: { show: false } });
    });
    chart = new window.uPlot(
      {
        width: width,
        height: 220,
        series: series,
        scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(5, max)]; } } },
        axes: [
          { values: function (u, splits) { return splits.map(hhmm); } },
          { size: 40 },
        ],
        legend: { show: true },
      },
      rows,
      el
    );
  }

  function drawBars(id, items, render) {
    var list = document.getElementById(id);
    if (!list) return;
    list.textContent = "";
    items.forEach(function (item) {
      var li = document.createElement("li");
      var parts = render(item);
      var label = document.createElement("span");
      label.className = "label";
      label.textContent = parts.label;
      li.appendChild(label);
      if (parts.percent !== null) {
        var bar = document.createElement("span");
        bar.className = "bar" + (parts.low ? " low" : "") + (parts.idle ? " idle" : "");
        var fill = document.createElement("span");
        fill.style.width = Math.min(100, parts.percent) + "%";
        bar.appendChild(fill);
        li.appendChild(bar);
      }
      var value = document.createElement("span");
      value.className = "value";
      value.textContent = parts.value;
      li.appendChild(value);
      list.appendChild(li);
    });
  }

  function apply(data) {
    setText("updated-at", data.at_text);
    setText("today-total", group(data.today_total));
    Object.keys(data.today).forEach(function (code) {
      var el = document.querySelector('[data-program="' + code + '"]');
      if (el) el.textContent = group(data.today[code]);
    });
    if (data.sms && data.sms.delivered !== undefined) {
      setText("sms-delivered", group(data.sms.delivered));
      setText("sms-failed", group(data.sms.failed));
      setText("sms-pending", group(data.sms.pending));
    }
    if (data.latency) {
      setText("latency-p50", seconds(data.latency.p50));
      setText("latency-p95", seconds(data.latency.p95));
    }
    if (data.outbox && data.outbox.waiting !== undefined) {
      setText("outbox-waiting", group(data.outbox.waiting));
      setText("outbox-oldest", seconds(data.outbox.oldest_seconds));
    }
    drawBars("budget", data.budget || [], function (b) {
      return {
        label: b.program,
        percent: b.budget ? (100 * b.spent) / b.budget : null,
        value: b.budget ? b.spent_text + " " + labels.of + " " + b.budget_text : b.spent_text + " · " + labels.no_budget,
      };
    });
    drawBars("runway", data.runway || [], function (r) {
      var days = r.days === null ? null : r.days;
      return {
        label: r.sku,
        percent: days === null ? 100 : (days / 30) * 100,
        low: days !== null && days < 7,
        idle: days === null,
        value: (r.at_least ? "≥ " : "") + group(r.available) + " · " +
          (days === null ? labels.no_pace : (r.at_least ? "≥ " : "") + labels.days.replace("{days}", decimal(days))),
      };
    });
    drawChart(data);
    root.dataset.loaded = String((parseInt(root.dataset.loaded || "0", 10) || 0) + 1);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.redirected) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (data) { if (data) apply(data); })
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { window.setTimeout(poll, every); });
  }
  window.addEventListener("load", poll);
  window.addEventListener("resize", function () {
    var el = document.getElementById("per-minute-chart");
    if (chart && el) chart.setSize({ width: Math.max(240, el.clientWidth), height: 220 });
  });
})();
