// The dashboard's own script: confirmations, the copy button, the usage charts.
// No inline script anywhere (the Content-Security-Policy forbids it): pages carry data attributes.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
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
    axes: [{}, { label: "hours" }, { side: 1, scale: "usd", label: "USD", grid: { show: false } }],
  };
  const columns = [data.starts, data.cpuHours, data.memoryGBHours, data.gpuHours, data.costUSD];
  element.replaceChildren();
  new uPlot(options, columns, element);
}

function drawCharts() {
  if (typeof uPlot === "undefined") return;
  document.querySelectorAll("[data-chart]").forEach(drawChart);
}

document.addEventListener("DOMContentLoaded", drawCharts);
window.addEventListener("resize", drawCharts);
