/*
 * Provision staff console behaviour. Loaded as a file (CSP: script-src 'self'); pages carry no
 * inline script. Data for charts comes from {{ value|json_script:"id" }} elements.
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
      console.warn("console.js: could not parse #" + id, error);
      return null;
    }
  }

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  /* Seat usage: billable and max users per day, with the seats purchased as a dashed line. */
  function renderUsageChart(canvas) {
    if (canvas.dataset.rendered === "true" || typeof window.Chart === "undefined") {
      return;
    }
    var data = readJson(canvas.dataset.chartSource);
    if (!data || !data.labels || !data.labels.length) {
      return;
    }
    var blue = cssVar("--tblr-primary", "#066fd1");
    var orange = cssVar("--tblr-orange", "#f76707");
    var red = cssVar("--tblr-red", "#d63939");
    // Seats purchased per day (they change during a term); a single number is drawn flat.
    var seatsLine = Array.isArray(data.seats)
      ? data.seats
      : data.labels.map(function () { return data.seats; });
    var seatsNow = Array.isArray(data.seats) ? data.seats[data.seats.length - 1] : data.seats;
    canvas.dataset.rendered = "true";
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [
          {
            label: "Billable users",
            data: data.billable,
            borderColor: blue,
            backgroundColor: "rgba(6, 111, 209, 0.08)",
            fill: true,
            borderWidth: 2,
            pointRadius: 0,
            tension: 0.25
          },
          {
            label: "Max users",
            data: data.max,
            borderColor: orange,
            borderWidth: 2,
            pointRadius: 0,
            tension: 0.25
          },
          {
            label: "Seats purchased (" + seatsNow + ")",
            data: seatsLine,
            borderColor: red,
            borderDash: [6, 4],
            borderWidth: 1.5,
            pointRadius: 0,
            fill: false
          }
        ]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { position: "bottom", labels: { usePointStyle: true, boxHeight: 6 } },
          tooltip: { mode: "index", intersect: false }
        },
        scales: {
          x: {
            grid: { display: false },
            ticks: { maxTicksLimit: 8, maxRotation: 0, autoSkip: true }
          },
          y: {
            beginAtZero: true,
            ticks: { precision: 0 },
            grid: { color: "rgba(0, 0, 0, 0.05)" }
          }
        }
      }
    });
  }

  function init(root) {
    (root || document).querySelectorAll("canvas[data-chart-source]").forEach(renderUsageChart);
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  // Content swapped in by htmx gets the same treatment.
  document.addEventListener("htmx:load", function (event) { init(event.target); });
})();
