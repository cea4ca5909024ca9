// The reliability page's day-by-day charts (Chart.js). The data comes from a JSON script
// element (json_script), never inline code, so the CSP's script-src 'self' holds.
(function () {
  "use strict";
  // Colour-blind-safe (Okabe-Ito); the cluster's line is the dark one, drawn dashed.
  var COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];
  var CLUSTER = "#1f2937";

  function percent(values) {
    return values.map(function (v) { return v === null ? null : Math.round(v * 1000) / 10; });
  }

  function draw(canvas, trend, metric) {
    var last = trend.series.length - 1;  // the cluster comes last
    var datasets = trend.series.map(function (s, i) {
      var colour = i === last ? CLUSTER : COLOURS[i % COLOURS.length];
      return { label: s.name, data: percent(s[metric]), borderColor: colour, backgroundColor: colour,
               borderDash: i === last ? [6, 4] : [], spanGaps: true, tension: 0.2, pointRadius: 3 };
    });
    return new window.Chart(canvas, {
      type: "line",
      data: { labels: trend.days, datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: { y: { min: 0, max: 100, ticks: { callback: function (v) { return v + "%"; } } } },
        plugins: { legend: { position: "bottom" },
                   tooltip: { callbacks: { label: function (c) {
                     return c.dataset.label + ": " + (c.parsed.y === null ? "nothing ended" : c.parsed.y + "%"); } } } }
      }
    });
  }

  function start() {
    var source = document.getElementById("reliability-trend");
    if (!source || !window.Chart) return;
    var trend = JSON.parse(source.textContent);
    ["goodput", "ettr"].forEach(function (metric) {
      var canvas = document.getElementById(metric + "-trend");
      if (canvas) { canvas.chart = draw(canvas, trend, metric); }
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
