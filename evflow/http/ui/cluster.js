// The cluster page: the instances sharing the store (state, heartbeat, runs they drive) and
// the leases they hold. Refreshed every few seconds while open.
import { api, appendAll, empty, fill, h, showError, timeEl } from "./core.js";

const REFRESH_MS = 3000;

function ago(seconds) {
  return seconds < 120 ? `${seconds.toFixed(1)} s ago` : `${Math.round(seconds / 60)} min ago`;
}

export class ClusterView {
  title = "Cluster";

  mount(root) {
    this.summary = h("p", { class: "muted", testid: "cluster-summary" }, "Loading…");
    this.instances = h("div", { class: "card" });
    this.leases = h("div", { class: "card" });
    this.places = h("div", { class: "card" });
    appendAll(root,
      h("div", { class: "page-header" }, h("div", {}, h("h1", {}, "Cluster"),
        h("p", { class: "muted" }, "The evflow instances sharing this store, and who holds what."))),
      this.summary, h("h2", {}, "Instances"), this.instances, h("h2", {}, "Leases"), this.leases,
      h("h2", {}, "Places held across the cluster"), this.places);
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  unmount() {
    clearInterval(this.timer);
  }

  async refresh() {
    try {
      this.render(await api("/cluster"));
    } catch (err) {
      showError(err);
    }
  }

  render(c) {
    if (c.mode === "single" && c.store.startsWith("postgresql")) {
      fill(this.summary, `One instance runs this store (${c.store}), outside any cluster ` +
        "([cluster] enabled = false). Several instances need cluster mode.");
    } else if (c.mode === "single") {
      fill(this.summary, `One instance runs this store (${c.store}): a SQLite store is one machine's. ` +
        "Several instances need a PostgreSQL store.");
    } else {
      fill(this.summary, `${c.alive} alive of ${c.instances.length} registered on ${c.store}` +
        (c.unclaimed_runs ? ` · ${c.unclaimed_runs} run(s) waiting for an instance` : ""));
    }
    if (c.instances.length === 0) {
      fill(this.instances, empty("No instance is registered.", "Instances register when `evflow serve` starts on a PostgreSQL store.", "cluster-empty"));
    } else {
      const tone = { alive: "status-ok", dead: "status-dead", stopped: "" };
      fill(this.instances, h("table", { class: "table", testid: "cluster-instances" },
        h("thead", {}, h("tr", {}, ["Instance", "State", "Host", "PID", "Runs", "Heartbeat", "Started", "HTTP"]
          .map((t) => h("th", {}, t)))),
        h("tbody", {}, c.instances.map((i) => h("tr", { testid: `instance-${i.id}` },
          h("td", { class: "mono" }, i.id, i.id === c.this ? h("span", { class: "muted small" }, " (this one)") : null),
          h("td", {}, h("span", { class: ["pill", tone[i.state] ?? ""], testid: "instance-state",
            title: i.taken_over_by ? `taken over by ${i.taken_over_by}` : "" }, i.state)),
          h("td", {}, i.host),
          h("td", { class: "num" }, String(i.pid)),
          h("td", { class: "num", testid: "instance-runs" }, String(i.runs)),
          h("td", {}, i.state === "stopped" ? "—" : ago(i.heartbeat_age_s)),
          h("td", {}, timeEl(i.started_at)),
          h("td", {}, i.http ? h("a", { href: i.http }, i.http) : "—"))))));
    }
    if (c.leases.length === 0) {
      fill(this.leases, empty("No lease is held.", "", "leases-empty"));
    } else {
      const now = Date.now() / 1000;
      fill(this.leases, h("table", { class: "table", testid: "cluster-leases" },
        h("thead", {}, h("tr", {}, ["Lease", "Holder", "Epoch", "Expires in"].map((t) => h("th", {}, t)))),
        h("tbody", {}, c.leases.map((l) => h("tr", {},
          h("td", {}, l.name), h("td", { class: "mono" }, l.owner), h("td", { class: "num" }, String(l.epoch)),
          h("td", {}, l.expires_at > now ? `${Math.round(l.expires_at - now)} s` : "expired"))))));
    }
    const places = c.places ?? [];
    if (places.length === 0) {
      fill(this.places, empty("No place is held.",
        "Cluster pools and max_active_runs take places here while tasks and runs hold them.", "places-empty"));
    } else {
      fill(this.places, h("table", { class: "table", testid: "cluster-places" },
        h("thead", {}, h("tr", {}, ["Limit", "Place", "Instance", "Holder"].map((t) => h("th", {}, t)))),
        h("tbody", {}, places.map((p) => h("tr", {},
          h("td", {}, p.name), h("td", { class: "num" }, String(p.place)),
          h("td", { class: "mono" }, p.instance), h("td", { class: "mono" }, p.holder))))));
    }
  }
}
