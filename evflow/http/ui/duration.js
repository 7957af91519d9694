// The flow page's duration chart: one bar per recent run (oldest on the left), coloured by the
// run's state, drawn by uPlot (vendored). Each bar has a link laid over it, so clicking a bar,
// or tabbing to it, opens that run.

import uPlot from "./vendor/uplot.esm.min.js";
import { RUN_FINISHED, h, fmtDuration, label, shortId } from "./core.js";

const HEIGHT = 170;
const BAR_MAX = 18;
// The run states with a colour of their own (a CSS variable or a colour); others are grey.
const COLOURS = [
  ["succeeded", "#2da44e"], ["failed", "--bad"], ["running", "--run"], ["cancelled", "#afb8c1"], ["other", "--idle-bd"],
];

function colour(value) {
  return value.startsWith("--") ? getComputedStyle(document.documentElement).getPropertyValue(value).trim() : value;
}

/** How long ``r`` took, or has taken so far at ``now`` (unix seconds). */
function duration(r, now) {
  return r.duration_s ?? (r.started_at ? (r.ended_at ?? now) - r.started_at : 0);
}

/**
 * The chart of ``runs`` (newest first, as the API lists them), ``width`` pixels wide; returns
 * ``{ el, destroy }``.
 */
export function durationChart(runs, width) {
  const ordered = [...runs].reverse();
  const now = Date.now() / 1000;
  const durs = ordered.map((r) => duration(r, now));
  const max = Math.max(0.001, ...durs);
  const own = new Set(COLOURS.map(([st]) => st));
  const xs = ordered.map((_, i) => i);
  const data = [xs, ...COLOURS.map(([st]) => ordered.map((r, i) =>
    (r.state === st || (st === "other" && !own.has(r.state)) ? durs[i] : null)))];
  const barWidth = (u) => Math.min(BAR_MAX, (0.7 * u.bbox.width) / uPlot.pxRatio / Math.max(1, ordered.length));
  const links = ordered.map((r, i) => h("a", {
    href: `#/runs/${encodeURIComponent(r.id)}`, class: "duration-hit", testid: `duration-bar-${r.id}`,
    "data-state": r.state, title: `${shortId(r.id)} · ${label(r.state)} · ${RUN_FINISHED.has(r.state) ? "" : "so far "}${fmtDuration(durs[i])}`,
    "aria-label": `run ${shortId(r.id)}: ${label(r.state)}, ${fmtDuration(durs[i])}`,
  }));
  // Lays each link over its bar, after every draw (so also after a resize).
  const place = (u) => {
    const bw = barWidth(u);
    const base = u.valToPos(0, "y");
    links.forEach((a, i) => {
      const top = Math.min(base - 2, u.valToPos(durs[i], "y"));
      Object.assign(a.style, { left: `${u.valToPos(i, "x") - bw / 2}px`, width: `${bw}px`, top: `${top}px`, height: `${base - top}px` });
      if (!a.isConnected) u.over.append(a);
    });
  };
  const el = h("div", { class: "duration-chart", testid: "duration-chart", role: "group", "aria-label": "Duration of the last runs" });
  const plot = new uPlot({
    width,
    height: HEIGHT,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: false, range: [-0.5, Math.max(0, ordered.length - 0.5)] }, y: { range: [0, max * 1.05] } },
    axes: [
      { show: false },
      { size: 52, stroke: colour("--muted"), grid: { stroke: colour("--border-soft"), width: 1 }, ticks: { show: false },
        values: (_, splits) => splits.map((v) => (v === 0 ? "0" : fmtDuration(v))) },
    ],
    series: [{}, ...COLOURS.map(([st, c]) => ({
      label: label(st), fill: colour(c), stroke: colour(c), width: 0, points: { show: false },
      paths: uPlot.paths.bars({ size: [0.7, BAR_MAX], radius: 0.1 }),
    }))],
    hooks: { draw: [place] },
  }, data, el);
  el.append(h("div", { class: "duration-ends" }, h("span", {}, "older"), h("span", {}, "newer")));
  return { el, destroy: () => plot.destroy() };
}
