"""The Engine: the public entry point, the registry of flows and rules, and the lifespan.

``async with Engine(...) as engine`` opens the store, resumes what a previous process left
unfinished, starts the rule loop and the sensors, and on exit shuts down in two phases:
intake stops, running tasks get ``grace_period_s`` to finish, then the rest are cancelled and
recorded as interrupted, to resume at the next start. It never touches signals, the event
loop policy or global logging, so it embeds in any asyncio application.

The work is done by its parts: :class:`~evflow.sensors.supervisor.SensorSupervisor` (sensors),
:class:`~evflow.intake.StoreIntake` (durable intake), :class:`~evflow.rules.loop.RuleLoop`
(decisions), :class:`~evflow.run.queue.RunQueue` (run commands, gates, execution).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .abc import Accepted, Sensor
from .clock import Clock, SystemClock
from .cluster import ClusterOptions, InstanceRegistry, Membership
from .errors import EngineNotRunning, EvflowError, FlowNotFound, UnknownPoolError
from .events import Event
from .flows.dag import Flow
from .intake import StoreIntake
from .ownership import Ownership, refuse_sole_engine
from .rules import Rule, RuleSet
from .rules.loop import RuleLoop
from .run.limits import Limits, Pool, RunGate
from .run.queue import RunQueue
from .run.results import RunResult, TaskResult
from .sensors.supervisor import SensorSupervisor
from .signals import EventsAccepted, Signals
from .store import Store, connect, writes

if TYPE_CHECKING:
    from .cluster.node import ClusterNode

__all__ = ["Engine", "RunResult", "TaskResult"]

log = logging.getLogger("evflow.engine")


class Engine:
    """The orchestration engine, embeddable in any asyncio application.

    ``store``: a path, ``sqlite:///path`` URL or a :class:`~evflow.store.base.Store`.
    ``pools``: named pools and their slots (a number, or a :class:`~evflow.Pool` for a pool
    counted across the cluster: ``Pool(4, scope="cluster")``). ``max_tasks``: global limit on
    running tasks.
    ``max_threads``: limit on threads for sync tasks. ``max_backlog``: events accepted but not
    yet decided on before intake pushes back. ``grace_period_s``: at shutdown, how long
    running tasks may finish before they are cancelled and recorded as interrupted.
    ``cluster``: on a store shared by several instances (PostgreSQL), how often this one
    heartbeats and after how long the others count it as dead; ``ClusterOptions(enabled=False)``
    runs a PostgreSQL store as its only instance, as on SQLite.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store = "evflow.db",
        *,
        pools: Mapping[str, int | Pool] | None = None,
        max_tasks: int | None = None,
        max_threads: int = 40,
        max_backlog: int = 10_000,
        grace_period_s: float = 30.0,
        clock: Clock | None = None,
        task_log_level: int = logging.INFO,
        resume: bool = True,
        cluster: ClusterOptions | None = None,
    ) -> None:
        self._store_arg = store
        self.cluster = cluster or ClusterOptions()
        self.node: ClusterNode | None = None
        self.limits = Limits(max_tasks=max_tasks, pools=pools, max_threads=max_threads)
        self.gate = RunGate()
        self.max_backlog = max_backlog
        self.grace_period_s = grace_period_s
        self.clock: Clock = clock or SystemClock()
        self.resume = resume
        self.sensor_start_timeout_s = 30.0
        self.flows: dict[str, Flow] = {}
        self.rules = RuleSet()
        self.signals = Signals()
        self._sensors = SensorSupervisor(self.signals)
        self._runs = RunQueue(
            flow=self.flow,
            limits=self.limits,
            gate=self.gate,
            signals=self.signals,
            clock=self.clock,
            log_level=task_log_level,
        )
        self._rules_loop = RuleLoop(
            rules=self.rules,
            flows=self.flows,
            runs=self._runs,
            signals=self.signals,
            clock=self.clock,
            capacity_changed=self._capacity_changed,
        )
        self._store: Store | None = None
        self._intake: StoreIntake | None = None
        self._tg: TaskGroup | None = None
        self._intake_tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self.started_at: float | None = None

    # -- public properties -------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            raise EngineNotRunning("the engine is not running; use `async with Engine(...)`")
        return self._store

    @property
    def intake(self) -> StoreIntake:
        if self._intake is None:
            raise EngineNotRunning("the engine is not running; use `async with Engine(...)`")
        return self._intake

    @property
    def running(self) -> bool:
        return self._tg is not None and not self._runs.stopping

    @property
    def backlog(self) -> int:
        """Events accepted and not yet decided on by the rule layer."""
        return len(self._rules_loop.inbox)

    @property
    def sensors(self) -> Mapping[str, Sensor]:
        return self._sensors.sensors

    @property
    def sensor_status(self) -> Mapping[str, str]:
        """Each sensor's status: ``starting``, ``listening``, ``off: …``, ``failed: …``."""
        return self._sensors.status

    # -- registration ------------------------------------------------------------------------
    def add(self, flow: Flow, *rules: Rule, schedule: bool = True) -> Flow:
        """Register ``flow`` (validating its pools) and the rules that start it.

        A rule whose ``on`` is a sensor registers that sensor too; the flow's schedule (if
        any) starts firing unless ``schedule=False``. Call before or while the
        engine runs; sensors and schedules added while it runs start at once.
        """
        if not isinstance(flow, Flow):
            raise TypeError(f"engine.add() takes a Flow, not {type(flow).__name__}")
        existing = self.flows.get(flow.name)
        if existing is not None and existing is not flow:
            raise EvflowError(
                f"a different flow named {flow.name!r} is already registered "
                f"(at {existing.location}); flow names must be unique"
            )
        for node in flow.nodes.values():
            try:
                self.limits.check(node.options.pool, node.options.slots)
            except (UnknownPoolError, ValueError) as exc:
                raise type(exc)(
                    f"flow {flow.name!r}, task {node.name!r} (defined at {node.location}): {exc}"
                ) from None
        self.flows[flow.name] = flow
        if existing is None and flow.schedule is not None and schedule:
            from .sensors.schedule import ScheduleSensor

            sched = ScheduleSensor(flow.name, flow.schedule, misfire=flow.misfire, clock=self.clock)
            takes_time = "scheduled_time" in flow.defaults or "scheduled_time" in flow.required
            params = {"scheduled_time": "{data.scheduled_time}"} if takes_time else None
            self.add_rule(flow, Rule(on=sched, name=f"schedule:{flow.name}", params=params))
        for i, rule in enumerate(rules):
            self.add_rule(flow, rule, index=i)
        return flow

    def add_rule(self, flow: Flow | str, rule: Rule, *, index: int | None = None) -> Rule:
        """Bind ``rule`` to ``flow`` and start feeding it events."""
        name = flow if isinstance(flow, str) else flow.name
        if name not in self.flows:
            raise FlowNotFound(f"rule for unknown flow {name!r}; add the flow first")
        bound = rule.bind(name, index=len(self.rules) if index is None else index)
        if bound.name in {r.name for r in self.rules}:
            bound = bound.with_name(f"{bound.name}~{len(self.rules)}")
        self.rules.add(bound)
        on = rule.on
        if on is not None and not isinstance(on, str) and isinstance(on, Sensor):
            self.add_sensor(on)
        self._rules_loop.wake()
        return bound

    def add_sensor(self, sensor: Sensor) -> None:
        """Register a sensor; started with the engine (or now, if it is running)."""
        self._sensors.add(sensor)

    def flow(self, name: str) -> Flow:
        try:
            return self.flows[name]
        except KeyError:
            known = ", ".join(sorted(self.flows)) or "(none)"
            raise FlowNotFound(f"no flow named {name!r}; registered flows: {known}") from None

    # -- lifespan ----------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        try:
            return await self._start()
        except BaseExceptionGroup as group:
            # A refusal at start (the store in use, say) is one error a caller catches as is.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], EvflowError):
                raise group.exceptions[0] from None
            raise

    async def _start(self) -> Engine:
        async with AsyncExitStack() as stack:
            self.node = None
            self._store = store = await stack.enter_async_context(self._open_store())
            stack.callback(self._forget_store)
            shared = isinstance(store, InstanceRegistry) and self.cluster.enabled
            ownership = None
            if self.resume and not shared:  # one engine runs the store's work
                ownership = Ownership(store)
                await ownership.acquire()
                stack.push_async_callback(ownership.release)  # after the runs have stopped
            self._intake = intake = StoreIntake(
                store,
                max_backlog=self.max_backlog,
                backlog=lambda: len(self._rules_loop.inbox),
                on_accepted=self._on_accepted,
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg = tg
            self._runs.open(store, tg)
            await tg.start(self._runs.drivers.run)
            self._rules_loop.open(store, intake)
            if shared and isinstance(store, InstanceRegistry):
                from .cluster.node import ClusterNode

                self.node = node = ClusterNode(
                    store,
                    self.cluster,
                    runs=self._runs,
                    flows=lambda: self.flows.keys(),
                    offer=self._rules_loop.offer,
                    on_elected=self._elected,
                    serving=self.resume,
                )
                await node.join()
                stack.push_async_callback(node.leave)  # after the runs have stopped
                if self.resume and node.membership.record is not None:
                    await refuse_sole_engine(store, node.membership.record.now)
                self._sensors.leader = anyio.Event()
            stack.push_async_callback(self._shutdown)
            self.started_at = time.time()
            if ownership is not None:
                await tg.start(ownership.keep)
            if self.node is not None:
                await self.node.start(tg)  # adopts what dead instances left, at once
            elif self.resume:
                await self._resume()
            await tg.start(self._rules_loop.run)
            await tg.start(self._run_intake)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _open_store(self) -> Store | _Borrowed:
        """The store to open: one named by a path or URL, or the caller's (left open)."""
        if isinstance(self._store_arg, str | os.PathLike):
            return connect(self._store_arg)
        return _Borrowed(self._store_arg)

    def _forget_store(self) -> None:
        self._store = None
        self._intake = None
        self._tg = None

    async def _run_intake(self, *, task_status: TaskStatus[None]) -> None:
        """Own the sensors' task group, so intake can be stopped before the runs."""
        async with anyio.create_task_group() as tg:
            self._intake_tg = tg
            self._sensors.start_all(tg, self.intake)
            # "Started" means listening: the engine is ready once every sensor listens (or is
            # reported off); a sensor that takes longer keeps starting in the background.
            with anyio.move_on_after(self.sensor_start_timeout_s):
                await self._sensors.settled()
            task_status.started()
            await anyio.sleep_forever()

    async def sensors_settled(self) -> None:
        """Return once no sensor is still starting (each is listening, off or failed)."""
        await self._sensors.settled()

    async def _shutdown(self) -> None:
        """Two phases: stop intake; let runs finish for the grace period; interrupt the rest.

        In a cluster, the leader lease is given back as intake stops, and the unfinished runs
        once they are interrupted, so that other instances take both over at once."""
        self._sensors.stopped()
        if self._intake_tg is not None:
            self._intake_tg.cancel_scope.cancel()
        if self.node is not None:
            await self.node.stop_leading()
        await self._runs.drain(self.grace_period_s)
        with anyio.CancelScope(shield=True):
            await self.store.flush()
            if self.node is not None and not self.store_fenced:
                await self.node.hand_back()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    async def _resume(self) -> None:
        """Start again what the last process left: unfinished runs, undecided events."""
        await self._runs.resume(self.flows)
        pending = await self.store.pending_events()
        if pending:
            log.info("re-deciding %d event(s) left undecided by the last process", len(pending))
            self._rules_loop.offer(p.to_event() for p in pending)

    # -- runs --------------------------------------------------------------------------------
    async def submit(self, flow: Flow | str, /, **params: Any) -> str:
        """Queue a run of ``flow`` with ``params``; returns its id once it is stored."""
        return await self.submit_run(flow, params)

    async def submit_run(
        self,
        flow: Flow | str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        trigger: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> str:
        """Like :meth:`submit`, with a priority and a record of what triggered the run."""
        self._require_running()
        fl = self._resolve_flow(flow)
        return await self._runs.submit(
            fl, params or {}, priority=priority, trigger=trigger, actor=actor
        )

    async def run(self, flow: Flow | str, /, **params: Any) -> RunResult:
        """Run ``flow`` to its end and return its result."""
        run_id = await self.submit(flow, **params)
        return await self.wait(run_id)

    async def wait(self, run_id: str) -> RunResult:
        """Wait for a run to finish (returns at once if it has)."""
        self._require_running()
        return await self._runs.wait(run_id)

    async def cancel(
        self, run_id: str, *, reason: str = "cancelled by request", actor: str | None = None
    ) -> bool:
        """Cancel a run: running tasks are cancelled, pending ones skipped, all recorded.

        Returns False if the run had already finished.
        """
        self._require_running()
        return await self._runs.cancel(run_id, reason=reason, actor=actor)

    async def retry(
        self,
        run_id: str,
        *,
        from_task: str | None = None,
        whole: bool = False,
        actor: str | None = None,
    ) -> str:
        """Run a finished run again, in one of three ways:

        * by default, from its unfinished tasks: tasks that succeeded keep their results and
          are not run again (a failed or cancelled run only);
        * ``from_task="x"``: ``x`` and everything downstream of it run again, with fresh
          results from ``x`` (when its input was the problem, fixed since);
        * ``whole=True``: every task runs again.

        Tasks that run again go back to pending; their attempt count goes on, so each try stays
        in the attempt history. Returns the run's id.
        """
        self._require_running()
        if whole and from_task is not None:
            raise EvflowError("retry either the whole run or from a task, not both")
        return await self._runs.retry(run_id, from_task=from_task, whole=whole, actor=actor)

    async def backfill(
        self,
        flow: Flow | str,
        start: datetime,
        end: datetime,
        *,
        max_active: int | None = None,
        actor: str | None = None,
    ) -> list[str]:
        """One run per schedule slot of ``flow`` in ``[start, end]``, at most ``max_active``
        of them running at once. A slot that already has a backfill run is not run twice."""
        self._require_running()
        fl = self._resolve_flow(flow)
        return await self._runs.backfill(fl, start, end, max_active=max_active, actor=actor)

    def active_runs(self, flow: str | None = None) -> list[str]:
        """Ids of the runs this engine is running or holding in its queue."""
        return self._runs.active_runs(flow)

    def _resolve_flow(self, flow: Flow | str) -> Flow:
        if isinstance(flow, Flow):
            if flow.name not in self.flows:
                self.add(flow)
            return self.flows[flow.name]
        return self.flow(flow)

    def _require_running(self) -> None:
        if self._tg is None:
            raise EngineNotRunning("the engine is not running; use `async with Engine(...)`")

    # -- events ------------------------------------------------------------------------------
    async def emit(self, event: Event, *, actor: str | None = None) -> Accepted:
        """Durably record ``event``; the rule layer then decides which runs it starts.

        With ``actor`` (who sent it, e.g. an API token and address), the audit trail records
        the emission too.
        """
        self._require_running()
        (accepted,) = await self.intake.submit([event])
        if actor is not None:
            data = {"type": event.type, "source": event.source, "duplicate": accepted.duplicate}
            await self.store.apply(writes.event_emitted(accepted.event_id, data, actor))
        return accepted

    @property
    def membership(self) -> Membership | None:
        """This instance's membership of a cluster (on a shared store), else None."""
        return self.node.membership if self.node is not None else None

    @property
    def store_fenced(self) -> bool:
        """Whether the store refuses this instance's writes (it was taken over)."""
        return bool(getattr(self._store, "fenced", False))

    async def _elected(self) -> None:
        """This instance leads the cluster: the sensors that run on the leader start."""
        if self._sensors.leader is not None:
            self._sensors.leader.set()

    async def _on_accepted(self, events: Sequence[Event], accepted: Sequence[Accepted]) -> None:
        if self.node is not None:
            self.node.accepted(events)
        else:
            self._rules_loop.offer(events)
        self.signals.publish(EventsAccepted(events, accepted))

    def _capacity_changed(self) -> None:
        if self._intake is not None:
            self._intake.capacity_changed()

    # -- introspection -----------------------------------------------------------------------
    def describe_sensors(self) -> list[dict[str, str]]:
        return self._sensors.describe()


class _Borrowed:
    """A store the caller opened and closes: entering and leaving it does nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __aenter__(self) -> Store:
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        return None
