/*
 * Seat utilization cockpit. Loaded as a file (CSP: script-src 'self'); the page carries no
 * inline script. Chart data comes from {{ value|json_script:"id" }} elements.
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
      console.warn("cockpit.js: could not parse #" + id, error);
      return null;
    }
  }

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  /* Over the term: billable and max users per day, the seats purchased (stepped), and the
     least-squares forecast of billable users (dashed) up to the term end. */
  function renderCockpitChart(canvas) {
    if (canvas.dataset.rendered === "true" || typeof window.Chart === "undefined") {
      return;
    }
    var data = readJson(canvas.dataset.cockpitChart);
    if (!data || !data.labels || !data.labels.length) {
      return;
    }
    var blue = cssVar("--tblr-primary", "#066fd1");
    var orange = cssVar("--tblr-orange", "#f76707");
    var red = cssVar("--tblr-red", "#d63939");
    var grey = cssVar("--tblr-secondary", "#667382");
    var datasets = [
      {
        label: "Billable users",
        data: data.billable,
        borderColor: blue,
        backgroundColor: "rgba(6, 111, 209, 0.10)",
        fill: true,
        borderWidth: 2,
        pointRadius: 0,
        tension: 0.2,
        spanGaps: false
      },
      {
        label: "Max users",
        data: data.max,
        borderColor: orange,
        borderWidth: 1.5,
        pointRadius: 0,
        tension: 0.2,
        spanGaps: false
      },
      {
        label: "Seats purchased (" + data.current_seats + ")",
        data: data.seats,
        borderColor: red,
        borderWidth: 2,
        stepped: true,
        pointRadius: 0,
        fill: false
      }
    ];
    if (data.forecast && data.forecast.some(function (v) { return v !== null; })) {
      datasets.push({
        label: "Forecast (least squares)",
        data: data.forecast,
        borderColor: grey,
        borderDash: [6, 4],
        borderWidth: 1.5,
        pointRadius: data.labels.map(function (label) { return label === data.run_out_on ? 5 : 0; }),
        pointBackgroundColor: red,
        fill: false
      });
    }
    canvas.dataset.rendered = "true";
    new window.Chart(canvas, {
      type: "line",
      data: { labels: data.labels, datasets: datasets },
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
            ticks: { maxTicksLimit: 10, maxRotation: 0, autoSkip: true }
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

  /* The filter form applies a choice at once; typed fields apply on Enter or "Filter". Empty
     fields stay out of the address (except the owner: empty there means "every owner"). */
  function autoSubmit(form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("input[name], select[name]").forEach(function (field) {
        if (field.value === "" && field.name !== "account_owner_id") {
          field.disabled = true;
        }
      });
    });
    window.addEventListener("pageshow", function () {
      form.querySelectorAll("[disabled]").forEach(function (field) { field.disabled = false; });
    });
    form.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () {
        if (typeof form.requestSubmit === "function") {
          form.requestSubmit();
        } else {
          form.submit();
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-cockpit-chart]").forEach(renderCockpitChart);
    document.querySelectorAll("form[data-cockpit-autosubmit]").forEach(autoSubmit);
  });
})();
