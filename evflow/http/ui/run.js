// The run page (#/runs/<id>): its graph (a mapped task is one node with counts), a timeline of
// its tries, its tasks, and a panel for one task: error, traceback with the user's frames
// first, and its log (per try, searchable, following live). Stays live through /api/stream.

import {
  RUN_FINISHED, TASK_FINISHED, WAITING_STATES, h, s, fill, appendAll, api, empty, showError,
  hideError, toast, label, badge, shortId, fmtTime, timeEl, durationEl, debounce, json, compact,
  triggerEl, traceEl, loadFlows, stateGlyph, ellipsize,
} from "./core.js";
import { layout } from "./dag.js";
import { timelineEl } from "./timeline.js";
import { tracebackEl } from "./traceback.js";

const INSTANCE_PAGE = 50;

function countsText(counts) {
  return Object.entries(counts ?? {}).sort((a, b) => b[1] - a[1])
    .map(([st, n]) => `${n.toLocaleString("en")} ${label(st)}`).join(" · ");
}

export class RunView {
  constructor(id, query = new URLSearchParams()) {
    this.id = id;
    this.initialTask = query.get("task");
    this.initialTry = Number(query.get("try")) || null;
    this.initialState = query.get("state") || "";
    this.timeline = null;
    this.instances = null; // the page of a selected mapped task's instances
    this.instance = null; // a selected instance's record
    this.countsTimer = null;
    this.title = `Run ${shortId(id)}`;
    this.run = null;
    this.flowDef = null;
    this.selected = null;
    this.fetching = false;
    this.readAgain = false;
    this.buffer = [];
    this.log = null;
    this.renderQueued = false;
    this.refreshSoon = debounce(() => this.refresh(), 250);
    this.resize = debounce(() => this.renderTimeline(), 150);
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
      this.timelineCard = h("section", { class: "card" }, h("h2", {}, "Timeline"),
        h("p", { class: "hint" }, "Where the time went: hatched is waiting (for a pool, a limit or a retry), solid is running, one bar per try."),
        this.timelineEl = h("div", { class: "timeline-scroll", testid: "timeline-container" })),
      this.columnsEl = h("div", { class: "run-columns" },
        h("section", { class: "card" }, h("h2", {}, "Tasks"), this.tableEl),
        this.panelEl));
    // Notices sent between starting the run and this page listening are lost to it: read the
    // run once more shortly after the first read while it is still going.
    this.refresh().then(() => {
      if (this.run && !RUN_FINISHED.has(this.run.state)) this.refreshSoon();
    });
    // While the run runs, its open bars grow and its "now" line moves.
    this.ticker = setInterval(() => {
      if (this.run && !RUN_FINISHED.has(this.run.state)) this.renderTimeline();
    }, 1000);
    window.addEventListener("resize", this.resize);
  }

  unmount() {
    this.refreshSoon.cancel();
    this.resize.cancel();
    clearInterval(this.ticker);
    clearTimeout(this.countsTimer);
    window.removeEventListener("resize", this.resize);
    this.closeLog();
  }

  /** Read the timeline again, at most every half second however many tasks change. */
  timelineSoon() {
    if (this.countsTimer) return;
    this.countsTimer = setTimeout(() => {
      this.countsTimer = null;
      this.refresh();
    }, 500);
  }

  /** Read the run and draw it. One read at a time: a refresh asked for meanwhile (the live
   * stream opening just after the page, a task ending) reads again once this one is drawn, so
   * the first read is never thrown away for a later one. */
  async refresh() {
    if (this.fetching) {
      this.readAgain = true;
      return;
    }
    this.readAgain = false;
    this.fetching = true;
    try {
      await this.read();
    } finally {
      this.fetching = false;
      if (this.readAgain) this.refresh();
    }
  }

  /** One read: notices from the stream meanwhile are buffered and applied on top of it. */
  async read() {
    this.buffer = [];
    try {
      const id = encodeURIComponent(this.id);
      const [run, timeline, flows] = await Promise.all([
        api(`/runs/${id}/overview`),
        api(`/runs/${id}/timeline`).catch(() => null),
        loadFlows().catch(() => []),
      ]);
      this.run = run;
      if (timeline) {
        this.timeline = timeline;
        this.skew = timeline.now - Date.now() / 1000; // the server's clock, for open bars
      }
      this.title = `${run.flow} · ${shortId(run.id)}`;
      document.title = `${this.title} · evflow`;
      this.flowDef = flows.find((f) => f.name === run.flow) ?? null;
      if (!this.flowDef) {
        // A flow added since the list was cached: read the list again once.
        const fresh = await loadFlows(true).catch(() => []);
        this.flowDef = fresh.find((f) => f.name === run.flow) ?? null;
      }
      const buffered = this.buffer;
      this.buffer = [];
      for (const [type, data] of buffered) this.apply(type, data);
      this.render();
      if (this.initialTask) {
        // Opened on one task's try (from the flow grid): whichever read lands first opens it.
        const name = this.initialTask;
        this.initialTask = null;
        this.select(name, this.initialTry);
        return;
      }
      if (this.selected) {
        if (this.isMapped(this.selected)) this.loadInstances();
        else if (this.instance) this.loadInstance();
        this.syncLog();
      }
    } catch (err) {
      showError(err);
      if (!this.run) {
        this.graphEl.hidden = true;
        this.timelineCard.hidden = true;
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
    if (data.state === "running" && run.state === "queued") run.state = "running";
    if (data.node && data.node !== data.name) {
      // One instance of a mapped task: its counts are read again (throttled), never listed here.
      if (this.instance?.name === data.name) Object.assign(this.instance, data);
      this.timelineSoon();
      return;
    }
    this.timelineSoon();
    const tasks = run.tasks ?? (run.tasks = []);
    let t = tasks.find((x) => x.name === data.name);
    if (!t) {
      t = { name: data.name, node: data.node ?? data.name, map_index: null };
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
    this.renderTimeline();
    this.renderTable();
    this.renderPanel();
  }

  renderTimeline() {
    if (!this.timeline || !this.timelineEl) return;
    this.timelineCard.hidden = false;
    if ((this.timeline.rows ?? []).length === 0) {
      fill(this.timelineEl, h("p", { class: "muted", testid: "timeline-empty" }, "No task has been queued yet."));
      return;
    }
    const width = Math.max(300, this.timelineEl.clientWidth || 900);
    fill(this.timelineEl, timelineEl(this.timeline, {
      now: Date.now() / 1000 + (this.skew ?? 0),
      width,
      selected: this.selected,
      onSelect: (name) => this.select(name),
    }));
  }

  /** Counts by state of a mapped task's instances (null for a task that is not mapped). */
  mappedCell(name) {
    return this.run?.mapped?.[name] ?? null;
  }

  isMapped(name) {
    return !!this.mappedCell(name);
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
        h("h1", {}, h("a", { href: `#/flows/${encodeURIComponent(run.flow)}`, testid: "run-flow",
          title: "The flow's page: its last runs, durations and triggers" }, run.flow)),
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
    const mapped = this.run.mapped ?? {};
    const nodes = new Map();
    if (this.flowDef) {
      for (const t of this.flowDef.tasks ?? []) {
        nodes.set(t.name, { name: t.name, upstream: t.upstream ?? [], mapped: !!t.mapped });
      }
    }
    for (const name of [...tasks.map((t) => t.node ?? t.name), ...Object.keys(mapped)]) {
      if (!nodes.has(name)) nodes.set(name, { name, upstream: [], mapped: name in mapped });
    }
    for (const n of nodes.values()) {
      const own = tasks.find((t) => t.name === n.name) ?? null;
      const cell = mapped[n.name] ?? null;
      n.task = own;
      n.cell = cell;
      if (cell) n.mapped = true;
      n.state = cell?.state ?? own?.state ?? "pending";
    }
    return nodes;
  }

  renderDag() {
    const nodes = this.graph();
    if (nodes.size === 0) {
      fill(this.dagEl, empty("This run has no tasks to show.", null, "dag-empty"));
      return;
    }
    const { pos, edges, width, height, NODE_W, NODE_H } = layout(nodes);
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
        const upState = nodes.get(up)?.state;
        const points = edges.get(`${up}->${n.name}`) ?? [];
        let d;
        if (points.length >= 2) {
          // dagre's route, smoothed: straight ends, quadratic curves through the bends.
          d = `M ${points[0].x} ${points[0].y}`;
          for (let k = 1; k < points.length - 1; k++) {
            const p = points[k];
            const q = points[k + 1];
            d += ` Q ${p.x} ${p.y} ${(p.x + q.x) / 2} ${(p.y + q.y) / 2}`;
          }
          const last = points[points.length - 1];
          d += ` L ${last.x - 2} ${last.y}`;
        } else {
          const x1 = a.x + NODE_W;
          const y1 = a.y + NODE_H / 2;
          const x2 = b.x - 2;
          const y2 = b.y + NODE_H / 2;
          const mid = (x1 + x2) / 2;
          d = `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`;
        }
        svg.append(s("path", { class: ["edge", upState === "succeeded" ? "edge-done" : null], d, "marker-end": "url(#arrow)" }));
      }
    }
    for (const n of nodes.values()) {
      const p = pos.get(n.name);
      const counts = n.cell?.counts ?? {};
      const done = Object.entries(counts).filter(([st]) => TASK_FINISHED.has(st) && st !== "cancelled")
        .reduce((acc, [, k]) => acc + k, 0);
      const bad = (counts.failed ?? 0) + (counts.upstream_failed ?? 0);
      const sub = n.cell
        ? `${done.toLocaleString("en")}/${n.cell.total.toLocaleString("en")}${bad ? ` · ${bad.toLocaleString("en")} ✕` : ""}`
        : n.mapped ? "mapped" : null;
      const full = `${stateGlyph(n.state)} ${label(n.state)}${sub ? ` · ${sub}` : ""}`;
      // The box holds about 27 characters of state text: drop the state's name before the counts.
      const stateText = full.length <= 27 ? full : ellipsize(`${stateGlyph(n.state)} ${sub ?? label(n.state)}`, 27);
      const attempt = n.task?.attempt > 1 ? ` · try ${n.task.attempt}` : "";
      const g = s("g", { class: ["node", `state-${n.state}`, this.selected === n.name ? "selected" : null],
        transform: `translate(${p.x} ${p.y})`, testid: `dag-node-${n.name}`, "data-state": n.state,
        tabindex: 0, role: "button", "aria-label": `${n.name}: ${label(n.state)}`,
        onclick: () => this.select(n.name),
        onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); this.select(n.name); } } },
      s("title", {}, `${n.name} — ${label(n.state)}${n.cell ? ` (${Object.entries(counts).map(([st, k]) => `${k} ${label(st)}`).join(", ")})` : ""}`),
      n.mapped ? s("rect", { class: "node-stack", x: 5, y: 5, width: NODE_W, height: NODE_H, rx: 8 }) : null,
      s("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 8 }),
      s("rect", { class: "node-bar", width: 5, height: NODE_H, rx: 2 }),
      s("text", { class: "node-name", x: 16, y: 22 }, ellipsize(n.name, 22)),
      s("text", { class: "node-state", x: 16, y: 40, testid: `dag-node-state-${n.name}` },
        `${stateText}${n.cell ? "" : attempt}`));
      svg.append(g);
    }
    fill(this.dagEl, svg);
  }

  renderTable() {
    const tasks = [...(this.run.tasks ?? [])];
    const mapped = this.run.mapped ?? {};
    for (const name of Object.keys(mapped)) {
      if (!tasks.some((t) => t.name === name)) tasks.push({ name, node: name, state: mapped[name].state, map_index: null });
    }
    if (tasks.length === 0) {
      fill(this.tableEl, empty(RUN_FINISHED.has(this.run.state) ? "No task ran." : "No task has started yet.",
        RUN_FINISHED.has(this.run.state) ? null : "Tasks appear here as soon as the run starts them.", "tasks-empty"));
      return;
    }
    const order = new Map();
    let i = 0;
    for (const name of this.graphOrder()) order.set(name, i++);
    tasks.sort((a, b) => (order.get(a.node ?? a.name) ?? 1e9) - (order.get(b.node ?? b.name) ?? 1e9));
    const rows = tasks.map((t) => {
      const cell = mapped[t.name];
      const state = cell?.state ?? t.state;
      const selected = this.selected === t.name || (this.instance && this.instance.node === t.name);
      return h("tr", {
        class: ["clickable", selected ? "selected" : null],
        testid: `task-row-${t.name}`, "data-state": state, tabindex: 0,
        onclick: () => this.select(t.name),
        onkeydown: (e) => { if (e.key === "Enter") this.select(t.name); },
      },
      h("td", { class: "task-name" }, t.name,
        cell ? h("span", { class: "chip-tag", testid: `task-count-${t.name}` }, ` ×${cell.total.toLocaleString("en")}`) : null),
      h("td", {}, badge(state, "task-state"),
        !cell && t.waiting && WAITING_STATES.has(t.state) ? h("span", { class: "waiting-note", title: t.waiting }, t.waiting) : null,
        cell ? h("span", { class: "muted small" }, ` ${countsText(cell.counts)}`) : null),
      h("td", { class: "num" }, cell ? cell.attempt : t.attempt ?? 0),
      h("td", { class: "col-started" }, timeEl(t.started_at)),
      h("td", { class: "num" }, cell ? "" : durationEl(t)),
      h("td", { class: "error-cell", title: t.error ?? "" }, t.error && !cell ? compact(t.error, 70) : ""));
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

  /** Open ``name``'s panel (a task, a mapped task or one instance), its log on try ``tryN``. */
  select(name, tryN = null, instance = null) {
    if (this.selected !== name) {
      this.closeLog();
      this.selected = name;
      this.instance = instance;
      this.instances = null;
      if (this.initialState && this.isMapped(name)) {
        this.instances = { state: this.initialState, offset: 0 }; // opened on its failures
        this.initialState = "";
      }
      this.log = { lines: [], seqs: new Set(), lastSeq: null, follower: null, el: null, syncing: false,
        search: "", attempt: tryN, wide: false };
    } else if (tryN) {
      this.log.attempt = tryN;
    }
    if (this.isMapped(name)) this.loadInstances();
    else if (!this.selectedTask() && /\[\d+\]$/.test(name)) this.loadInstance();
    this.renderDag();
    this.renderTimeline();
    this.renderTable();
    this.renderPanel(true);
    this.syncLog();
  }

  selectedTask() {
    if (this.instance && this.instance.name === this.selected) return this.instance;
    const tasks = this.run?.tasks ?? [];
    return tasks.find((t) => t.name === this.selected) ?? null;
  }

  /** One page of the selected mapped task's instances (only that page is ever rendered). */
  async loadInstances(offset = this.instances?.offset ?? 0, state = this.instances?.state ?? "") {
    const name = this.selected;
    const q = new URLSearchParams({ node: name, limit: String(INSTANCE_PAGE), offset: String(offset) });
    if (state) q.set("state", state);
    try {
      const data = await api(`/runs/${encodeURIComponent(this.id)}/tasks?${q}`);
      if (this.selected !== name) return;
      this.instances = { ...data, state };
      this.renderPanel();
    } catch (err) {
      showError(err);
    }
  }

  /** The selected instance's record (its error and traceback), read on its own. */
  async loadInstance() {
    const name = this.selected;
    const node = name.replace(/\[\d+\]$/, "");
    const index = Number(/\[(\d+)\]$/.exec(name)?.[1] ?? 0);
    try {
      const q = new URLSearchParams({ node, limit: "1", offset: String(index) });
      const data = await api(`/runs/${encodeURIComponent(this.id)}/tasks?${q}`);
      const found = (data.tasks ?? []).find((t) => t.name === name);
      if (this.selected !== name || !found) return;
      this.instance = found;
      this.renderPanel();
      this.syncLog();
    } catch (err) {
      showError(err);
    }
  }

  renderPanel(scrollIntoView = false) {
    this.columnsEl.classList.toggle("with-panel", !!this.selected);
    this.columnsEl.classList.toggle("log-wide", !!this.log?.wide);
    if (!this.selected) {
      this.panelEl.hidden = true;
      return;
    }
    this.panelEl.hidden = false;
    if (this.isMapped(this.selected)) {
      this.renderMappedPanel();
    } else {
      this.renderTaskPanel();
    }
    if (scrollIntoView) this.panelEl.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  closeButton() {
    return h("button", { type: "button", class: "btn ghost close", "aria-label": "Close task details",
      onclick: () => { this.closeLog(); this.selected = null; this.instance = null; this.render(); } }, "×");
  }

  renderMappedPanel() {
    const name = this.selected;
    const cell = this.mappedCell(name);
    const page = this.instances;
    const filter = page?.state ?? "";
    const pills = Object.entries(cell.counts ?? {}).sort((a, b) => b[1] - a[1]).map(([st, k]) =>
      h("button", { type: "button", class: ["pill-btn", filter === st ? "active" : null], testid: `instances-filter-${st}`,
        onclick: () => this.loadInstances(0, filter === st ? "" : st) }, badge(st), ` ${k.toLocaleString("en")}`));
    let list = h("p", { class: "muted" }, "Loading instances…");
    if (page) {
      const from = page.total ? page.offset + 1 : 0;
      const to = page.offset + (page.tasks ?? []).length;
      list = h("div", {},
        h("table", { class: "table compact instances", testid: "instances-table" },
          h("thead", {}, h("tr", {}, ["#", "State", "Tries", "Duration", "Error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, (page.tasks ?? []).map((t) => h("tr", { class: "clickable", testid: `instance-row-${t.name}`,
            "data-state": t.state, tabindex: 0,
            onclick: () => this.select(t.name, null, t),
            onkeydown: (e) => { if (e.key === "Enter") this.select(t.name, null, t); } },
          h("td", { class: "mono" }, t.map_index ?? t.name), h("td", {}, badge(t.state)), h("td", { class: "num" }, t.attempt ?? 0),
          h("td", { class: "num" }, durationEl(t)),
          h("td", { class: "error-cell", title: t.error ?? "" }, t.error ? compact(t.error, 50) : ""))))),
        h("div", { class: "pager small" },
          h("span", { class: "muted small", testid: "instances-range" },
            `${from.toLocaleString("en")}–${to.toLocaleString("en")} of ${page.total.toLocaleString("en")}`),
          h("button", { type: "button", class: "btn", testid: "instances-prev", disabled: page.offset === 0,
            onclick: () => this.loadInstances(Math.max(0, page.offset - INSTANCE_PAGE), filter) }, "←"),
          h("button", { type: "button", class: "btn", testid: "instances-next", disabled: to >= page.total,
            onclick: () => this.loadInstances(page.offset + INSTANCE_PAGE, filter) }, "→")));
    }
    fill(this.panelEl,
      h("div", { class: "panel-head" },
        h("h2", {}, h("span", { class: "mono", testid: "task-panel-name" }, name)),
        badge(cell.state, "task-panel-state"), this.closeButton()),
      h("p", { class: "muted small" }, `A mapped task: ${cell.total.toLocaleString("en")} instances. Select a state to list only those, and an instance for its error and log.`),
      h("div", { class: "mapped-counts", testid: "mapped-counts" }, pills),
      list,
      RUN_FINISHED.has(this.run.state)
        ? h("p", {}, h("button", { type: "button", class: "btn", testid: "retry-from-task",
          title: "Run this task and everything downstream of it again, with fresh results",
          onclick: (e) => this.retry(e.currentTarget, { from_task: name }, "Clear from here") }, "Clear from here")) : null);
  }

  renderTaskPanel() {
    const t = this.selectedTask() ?? { name: this.selected, state: "pending" };
    const attempts = (this.run.attempts ?? []).filter((a) => a.task === t.name);
    const logList = this.log.el ?? (this.log.el = h("div", { class: "log", testid: "task-log", "aria-live": "polite" }));
    this.renderLogLines();
    const node = t.node && t.node !== t.name ? t.node : null;
    const tries = Math.max(t.attempt ?? 0, ...attempts.map((a) => a.attempt));
    // The log's tools live as long as the log: a panel redrawn by a live update must not take
    // the search box (and what is being typed into it) or the chosen try away from the user.
    const search = this.log.searchEl ?? (this.log.searchEl = h("input", { type: "search",
      placeholder: "Search the log", value: this.log.search, testid: "log-search", "aria-label": "Search the log",
      oninput: (e) => { this.log.search = e.currentTarget.value; this.renderLogLines(); } }));
    const trySelect = this.log.trySelectEl ?? (this.log.trySelectEl = h("select", { testid: "log-attempt",
      "aria-label": "Which try's log",
      onchange: (e) => { this.log.attempt = Number(e.currentTarget.value) || null; this.renderLogLines(); } }));
    if (trySelect.options.length !== tries + 1) {
      fill(trySelect, h("option", { value: "" }, "All tries"),
        ...Array.from({ length: tries }, (_, k) => h("option", { value: String(k + 1) }, `Try ${k + 1}`)));
    }
    trySelect.value = this.log.attempt ? String(this.log.attempt) : "";
    const focused = [search, trySelect].find((el) => el === document.activeElement);
    const caret = focused === search ? [search.selectionStart, search.selectionEnd] : null;
    fill(this.panelEl,
      h("div", { class: "panel-head" },
        node ? h("button", { type: "button", class: "btn ghost", testid: "back-to-mapped",
          onclick: () => this.select(node) }, `← ${node}`) : null,
        h("h2", {}, h("span", { class: "mono", testid: "task-panel-name" }, t.name)),
        badge(t.state, "task-panel-state"), this.closeButton()),
      h("dl", { class: "meta small" },
        h("div", { class: "meta-item" }, h("dt", {}, "Attempts"), h("dd", {}, String(t.attempt ?? 0))),
        h("div", { class: "meta-item" }, h("dt", {}, "Started"), h("dd", {}, timeEl(t.started_at))),
        h("div", { class: "meta-item" }, h("dt", {}, "Duration"), h("dd", {}, durationEl(t)))),
      RUN_FINISHED.has(this.run.state) && !node
        ? h("p", {}, h("button", { type: "button", class: "btn", testid: "retry-from-task",
          title: "Run this task and everything downstream of it again, with fresh results",
          onclick: (e) => this.retry(e.currentTarget, { from_task: t.node ?? t.name }, "Clear from here") },
          "Clear from here")) : null,
      t.waiting && WAITING_STATES.has(t.state) ? h("p", { class: "note waiting" }, `Waiting: ${t.waiting}`) : null,
      t.error ? h("div", { class: "error-box", testid: "task-error" }, h("strong", {}, "Error: "), t.error) : null,
      t.traceback ? tracebackEl(t.traceback) : null,
      t.result !== undefined && t.result !== null && t.state === "succeeded"
        ? h("details", { class: "result" }, h("summary", {}, "Result"), h("pre", { testid: "task-result" }, json(t.result))) : null,
      t.result_bytes && t.state === "succeeded"
        ? h("p", { class: "muted small", testid: "task-result-size" },
          `Its result is ${t.result_bytes.toLocaleString("en")} bytes: too large to show here (GET /api/runs/${this.id} has it).`) : null,
      attempts.length > 1 ? h("details", { class: "attempts" }, h("summary", {}, `Attempts (${attempts.length})`),
        h("table", { class: "table compact" }, h("thead", {}, h("tr", {}, ["#", "State", "Started", "Duration", "Error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, attempts.map((a) => h("tr", {}, h("td", {}, a.attempt), h("td", {}, badge(a.state)),
            h("td", {}, timeEl(a.started_at)), h("td", {}, durationEl(a)),
            h("td", { class: "error-cell", title: a.error ?? "" }, a.error ? compact(a.error, 60) : "")))))) : null,
      h("h3", {}, "Log ", this.log.follower ? h("span", { class: "following", testid: "log-following" }, "● following") : null),
      h("div", { class: "log-tools" }, search, trySelect,
        h("button", { type: "button", class: "btn ghost", testid: "log-wide",
          title: "A larger log panel", onclick: () => { this.log.wide = !this.log.wide; this.renderPanel(); } },
        this.log.wide ? "Narrow" : "Widen"),
        this.logCount = h("span", { class: "muted small", testid: "log-count" })),
      logList);
    this.panelEl.classList.toggle("wide-log", !!this.log.wide);
    if (focused) {
      focused.focus();
      if (caret) search.setSelectionRange(caret[0], caret[1]);
    }
    this.renderLogLines();
  }

  renderLogLines() {
    const el = this.log?.el;
    if (!el) return;
    if (this.log.lines.length === 0) {
      const t = this.selectedTask();
      fill(el, h("p", { class: "muted log-empty" },
        t && !TASK_FINISHED.has(t.state) ? "No log lines yet — they appear here as the task writes them." : "This task wrote no log lines."));
      if (this.logCount) this.logCount.textContent = "";
      return;
    }
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    const needle = (this.log.search ?? "").trim().toLowerCase();
    const shown = this.log.lines.filter((l) => (!this.log.attempt || l.attempt === this.log.attempt)
      && (!needle || String(l.message).toLowerCase().includes(needle) || String(l.level).toLowerCase() === needle));
    const mark = (text) => {
      if (!needle) return text;
      const out = [];
      const lower = text.toLowerCase();
      let at = 0;
      for (let k = lower.indexOf(needle); k >= 0; k = lower.indexOf(needle, at)) {
        out.push(text.slice(at, k), h("mark", {}, text.slice(k, k + needle.length)));
        at = k + needle.length;
      }
      out.push(text.slice(at));
      return out;
    };
    fill(el, ...shown.map((l) => h("div", { class: ["log-line", `level-${String(l.level).toLowerCase()}`] },
      h("span", { class: "log-time" }, fmtTime(l.time)),
      h("span", { class: "log-attempt", title: "try" }, `#${l.attempt ?? "?"}`),
      h("span", { class: "log-level" }, l.level),
      h("span", { class: "log-msg" }, mark(String(l.message))))));
    if (shown.length === 0) el.append(h("p", { class: "muted log-empty" }, "No line matches."));
    if (this.logCount) {
      this.logCount.textContent = shown.length === this.log.lines.length ? `${shown.length} lines`
        : `${shown.length} of ${this.log.lines.length} lines`;
    }
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

  logMatches(task) {
    return task === this.selected;
  }

  logQuery(follow) {
    const q = new URLSearchParams();
    q.set("task", this.selected);
    if (follow) q.set("follow", "1");
    if (this.log.lastSeq !== null) q.set("after", String(this.log.lastSeq));
    return q;
  }

  /** Read the log lines not seen yet; follow the log (SSE) while the task is not finished. */
  async syncLog() {
    const log = this.log;
    if (!log || !this.selected || this.isMapped(this.selected)) return;
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
