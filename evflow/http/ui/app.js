// evflow web UI: a single page on the JSON API under /api, with live updates from
// /api/stream (server-sent events). Plain JavaScript modules; libraries vendored in vendor/.

import {
  RUN_STATES,
  RUN_FINISHED,
  TASK_FINISHED,
  WAITING_STATES,
  TOKEN_KEY,
  PAGE_SIZE,
  h,
  SVG_NS,
  s,
  setAttrs,
  appendAll,
  fill,
  pad,
  fmtTime,
  timeEl,
  fmtDuration,
  durationEl,
  label,
  badge,
  shortId,
  json,
  compact,
  triggerEl,
  empty,
  debounce,
  ApiError,
  token,
  api,
  loadFlows,
  traceEl,
  banner,
  showError,
  hideError,
  toast,
  aggregate,
  stateGlyph,
  ellipsize,
  formValue,
  parseValue,
} from "./core.js";
import { FlowView, triggerForm } from "./flow.js";
import { RunView } from "./run.js";
import { ClusterView } from "./cluster.js";

// -- live stream --------------------------------------------------------------------------

const streamStatus = document.querySelector("[data-testid=stream-status]");
let currentView = null;
let stream = null;
let streamRetry = 1000;

function setStreamStatus(status, text) {
  streamStatus.dataset.status = status;
  streamStatus.textContent = text;
}

function connectStream() {
  if (stream) stream.close();
  setStreamStatus("connecting", "connecting…");
  const es = new EventSource("/api/stream");
  stream = es;
  es.addEventListener("open", () => {
    streamRetry = 1000;
    setStreamStatus("live", "live");
    // Whatever happened while disconnected is picked up by re-reading the page's data.
    currentView?.refresh?.();
  });
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) {
      setStreamStatus("offline", "offline — retrying");
      setTimeout(() => { if (stream === es) connectStream(); }, streamRetry);
      streamRetry = Math.min(streamRetry * 2, 15000);
    } else {
      setStreamStatus("connecting", "reconnecting…");
    }
  });
  es.addEventListener("dropped", () => currentView?.refresh?.());
  for (const type of ["run", "task"]) {
    es.addEventListener(type, (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      currentView?.onStream?.(type, data);
    });
  }
}

// -- router -------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/runs";
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function route() {
  const { parts, query } = parseHash();
  const section = parts[0] || "runs";
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section);
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  currentView?.unmount?.();
  currentView = null;
  hideError();
  const root = document.getElementById("view");
  fill(root);
  let view;
  if (section === "runs" && parts[1]) view = new RunView(parts[1], query);
  else if (section === "runs") view = new RunsView(query);
  else if (section === "flows" && parts[1]) view = new FlowView(parts[1]);
  else if (section === "flows") view = new FlowsView(query);
  else if (section === "events") view = new EventsView();
  else if (section === "pools") view = new PoolsView();
  else if (section === "sensors") view = new SensorsView();
  else if (section === "cluster") view = new ClusterView();
  else view = new NotFoundView();
  currentView = view;
  view.mount(root);
  document.title = `${view.title ?? "evflow"} · evflow`;
  window.scrollTo(0, 0);
}

class NotFoundView {
  title = "Not found";
  mount(root) {
    appendAll(root, h("h1", {}, "Page not found"),
      empty("There is no page at this address.", "Use the navigation above: Runs, Flows, Events, Pools, Sensors, Cluster."));
  }
}

