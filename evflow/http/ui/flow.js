// The flow page (#/flows/<name>): the grid of its last runs × its tasks, a duration chart of
// those runs, what starts it (schedule with next fire times, rules) and its trigger form.

import {
  h, fill, appendAll, api, empty, showError, hideError, label, shortId,
  fmtTime, fmtDuration, timeEl, debounce, json, compact, formValue, parseValue, loadFlows,
} from "./core.js";
import { durationChart } from "./duration.js";

const GRID_RUNS = 25;

/** The form that starts a run of ``f`` (its params as fields); opens the new run's page. */
export function triggerForm(f) {
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
  return form;
}

function countsText(counts) {
  return Object.entries(counts ?? {}).sort((a, b) => b[1] - a[1])
    .map(([st, n]) => `${n.toLocaleString("en")} ${label(st)}`).join(", ");
}

export class FlowView {
  constructor(name) {
    this.name = name;
    this.title = name;
    this.grid = null;
    this.chart = null;
    this.refreshSoon = debounce(() => this.refresh(), 400);
  }

  mount(root) {
    this.headEl = h("div", { class: "page-header" }, h("h1", {}, this.name));
    this.gridEl = h("div", { class: "grid-scroll", testid: "flow-grid-container" }, h("p", { class: "muted" }, "Loading…"));
    this.chartEl = h("div", { class: "chart-scroll", testid: "duration-chart-container" });
    this.triggersEl = h("div", { class: "flow-triggers" });
    this.formEl = h("div", {});
    appendAll(root,
      h("nav", { class: "crumbs" }, h("a", { href: "#/flows" }, "Flows"), h("span", {}, "/"),
        h("span", { class: "mono", testid: "flow-name" }, this.name)),
      this.headEl,
      h("div", { class: "flow-columns" },
        h("section", { class: "card flow-grid-card" },
          h("h2", {}, "Last runs"),
          h("p", { class: "hint" }, "Runs across (newest on the right), tasks down. Select a cell to open that task's try."),
          this.gridEl),
        h("section", { class: "card" }, h("h2", {}, "Duration"), this.chartEl)),
      h("div", { class: "flow-columns" },
        h("section", { class: "card" }, h("h2", {}, "What starts it"), this.triggersEl),
        h("section", { class: "card" }, h("h2", {}, "Run it now"), this.formEl)));
    this.refresh();
  }

  unmount() {
    this.refreshSoon.cancel();
    this.chart?.destroy();
  }

  onStream(type, data) {
    if ((type === "run" && data.flow === this.name) || (type === "task" && data.flow === this.name)) {
      this.refreshSoon();
    }
  }

  async refresh() {
    const name = encodeURIComponent(this.name);
    try {
      const [grid, triggers, flows] = await Promise.all([
        api(`/flows/${name}/grid?runs=${GRID_RUNS}`),
        api(`/flows/${name}/triggers?fires=5`),
        loadFlows(),
      ]);
      this.grid = grid;
      const f = flows.find((x) => x.name === this.name) ?? (await loadFlows(true)).find((x) => x.name === this.name);
      this.renderHead(f);
      this.renderGrid(grid);
      this.renderChart(grid);
      this.renderTriggers(triggers);
      if (f && !this.formEl.firstChild) fill(this.formEl, triggerForm(f));
    } catch (err) {
      showError(err);
      if (!this.grid) fill(this.gridEl, empty(err.status === 404 ? "There is no such flow." : "Could not load this flow.", err.message));
    }
  }

  renderHead(f) {
    fill(this.headEl,
      h("div", {}, h("h1", {}, this.name), f?.description ? h("p", { class: "subtitle" }, f.description) : null),
      h("div", { class: "actions" },
        h("a", { class: "btn", href: `#/runs?flow=${encodeURIComponent(this.name)}` }, "All runs →")));
  }

