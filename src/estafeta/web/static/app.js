// Estafeta dashboard: draws the overview's charts with uPlot from the JSON each page carries.
// Pages work without this file; it only adds the charts (their figures are also in tables).
(function () {
  "use strict";
  var COLOURS = {
    sent: "#1f5fbf", delivered: "#1b7a3a", deferred: "#a35c00", bounced: "#b3261e",
    complained: "#7a1f7a", opened: "#00796b", clicked: "#3949ab", unsubscribed: "#5d4037"
  };
  window.estafetaCharts = {};

  function draw(area) {
    var stream = area.getAttribute("data-chart");
    var source = document.getElementById("chart-" + stream + "-data");
    if (!source || typeof uPlot === "undefined") { return; }
    var chart = JSON.parse(source.textContent);
    var names = chart.names;
    var data = [chart.x].concat(names.map(function (n) { return chart.series[n]; }));
    var opts = {
      width: Math.max(area.clientWidth, 280),
      height: 260,
      series: [{ label: "time (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}" }].concat(names.map(function (n) {
        return { label: n, stroke: COLOURS[n] || "#333", width: 2, points: { show: false } };
      })),
      axes: [{}, { size: 56 }],
      scales: { x: { time: true } },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }
    };
    area.textContent = "";
    var plot = new uPlot(opts, data, area);
    window.estafetaCharts[stream] = { plot: plot, names: names, x: chart.x, series: chart.series };
    if (window.ResizeObserver) {
      new ResizeObserver(function () { plot.setSize({ width: Math.max(area.clientWidth, 280), height: 260 }); }).observe(area);
    }
  }

  function init(root) {
    var areas = (root || document).querySelectorAll("[data-chart]");
    for (var i = 0; i < areas.length; i++) { draw(areas[i]); }
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  // Confirmation for destructive buttons (data-confirm), without inline scripts.
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  }, true);
})();