function pageHeader(title, subtitle, ...actions) {
  return h("div", { class: "page-header" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", { class: "subtitle" }, subtitle) : null),
    h("div", { class: "actions" }, actions));
}

// -- runs list ----------------------------------------------------------------------------

/** The runs list's time ranges: key -> [text, seconds back]. */
const RANGES = {
  "": ["Any time", 0],
  "1h": ["Last hour", 3600],
  "24h": ["Last 24 hours", 86400],
  "7d": ["Last 7 days", 7 * 86400],
  "30d": ["Last 30 days", 30 * 86400],
};

class RunsView {
  title = "Runs";

  constructor(query) {
    this.flow = query.get("flow") || "";
    this.state = query.get("state") || "";
    this.q = query.get("q") || "";
    this.range = RANGES[query.get("range")] ? query.get("range") : "";
    this.offset = Math.max(0, Number(query.get("offset")) || 0);
    this.runs = [];
    this.total = 0;
    this.loaded = false;
    this.seq = 0;
  }

  mount(root) {
    this.flowSelect = h("select", { testid: "filter-flow", "aria-label": "Flow",
      onchange: () => this.setFilter() }, h("option", { value: "" }, "All flows"));
    if (this.flow) this.flowSelect.append(h("option", { value: this.flow }, this.flow));
    this.flowSelect.value = this.flow;
    this.stateSelect = h("select", { testid: "filter-state", "aria-label": "State",
      onchange: () => this.setFilter() }, h("option", { value: "" }, "All states"),
    RUN_STATES.map((st) => h("option", { value: st }, label(st))));
    this.stateSelect.value = this.state;
    this.search = h("input", { type: "search", testid: "runs-search", "aria-label": "Search runs",
      placeholder: "Run id, flow or param value", value: this.q, spellcheck: "false" });
    this.searchSoon = debounce(() => this.setFilter(), 350);
    this.search.addEventListener("input", this.searchSoon);
    this.search.addEventListener("keydown", (e) => { if (e.key === "Enter") this.setFilter(); });
    this.rangeSelect = h("select", { testid: "filter-range", "aria-label": "Time range",
      onchange: () => this.setFilter() }, Object.entries(RANGES).map(([k, [text]]) => h("option", { value: k }, text)));
    this.rangeSelect.value = this.range;
    this.count = h("p", { class: "subtitle", testid: "runs-count" }, "Loading…");
    this.body = h("div", { class: "card" });
    this.pager = h("div", { class: "pager" });
    appendAll(root, 
      h("div", { class: "page-header" },
        h("div", {}, h("h1", {}, "Runs"), this.count),
        h("div", { class: "actions filters" },
          h("label", { class: "search" }, h("span", {}, "Search"), this.search),
          h("label", {}, h("span", {}, "Flow"), this.flowSelect),
          h("label", {}, h("span", {}, "Created"), this.rangeSelect),
          h("label", {}, h("span", {}, "State"), this.stateSelect),
          h("button", { type: "button", class: "btn", onclick: () => this.refresh() }, "Refresh"))),
      this.body, this.pager);
    loadFlows().then((flows) => {
      for (const f of flows) {
        if (f.name !== this.flow) this.flowSelect.append(h("option", { value: f.name }, f.name));
      }
      this.flowSelect.value = this.flow;
    }).catch(() => {});
    this.refresh();
  }

  unmount() {
    this.searchSoon?.cancel(); // leaving the page: a pending search must not bring it back
  }

  setFilter() {
    this.searchSoon?.cancel();
    const q = new URLSearchParams();
    if (this.flowSelect.value) q.set("flow", this.flowSelect.value);
    if (this.stateSelect.value) q.set("state", this.stateSelect.value);
    if (this.search.value.trim()) q.set("q", this.search.value.trim());
    if (this.rangeSelect.value) q.set("range", this.rangeSelect.value);
    const next = `#/runs${q.size ? `?${q}` : ""}`;
    if (location.hash !== next) {
      // Typing keeps the focus: the view is built again, so give it back to the search box.
      const typing = document.activeElement === this.search;
      location.hash = next;
      if (typing) setTimeout(() => {
        const el = document.querySelector("[data-testid=runs-search]");
        el?.focus();
        el?.setSelectionRange(el.value.length, el.value.length);
      }, 0);
    }
  }

  async refresh() {
    const seq = ++this.seq;
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(this.offset) });
    if (this.flow) q.set("flow", this.flow);
    if (this.state) q.set("state", this.state);
    if (this.q) q.set("q", this.q);
    if (this.range) q.set("since", String(Math.floor(Date.now() / 1000 - RANGES[this.range][1])));
    try {
      const data = await api(`/runs/search?${q}`);
      if (seq !== this.seq) return;
      this.runs = data.runs ?? [];
      this.total = data.total ?? this.runs.length;
      this.loaded = true;
      this.render();
    } catch (err) {
      if (seq === this.seq) {
        showError(err);
        this.count.textContent = "Could not load runs.";
      }
    }
  }

  matches(run) {
    const text = this.q.toLowerCase();
    const found = !text || [run.id, run.flow, JSON.stringify(run.params ?? {})].some((v) => String(v).toLowerCase().includes(text));
    const recent = !this.range || (run.created_at ?? 0) >= Date.now() / 1000 - RANGES[this.range][1];
    return (!this.flow || run.flow === this.flow) && (!this.state || run.state === this.state) && found && recent;
  }

  onStream(type, data) {
    if (type !== "run" || !this.loaded || !data.id) return;
    const i = this.runs.findIndex((r) => r.id === data.id);
    if (i >= 0) {
      const merged = { ...this.runs[i], ...data };
      if (this.matches(merged)) this.runs[i] = merged;
      else {
        this.runs.splice(i, 1);
        this.total = Math.max(0, this.total - 1);
      }
      this.render(data.id);
    } else if (this.matches(data) && this.offset === 0) {
      this.runs.unshift(data);
      this.runs.sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0));
      if (this.runs.length > PAGE_SIZE) this.runs.length = PAGE_SIZE;
      this.total += 1;
      this.render(data.id, true);
    }
  }

  render(changedId = null, added = false) {
    const shown = this.runs.length;
    this.count.textContent = this.total === 0 ? "No runs" :
      `Showing ${this.offset + 1}–${this.offset + shown} of ${this.total} run${this.total === 1 ? "" : "s"}`;
    if (shown === 0) {
      const filtered = this.flow || this.state || this.q || this.range;
      fill(this.body, filtered
        ? empty("No runs match these filters.", "Clear the search, and choose “All flows”, “All states” and “Any time” to see every run.")
        : h("div", {}, empty("No runs yet.",
          "Start one from the Flows page, or emit an event that one of your rules matches. New runs appear here live."),
        h("p", { class: "center" }, h("a", { class: "btn primary", href: "#/flows" }, "Go to flows"))));
      fill(this.pager);
      return;
    }
    const rows = this.runs.map((r) => h("tr", {
      testid: `run-row-${r.id}`, "data-run-id": r.id, "data-state": r.state,
      class: ["clickable", r.id === changedId ? (added ? "flash-new" : "flash") : null],
      onclick: (e) => { if (!e.target.closest("a")) location.hash = `#/runs/${encodeURIComponent(r.id)}`; },
    },
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.id)}`, class: "mono", title: r.id }, shortId(r.id))),
    h("td", {}, h("a", { href: `#/runs?flow=${encodeURIComponent(r.flow)}`, class: "flow-link" }, r.flow)),
    h("td", {}, badge(r.state, "run-row-state"),
      r.waiting && r.state === "queued" ? h("span", { class: "waiting-note", title: r.waiting }, r.waiting) : null),
    h("td", { class: "col-trigger" }, triggerEl(r.trigger)),
    h("td", {}, timeEl(r.created_at)),
    h("td", { class: "num" }, durationEl(r)),
    h("td", { class: "error-cell col-error", title: r.error ?? "" }, r.error ? compact(r.error, 80) : "")));
    fill(this.body, h("table", { class: "table runs-table", testid: "runs-table" },
      h("thead", {}, h("tr", {}, ["Run", "Flow", "State", "Trigger", "Created", "Duration", "Error"]
        .map((c) => h("th", { class: c === "Duration" ? "num" : c === "Trigger" ? "col-trigger" : c === "Error" ? "col-error" : null }, c)))),
      h("tbody", {}, rows)));
    const q = (offset) => {
      const p = new URLSearchParams();
      if (this.flow) p.set("flow", this.flow);
      if (this.state) p.set("state", this.state);
      if (this.q) p.set("q", this.q);
      if (this.range) p.set("range", this.range);
      if (offset) p.set("offset", String(offset));
      return `#/runs${p.size ? `?${p}` : ""}`;
    };
    fill(this.pager, 
      this.offset > 0 ? h("a", { class: "btn", href: q(Math.max(0, this.offset - PAGE_SIZE)) }, "← Newer") : null,
      this.offset + shown < this.total ? h("a", { class: "btn", href: q(this.offset + PAGE_SIZE) }, "Older →") : null);
  }
}

