// evflow web UI: the helpers every page shares (DOM building, formatting, the JSON API,
// the error banner and toast). Plain JavaScript module.

export const RUN_STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
export const RUN_FINISHED = new Set(["succeeded", "failed", "cancelled"]);
export const TASK_FINISHED = new Set(["succeeded", "failed", "skipped", "upstream_failed", "cancelled"]);
export const WAITING_STATES = new Set(["pending", "waiting", "retrying", "interrupted"]);
export const TOKEN_KEY = "evflow.token";
export const PAGE_SIZE = 50;

// -- small helpers ------------------------------------------------------------------------

/** Create an element: h("a", {href: "#"}, "text", child, ...). Text is never parsed as HTML. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

export const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  appendAll(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "testid") {
      el.setAttribute("data-testid", value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

export function appendAll(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the children of ``el`` (null, undefined and false are left out). */
export function fill(el, ...children) {
  el.replaceChildren();
  appendAll(el, children);
  return el;
}

export function pad(n) {
  return String(n).padStart(2, "0");
}

export function fmtTime(t) {
  if (t === null || t === undefined) return "—";
  const d = new Date(t * 1000);
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === new Date().toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

export function timeEl(t) {
  if (t === null || t === undefined) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: new Date(t * 1000).toISOString(), title: new Date(t * 1000).toString() },
    fmtTime(t));
}

export function fmtDuration(sec) {
  if (sec === null || sec === undefined || Number.isNaN(sec)) return "—";
  if (sec < 0) sec = 0;
  if (sec < 0.001) return "< 1 ms";
  if (sec < 1) return `${Math.round(sec * 1000)} ms`;
  if (sec < 60) return `${sec.toFixed(sec < 10 ? 2 : 1)} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} m ${Math.round(sec - m * 60)} s`;
  const hrs = Math.floor(m / 60);
  return `${hrs} h ${m - hrs * 60} m`;
}

/** A duration that keeps counting while the thing still runs (see the ticker below). */
export function durationEl(item) {
  if (item.duration_s !== null && item.duration_s !== undefined) {
    return h("span", {}, fmtDuration(item.duration_s));
  }
  if (item.started_at && !item.ended_at) {
    return h("span", { "data-since": item.started_at, class: "live-duration" },
      fmtDuration(Date.now() / 1000 - item.started_at));
  }
  if (item.started_at && item.ended_at) return h("span", {}, fmtDuration(item.ended_at - item.started_at));
  return h("span", { class: "muted" }, "—");
}

setInterval(() => {
  const now = Date.now() / 1000;
  for (const el of document.querySelectorAll("[data-since]")) {
    el.textContent = fmtDuration(now - Number(el.dataset.since));
  }
}, 1000);

export function label(state) {
  return String(state ?? "unknown").replaceAll("_", " ");
}

export function badge(state, testid) {
  return h("span", { class: ["badge", `state-${state}`], "data-state": state, testid },
    h("span", { class: "dot", "aria-hidden": "true" }), label(state));
}

// Ids begin with the time they were made (runs of one minute share their first characters):
// the end tells them apart, and a short id given back by its end finds the run.
export function shortId(id) {
  return String(id).length > 12 ? `…${String(id).slice(-8)}` : String(id);
}

export function json(value, indent = 2) {
  try {
    return JSON.stringify(value, null, indent);
  } catch {
    return String(value);
  }
}

export function compact(value, max = 120) {
  const text = typeof value === "string" ? value : json(value, 0);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** What started a run: its kind, and a muted detail (the rule, who called the API). */
export function triggerEl(trigger) {
  if (!trigger || typeof trigger !== "object") return h("span", {}, trigger ? String(trigger) : "—");
  const kind = trigger.kind ?? trigger.type ?? "—";
  let detail = null;
  if (kind === "event") {
    const n = Array.isArray(trigger.events) ? trigger.events.length : 0;
    detail = `${trigger.rule ?? ""}${n > 1 ? ` · ${n} events` : ""}`;
  } else if (trigger.actor) {
    detail = `by ${trigger.actor}`;
  } else if (trigger.of) {
    detail = `of ${trigger.of}`;
  }
  return h("span", { class: "trigger", title: json(trigger) }, h("span", { class: "trigger-kind" }, kind),
    detail ? h("span", { class: "trigger-detail" }, detail) : null);
}

export function empty(title, hint, testid = "empty-state") {
  return h("div", { class: "empty", testid }, h("p", { class: "empty-title" }, title),
    hint ? h("p", { class: "empty-hint" }, hint) : null);
}

export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

// -- API ----------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const tok = token();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  let resp;
  try {
    resp = await fetch(`/api${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(`cannot reach the server (${err.message})`, 0);
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    let message = data && typeof data.error === "string" ? data.error : `${resp.status} ${resp.statusText}`;
    if (resp.status === 401 || resp.status === 403) {
      message += tok ? " — check the API token in the header" : " — enter the API token in the header";
    }
    throw new ApiError(message, resp.status);
  }
  return data;
}

let flowsCache = null;

export function loadFlows(force = false) {
  if (force || !flowsCache) {
    flowsCache = api("/flows").then((d) => d.flows ?? []).catch((err) => {
      flowsCache = null;
      throw err;
    });
  }
  return flowsCache;
}

// The link to the user's tracing backend ([tracing] link, "{trace_id}" in it), read once.
let traceLink = undefined;
fetch("/api", { headers: { Accept: "application/json" } })
  .then((r) => (r.ok ? r.json() : {}))
  .then((d) => { traceLink = d.trace_link ?? null; })
  .catch(() => { traceLink = null; });

export function traceEl(traceId, testid = "run-trace") {
  const text = h("span", { class: "mono", testid }, traceId);
  if (!traceLink) return text;
  return h("a", { href: traceLink.replace("{trace_id}", encodeURIComponent(traceId)),
    target: "_blank", rel: "noopener", testid: `${testid}-link` }, text);
}

// -- banner and toast ---------------------------------------------------------------------

export const banner = document.getElementById("banner");
banner.querySelector(".banner-close").addEventListener("click", () => hideError());

export function showError(err) {
  banner.querySelector(".banner-text").textContent = err instanceof Error ? err.message : String(err);
  banner.hidden = false;
}

export function hideError() {
  banner.hidden = true;
}

let toastTimer = null;

export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 2000);
}


// -- states and forms ---------------------------------------------------------------------

/** The state shown for a mapped task from its instances. */
export function aggregate(children) {
  const states = children.map((c) => c.state);
  for (const st of ["running", "retrying", "waiting", "interrupted", "pending"]) {
    if (states.includes(st)) return st;
  }
  for (const st of ["failed", "upstream_failed", "cancelled"]) {
    if (states.includes(st)) return st;
  }
  if (states.every((st) => st === "skipped")) return "skipped";
  return "succeeded";
}

export function stateGlyph(state) {
  return {
    succeeded: "✓", failed: "✕", running: "▶", retrying: "↻", waiting: "⏸", pending: "○",
    queued: "○", skipped: "↷", upstream_failed: "⚠", cancelled: "⊘", interrupted: "⚡",
  }[state] ?? "•";
}

export function ellipsize(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** How a default shows in the form: text as itself when it reads back as the same text. */
export function formValue(value) {
  if (typeof value === "string" && parseValue(value) === value) return value;
  return JSON.stringify(value);
}

/** A form value: JSON when it parses, else the text itself. */
export function parseValue(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}
