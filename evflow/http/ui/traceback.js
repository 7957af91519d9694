// A Python traceback made readable: the user's own frames first, and the frames of evflow's
// engine, anyio, asyncio and threading folded behind a toggle.

import { h } from "./core.js";

const FRAME = /^([\s|+]*)File "(.+)", line (\d+), in (.+)$/;
// Frames that are machinery rather than the user's code.
const INTERNAL = [
  /[\\/]evflow[\\/](run|engine\.py|flows[\\/]dag\.py|signals\.py|http|store|rules|sensors|service)/,
  /[\\/]anyio[\\/]/, /[\\/]asyncio[\\/]/, /[\\/]threading\.py$/, /[\\/]concurrent[\\/]futures[\\/]/,
  /[\\/]contextlib\.py$/, /[\\/]opentelemetry[\\/]/, /[\\/]sniffio[\\/]/,
];

export function isInternal(path) {
  return INTERNAL.some((re) => re.test(path));
}

/** Parse ``text`` into blocks: ``{frame: {path, line, func, code: [..]}}`` or ``{text}``. */
export function parseTraceback(text) {
  const blocks = [];
  let frame = null;
  for (const raw of String(text).split("\n")) {
    const m = FRAME.exec(raw);
    if (m) {
      frame = { prefix: m[1], path: m[2], line: Number(m[3]), func: m[4], lines: [raw], code: [] };
      frame.internal = isInternal(frame.path);
      blocks.push({ frame });
      continue;
    }
    // A frame's source lines (and caret markers) are indented more than its "File" line.
    const body = raw.replace(/^[\s|+]*/, "");
    const indent = raw.length - raw.trimStart().length;
    if (frame && body !== "" && indent > frame.prefix.length && !/^\w*(Error|Exception|Group|Interrupt|Exit)\b/.test(body)) {
      frame.lines.push(raw);
      if (!/^[~^\s]+$/.test(body)) frame.code.push(body);
      continue;
    }
    frame = null;
    blocks.push({ text: raw });
  }
  return blocks;
}

/** The traceback as an element: the user's frames, then the full text with internal frames folded. */
export function tracebackEl(text) {
  const blocks = parseTraceback(text);
  const frames = blocks.filter((b) => b.frame).map((b) => b.frame);
  const user = frames.filter((f) => !f.internal);
  const hidden = frames.length - user.length;
  const pre = h("pre", { testid: "task-traceback", "data-folded": "true" });
  let folded = true;
  const render = () => {
    pre.replaceChildren();
    let run = 0;
    const flush = () => {
      if (run) pre.append(h("span", { class: "tb-fold" }, `    … ${run} engine frame${run === 1 ? "" : "s"} folded …\n`));
      run = 0;
    };
    for (const b of blocks) {
      if (b.frame && b.frame.internal && folded) {
        run += 1;
        continue;
      }
      flush();
      pre.append(`${b.frame ? b.frame.lines.join("\n") : b.text}\n`);
    }
    flush();
    pre.dataset.folded = String(folded);
  };
  render();
  const toggle = hidden
    ? h("button", { type: "button", class: "btn ghost tb-toggle", testid: "traceback-toggle",
      onclick: (e) => {
        folded = !folded;
        render();
        e.currentTarget.textContent = folded ? `Show ${hidden} engine frame${hidden === 1 ? "" : "s"}` : "Fold engine frames";
      } }, `Show ${hidden} engine frame${hidden === 1 ? "" : "s"}`)
    : null;
  const own = user.length
    ? h("ol", { class: "tb-user", testid: "traceback-user-frames" }, [...user].reverse().map((f) =>
      h("li", { testid: "traceback-user-frame" },
        h("span", { class: "tb-where" }, `${f.path.split(/[\\/]/).slice(-2).join("/")}:${f.line} in ${f.func}`),
        f.code.length ? h("code", { class: "tb-code" }, f.code.join("\n")) : null)))
    : null;
  return h("div", { class: "traceback", testid: "traceback" },
    own ? h("h3", {}, "Where in your code (innermost first)") : null, own,
    h("details", { open: !own },
      h("summary", {}, own ? "Full traceback" : "Traceback"), toggle, pre));
}
