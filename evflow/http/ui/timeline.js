// A run's timeline: one row per task (a mapped task is one row), bars of waiting and running on
// one time axis, retries as separate bars. Drawn as SVG from GET /api/runs/<id>/timeline.

import { s, h, fmtDuration, label, ellipsize } from "./core.js";

const ROW_H = 26;
const BAR_H = 14;
const AXIS_H = 22;

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * pow) return m * pow;
  return 10 * pow;
}

/**
 * The timeline of ``data`` at ``now`` (unix seconds), ``width`` pixels wide.
 * ``selected`` is the highlighted task; ``onSelect(name)`` is called when a row is clicked.
 */
export function timelineEl(data, { now, width, selected, onSelect }) {
  const rows = data.rows ?? [];
  const LABEL_W = width < 600 ? 110 : 170;
  const starts = rows.flatMap((r) => r.bars.map((b) => b.start));
  const t0 = Math.min(data.started_at ?? Infinity, data.created_at ?? Infinity, ...starts);
  const ends = rows.flatMap((r) => r.bars.map((b) => b.end ?? now));
  const t1 = Math.max(data.ended_at ?? 0, ...ends, t0 + 0.001);
  const span = t1 - t0;
  const plotW = Math.max(100, width - LABEL_W - 16);
  const x = (t) => LABEL_W + ((t - t0) / span) * plotW;
  const height = AXIS_H + rows.length * ROW_H + 6;
  const svg = s("svg", { class: "timeline", testid: "timeline", viewBox: `0 0 ${width} ${height}`, width, height,
    role: "img", "aria-label": "Timeline of the run's tasks" });
  svg.append(s("defs", {}, s("pattern", { id: "tl-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
    patternTransform: "rotate(45)" }, s("rect", { class: "tl-hatch-bg", width: 6, height: 6 }),
  s("line", { class: "tl-hatch-line", x1: 0, y1: 0, x2: 0, y2: 6 }))));
  const step = niceStep(span, Math.max(2, Math.floor(plotW / 110)));
  for (let k = 0; k * step <= span + 1e-9; k++) {
    const xx = x(t0 + k * step);
    svg.append(s("line", { class: "axis-line", x1: xx, x2: xx, y1: AXIS_H - 4, y2: height }),
      s("text", { class: "axis-label", x: xx + 3, y: AXIS_H - 8 }, k === 0 ? "0" : `+${fmtDuration(k * step)}`));
  }
  rows.forEach((r, i) => {
    const y = AXIS_H + i * ROW_H;
    const total = r.mapped ? ` ×${r.count.toLocaleString("en")}` : "";
    const g = s("g", { class: ["tl-row", selected === r.task ? "selected" : null], testid: `timeline-row-${r.task}`,
      "data-state": r.state, tabindex: 0, role: "button", "aria-label": `${r.task}: ${label(r.state)}`,
      onclick: () => onSelect?.(r.task),
      onkeydown: (e) => { if (e.key === "Enter") onSelect?.(r.task); } },
    s("rect", { class: "tl-bg", x: 0, y, width, height: ROW_H }),
    s("text", { class: "tl-label", x: 6, y: y + ROW_H / 2 + 4 }, ellipsize(r.task, LABEL_W < 170 ? (total ? 9 : 14) : (total ? 16 : 22)),
      total ? s("tspan", { class: "tl-sub" }, total) : null));
    for (const b of r.bars) {
      const bx = x(b.start);
      const bw = Math.max(2, x(b.end ?? now) - bx);
      const dur = (b.end ?? now) - b.start;
      const what = b.kind === "waiting"
        ? `waited ${fmtDuration(dur)}${b.reason ? `: ${b.reason}` : ""}`
        : `${r.mapped ? "ran" : `try ${b.attempt}`} ${label(b.state)} · ${fmtDuration(dur)}${b.end === null ? " so far" : ""}`;
      g.append(s("rect", { class: ["tl-bar", `kind-${b.kind}`, b.kind === "running" ? `state-${b.state}` : null, b.end === null ? "open" : null],
        x: bx, y: y + (ROW_H - BAR_H) / 2, width: bw, height: BAR_H, rx: 3,
        testid: `timeline-bar-${r.task}-${b.kind}${b.attempt ? `-${b.attempt}` : ""}`,
        "data-state": b.state, "data-reason": b.reason ?? "", "data-open": b.end === null ? "true" : "false" },
      s("title", {}, `${r.task}: ${what}`)));
    }
    svg.append(g);
  });
  if (!data.ended_at) {
    svg.append(s("line", { class: "tl-now", x1: x(now), x2: x(now), y1: AXIS_H - 4, y2: height }));
  }
  const waits = rows.flatMap((r) => r.bars.filter((b) => b.kind === "waiting" && b.reason && b.reason !== "retry delay")
    .map((b) => ({ task: r.task, b })));
  const notes = waits.length
    ? h("ul", { class: "tl-waits", testid: "timeline-waits" }, waits.map(({ task, b }) =>
      h("li", {}, `${task} waited ${fmtDuration((b.end ?? now) - b.start)}${b.end === null ? " so far" : ""}: ${b.reason}`)))
    : null;
  return h("div", {}, svg, notes);
}
