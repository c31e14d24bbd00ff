/*
 * The performance-indicator charts (/indicators/). Loaded as a file (CSP: script-src 'self');
 * each canvas names the {{ value|json_script:"id" }} element it draws with
 * data-indicator-source. One line per indicator: the weekly rate in %, with how many were
 * counted each week (the denominator) as light bars behind it. A week with nothing to count has no point
 * (a gap, not 0 %); the current, partial week is drawn dashed and hollow.
 */
(function () {
  "use strict";

  function readJson(id) {
    var element = document.getElementById(id);
    if (!element) {
      return null;
    }
    try {
      return JSON.parse(element.textContent);
    } catch (error) {
      console.warn("indicators.js: could not parse #" + id, error);
      return null;
    }
  }

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function number(value) {
    return Number(value).toLocaleString("en-US");
  }

  function renderIndicator(canvas) {
    if (canvas.dataset.rendered === "true" || typeof window.Chart === "undefined") {
      return;
    }
    var data = readJson(canvas.dataset.indicatorSource);
    if (!data || !data.labels || !data.labels.length) {
      return;
    }
    var blue = cssVar("--tblr-primary", "#066fd1");
    var grey = "rgba(98, 105, 118, 0.14)";
    var last = data.labels.length - 1;
    var partialLast = Boolean(data.partial[last]);
    canvas.dataset.rendered = "true";
    new window.Chart(canvas, {
      data: {
        labels: data.labels,
        datasets: [
          {
            type: "line",
            label: "Rate",
            data: data.rates,
            yAxisID: "rate",
            borderColor: blue,
            backgroundColor: blue,
            borderWidth: 2.5,
            // Monotone: the curve never overshoots 0 % or 100 % between two weeks.
            cubicInterpolationMode: "monotone",
            spanGaps: false,
            pointRadius: function (ctx) { return data.partial[ctx.dataIndex] ? 4 : 2.5; },
            pointBackgroundColor: function (ctx) {
              return data.partial[ctx.dataIndex] ? "#ffffff" : blue;
            },
            pointBorderWidth: 2,
            segment: {
              borderDash: function (ctx) {
                return partialLast && ctx.p1DataIndex === last ? [6, 4] : undefined;
              }
            },
            order: 1
          },
          {
            type: "bar",
            label: data.unit,
            data: data.denominators,
            yAxisID: "count",
            backgroundColor: grey,
            borderWidth: 0,
            barPercentage: 0.7,
            order: 2
          }
        ]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: function (items) {
                var i = items[0].dataIndex;
                return "Week " + data.weeks[i] + " (from " + data.labels[i] + ")" +
                  (data.partial[i] ? ", partial" : "");
              },
              label: function (item) {
                var i = item.dataIndex;
                if (item.dataset.yAxisID === "count") {
                  return number(data.denominators[i]) + " " + data.unit;
                }
                if (data.rates[i] === null) {
                  return "Rate: no data (nothing to count)";
                }
                return "Rate: " + data.rates[i].toFixed(1) + "% (" + number(data.numerators[i]) +
                  " of " + number(data.denominators[i]) + ")";
              }
            }
          }
        },
        scales: {
          x: {
            grid: { display: false },
            ticks: { maxTicksLimit: 13, maxRotation: 0, autoSkip: true }
          },
          rate: {
            position: "left",
            min: 0,
            max: 100,
            ticks: { stepSize: 25, callback: function (value) { return value + "%"; } },
            grid: { color: "rgba(0, 0, 0, 0.05)" }
          },
          count: {
            position: "right",
            beginAtZero: true,
            grid: { display: false },
            ticks: { precision: 0, color: "rgba(98, 105, 118, 0.7)" },
            title: { display: true, text: data.unit, color: "rgba(98, 105, 118, 0.7)" }
          }
        }
      }
    });
  }

  function init(root) {
    (root || document).querySelectorAll("canvas[data-indicator-source]").forEach(renderIndicator);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.target); });
})();
