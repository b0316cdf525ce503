// Charts drawn with uPlot (vendored in vendor/uplot, MIT): one small library, canvas, no build step.
/* global uPlot */

const COLORS = ["#2f5d8a", "#d9822b", "#1f7a4a", "#b3261e", "#7b4fa8", "#5c6675", "#c2a000"];

function sized(el, height) {
  return { width: Math.max(240, el.clientWidth || el.parentElement?.clientWidth || 600), height };
}

// Keep a chart as wide as its box; returns a function that stops following it.
function follow(el, plot, height) {
  const ro = new ResizeObserver(() => plot.setSize(sized(el, height)));
  ro.observe(el);
  return () => { ro.disconnect(); plot.destroy(); };
}

// Bars over time: xs in Unix seconds.
export function timeBars(el, xs, ys, { label = "", height = 180 } = {}) {
  el.replaceChildren();
  const plot = new uPlot({
    ...sized(el, height),
    legend: { show: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.05] } },
    series: [{}, { label, stroke: COLORS[0], fill: "rgba(47,93,138,.35)", paths: uPlot.paths.bars({ size: [0.9, 20] }), points: { show: false } }],
    axes: [{}, { size: 56 }],
  }, [xs, ys], el);
  return follow(el, plot, height);
}

// Lines over an index (versions, epochs): series = [{label, values}], names = x labels (optional).
export function lines(el, xs, series, { height = 200, names = null, xLabel = "", right = [] } = {}) {
  el.replaceChildren();
  const scales = { x: { time: false } };
  if (right.length) scales.r = { auto: true };
  const plot = new uPlot({
    ...sized(el, height),
    scales,
    series: [
      { label: xLabel, value: (u, v) => (v === null ? "–" : names ? names[v - xs[0]] ?? v : v) },
      ...series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 2, scale: right.includes(s.label) ? "r" : "y",
        points: { show: true, size: 6 }, spanGaps: true,
      })),
    ],
    axes: [
      { label: xLabel, values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? v : "")) },
      { size: 56 },
      ...(right.length ? [{ scale: "r", side: 1, size: 56, grid: { show: false } }] : []),
    ],
  }, [xs, ...series.map((s) => s.values)], el);
  return follow(el, plot, height);
}

// Bars by category (models): one panel, values in the order of names.
export function categoryBars(el, names, values, { label = "", height = 200 } = {}) {
  el.replaceChildren();
  const xs = names.map((_, i) => i);
  const plot = new uPlot({
    ...sized(el, height),
    scales: { x: { time: false, range: [-0.6, names.length - 0.4] }, y: { range: (u, min, max) => [0, (max || 1) * 1.1] } },
    series: [
      { label: "model", value: (u, v) => (v === null ? "–" : names[v] ?? "") },
      { label, stroke: COLORS[0], fill: "rgba(47,93,138,.5)", paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } },
    ],
    axes: [
      { splits: () => xs, values: (u, splits) => splits.map((v) => names[v] ?? ""), size: 40 },
      { size: 56 },
    ],
  }, [xs, values], el);
  return follow(el, plot, height);
}