// -- flows --------------------------------------------------------------------------------

class FlowsView {
  title = "Flows";

  constructor(query) {
    this.focus = query.get("flow");
  }

  mount(root) {
    this.list = h("div", { class: "flow-list", testid: "flow-list" }, h("p", { class: "muted" }, "Loading…"));
    appendAll(root, pageHeader("Flows", "Every flow the engine knows, with its schedule. Start a run by hand with the form on each flow.",
      h("button", { type: "button", class: "btn", onclick: () => this.refresh() }, "Refresh")), this.list);
    this.refresh();
  }

  async refresh() {
    try {
      const flows = await loadFlows(true);
      this.render(flows);
    } catch (err) {
      showError(err);
      fill(this.list, empty("Could not load the flows.", err.message));
    }
  }

  render(flows) {
    if (flows.length === 0) {
      fill(this.list, empty("No flows are loaded.",
        "Put flow files in the flows/ folder that `evflow serve` loads, or add them with engine.add(...)."));
      return;
    }
    fill(this.list, ...flows.map((f) => this.card(f)));
    if (this.focus) document.querySelector(`[data-flow="${CSS.escape(this.focus)}"]`)?.scrollIntoView();
  }

  card(f) {
    const form = triggerForm(f);
    const tasks = f.tasks ?? [];
    return h("article", { class: "card flow-card", testid: `flow-${f.name}`, "data-flow": f.name },
      h("div", { class: "flow-head" },
        h("div", {},
          h("h2", {}, h("a", { href: `#/flows/${encodeURIComponent(f.name)}`, testid: `flow-link-${f.name}` }, f.name)),
          f.description ? h("p", { class: "flow-desc" }, f.description) : null),
        h("a", { class: "btn ghost", href: `#/runs?flow=${encodeURIComponent(f.name)}` }, "Runs →")),
      h("dl", { class: "meta small" },
        h("div", { class: "meta-item wide" }, h("dt", {}, "Schedule"),
          h("dd", { testid: `flow-schedule-${f.name}` }, f.schedule ? f.schedule : h("span", { class: "muted" }, "none (events and manual runs)"))),
        h("div", { class: "meta-item" }, h("dt", {}, "Max active runs"), h("dd", {}, f.max_active_runs ?? "unlimited")),
        h("div", { class: "meta-item" }, h("dt", {}, "Version"), h("dd", { class: "mono", title: f.version ?? "" }, String(f.version ?? "—").slice(0, 12))),
        f.location ? h("div", { class: "meta-item full" }, h("dt", {}, "Defined in"), h("dd", { class: "mono small", title: f.location }, f.location)) : null),
      h("div", { class: "task-chips", "aria-label": "Tasks" },
        tasks.map((t) => h("span", { class: "chip", title: taskTitle(t) }, t.name, t.mapped ? h("span", { class: "chip-tag" }, "mapped") : null,
          t.pool ? h("span", { class: "chip-tag" }, `pool ${t.pool}`) : null))),
      form);
  }
}

