// The dashboard's own script: confirmations, the copy button, the usage charts.
// No inline script anywhere (the Content-Security-Policy forbids it): pages carry data attributes.
"use strict";

document.addEventListener("submit", (event) => {
  const question = (event.submitter && event.submitter.dataset.confirm) || event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy).textContent;
  navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.fullscreen");
  if (button) document.getElementById(button.dataset.fullscreen).requestFullscreen();
});

// The display's thumbnail, taken again every few seconds while the page is shown.
function refreshScreenshots() {
  document.querySelectorAll("img[data-refresh-seconds]").forEach((image) => {
    const base = image.src.split("?")[0];
    setInterval(() => {
      if (!document.hidden) image.src = base + "?at=" + Date.now();
    }, 1000 * Number(image.dataset.refreshSeconds));
  });
}
document.addEventListener("DOMContentLoaded", refreshScreenshots);

// Small figures (a fraction of a cent) keep their digits on the axes.
const precise = (u, values) => values.map((v) => (v === 0 ? "0" : Number(v.toPrecision(3)).toString()));

function drawChart(element) {
  const data = JSON.parse(document.getElementById(element.dataset.chart).textContent);
  const width = Math.max(280, Math.min(element.clientWidth || 640, 960));
  const series = [
    {},
    { label: "CPU-hours", stroke: "#1f6feb", width: 2 },
    { label: "Memory GB-hours", stroke: "#8250df", width: 2 },
    { label: "GPU-hours", stroke: "#1a7f37", width: 2 },
    { label: "Cost (USD)", stroke: "#bf3989", width: 2, scale: "usd" },
  ];
  const options = {
    width: width,
    height: 240,
    series: series,
    scales: { x: { time: true }, usd: {} },
    axes: [
      {},
      { label: "hours", values: precise },
      { side: 1, scale: "usd", label: "USD", grid: { show: false }, values: precise },
    ],
  };
  const columns = [data.starts, data.cpuHours, data.memoryGBHours, data.gpuHours, data.costUSD];
  element.replaceChildren();
  new uPlot(options, columns, element);
}

// Each workstation's daily cost stacked on the ones before it: a series is the running sum.
function drawStacked(element) {
  const data = JSON.parse(document.getElementById(element.dataset.stacked).textContent);
  const palette = ["#1f6feb", "#8250df", "#1a7f37", "#bf3989", "#9a6700", "#0969da", "#cf222e"];
  const running = data.days.map(() => 0);
  const columns = [data.days];
  const series = [{}];
  data.workstations.forEach((ws, index) => {
    ws.costUSD.forEach((cost, day) => { running[day] += cost; });
    columns.push(running.slice());
    const colour = palette[index % palette.length];
    series.push({ label: ws.name, stroke: colour, fill: colour + "33", width: 1 });
  });
  const width = Math.max(280, Math.min(element.clientWidth || 640, 960));
  element.replaceChildren();
  new uPlot({ width: width, height: 260, series: series, scales: { x: { time: true } }, axes: [{}, { label: "USD", values: precise }] },
    columns, element);
}

function drawCharts() {
  if (typeof uPlot === "undefined") return;
  document.querySelectorAll("[data-chart]").forEach(drawChart);
  document.querySelectorAll("[data-stacked]").forEach(drawStacked);
}

document.addEventListener("DOMContentLoaded", drawCharts);
window.addEventListener("resize", drawCharts);

// Uploads stream the file as the request's body, with its progress shown; the page reloads to list it.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.dataset.upload) return;
  event.preventDefault();
  const file = form.querySelector("input[type=file]").files[0];
  const status = form.querySelector("[role=status]");
  const progress = form.querySelector("progress");
  if (!file) { status.textContent = "Choose a file first."; return; }
  const path = form.querySelector("input[name=path]").value.trim() || file.name;
  const request = new XMLHttpRequest();
  request.open("PUT", form.dataset.upload + path.split("/").map(encodeURIComponent).join("/"));
  request.setRequestHeader("X-CSRF-Token", document.body.dataset.csrf);
  request.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
  });
  request.addEventListener("load", () => {
    if (request.status === 200 || request.status === 201) {
      progress.value = 100;
      status.textContent = "Uploaded " + path + ".";
      window.location.reload();
    } else {
      let message = "The upload failed (" + request.status + ").";
      try { message = JSON.parse(request.responseText).message || message; } catch (_) { /* not JSON */ }
      status.textContent = message;
    }
  });
  request.addEventListener("error", () => { status.textContent = "The upload failed: the connection broke."; });
  status.textContent = "Uploading…";
  request.send(file);
});
