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
  if (section === "runs" && parts[1]) view = new RunView(parts[1]);
  else if (section === "runs") view = new RunsView(query);
  else if (section === "flows") view = new FlowsView(query);
  else if (section === "events") view = new EventsView();
  else if (section === "pools") view = new PoolsView();
  else if (section === "sensors") view = new SensorsView();
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
      empty("There is no page at this address.", "Use the navigation above: Runs, Flows, Events, Pools, Sensors."));
  }
}

function pageHeader(title, subtitle, ...actions) {
  return h("div", { class: "page-header" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", { class: "subtitle" }, subtitle) : null),
    h("div", { class: "actions" }, actions));
}

// -- runs list ----------------------------------------------------------------------------

class RunsView {
  title = "Runs";

  constructor(query) {
    this.flow = query.get("flow") || "";
    this.state = query.get("state") || "";
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
    this.count = h("p", { class: "subtitle", testid: "runs-count" }, "Loading…");
    this.body = h("div", { class: "card" });
    this.pager = h("div", { class: "pager" });
    appendAll(root, 
      h("div", { class: "page-header" },
        h("div", {}, h("h1", {}, "Runs"), this.count),
        h("div", { class: "actions filters" },
          h("label", {}, h("span", {}, "Flow"), this.flowSelect),
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

  setFilter() {
    const q = new URLSearchParams();
    if (this.flowSelect.value) q.set("flow", this.flowSelect.value);
    if (this.stateSelect.value) q.set("state", this.stateSelect.value);
    location.hash = `#/runs${q.size ? `?${q}` : ""}`;
  }

  async refresh() {
    const seq = ++this.seq;
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(this.offset) });
    if (this.flow) q.set("flow", this.flow);
    if (this.state) q.set("state", this.state);
    try {
      const data = await api(`/runs?${q}`);
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
    return (!this.flow || run.flow === this.flow) && (!this.state || run.state === this.state);
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
      const filtered = this.flow || this.state;
      fill(this.body, filtered
        ? empty("No runs match these filters.", "Choose “All flows” and “All states” to see every run.")
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
    h("td", {}, triggerEl(r.trigger)),
    h("td", {}, timeEl(r.created_at)),
    h("td", { class: "num" }, durationEl(r)),
    h("td", { class: "error-cell", title: r.error ?? "" }, r.error ? compact(r.error, 80) : "")));
    fill(this.body, h("table", { class: "table", testid: "runs-table" },
      h("thead", {}, h("tr", {}, ["Run", "Flow", "State", "Trigger", "Created", "Duration", "Error"]
        .map((c) => h("th", { class: c === "Duration" ? "num" : null }, c)))),
      h("tbody", {}, rows)));
    const q = (offset) => {
      const p = new URLSearchParams();
      if (this.flow) p.set("flow", this.flow);
      if (this.state) p.set("state", this.state);
      if (offset) p.set("offset", String(offset));
      return `#/runs${p.size ? `?${p}` : ""}`;
    };
    fill(this.pager, 
      this.offset > 0 ? h("a", { class: "btn", href: q(Math.max(0, this.offset - PAGE_SIZE)) }, "← Newer") : null,
      this.offset + shown < this.total ? h("a", { class: "btn", href: q(this.offset + PAGE_SIZE) }, "Older →") : null);
  }
}

// -- one run ------------------------------------------------------------------------------

class RunView {
  constructor(id) {
    this.id = id;
    this.title = `Run ${shortId(id)}`;
    this.run = null;
    this.flowDef = null;
    this.selected = null;
    this.seq = 0;
    this.fetching = false;
    this.buffer = [];
    this.log = null;
    this.renderQueued = false;
    this.refreshSoon = debounce(() => this.refresh(), 250);
  }

  mount(root) {
    this.headerEl = h("div", { class: "run-header" }, h("h1", {}, "Run ", h("span", { class: "mono" }, shortId(this.id))));
    this.metaEl = h("div", { class: "meta-card card" });
    this.dagEl = h("div", { class: "dag-scroll", testid: "dag-container" });
    this.tableEl = h("div", {});
    this.panelEl = h("aside", { class: "task-panel card", testid: "task-panel", hidden: true });
    appendAll(root, 
      h("nav", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), h("span", {}, "/"),
        h("span", { class: "mono", testid: "run-id" }, this.id)),
      this.headerEl, this.metaEl,
      this.graphEl = h("section", { class: "card" }, h("h2", {}, "Graph"), this.dagEl),
      this.columnsEl = h("div", { class: "run-columns" },
        h("section", { class: "card" }, h("h2", {}, "Tasks"), this.tableEl),
        this.panelEl));
    // Notices sent between starting the run and this page listening are lost to it: read the
    // run once more shortly after the first read while it is still going.
    this.refresh().then(() => {
      if (this.run && !RUN_FINISHED.has(this.run.state)) this.refreshSoon();
    });
  }

  unmount() {
    this.refreshSoon.cancel();
    this.closeLog();
  }

  async refresh() {
    const seq = ++this.seq;
    this.fetching = true;
    this.buffer = [];
    try {
      const [run, flows] = await Promise.all([
        api(`/runs/${encodeURIComponent(this.id)}`),
        loadFlows().catch(() => []),
      ]);
      if (seq !== this.seq) return;
      this.run = run;
      this.title = `${run.flow} · ${shortId(run.id)}`;
      document.title = `${this.title} · evflow`;
      this.flowDef = flows.find((f) => f.name === run.flow) ?? null;
      if (!this.flowDef) {
        // A flow added since the list was cached: read the list again once.
        const fresh = await loadFlows(true).catch(() => []);
        if (seq !== this.seq) return;
        this.flowDef = fresh.find((f) => f.name === run.flow) ?? null;
      }
      this.fetching = false;
      const buffered = this.buffer;
      this.buffer = [];
      for (const [type, data] of buffered) this.apply(type, data);
      this.render();
      if (this.selected) this.syncLog();
    } catch (err) {
      if (seq !== this.seq) return;
      this.fetching = false;
      showError(err);
      if (!this.run) {
        this.graphEl.hidden = true;
        this.columnsEl.hidden = true;
        fill(this.headerEl, h("h1", {}, "Run ", h("span", { class: "mono" }, shortId(this.id))));
        fill(this.metaEl, empty(err.status === 404 ? "This run does not exist." : "Could not load this run.",
          err.status === 404 ? "It may belong to another store. Go back to the runs list." : err.message));
      }
    }
  }

  onStream(type, data) {
    const runId = type === "run" ? data.id : data.run_id;
    if (runId !== this.id) return;
    if (this.fetching || !this.run) {
      this.buffer.push([type, data]);
      return;
    }
    this.apply(type, data);
    this.scheduleRender();
  }

  apply(type, data) {
    const run = this.run;
    if (type === "run") {
      const wasFinished = RUN_FINISHED.has(run.state);
      Object.assign(run, { ...data, tasks: run.tasks, attempts: run.attempts });
      // Finished (or restarted by a retry): read the whole run for errors, results, attempts.
      if (RUN_FINISHED.has(run.state) !== wasFinished || RUN_FINISHED.has(run.state)) this.refreshSoon();
      return;
    }
    const tasks = run.tasks ?? (run.tasks = []);
    let t = tasks.find((x) => x.name === data.name);
    if (!t) {
      const m = /\[(\d+)\]$/.exec(data.name);
      t = { name: data.name, node: data.node ?? data.name, map_index: m ? Number(m[1]) : null };
      tasks.push(t);
    }
    const before = t.state;
    for (const key of ["node", "state", "attempt", "started_at", "ended_at", "error", "waiting"]) {
      if (key in data) t[key] = data[key];
    }
    // The run's own "running" notice may have come before this page listened: a run with a
    // running task is running.
    if (data.state === "running" && run.state === "queued") run.state = "running";
    if (t.started_at && t.ended_at) t.duration_s = t.ended_at - t.started_at;
    else t.duration_s = null;
    if (!TASK_FINISHED.has(t.state)) {
      t.traceback = null;
      t.result = undefined;
    }
    if (TASK_FINISHED.has(t.state) && before !== t.state) this.refreshSoon();
    if (this.selected === t.name && before !== t.state) this.syncLog();
  }

  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  render() {
    if (!this.run) return;
    this.graphEl.hidden = false;
    this.columnsEl.hidden = false;
    this.renderHeader();
    this.renderMeta();
    this.renderDag();
    this.renderTable();
    this.renderPanel();
  }

  renderHeader() {
    const run = this.run;
    const actions = [];
    if (run.state === "failed" || run.state === "cancelled") {
      actions.push(h("button", { type: "button", class: "btn primary big", testid: "retry-run",
        onclick: (e) => this.retry(e.currentTarget, {}, "↻ Retry from failed") }, "↻ Retry from failed"));
    }
    if (RUN_FINISHED.has(run.state)) {
      actions.push(h("button", { type: "button", class: "btn", testid: "rerun-run",
        title: "Run every task again",
        onclick: (e) => this.retry(e.currentTarget, { whole: true }, "Re-run all") }, "Re-run all"));
    }
    if (run.state === "queued" || run.state === "running") {
      actions.push(h("button", { type: "button", class: "btn danger", testid: "cancel-run",
        onclick: (e) => this.cancel(e.currentTarget) }, "Cancel run"));
    }
    fill(this.headerEl, 
      h("div", { class: "run-title" },
        h("h1", {}, h("a", { href: `#/runs?flow=${encodeURIComponent(run.flow)}`, testid: "run-flow" }, run.flow)),
        badge(run.state, "run-state")),
      h("div", { class: "actions" }, actions));
  }

  renderMeta() {
    const run = this.run;
    const item = (name, ...value) => h("div", { class: "meta-item" }, h("dt", {}, name), h("dd", {}, value));
    const wide = (name, ...value) => h("div", { class: "meta-item wide" }, h("dt", {}, name), h("dd", {}, value));
    const params = run.params && Object.keys(run.params).length ? run.params : null;
    fill(this.metaEl, 
      h("dl", { class: "meta" },
        wide("Trigger", triggerEl(run.trigger)),
        item("Created", timeEl(run.created_at)),
        item("Started", timeEl(run.started_at)),
        item("Ended", timeEl(run.ended_at)),
        item("Duration", durationEl(run)),
        run.flow_version ? item("Flow version", h("span", { class: "mono", title: run.flow_version }, String(run.flow_version).slice(0, 12))) : null,
        run.trace_id ? item("Trace", traceEl(run.trace_id)) : null,
        wide("Params", params ? h("code", { class: "mono params", testid: "run-params" }, compact(params, 400)) : h("span", { class: "muted" }, "none"))),
      run.waiting && run.state === "queued"
        ? h("p", { class: "note waiting", testid: "run-waiting" }, `Waiting: ${run.waiting}`) : null,
      run.error ? h("div", { class: "error-box", testid: "run-error" }, h("strong", {}, "Run error: "), run.error) : null);
  }

  /** Nodes of the DAG: the flow's tasks (with their edges), plus any task the run knows of. */
  graph() {
    const tasks = this.run.tasks ?? [];
    const nodes = new Map();
    if (this.flowDef) {
      for (const t of this.flowDef.tasks ?? []) {
        nodes.set(t.name, { name: t.name, upstream: t.upstream ?? [], mapped: !!t.mapped });
      }
    }
    for (const t of tasks) {
      const node = t.node ?? t.name;
      if (!nodes.has(node)) nodes.set(node, { name: node, upstream: [], mapped: t.map_index != null });
    }
    for (const n of nodes.values()) {
      const own = tasks.find((t) => t.name === n.name && (t.map_index === null || t.map_index === undefined));
      const children = tasks.filter((t) => (t.node ?? t.name) === n.name && t.map_index !== null && t.map_index !== undefined);
      n.task = own ?? null;
      n.children = children;
      if (children.length) n.mapped = true;
      n.state = own?.state ?? (children.length ? aggregate(children) : "pending");
    }
    return nodes;
  }

  renderDag() {
    const nodes = this.graph();
    if (nodes.size === 0) {
      fill(this.dagEl, empty("This run has no tasks to show.", null, "dag-empty"));
      return;
    }
    const { pos, width, height, NODE_W, NODE_H } = layout(nodes);
    const svg = s("svg", { class: "dag", testid: "dag", viewBox: `0 0 ${width} ${height}`,
      width, height, role: "img", "aria-label": "Task graph" });
    svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
    for (const n of nodes.values()) {
      for (const up of n.upstream) {
        const a = pos.get(up);
        const b = pos.get(n.name);
        if (!a || !b) continue;
        const x1 = a.x + NODE_W;
        const y1 = a.y + NODE_H / 2;
        const x2 = b.x - 2;
        const y2 = b.y + NODE_H / 2;
        const mid = (x1 + x2) / 2;
        const upState = nodes.get(up)?.state;
        svg.append(s("path", { class: ["edge", upState === "succeeded" ? "edge-done" : null],
          d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)" }));
      }
    }
    for (const n of nodes.values()) {
      const p = pos.get(n.name);
      const sub = n.mapped
        ? `${n.children.filter((c) => TASK_FINISHED.has(c.state) && c.state !== "cancelled").length}/${n.children.length} done`
        : null;
      const attempt = n.task?.attempt > 1 ? ` · try ${n.task.attempt}` : "";
      const g = s("g", { class: ["node", `state-${n.state}`, this.selected === n.name ? "selected" : null],
        transform: `translate(${p.x} ${p.y})`, testid: `dag-node-${n.name}`, "data-state": n.state,
        tabindex: 0, role: "button", "aria-label": `${n.name}: ${label(n.state)}`,
        onclick: () => this.select(n.name),
        onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.select(n.name); } } },
      s("title", {}, `${n.name} — ${label(n.state)}${sub ? ` (${sub})` : ""}`),
      n.mapped ? s("rect", { class: "node-stack", x: 5, y: 5, width: NODE_W, height: NODE_H, rx: 8 }) : null,
      s("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 8 }),
      s("rect", { class: "node-bar", width: 5, height: NODE_H, rx: 2 }),
      s("text", { class: "node-name", x: 16, y: 22 }, ellipsize(n.name, 22)),
      s("text", { class: "node-state", x: 16, y: 40, testid: `dag-node-state-${n.name}` },
        `${stateGlyph(n.state)} ${label(n.state)}${sub ? ` · ${sub}` : ""}${attempt}`));
      svg.append(g);
    }
    fill(this.dagEl, svg);
  }

  renderTable() {
    const tasks = [...(this.run.tasks ?? [])];
    if (tasks.length === 0) {
      fill(this.tableEl, empty(RUN_FINISHED.has(this.run.state) ? "No task ran." : "No task has started yet.",
        RUN_FINISHED.has(this.run.state) ? null : "Tasks appear here as soon as the run starts them.", "tasks-empty"));
      return;
    }
    const order = new Map();
    let i = 0;
    for (const name of this.graphOrder()) order.set(name, i++);
    tasks.sort((a, b) => (order.get(a.node ?? a.name) ?? 1e9) - (order.get(b.node ?? b.name) ?? 1e9)
      || (a.map_index ?? -1) - (b.map_index ?? -1));
    const rows = tasks.map((t) => {
      const child = t.map_index !== null && t.map_index !== undefined;
      return h("tr", {
        class: ["clickable", this.selected === t.name ? "selected" : null, child ? "child" : null],
        testid: `task-row-${t.name}`, "data-state": t.state, tabindex: 0,
        onclick: () => this.select(t.name),
        onkeydown: (e) => { if (e.key === "Enter") this.select(t.name); },
      },
      h("td", { class: "task-name" }, child ? h("span", { class: "muted" }, "↳ ") : null, t.name),
      h("td", {}, badge(t.state, "task-state"),
        t.waiting && WAITING_STATES.has(t.state) ? h("span", { class: "waiting-note", title: t.waiting }, t.waiting) : null),
      h("td", { class: "num" }, t.attempt ?? 0),
      h("td", { class: "col-started" }, timeEl(t.started_at)),
      h("td", { class: "num" }, durationEl(t)),
      h("td", { class: "error-cell", title: t.error ?? "" }, t.error ? compact(t.error, 70) : ""));
    });
    fill(this.tableEl, h("table", { class: "table", testid: "task-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "State"), h("th", { class: "num" }, "Attempts"),
        h("th", { class: "col-started" }, "Started"), h("th", { class: "num" }, "Duration"), h("th", {}, "Error"))),
      h("tbody", {}, rows)),
    h("p", { class: "hint" }, "Select a task to see its error, traceback and log."));
  }

  graphOrder() {
    return this.flowDef ? (this.flowDef.tasks ?? []).map((t) => t.name) : [];
  }

  select(name) {
    if (this.selected !== name) {
      this.closeLog();
      this.selected = name;
      this.log = { lines: [], seqs: new Set(), lastSeq: null, follower: null, el: null, syncing: false };
    }
    this.renderDag();
    this.renderTable();
    this.renderPanel(true);
    this.syncLog();
  }

  selectedTask() {
    const tasks = this.run?.tasks ?? [];
    return tasks.find((t) => t.name === this.selected) ?? null;
  }

  renderPanel(scrollIntoView = false) {
    this.columnsEl.classList.toggle("with-panel", !!this.selected);
    if (!this.selected) {
      this.panelEl.hidden = true;
      return;
    }
    const t = this.selectedTask() ?? { name: this.selected, state: "pending" };
    const attempts = (this.run.attempts ?? []).filter((a) => a.task === t.name);
    const logList = this.log.el ?? (this.log.el = h("div", { class: "log", testid: "task-log", "aria-live": "polite" }));
    this.renderLogLines();
    this.panelEl.hidden = false;
    fill(this.panelEl, 
      h("div", { class: "panel-head" },
        h("h2", {}, h("span", { class: "mono", testid: "task-panel-name" }, t.name)),
        badge(t.state, "task-panel-state"),
        h("button", { type: "button", class: "btn ghost close", "aria-label": "Close task details",
          onclick: () => { this.closeLog(); this.selected = null; this.render(); } }, "×")),
      h("dl", { class: "meta small" },
        h("div", { class: "meta-item" }, h("dt", {}, "Attempts"), h("dd", {}, String(t.attempt ?? 0))),
        h("div", { class: "meta-item" }, h("dt", {}, "Started"), h("dd", {}, timeEl(t.started_at))),
        h("div", { class: "meta-item" }, h("dt", {}, "Duration"), h("dd", {}, durationEl(t)))),
      RUN_FINISHED.has(this.run.state)
        ? h("p", {}, h("button", { type: "button", class: "btn", testid: "retry-from-task",
          title: "Run this task and everything downstream of it again, with fresh results",
          onclick: (e) => this.retry(e.currentTarget, { from_task: t.node ?? t.name }, "Clear from here") },
          "Clear from here")) : null,
      t.waiting && WAITING_STATES.has(t.state) ? h("p", { class: "note waiting" }, `Waiting: ${t.waiting}`) : null,
      t.error ? h("div", { class: "error-box", testid: "task-error" }, h("strong", {}, "Error: "), t.error) : null,
      t.traceback ? h("details", { class: "traceback", open: true },
        h("summary", {}, "Traceback"), h("pre", { testid: "task-traceback" }, t.traceback)) : null,
      t.result !== undefined && t.result !== null && t.state === "succeeded"
        ? h("details", { class: "result" }, h("summary", {}, "Result"), h("pre", { testid: "task-result" }, json(t.result))) : null,
      attempts.length > 1 ? h("details", { class: "attempts" }, h("summary", {}, `Attempts (${attempts.length})`),
        h("table", { class: "table compact" }, h("thead", {}, h("tr", {}, ["#", "State", "Started", "Duration", "Error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, attempts.map((a) => h("tr", {}, h("td", {}, a.attempt), h("td", {}, badge(a.state)),
            h("td", {}, timeEl(a.started_at)), h("td", {}, durationEl(a)),
            h("td", { class: "error-cell", title: a.error ?? "" }, a.error ? compact(a.error, 60) : "")))))) : null,
      h("h3", {}, "Log ", this.log.follower ? h("span", { class: "following", testid: "log-following" }, "● following") : null),
      logList);
    if (scrollIntoView) this.panelEl.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  renderLogLines() {
    const el = this.log.el;
    if (!el) return;
    if (this.log.lines.length === 0) {
      const t = this.selectedTask();
      fill(el, h("p", { class: "muted log-empty" },
        t && !TASK_FINISHED.has(t.state) ? "No log lines yet — they appear here as the task writes them." : "This task wrote no log lines."));
      return;
    }
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    const named = this.selectedIsMapped();
    fill(el, ...this.log.lines.map((l) => h("div", { class: ["log-line", `level-${String(l.level).toLowerCase()}`] },
      h("span", { class: "log-time" }, fmtTime(l.time)),
      named ? h("span", { class: "log-task" }, String(l.task ?? "").slice(this.selected.length)) : null,
      h("span", { class: "log-attempt", title: "attempt" }, `#${l.attempt ?? "?"}`),
      h("span", { class: "log-level" }, l.level),
      h("span", { class: "log-msg" }, l.message))));
    if (atBottom) el.scrollTop = el.scrollHeight;
  }

  addLogLines(lines) {
    let added = false;
    for (const l of lines) {
      if (l.seq !== undefined && this.log.seqs.has(l.seq)) continue;
      if (l.task !== undefined && !this.logMatches(l.task)) continue;
      if (l.seq !== undefined) {
        this.log.seqs.add(l.seq);
        if (this.log.lastSeq === null || l.seq > this.log.lastSeq) this.log.lastSeq = l.seq;
      }
      this.log.lines.push(l);
      added = true;
    }
    if (added) {
      this.log.lines.sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0));
      this.renderLogLines();
    }
  }

  /** A mapped task's log is its instances' logs: ``name[0]``, ``name[1]``, ... */
  selectedIsMapped() {
    return (this.run?.tasks ?? []).some((t) => t.node === this.selected && t.name !== this.selected);
  }

  logMatches(task) {
    return task === this.selected || (this.selectedIsMapped() && task.startsWith(`${this.selected}[`));
  }

  logQuery(follow) {
    const q = new URLSearchParams();
    if (!this.selectedIsMapped()) q.set("task", this.selected);
    if (follow) q.set("follow", "1");
    if (this.log.lastSeq !== null) q.set("after", String(this.log.lastSeq));
    return q;
  }

  /** Read the log lines not seen yet; follow the log (SSE) while the task is not finished. */
  async syncLog() {
    const log = this.log;
    if (!log || !this.selected) return;
    if (log.syncing) {
      log.again = true; // read once more when the current read is done
      return;
    }
    log.syncing = true;
    log.again = false;
    try {
      const data = await api(`/runs/${encodeURIComponent(this.id)}/logs?${this.logQuery(false)}`);
      if (this.log !== log) return;
      this.addLogLines(data.logs ?? []);
      if (data.last_seq !== undefined && data.last_seq !== null && (log.lastSeq === null || data.last_seq > log.lastSeq)) {
        log.lastSeq = data.last_seq; // lines of other tasks are skipped, not read again
      }
    } catch (err) {
      if (this.log === log) showError(err);
    } finally {
      log.syncing = false;
    }
    if (this.log !== log) return;
    if (log.again) {
      this.syncLog();
      return;
    }
    const t = this.selectedTask();
    const active = !RUN_FINISHED.has(this.run?.state) && !(t && TASK_FINISHED.has(t.state));
    if (active && !log.follower) this.followLog();
    else if (!active && log.follower) {
      // The task ended: stop following, and read once more for lines written at its very end.
      log.follower.close();
      log.follower = null;
      this.renderPanel();
      setTimeout(() => { if (this.log === log) this.syncLog(); }, 300);
    }
  }

  followLog() {
    const log = this.log;
    const es = new EventSource(`/api/runs/${encodeURIComponent(this.id)}/logs?${this.logQuery(true)}`);
    log.follower = es;
    const stop = () => {
      es.close();
      if (log.follower === es) {
        log.follower = null;
        if (this.log === log) this.renderPanel();
      }
    };
    es.addEventListener("log", (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      const lines = Array.isArray(data) ? data : Array.isArray(data.logs) ? data.logs : [data];
      if (this.log === log) this.addLogLines(lines);
    });
    es.addEventListener("end", () => {
      stop();
      if (this.log === log) this.syncLog();
    });
    es.addEventListener("error", () => {
      // Closed by the server or a network problem: stop, and let the next state change resume.
      stop();
    });
    this.renderPanel();
  }

  closeLog() {
    if (this.log?.follower) this.log.follower.close();
    this.log = null;
  }

  async retry(button, body, label) {
    button.disabled = true;
    button.textContent = "Retrying…";
    try {
      const res = await api(`/runs/${encodeURIComponent(this.id)}/retry`, { method: "POST", body });
      hideError();
      toast("Retry queued");
      if (res?.run_id && res.run_id !== this.id) {
        location.hash = `#/runs/${encodeURIComponent(res.run_id)}`;
        return;
      }
      this.refresh();
    } catch (err) {
      showError(err);
      button.disabled = false;
      button.textContent = label;
    }
  }

  async cancel(button) {
    if (button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = "Click again to cancel";
      setTimeout(() => {
        if (button.isConnected && button.dataset.confirm === "1") {
          button.dataset.confirm = "";
          button.textContent = "Cancel run";
        }
      }, 4000);
      return;
    }
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      await api(`/runs/${encodeURIComponent(this.id)}/cancel`, { method: "POST" });
      hideError();
      toast("Cancel requested");
      this.refresh();
    } catch (err) {
      showError(err);
      button.disabled = false;
      button.dataset.confirm = "";
      button.textContent = "Cancel run";
    }
  }
}