function taskTitle(t) {
  const bits = [`after: ${(t.upstream ?? []).join(", ") || "—"}`, `retries: ${t.retries ?? 0}`, `trigger rule: ${t.trigger_rule ?? "all_success"}`];
  if (t.pool) bits.push(`pool: ${t.pool}`);
  bits.push(t.is_async ? "async" : "runs in a thread");
  return bits.join("\n");
}



// -- events -------------------------------------------------------------------------------

class EventsView {
  title = "Events";

  mount(root) {
    this.body = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading…"));
    appendAll(root, pageHeader("Events", "What arrived, and what each event triggered.",
      h("button", { type: "button", class: "btn", onclick: () => this.refresh() }, "Refresh")), this.body);
    this.refresh();
    this.timer = setInterval(() => { if (document.visibilityState === "visible") this.refresh(); }, 5000);
    this.refreshSoon = debounce(() => this.refresh(), 300);
  }

  unmount() {
    clearInterval(this.timer);
    this.refreshSoon.cancel();
  }

  /** A run started (perhaps by an event): its decision is in the store now, show it. */
  onStream(type) {
    if (type === "run") this.refreshSoon();
  }

  async refresh() {
    try {
      const data = await api("/events?limit=100");
      this.render(data.events ?? []);
    } catch (err) {
      showError(err);
    }
  }

  render(events) {
    if (events.length === 0) {
      fill(this.body, empty("No events yet.",
        "Events come from sensors (files, Kafka, webhooks), schedules and `evflow emit`. They show here with the runs they started."));
      return;
    }
    const open = new Set([...this.body.querySelectorAll("details[open]")].map((d) => d.dataset.id));
    fill(this.body, h("table", { class: "table events-table stacked", testid: "events-table" },
      h("thead", {}, h("tr", {}, ["Time", "Type", "Source", "Subject", "Status", "Decisions"].map((c) => h("th", {}, c)))),
      h("tbody", {}, events.map((ev) => h("tr", { testid: `event-row-${ev.id}` },
        h("td", {}, typeof ev.received_at === "number" ? timeEl(ev.received_at) : h("span", { title: ev.time ?? "" }, fmtIso(ev.time))),
        h("td", {}, h("details", { "data-id": ev.uid ?? ev.id, open: open.has(String(ev.uid ?? ev.id)) },
          h("summary", { class: "mono" }, ev.type),
          h("pre", { class: "json" }, json(ev.data)),
          ev.trace_id ? h("p", { class: "small" }, "trace ", traceEl(ev.trace_id, "event-trace")) : null)),
        h("td", { class: "mono small" }, ev.source),
        h("td", { class: "small" }, ev.subject ?? h("span", { class: "muted" }, "—")),
        h("td", {}, h("span", { class: ["pill", `status-${ev.status}`] }, ev.status ?? "—")),
        h("td", {}, decisionsEl(ev.decisions ?? [])))))));
  }
}

