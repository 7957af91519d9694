"""Prometheus metrics (``GET /metrics``), on a registry of their own per app.

Each :class:`Metrics` has its own ``CollectorRegistry`` (never the global one), so several
engines in one process do not clash. What it exports:

* intake, read from the engine's counters at scrape time: ``evflow_events_accepted_total``,
  ``evflow_events_duplicate_total``, ``evflow_dead_letters_total`` (per source);
* state changes, counted by an engine observer: ``evflow_run_transitions_total`` and
  ``evflow_task_transitions_total`` (per flow and state), ``evflow_runs_active``;
* ``evflow_task_duration_seconds`` (per flow; a task instance's last attempt, when it finishes)
  and ``evflow_event_to_start_seconds`` (from intake committing an event to the first task of
  the run it started going ``running``);
* resources: ``evflow_pool_slots``, ``evflow_pool_slots_in_use``, ``evflow_pool_waiting``,
  ``evflow_flow_runs_active`` / ``evflow_flow_runs_waiting`` (``max_active_runs`` gates);
* queues: ``evflow_event_backlog`` (accepted, not yet decided), ``evflow_store_write_backlog``;
* sensors: ``evflow_sensor_up`` and ``evflow_sensor_lag_seconds`` (age of the oldest event of
  that source not yet decided on, including events a rule holds for a debounce, batch or
  correlation window);
* ``evflow_event_loop_lag_seconds`` and ``evflow_event_loop_blocked_total``, measured by
  :func:`monitor_loop_lag`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

import anyio
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..engine import Engine
from ..errors import EngineNotRunning, StoreError
from ..signals import EventsAccepted, RunStateChanged, TaskStateChanged
from ..states import RunState, TaskState

__all__ = ["Metrics", "metrics_route", "monitor_loop_lag"]

log = logging.getLogger("evflow.http.metrics")

_DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600,
)  # fmt: skip
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
_MAX_TRACKED = 10_000


class _EngineCollector(Collector):
    """Values read from the engine when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        engine = self.metrics.engine
        accepted = CounterMetricFamily(
            "evflow_events_accepted",
            "Events stored by intake (repeats excluded)",
            labels=["source"],
        )
        duplicates = CounterMetricFamily(
            "evflow_events_duplicate",
            "Events dropped as repeats of a stored event",
            labels=["source"],
        )
        dead = CounterMetricFamily(
            "evflow_dead_letters", "Input recorded as dead letters", labels=["source"]
        )
        try:
            intake = engine.intake
        except EngineNotRunning:
            intake = None
        if intake is not None:
            for family, counts in (
                (accepted, intake.accepted),
                (duplicates, intake.duplicates),
                (dead, intake.dead_letters),
            ):
                for source, n in sorted(counts.items()):
                    family.add_metric([source], n)
        yield from (accepted, duplicates, dead)

        slots = GaugeMetricFamily("evflow_pool_slots", "Slots of a pool", labels=["pool"])
        in_use = GaugeMetricFamily("evflow_pool_slots_in_use", "Slots taken", labels=["pool"])
        waiting = GaugeMetricFamily(
            "evflow_pool_waiting", "Task attempts waiting for slots", labels=["pool"]
        )
        for p in engine.limits.snapshot():
            slots.add_metric([p.name], p.capacity)
            in_use.add_metric([p.name], p.in_use)
            waiting.add_metric([p.name], p.waiting)
        yield from (slots, in_use, waiting)

        gate_active = GaugeMetricFamily(
            "evflow_flow_runs_active", "Runs admitted under a max_active_runs gate", labels=["flow"]
        )
        gate_waiting = GaugeMetricFamily(
            "evflow_flow_runs_waiting", "Runs queued at a max_active_runs gate", labels=["flow"]
        )
        for g in engine.gate.snapshot():
            gate_active.add_metric([g.name], g.in_use)
            gate_waiting.add_metric([g.name], g.waiting)
        yield from (gate_active, gate_waiting)

        yield GaugeMetricFamily(
            "evflow_runs_active",
            "Runs this engine is running or holding in its queue",
            value=len(engine.active_runs()),
        )
        yield GaugeMetricFamily(
            "evflow_event_backlog",
            "Events accepted and not yet decided on by the rule layer",
            value=engine.backlog,
        )
        try:
            store_backlog: int | None = engine.store.backlog
        except EngineNotRunning:
            store_backlog = None
        if store_backlog is not None:
            yield GaugeMetricFamily(
                "evflow_store_write_backlog",
                "Store writes queued and not yet committed",
                value=store_backlog,
            )

        up = GaugeMetricFamily(
            "evflow_sensor_up", "1 while a sensor is listening, else 0", labels=["sensor"]
        )
        for name in sorted(engine.sensors):
            up.add_metric([name], 1.0 if engine.sensor_status.get(name) == "listening" else 0.0)
        yield up
        lag = GaugeMetricFamily(
            "evflow_sensor_lag_seconds",
            "Age of the oldest event of a source that no rule has decided on yet",
            labels=["source"],
        )
        for source, age in sorted(self.metrics.sensor_lag.items()):
            lag.add_metric([source], age)
        yield lag
        membership = engine.membership
        if membership is not None:
            yield GaugeMetricFamily(
                "evflow_cluster_instances_alive",
                "Instances on the shared store whose heartbeat is within their TTL",
                value=self.metrics.instances_alive,
            )
            yield CounterMetricFamily(
                "evflow_cluster_heartbeats",
                "Heartbeats this instance wrote to the shared store",
                value=membership.beats,
            )
        node = engine.node
        if node is not None:
            yield GaugeMetricFamily(
                "evflow_cluster_leader",
                "1 while this instance holds the leader lease (decides events, runs schedules)",
                value=1.0 if node.is_leader else 0.0,
            )
            places = GaugeMetricFamily(
                "evflow_cluster_places_held",
                "Places of limits counted across the cluster (cluster pools, max_active_runs) "
                "that this instance holds",
                labels=["limit"],
            )
            for name, n in sorted(node.slots.held.items()):
                places.add_metric([name], float(n))
            yield places
            yield CounterMetricFamily(
                "evflow_cluster_runs_adopted",
                "Runs this instance claimed from dead instances or from others' overflow",
                value=node.adoption.adopted,
            )
            yield CounterMetricFamily(
                "evflow_cluster_claims",
                "Claims of unheld runs this instance sent to the store (a statement each)",
                value=node.adoption.claims,
            )
            yield CounterMetricFamily(
                "evflow_cluster_takeovers",
                "Instances this one declared dead and took over",
                value=node.adoption.taken_over,
            )
            yield GaugeMetricFamily(
                "evflow_cluster_fenced",
                "1 once the store refuses this instance's writes (another took it over)",
                value=1.0 if engine.store_fenced else 0.0,
            )