/** Layered layout: columns by topological depth, rows ordered to keep edges short. */
function layout(nodes) {
  const NODE_W = 190;
  const NODE_H = 52;
  const GAP_X = 64;
  const GAP_Y = 22;
  const PAD = 14;
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle cannot happen in a valid flow; never loop
    visiting.add(name);
    const n = nodes.get(name);
    let d = 0;
    for (const up of n?.upstream ?? []) if (nodes.has(up)) d = Math.max(d, depthOf(up) + 1);
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  const columns = [];
  for (const name of nodes.keys()) {
    const d = depthOf(name);
    (columns[d] ??= []).push(name);
  }
  const row = new Map();
  columns.forEach((col, d) => {
    if (d > 0) {
      const bary = (name) => {
        const ups = (nodes.get(name).upstream ?? []).filter((u) => row.has(u));
        return ups.length ? ups.reduce((acc, u) => acc + row.get(u), 0) / ups.length : 0;
      };
      col.sort((a, b) => bary(a) - bary(b));
    }
    col.forEach((name, i) => row.set(name, i));
  });
  const tallest = Math.max(...columns.map((c) => c?.length ?? 0));
  const pos = new Map();
  columns.forEach((col, d) => {
    const offset = ((tallest - col.length) * (NODE_H + GAP_Y)) / 2;
    col.forEach((name, i) => pos.set(name, {
      x: PAD + d * (NODE_W + GAP_X),
      y: PAD + offset + i * (NODE_H + GAP_Y),
    }));
  });
  return {
    pos,
    NODE_W,
    NODE_H,
    width: PAD * 2 + columns.length * NODE_W + (columns.length - 1) * GAP_X + 6,
    height: PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y + 6,
  };
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
    const params = f.params ?? { required: [], defaults: {}, open: false };
    const fields = [];
    const inputs = [];
    const field = (name, value, required) => {
      const input = h("input", { type: "text", name, value: value === undefined ? "" : formValue(value),
        required, placeholder: required ? "required" : "", spellcheck: "false", autocomplete: "off",
        testid: `param-${f.name}-${name}`, "aria-label": name });
      inputs.push({ name, input, required });
      fields.push(h("label", { class: "param" },
        h("span", { class: "param-name" }, name, required ? h("span", { class: "req", title: "required" }, " *") : null), input));
    };
    for (const name of params.required ?? []) field(name, undefined, true);
    for (const [name, value] of Object.entries(params.defaults ?? {})) {
      if (!(params.required ?? []).includes(name)) field(name, value, false);
    }
    const extra = params.open ? h("textarea", { name: "__extra", rows: 2, spellcheck: "false",
      placeholder: "{\"other\": \"value\"}", testid: `param-${f.name}-extra` }) : null;
    const formError = h("p", { class: "form-error", testid: `trigger-error-${f.name}`, hidden: true });
    const submit = h("button", { type: "submit", class: "btn primary", testid: `run-${f.name}` }, "▶ Run");
    const form = h("form", { class: "trigger-form", testid: `trigger-form-${f.name}`, novalidate: true },
      fields.length ? h("div", { class: "params" }, fields) : h("p", { class: "muted small" }, "This flow takes no parameters."),
      extra ? h("label", { class: "param wide" }, h("span", { class: "param-name" }, "More params (JSON object)"), extra) : null,
      h("div", { class: "form-foot" },
        submit,
        fields.length || extra ? h("span", { class: "hint" },
          "Values are JSON (42, true, [1, 2], \"text\"); anything else is sent as text.") : null),
      formError);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      formError.hidden = true;
      const body = {};
      try {
        for (const { name, input, required } of inputs) {
          const raw = input.value.trim();
          if (raw === "") {
            if (required) throw new Error(`“${name}” is required`);
            continue;
          }
          body[name] = parseValue(raw);
        }
        if (extra && extra.value.trim()) {
          let more;
          try {
            more = JSON.parse(extra.value);
          } catch (err) {
            throw new Error(`More params: not valid JSON (${err.message})`);
          }
          if (!more || typeof more !== "object" || Array.isArray(more)) throw new Error("More params must be a JSON object");
          Object.assign(body, more);
        }
      } catch (err) {
        formError.textContent = err.message;
        formError.hidden = false;
        return;
      }
      submit.disabled = true;
      submit.textContent = "Starting…";
      try {
        const res = await api(`/flows/${encodeURIComponent(f.name)}/runs`, { method: "POST", body: { params: body } });
        hideError();
        location.hash = `#/runs/${encodeURIComponent(res.run_id)}`;
      } catch (err) {
        formError.textContent = err.message;
        formError.hidden = false;
        showError(err);
      } finally {
        submit.disabled = false;
        submit.textContent = "▶ Run";
      }
    });
    const tasks = f.tasks ?? [];
    return h("article", { class: "card flow-card", testid: `flow-${f.name}`, "data-flow": f.name },
      h("div", { class: "flow-head" },
        h("div", {},
          h("h2", {}, f.name),
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
  }

  unmount() {
    clearInterval(this.timer);
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
    fill(this.body, h("table", { class: "table", testid: "events-table" },
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
};

function decisionsEl(decisions) {
  if (decisions.length === 0) return h("span", { class: "muted" }, "not decided yet");
  return h("ul", { class: "decisions" }, decisions.map((d) => {
    const data = d.data && typeof d.data === "object" ? d.data : {};
    const [text, tone] = DECISIONS[d.kind] ?? [label(d.kind), "idle"];
    const runId = data.run_id;
    const rest = Object.fromEntries(Object.entries(data).filter(([k]) => k !== "run_id"));
    if (d.actor) rest.by = d.actor;
    return h("li", { testid: "decision", "data-kind": d.kind },
      h("span", { class: ["pill", `tone-${tone}`], title: d.kind }, text),
      runId ? h("a", { href: `#/runs/${encodeURIComponent(runId)}`, class: "mono" }, `run ${shortId(runId)}`) : null,
      Object.keys(rest).length ? h("span", { class: "muted small", title: json(rest) }, compact(summarize(rest), 90)) : null);
  }));
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
    const bar = (name, inUse, capacity, waiting, testid) => {
      const pct = capacity ? Math.min(100, (inUse / capacity) * 100) : 0;
      return h("div", { class: "pool", testid },
        h("div", { class: "pool-head" }, h("strong", {}, name === "<global>" ? "All tasks (global limit)" : name),
          h("span", { class: "pool-numbers" }, `${inUse} / ${capacity ?? "∞"} in use`,
            waiting ? h("span", { class: "pill status-waiting" }, `${waiting} waiting`) : h("span", { class: "muted" }, " · none waiting"))),
        h("div", { class: ["bar", pct >= 100 ? "full" : pct >= 75 ? "high" : null], role: "progressbar",
          "aria-valuemin": 0, "aria-valuemax": capacity ?? 0, "aria-valuenow": inUse, "aria-label": `${name} usage` },
        barFill(pct)));
    };
    fill(this.body, h("h2", {}, "Pools"), pools.length
      ? h("div", { class: "pools", testid: "pools" }, pools.map((p) => bar(p.name, p.in_use ?? 0, p.capacity, p.waiting ?? 0, `pool-${p.name}`)))
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