function fmtIso(value) {
  if (!value) return "—";
  const t = Date.parse(value);
  return Number.isNaN(t) ? String(value) : fmtTime(t / 1000);
}

const DECISIONS = {
  "rule.matched": ["started a run", "ok"],
  "rule.duplicate": ["already started", "idle"],
  "rule.held": ["held by its rule", "wait"],
  "rule.skipped": ["skipped (flow busy)", "idle"],
  "rule.not_matched": ["no rule matched", "idle"],
  "rule.not_mapped": ["params not mapped", "bad"],
  "rule.flow_missing": ["flow missing", "bad"],
  "rule.correlation_timed_out": ["correlation timed out", "wait"],
  "event.emitted": ["emitted through the API", "idle"],
  "event.received": ["received", "idle"],
};

/** An event's rule decisions as a table: rule, decision, reason, run. */
function decisionsEl(decisions) {
  if (decisions.length === 0) return h("span", { class: "muted" }, "not decided yet");
  return h("table", { class: "table compact decisions-table", testid: "decisions-table" },
    h("thead", {}, h("tr", {}, ["Rule", "Decision", "Reason", "Run"].map((c) => h("th", {}, c)))),
    h("tbody", {}, decisions.map((d) => {
      const data = d.data && typeof d.data === "object" ? d.data : {};
      const [text, tone] = DECISIONS[d.kind] ?? [label(d.kind), "idle"];
      const runId = data.run_id;
      const reason = data.reason ?? data.why ?? null;
      const rest = Object.fromEntries(Object.entries(data).filter(([k]) => !["run_id", "rule", "reason", "why"].includes(k)));
      if (d.actor) rest.by = d.actor;
      const detail = Object.keys(rest).length ? compact(summarize(rest), 90) : null;
      return h("tr", { testid: "decision", "data-kind": d.kind },
        h("td", { class: "mono small" }, data.rule ?? h("span", { class: "muted" }, "—")),
        h("td", {}, h("span", { class: ["pill", `tone-${tone}`], title: d.kind }, text)),
        h("td", { class: "small", title: json(data) }, reason ?? detail ?? h("span", { class: "muted" }, "—"),
          reason && detail ? h("span", { class: "muted" }, ` · ${detail}`) : null),
        h("td", {}, runId ? h("a", { href: `#/runs/${encodeURIComponent(runId)}`, class: "mono", testid: "decision-run" }, shortId(runId))
          : h("span", { class: "muted" }, "—")));
    })));
}

function summarize(obj) {
  return Object.entries(obj).map(([k, v]) => `${k}=${typeof v === "string" ? v : json(v, 0)}`).join(" ");
}

// -- pools --------------------------------------------------------------------------------

class PoolsView {
  title = "Pools";

  mount(root) {
    this.body = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading…"));
    this.extra = h("div", {});
    appendAll(root, pageHeader("Pools", "Slots in use per pool; tasks beyond the capacity wait without using CPU.",
      h("button", { type: "button", class: "btn", onclick: () => this.refresh() }, "Refresh")), this.body, this.extra);
    this.refreshSoon = debounce(() => this.refresh(), 300);
    this.refresh();
    this.timer = setInterval(() => { if (document.visibilityState === "visible") this.refresh(); }, 5000);
  }

  unmount() {
    clearInterval(this.timer);
    this.refreshSoon.cancel();
  }

  onStream(type) {
    if (type === "task") this.refreshSoon();
  }

  async refresh() {
    try {
      this.render(await api("/pools"));
    } catch (err) {
      showError(err);
    }
  }