class Metrics:
    """The metrics of one engine, on their own registry; also an engine observer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.run_transitions = Counter(
            "evflow_run_transitions",
            "Runs entering a state",
            ["flow", "state"],
            registry=r,
        )
        self.task_transitions = Counter(
            "evflow_task_transitions",
            "Task instances entering a state",
            ["flow", "state"],
            registry=r,
        )
        self.task_duration = Histogram(
            "evflow_task_duration_seconds",
            "Duration of a task instance's last attempt, observed when it finishes",
            ["flow"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.event_to_start = Histogram(
            "evflow_event_to_start_seconds",
            "From intake committing an event to the first task of its run starting",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "evflow_event_loop_lag_seconds",
            "How late the event loop last woke a 1 s sleep",
            registry=r,
        )
        self.loop_blocked = Counter(
            "evflow_event_loop_blocked",
            "Times the event loop woke later than the warning threshold (blocking code ran)",
            registry=r,
        )
        self.sensor_lag: dict[str, float] = {}
        self.instances_alive = 0
        r.register(_EngineCollector(self))
        self._accepted_at: OrderedDict[str, float] = OrderedDict()
        self._run_started: OrderedDict[str, float] = OrderedDict()

    def attach(self) -> Metrics:
        """Subscribe to the engine's signals."""
        signals = self.engine.signals
        signals.subscribe(EventsAccepted, self.events_accepted)
        signals.subscribe(RunStateChanged, self.run_state)
        signals.subscribe(TaskStateChanged, self.task_state)
        return self

    # -- subscribers -------------------------------------------------------------------------
    def events_accepted(self, signal: EventsAccepted) -> None:
        now = time.monotonic()
        for ev in signal.events:
            self._accepted_at[ev.uid] = now
        while len(self._accepted_at) > _MAX_TRACKED:
            self._accepted_at.popitem(last=False)

    def run_state(self, signal: RunStateChanged) -> None:
        run = signal.run
        self.run_transitions.labels(run.flow, str(run.state)).inc()
        if run.state is RunState.RUNNING and run.trigger.get("kind") == "event":
            times = [
                t
                for eid in run.trigger.get("events", ())
                if (t := self._accepted_at.pop(str(eid), None)) is not None
            ]
            if times:
                self._run_started[run.id] = min(times)
                while len(self._run_started) > _MAX_TRACKED:
                    self._run_started.popitem(last=False)
        elif run.state.finished:
            self._run_started.pop(run.id, None)

    def task_state(self, signal: TaskStateChanged) -> None:
        inst, flow = signal.task, signal.flow
        self.task_transitions.labels(flow, str(inst.state)).inc()
        if inst.state is TaskState.RUNNING:
            t0 = self._run_started.pop(inst.run_id, None)
            if t0 is not None:
                self.event_to_start.observe(max(0.0, time.monotonic() - t0))
        elif (
            inst.state.finished
            and inst.started_at is not None
            and inst.ended_at is not None
            and inst.ended_at >= inst.started_at
        ):
            self.task_duration.labels(flow).observe(inst.ended_at - inst.started_at)

    # -- scraping ----------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read what needs the store (sensor lag) before a scrape."""
        lag: dict[str, float] = dict.fromkeys((s.source for s in self.engine.sensors.values()), 0.0)
        try:
            oldest = await self.engine.store.oldest_pending()
        except (EngineNotRunning, StoreError):
            oldest = {}
        now = time.time()
        for source, received_at in oldest.items():
            lag[source] = max(0.0, now - received_at)
        self.sensor_lag = lag
        membership = self.engine.membership
        if membership is not None:
            try:
                instances = await membership.registry.list_instances()
            except StoreError:
                return
            self.instances_alive = sum(1 for i in instances if i.alive)

    async def render(self) -> bytes:
        await self.refresh()
        return bytes(generate_latest(self.registry))


async def monitor_loop_lag(
    metrics: Metrics,
    *,
    interval_s: float = 1.0,
    warn_after_s: float = 0.5,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Sleep ``interval_s`` again and again and record by how much each sleep overran.

    An overrun beyond ``warn_after_s`` means something blocked the event loop (a sync call in
    an async task, a CPU-heavy step); it is logged as a warning, at most every 10 s.
    """
    task_status.started()
    last_warning = -1e9
    while True:
        start = time.monotonic()
        await anyio.sleep(interval_s)
        now = time.monotonic()
        lag = max(0.0, now - start - interval_s)
        metrics.loop_lag.set(lag)
        if lag <= warn_after_s:
            continue
        metrics.loop_blocked.inc()
        if now - last_warning >= 10.0:
            last_warning = now
            log.warning(
                "the event loop was blocked for %.2fs: a task is calling blocking code "
                "without a thread (make it a sync task, or use anyio.to_thread)",
                lag,
            )


def metrics_route(metrics: Metrics, path: str = "/metrics") -> Route:
    """``GET /metrics`` in the Prometheus text format."""

    async def endpoint(request: Request) -> Response:
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Route(path, endpoint, methods=["GET"])