  renderGrid(grid) {
    const runs = [...(grid.runs ?? [])].reverse(); // oldest on the left, like a timeline
    if (runs.length === 0) {
      fill(this.gridEl, empty("No runs of this flow yet.", "Start one with the form below; it appears here live.", "grid-empty"));
      return;
    }
    const head = h("tr", {}, h("th", { class: "grid-task" }, "Task"),
      runs.map((r) => h("th", { class: "grid-run" },
        h("a", { href: `#/runs/${encodeURIComponent(r.id)}`, class: ["grid-run-head", `state-${r.state}`],
          title: `${shortId(r.id)} · ${label(r.state)} · ${fmtTime(r.created_at)}`, testid: `grid-run-${r.id}`,
          "data-state": r.state, "aria-label": `run ${shortId(r.id)}: ${label(r.state)}` }))));
    const rows = (grid.tasks ?? []).map((t) => {
      const counts = {};
      for (const r of runs) {
        const c = r.cells?.[t.name];
        if (c && c.total > 1) counts.max = Math.max(counts.max ?? 0, c.total);
      }
      const many = t.mapped || counts.max > 1;
      return h("tr", { testid: `grid-row-${t.name}` },
        h("th", { class: "grid-task", scope: "row", title: t.name },
          h("span", { class: "mono" }, t.name),
          many ? h("span", { class: "chip-tag", testid: `grid-count-${t.name}` },
            counts.max ? `×${counts.max.toLocaleString("en")}` : "mapped") : null),
        runs.map((r) => {
          const c = r.cells?.[t.name];
          const state = c?.state ?? "none";
          const tip = c
            ? `${t.name} in run ${shortId(r.id)}: ${c.total > 1 ? countsText(c.counts) : label(state)}${c.attempt > 1 ? ` · ${c.attempt} tries` : ""}`
            : `${t.name} did not run in ${shortId(r.id)}`;
          // The cell opens that task's try (its last), or a mapped task's failed instances.
          const q = new URLSearchParams({ task: t.name });
          if (c?.mapped && (c.counts?.failed ?? 0) > 0) q.set("state", "failed");
          else if (c && !c.mapped && c.attempt > 0) q.set("try", String(c.attempt));
          const href = `#/runs/${encodeURIComponent(r.id)}?${q}`;
          return h("td", { class: "grid-cell-td" }, c
            ? h("a", { href, class: ["grid-cell", `state-${state}`, c.total > 1 ? "many" : null], title: tip,
              "aria-label": tip, testid: `grid-cell-${t.name}-${r.id}`, "data-state": state,
              "data-count": c.total }, c.attempt > 1 ? h("span", { class: "grid-tries", "aria-hidden": "true" }, String(c.attempt)) : null)
            : h("span", { class: "grid-cell state-none", title: tip, testid: `grid-cell-${t.name}-${r.id}`, "data-state": "none" }));
        }));
    });
    fill(this.gridEl, h("table", { class: "grid", testid: "flow-grid" }, h("thead", {}, head), h("tbody", {}, rows)),
      h("div", { class: "legend" }, ["succeeded", "failed", "upstream_failed", "running", "waiting", "skipped", "cancelled"]
        .map((st) => h("span", { class: "legend-item" }, h("span", { class: ["grid-cell", "mini", `state-${st}`] }), label(st)))));
  }

  renderChart(grid) {
    this.chart?.destroy();
    this.chart = null;
    const runs = grid.runs ?? [];
    if (runs.length === 0) {
      fill(this.chartEl, h("p", { class: "muted" }, "No runs yet."));
      return;
    }
    this.chart = durationChart(runs, Math.max(260, this.chartEl.clientWidth || 480));
    fill(this.chartEl, this.chart.el);
  }

  renderTriggers(t) {
    const sched = t.schedule;
    const schedEl = sched
      ? h("div", { testid: "flow-schedule" },
        h("p", {}, h("strong", {}, "Schedule "), h("span", { class: "mono" }, sched.describe),
          h("span", { class: "muted small" }, ` · misfire: ${sched.misfire}`),
          sched.active === false ? h("span", { class: "pill tone-wait", testid: "schedule-inactive" }, "not firing in this service") : null),
        h("p", { class: "small muted" }, "Next fire times"),
        h("ol", { class: "fires", testid: "next-fires" }, (sched.next ?? []).map((iso) => {
          const secs = Date.parse(iso) / 1000;
          return h("li", {}, timeEl(secs), h("span", { class: "muted small" }, ` · in ${fmtDuration(secs - Date.now() / 1000)}`));
        })))
      : h("p", { testid: "flow-schedule", class: "muted" }, "No schedule: runs start from events and by hand.");
    const rules = (t.rules ?? []).filter((r) => !String(r.name ?? "").startsWith("schedule:"));
    const rulesEl = rules.length
      ? h("table", { class: "table compact stacked", testid: "flow-rules" },
        h("thead", {}, h("tr", {}, ["Rule", "On", "Match", "Params", "Policy"].map((c) => h("th", {}, c)))),
        h("tbody", {}, rules.map((r) => h("tr", { testid: `rule-${r.name}` },
          h("td", { class: "mono" }, r.name),
          h("td", { class: "mono small" }, r.on ?? "—"),
          h("td", { class: "mono small", title: json(r.match) }, Object.keys(r.match ?? {}).length ? compact(r.match, 80) : "—"),
          h("td", { class: "mono small", title: json(r.params) }, r.params ? compact(r.params, 80) : "event data"),
          h("td", { class: "small" }, `${r.policy}${r.when_running && r.when_running !== "queue" ? ` · when running: ${r.when_running}` : ""}`)))))
      : h("p", { class: "muted", testid: "flow-rules-none" }, "No event rule starts this flow.");
    fill(this.triggersEl, schedEl, h("h3", {}, "Rules"), rulesEl);
  }
}