  render(data) {
    const pools = data.pools ?? [];
    const bar = (name, inUse, capacity, waiting, testid, scope) => {
      const pct = capacity ? Math.min(100, (inUse / capacity) * 100) : 0;
      return h("div", { class: "pool", testid },
        h("div", { class: "pool-head" }, h("strong", {}, name === "<global>" ? "All tasks (global limit)" : name),
          scope === "cluster" ? h("span", { class: "pill", title: "the slots are shared by every instance on the store; the bar shows this instance's" }, "cluster-wide") : null,
          h("span", { class: "pool-numbers" }, `${inUse} / ${capacity ?? "∞"} in use`,
            waiting ? h("span", { class: "pill status-waiting" }, `${waiting} waiting`) : h("span", { class: "muted" }, " · none waiting"))),
        h("div", { class: ["bar", pct >= 100 ? "full" : pct >= 75 ? "high" : null], role: "progressbar",
          "aria-valuemin": 0, "aria-valuemax": capacity ?? 0, "aria-valuenow": inUse, "aria-label": `${name} usage` },
        barFill(pct)));
    };
    fill(this.body, h("h2", {}, "Pools"), pools.length
      ? h("div", { class: "pools", testid: "pools" }, pools.map((p) => bar(p.name, p.in_use ?? 0, p.capacity, p.waiting ?? 0, `pool-${p.name}`, p.scope)))
      : empty("No pools are configured.", "Pools limit how many tasks share a resource: set them with Engine(pools={\"warehouse\": 2}) or in the configuration file, and give tasks pool=\"warehouse\"."));
    const flows = data.flows ?? [];
    fill(this.extra, 
      h("section", { class: "card" }, h("h2", {}, "Active runs per flow"),
        flows.length
          ? h("div", { class: "pools", testid: "flow-slots" }, flows.map((p) => bar(p.name, p.in_use ?? 0, p.capacity, p.waiting ?? 0, `flow-slots-${p.name}`)))
          : h("p", { class: "muted" }, "No flow with a max_active_runs limit is running now.")),
      typeof data.backlog === "number"
        ? h("section", { class: "card" }, h("h2", {}, "Event backlog"),
          h("p", { class: "stat", testid: "backlog" }, String(data.backlog),
            h("span", { class: "muted" }, data.backlog === 1 ? " event accepted, not yet decided on" : " events accepted, not yet decided on")))
        : null);
  }
}

function barFill(pct) {
  const el = h("div", { class: "bar-fill" });
  el.style.width = `${pct}%`; // through the CSSOM: inline style attributes are not allowed
  return el;
}

// -- sensors ------------------------------------------------------------------------------

class SensorsView {
  title = "Sensors";

  mount(root) {
    this.body = h("div", { class: "card" }, h("p", { class: "muted" }, "Loading…"));
    appendAll(root, pageHeader("Sensors", "Where events come from, and whether each source is healthy.",
      h("button", { type: "button", class: "btn", onclick: () => this.refresh() }, "Refresh")), this.body);
    this.refresh();
  }

  async refresh() {
    try {
      const data = await api("/sensors");
      this.render(Array.isArray(data) ? data : data.sensors ?? []);
    } catch (err) {
      showError(err);
    }
  }

  render(sensors) {
    if (sensors.length === 0) {
      fill(this.body, empty("No sensors are running.",
        "Sensors watch files, Kafka topics and webhooks; rules wire them to flows (engine.add(flow, Rule(on=...)))."));
      return;
    }
    const known = ["name", "source", "describe", "status"];
    const cols = [...new Set([...known.filter((c) => sensors.some((x) => c in x)), ...sensors.flatMap((x) => Object.keys(x))])];
    const heading = { describe: "What it watches" };
    fill(this.body, h("table", { class: "table", testid: "sensors-table" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", {}, heading[c] ?? label(c))))),
      h("tbody", {}, sensors.map((x) => h("tr", {}, cols.map((c) => h("td", {},
        c === "status" ? h("span", { class: ["pill", `status-${x[c]}`] }, String(x[c])) :
          typeof x[c] === "object" && x[c] !== null ? compact(x[c], 80) : String(x[c] ?? "—"))))))));
  }
}

// -- start --------------------------------------------------------------------------------

function initToken() {
  const input = document.getElementById("token");
  input.value = token();
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    input.blur();
  });
  input.addEventListener("change", () => {
    const value = input.value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    toast(value ? "API token saved in this browser" : "API token cleared");
  });
}

initToken();
window.addEventListener("hashchange", route);
route();
connectStream();
