"""The Engine: owns the task group and wires sources → intake → rules → runs → executor.

``async with Engine(...) as engine`` opens the store, resumes what a previous process left
unfinished, starts schedules, sensors and the rule loop, and on exit shuts down in two phases:
intake stops, running tasks get ``grace_period_s`` to finish, then the rest are cancelled and
recorded as interrupted, to resume at the next start. It never touches signals, the event
loop policy or global logging, so it embeds in any asyncio application.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus

from .abc import Accepted, Sensor
from .clock import Clock, SystemClock
from .errors import (
    EngineNotRunning,
    EvflowError,
    FlowNotFound,
    RunFailed,
    SensorError,
    UnknownPoolError,
)
from .events import Event
from .flows import Flow
from .flows.callbacks import run_callbacks
from .intake import StoreIntake
from .rules import (
    CorrelationTimedOut,
    Decision,
    Held,
    NotMapped,
    NotMatched,
    Rule,
    RuleSet,
    RunRequested,
    policy_action,
)
from .run.executor import RunExecution
from .run.limits import Limits, RunGate
from .scheduler import ScheduleSensor
from .signals import RunStateChanged, Signals, TaskStateChanged
from .states import RunState, TaskState
from .store.base import AuditEntry, Changes, RunRecord, Store, TaskRecord
from .store.sqlite import SqliteStore

__all__ = ["Engine", "RunResult", "TaskResult"]

log = logging.getLogger("evflow.engine")


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One task instance's outcome as seen from the run's result."""

    name: str
    state: TaskState
    attempts: int
    result: Any = None
    error: str | None = None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished (or current) run: its state and each task's state and result."""

    run_id: str
    flow: str
    state: RunState
    params: Mapping[str, Any]
    tasks: Mapping[str, TaskResult]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCEEDED

    def result(self, task: str) -> Any:
        """The result of ``task`` (a mapped task gives the list of its instances' results)."""
        try:
            return self.tasks[task].result
        except KeyError:
            from .errors import TaskNotFound

            raise TaskNotFound(
                f"run {self.run_id} has no task {task!r}; tasks: {', '.join(self.tasks)}"
            ) from None

    def raise_for_state(self) -> RunResult:
        if not self.ok:
            raise RunFailed(f"run {self.run_id} of flow {self.flow!r} {self.state}: {self.error}")
        return self

    @classmethod
    def from_record(cls, run: RunRecord) -> RunResult:
        tasks = {}
        for t in run.tasks:
            tasks[t.name] = TaskResult(
                name=t.name,
                state=t.state,
                attempts=t.attempt,
                result=orjson.loads(t.result) if t.result is not None else None,
                error=t.error,
                duration_s=t.duration_s,
            )
        return cls(
            run_id=run.id,
            flow=run.flow,
            state=run.state,
            params=dict(run.params),
            tasks=tasks,
            error=run.error,
        )


@dataclass(slots=True)
class _ActiveRun:
    record: RunRecord
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    execution: RunExecution | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_reason: str | None = None


class Observer(Protocol):
    """What the engine tells observers (metrics, alerts, live UI). Every method is optional
    and synchronous: an observer that needs I/O queues work for its own task group. An
    observer that raises is logged and ignored; it never breaks a run.

    * ``task_state(run_id, flow, instance)`` — a task instance changed state;
    * ``run_state(run)`` — a run changed state (queued → running → finished);
    * ``events_accepted(events)`` — fresh events were committed by intake;
    * ``async correlation_timed_out(decision)`` — a correlated event's partner never came.
    """


def _notify(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("observer %r failed", fn)


class _SensorStarted:
    """The ``task_status`` a sensor reports to: marks it listening in the engine."""

    def __init__(self, engine: Engine, sensor: Sensor) -> None:
        self.engine = engine
        self.sensor = sensor
        self.listening = False

    def started(self, value: None = None) -> None:
        self.listening = True
        self.engine._set_status(self.sensor.name, "listening")
        log.info("sensor %s: %s", self.sensor.name, self.sensor.describe())


def _sensor_error(exc: BaseException) -> SensorError | None:
    """The SensorError behind ``exc`` (also inside exception groups), if that is all it is."""
    if isinstance(exc, SensorError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_sensor_error(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


def _rule_run_id(key: str) -> str:
    """A deterministic run id for a rule's idempotency key: a replay finds the same run."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Engine:
    """The orchestration engine, embeddable in any asyncio application.

    ``store``: a path, ``sqlite:///path`` URL or a :class:`~evflow.store.base.Store`.
    ``pools``: named pools and their slots. ``max_tasks``: global limit on running tasks.
    ``max_threads``: limit on threads for sync tasks. ``max_backlog``: events accepted but not
    yet decided on before intake pushes back. ``grace_period_s``: at shutdown, how long
    running tasks may finish before they are cancelled and recorded as interrupted.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store = "evflow.db",
        *,
        pools: Mapping[str, int] | None = None,
        max_tasks: int | None = None,
        max_threads: int = 40,
        max_backlog: int = 10_000,
        grace_period_s: float = 30.0,
        clock: Clock | None = None,
        task_log_level: int = logging.INFO,
        resume: bool = True,
    ) -> None:
        self._store_arg = store
        self.limits = Limits(max_tasks=max_tasks, pools=pools, max_threads=max_threads)
        self.gate = RunGate()
        self.max_backlog = max_backlog
        self.grace_period_s = grace_period_s
        self.clock: Clock = clock or SystemClock()
        self.task_log_level = task_log_level
        self.resume = resume
        self.sensor_start_timeout_s = 30.0
        self.flows: dict[str, Flow] = {}
        self.rules = RuleSet()
        self._rule_sensors: dict[str, Sensor] = {}
        self.sensors: dict[str, Sensor] = {}
        self.sensor_status: dict[str, str] = {}
        self._status_changed = anyio.Event()
        self.signals = Signals()
        self.signals.subscribe(TaskStateChanged, self._on_task_state)
        self.signals.subscribe(RunStateChanged, lambda s: self._on_run_state(s.run))
        self.observers: list[Observer] = []
        self._store: Store | None = None
        self._intake: StoreIntake | None = None
        self._tg: TaskGroup | None = None
        self._intake_tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._active: dict[str, _ActiveRun] = {}
        self._waiters: dict[str, anyio.Event] = {}
        self._inbox: list[Event] = []
        self._rule_wake = anyio.Event()  # new events, or new rules, for the rule loop
        self._stopping = False
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
        return self._tg is not None and not self._stopping

    @property
    def backlog(self) -> int:
        """Events accepted and not yet decided on by the rule layer."""
        return len(self._inbox)

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
        self._rule_wake.set()
        return bound

    def add_sensor(self, sensor: Sensor) -> None:
        """Register a sensor; started with the engine (or now, if it is running)."""
        known = self.sensors.get(sensor.name)
        if known is sensor:
            return
        if known is not None:
            raise SensorError(f"two different sensors are named {sensor.name!r}")
        self.sensors[sensor.name] = sensor
        self._set_status(sensor.name, "starting")
        if self._intake_tg is not None:
            self._intake_tg.start_soon(self._run_sensor, sensor)

    def flow(self, name: str) -> Flow:
        try:
            return self.flows[name]
        except KeyError:
            known = ", ".join(sorted(self.flows)) or "(none)"
            raise FlowNotFound(f"no flow named {name!r}; registered flows: {known}") from None

    # -- lifespan ----------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        async with AsyncExitStack() as stack:
            if isinstance(self._store_arg, str | os.PathLike):
                store: Store = await stack.enter_async_context(SqliteStore(self._store_arg))
            else:
                store = self._store_arg
            self._store = store
            stack.callback(self._forget_store)
            self._intake = StoreIntake(
                store,
                max_backlog=self.max_backlog,
                backlog=lambda: len(self._inbox),
                on_accepted=self._on_accepted,
            )
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg = tg
            stack.push_async_callback(self._shutdown)
            self._stopping = False
            self.started_at = time.time()
            if self.resume:
                await self._resume()
            await tg.start(self._rule_loop)
            await tg.start(self._run_intake)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.aclose()

    def _forget_store(self) -> None:
        self._store = None
        self._intake = None

    async def _run_intake(self, *, task_status: TaskStatus[None]) -> None:
        """Own the sensors' task group, so intake can be stopped before the runs."""
        async with anyio.create_task_group() as tg:
            self._intake_tg = tg
            for sensor in list(self.sensors.values()):
                tg.start_soon(self._run_sensor, sensor)
            # "Started" means listening: the engine is ready once every sensor listens (or is
            # reported off); a sensor that takes longer keeps starting in the background.
            with anyio.move_on_after(self.sensor_start_timeout_s):
                await self.sensors_settled()
            task_status.started()
            await anyio.sleep_forever()

    async def _run_sensor(self, sensor: Sensor) -> None:
        """Run one sensor; a misconfigured one is reported off, a crashed one restarted."""
        delay = 1.0
        while True:
            status = _SensorStarted(self, sensor)
            try:
                self._set_status(sensor.name, "starting")
                await sensor.run(self.intake, task_status=status)
                return
            except Exception as exc:
                off = _sensor_error(exc)
                if off is not None:
                    self._set_status(sensor.name, f"off: {off}")
                    log.warning("sensor %s is off: %s", sensor.name, off)
                    return
                if status.listening:
                    delay = 1.0  # it ran for a while: start over with a short pause
                self._set_status(sensor.name, f"failed: {exc}; restarting in {delay:.0f}s")
                log.error(
                    "sensor %s failed (%s: %s); restarting in %.0fs",
                    sensor.name,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=True,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _set_status(self, sensor: str, status: str) -> None:
        self.sensor_status[sensor] = status
        self._status_changed.set()
        self._status_changed = anyio.Event()

    async def sensors_settled(self) -> None:
        """Return once no sensor is still starting (each is listening, off or failed)."""
        while any(s == "starting" for s in self.sensor_status.values()):
            await self._status_changed.wait()

    async def _shutdown(self) -> None:
        """Two phases: stop intake; let runs finish for the grace period; interrupt the rest."""
        self._stopping = True
        if self._intake_tg is not None:
            self._intake_tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            active = [a for a in self._active.values() if a.execution is not None]
            if active and self.grace_period_s > 0:
                log.info(
                    "waiting up to %.0fs for %d running run(s) to finish",
                    self.grace_period_s,
                    len(active),
                )
                with anyio.move_on_after(self.grace_period_s):
                    for a in active:
                        await a.done.wait()
            for a in list(self._active.values()):
                if a.execution is not None:
                    a.execution.interrupt()
                else:
                    a.scope.cancel()
            for a in list(self._active.values()):
                with anyio.move_on_after(10):
                    await a.done.wait()
            await self.store.flush()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()

    async def _resume(self) -> None:
        """Start again what the last process left: unfinished runs, undecided events."""
        for run in await self.store.unfinished_runs():
            if run.flow not in self.flows:
                log.warning(
                    "run %s of flow %r is unfinished but the flow is not registered; it stays %s",
                    run.id,
                    run.flow,
                    run.state,
                )
                continue
            await self.store.apply(
                Changes(
                    audit=[AuditEntry("run.resumed", f"run:{run.id}", {"state": str(run.state)})]
                )
            )
            self._start(run)
        pending = await self.store.pending_events()
        if pending:
            log.info("re-deciding %d event(s) left undecided by the last process", len(pending))
            self._inbox.extend(p.to_event() for p in pending)
            self._rule_wake.set()

    # -- runs --------------------------------------------------------------------------------
    def _new_run(
        self,
        flow: Flow,
        params: Mapping[str, Any],
        *,
        run_id: str | None = None,
        priority: int = 0,
        trigger: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        return RunRecord(
            id=run_id or uuid.uuid4().hex,
            flow=flow.name,
            flow_version=flow.version,
            params=flow.bind_params(params),
            state=RunState.QUEUED,
            created_at=time.time(),
            priority=priority,
            trigger=dict(trigger or {"kind": "api"}),
        )

    def _pending_tasks(self, flow: Flow, run: RunRecord) -> list[TaskRecord]:
        return [
            TaskRecord(run_id=run.id, name=n, node=n, state=TaskState.PENDING) for n in flow.nodes
        ]

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
        run = self._new_run(fl, params or {}, priority=priority, trigger=trigger)
        await self.store.apply(
            Changes(
                runs=[run],
                tasks=self._pending_tasks(fl, run),
                audit=[
                    AuditEntry(
                        "run.queued",
                        f"run:{run.id}",
                        {"flow": fl.name, "trigger": run.trigger},
                        actor=actor,
                    )
                ],
            ),
            wait=True,
        )
        self._start(run)
        return run.id

    async def run(self, flow: Flow | str, /, **params: Any) -> RunResult:
        """Run ``flow`` to its end and return its result."""
        run_id = await self.submit(flow, **params)
        return await self.wait(run_id)

    async def wait(self, run_id: str) -> RunResult:
        """Wait for a run to finish (returns at once if it has)."""
        self._require_running()
        record = await self.store.get_run(run_id, with_tasks=False)
        if not record.state.finished:
            active = self._active.get(record.id)
            if active is not None:
                await active.done.wait()
            else:
                # It may have finished while we read; its end is committed before it leaves
                # ``_active``, so register the waiter, then read again.
                ev = self._waiters.setdefault(record.id, anyio.Event())
                if (await self.store.get_run(record.id, with_tasks=False)).state.finished:
                    if self._waiters.get(record.id) is ev:
                        del self._waiters[record.id]
                    ev.set()
                await ev.wait()
        await self.store.flush()
        return RunResult.from_record(await self.store.get_run(record.id))

    async def cancel(
        self, run_id: str, *, reason: str = "cancelled by request", actor: str | None = None
    ) -> bool:
        """Cancel a run: running tasks are cancelled, pending ones skipped, all recorded.

        Returns False if the run had already finished.
        """
        self._require_running()
        record = await self.store.get_run(run_id, with_tasks=False)
        if record.state.finished:
            return False
        await self.store.apply(
            Changes(
                audit=[
                    AuditEntry(
                        "run.cancel_requested", f"run:{record.id}", {"reason": reason}, actor=actor
                    )
                ]
            )
        )
        active = self._active.get(record.id)
        if active is None:
            await self._mark_cancelled(record, reason)
            waiter = self._waiters.pop(record.id, None)
            if waiter is not None:
                waiter.set()
            return True
        active.cancel_reason = reason
        if active.execution is not None:
            active.execution.cancel(reason)
        else:
            active.scope.cancel()
        await active.done.wait()
        return True

    async def _mark_cancelled(self, record: RunRecord, reason: str) -> None:
        now = time.time()
        full = await self.store.get_run(record.id)
        tasks = [
            replace(t, state=TaskState.SKIPPED, ended_at=now, waiting=None)
            for t in full.tasks
            if not t.state.finished
        ]
        cancelled = replace(
            full, state=RunState.CANCELLED, ended_at=now, error=reason, waiting=None, tasks=()
        )
        await self.store.apply(
            Changes(
                runs=[cancelled],
                tasks=tasks,
                audit=[AuditEntry("run.cancelled", f"run:{record.id}", {"reason": reason})],
            ),
            wait=True,
        )
        self._on_run_state(cancelled)

    async def retry(self, run_id: str, *, actor: str | None = None) -> str:
        """Run a failed or cancelled run again from its unfinished tasks.

        Tasks that succeeded keep their results and are not run again; the others go back to
        pending (their attempt count goes on). Returns the run's id.
        """
        self._require_running()
        run = await self.store.get_run(run_id)
        if not run.state.finished:
            raise EvflowError(f"run {run.id} is {run.state}; only a finished run can be retried")
        if run.state is RunState.SUCCEEDED:
            raise EvflowError(f"run {run.id} succeeded; there is nothing to retry")
        fl = self.flow(run.flow)
        reset = [
            replace(
                t,
                state=TaskState.PENDING,
                started_at=None,
                ended_at=None,
                waiting=None,
                error=None,
                traceback=None,
                result=None,
            )
            for t in run.tasks
            if t.state is not TaskState.SUCCEEDED
        ]
        queued = replace(
            run,
            state=RunState.QUEUED,
            ended_at=None,
            error=None,
            waiting=None,
            flow_version=fl.version,
            tasks=(),
        )
        await self.store.apply(
            Changes(
                runs=[queued],
                tasks=reset,
                audit=[
                    AuditEntry(
                        "run.retried",
                        f"run:{run.id}",
                        {"tasks": [t.name for t in reset]},
                        actor=actor,
                    )
                ],
            ),
            wait=True,
        )
        kept = [t for t in run.tasks if t.state is TaskState.SUCCEEDED]
        self._start(replace(queued, tasks=tuple(kept + reset)))
        return run.id

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
        if fl.schedule is None:
            raise EvflowError(f"flow {fl.name!r} has no schedule to backfill")
        if end < start:
            raise EvflowError("backfill end is before its start")
        slots: list[datetime] = []
        t = fl.schedule.next_after(start - timedelta(microseconds=1))
        while t <= end:
            slots.append(t)
            if len(slots) > 10_000:
                raise EvflowError("backfill covers more than 10,000 slots; narrow the range")
            t = fl.schedule.next_after(t)
        group = uuid.uuid4().hex[:12]
        runs: list[RunRecord] = []
        for slot in slots:
            run_id = _rule_run_id(f"backfill:{fl.name}:{slot.isoformat()}")
            if await self.store.run_exists(run_id):
                continue
            trigger = {
                "kind": "backfill",
                "scheduled_time": slot.isoformat(),
                "group": group,
                "max_active": max_active,
            }
            runs.append(self._new_run(fl, _slot_params(fl, slot), run_id=run_id, trigger=trigger))
        if runs:
            audit = [
                AuditEntry(
                    "run.queued",
                    f"run:{r.id}",
                    {"flow": fl.name, "trigger": r.trigger},
                    actor=actor,
                )
                for r in runs
            ]
            tasks = [t for r in runs for t in self._pending_tasks(fl, r)]
            await self.store.apply(Changes(runs=runs, tasks=tasks, audit=audit), wait=True)
        for r in runs:
            self._start(r)
        return [r.id for r in runs]

    def _resolve_flow(self, flow: Flow | str) -> Flow:
        if isinstance(flow, Flow):
            if flow.name not in self.flows:
                self.add(flow)
            return self.flows[flow.name]
        return self.flow(flow)

    def _require_running(self) -> None:
        if self._tg is None:
            raise EngineNotRunning("the engine is not running; use `async with Engine(...)`")

    def _start(self, run: RunRecord) -> None:
        assert self._tg is not None
        active = _ActiveRun(record=run)
        self._active[run.id] = active
        self._tg.start_soon(self._drive, active)

    async def _drive(self, active: _ActiveRun) -> None:
        run = active.record
        flow = self.flows[run.flow]
        try:
            with active.scope:
                on_wait = partial(self._note_run_waiting, run)
                cap = run.trigger.get("max_active")
                group = f"{run.trigger.get('kind')}:{run.trigger.get('group')}"
                async with (
                    self.gate.admit(
                        group, cap if isinstance(cap, int) else None, run.priority, on_wait
                    ),
                    self.gate.admit(flow.name, flow.max_active_runs, run.priority, on_wait),
                ):
                    execution = RunExecution(
                        run=run,
                        flow=flow,
                        store=self.store,
                        limits=self.limits,
                        signals=self.signals,
                        clock=self.clock,
                        log_level=self.task_log_level,
                    )
                    active.execution = execution
                    if active.cancel_reason is not None:
                        execution.cancel(active.cancel_reason)
                    await execution.execute()
            if active.execution is None and active.scope.cancel_called and not self._stopping:
                with anyio.CancelScope(shield=True):
                    await self._mark_cancelled(run, active.cancel_reason or "cancelled")
            elif active.execution is not None:
                await run_callbacks(flow, active.execution.run)  # on_success / on_failure
        except Exception:
            log.exception("run %s of flow %r crashed the executor", run.id, run.flow)
            with anyio.CancelScope(shield=True):
                failed = replace(
                    run,
                    state=RunState.FAILED,
                    ended_at=time.time(),
                    tasks=(),
                    error="internal error in the executor; see the service log",
                )
                await self.store.apply(Changes(runs=[failed]), wait=True)
                self._on_run_state(failed)
            await run_callbacks(flow, failed)
        finally:
            self._active.pop(run.id, None)
            active.done.set()
            waiter = self._waiters.pop(run.id, None)
            if waiter is not None:
                waiter.set()

    def _note_run_waiting(self, run: RunRecord, reason: str) -> None:
        """A run gate made ``run`` wait: record why now, so the store shows it while it waits."""
        self.store.apply_nowait(
            Changes(runs=[replace(run, state=RunState.QUEUED, waiting=reason, tasks=())])
        )

    def active_runs(self, flow: str | None = None) -> list[str]:
        """Ids of the runs this engine is running or holding in its queue."""
        return [rid for rid, a in self._active.items() if flow is None or a.record.flow == flow]

    # -- observation hooks -------------------------------------------------------------------
    def _on_task_state(self, changed: TaskStateChanged) -> None:
        for obs in self.observers:
            fn = getattr(obs, "task_state", None)
            if fn is not None:
                _notify(fn, changed.task.run_id, changed.flow, changed.task)

    def _on_run_state(self, run: RunRecord) -> None:
        for obs in self.observers:
            fn = getattr(obs, "run_state", None)
            if fn is not None:
                _notify(fn, run)

    # -- events and rules --------------------------------------------------------------------
    async def emit(self, event: Event, *, actor: str | None = None) -> Accepted:
        """Durably record ``event``; the rule layer then decides which runs it starts.

        With ``actor`` (who sent it, e.g. an API token and address), the audit trail records
        the emission too.
        """
        self._require_running()
        (accepted,) = await self.intake.submit([event])
        if actor is not None:
            data = {"type": event.type, "source": event.source, "duplicate": accepted.duplicate}
            await self.store.apply(
                Changes(
                    audit=[
                        AuditEntry("event.emitted", f"event:{accepted.event_id}", data, actor=actor)
                    ]
                )
            )
        return accepted

    async def _on_accepted(self, events: Sequence[Event], _: Sequence[Accepted]) -> None:
        self._inbox.extend(events)
        self._rule_wake.set()
        for obs in self.observers:
            fn = getattr(obs, "events_accepted", None)
            if fn is not None:
                _notify(fn, events)

    def _now(self) -> datetime:
        return self.clock.now()

    async def _rule_loop(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        while True:
            # Reset before looking: anything arriving after the look sets the new event.
            if self._rule_wake.is_set():
                self._rule_wake = anyio.Event()
            if not self._inbox:
                await self._wait_for_rule_work(self._rule_wake)
            batch, self._inbox = self._inbox, []
            try:
                await self._decide(batch)
            except Exception:
                log.exception(
                    "the rule layer failed on %d event(s); they stay pending and are "
                    "decided again at the next start",
                    len(batch),
                )
            self.intake.capacity_changed()

    async def _wait_for_rule_work(self, wake: anyio.Event) -> None:
        """Sleep until events or rules arrive, or a rule's timer (debounce, batch window,
        correlation timeout) comes due on the engine's clock."""
        deadline = self.rules.next_deadline()
        if deadline is None:
            await wake.wait()
            return
        async with anyio.create_task_group() as tg:

            async def timer() -> None:
                await self.clock.sleep_until(deadline)
                tg.cancel_scope.cancel()

            tg.start_soon(timer)
            await wake.wait()
            tg.cancel_scope.cancel()

    async def _decide(self, events: list[Event]) -> None:
        now = self._now()
        decisions: list[Decision] = list(self.rules.due(now))
        offered: list[str] = []
        for ev in events:
            ds = self.rules.offer(ev, now)
            offered.append(ev.id)
            if not any(
                isinstance(d, RunRequested | Held | NotMapped | CorrelationTimedOut) for d in ds
            ):
                decisions.append(NotMatched(rule="*", event_id=ev.id, reason=_unmatched_reason(ds)))
            decisions.extend(d for d in ds if not isinstance(d, NotMatched))
        held = self.rules.held_event_ids()
        changes = Changes()
        to_start: list[RunRecord] = []
        by_id = {ev.id: ev for ev in events}
        for d in decisions:
            await self._apply_decision(d, changes, to_start, by_id)
        changes.processed_events.extend(eid for eid in offered if eid not in held)
        released = {
            eid
            for d in decisions
            if isinstance(d, RunRequested | CorrelationTimedOut)
            for eid in (d.event_ids)
        }
        changes.processed_events.extend(
            eid for eid in released if eid not in held and eid not in offered
        )
        if changes:
            await self.store.apply(changes, wait=True)
        for run in to_start:
            self._start(run)

    async def _apply_decision(
        self, d: Decision, changes: Changes, to_start: list[RunRecord], events: Mapping[str, Event]
    ) -> None:
        if isinstance(d, NotMatched):
            changes.audit.append(
                AuditEntry("rule.not_matched", f"event:{d.event_id}", {"reason": d.reason})
            )
        elif isinstance(d, Held):
            changes.audit.append(
                AuditEntry("rule.held", f"event:{d.event_id}", {"rule": d.rule, "why": d.why})
            )
        elif isinstance(d, NotMapped):
            changes.audit.append(
                AuditEntry(
                    "rule.not_mapped", f"event:{d.event_id}", {"rule": d.rule, "reason": d.reason}
                )
            )
            ev = events.get(d.event_id)
            payload = ev.to_json() if ev is not None else d.event_id.encode()
            source = ev.source if ev is not None else "evflow.rules"
            await self.intake.dead_letter(
                source=source,
                reason=d.reason,
                payload=payload,
                dedup_key=f"unmapped:{d.rule}:{d.event_id}",
            )
        elif isinstance(d, CorrelationTimedOut):
            for eid in d.event_ids:
                changes.audit.append(
                    AuditEntry(
                        "rule.correlation_timed_out",
                        f"event:{eid}",
                        {
                            "rule": d.rule,
                            "key": d.key_value,
                            "action": d.action,
                            "reason": d.reason,
                        },
                    )
                )
            if d.action == "alert":
                log.warning("rule %s: %s", d.rule, d.reason)
                for obs in self.observers:
                    fn = getattr(obs, "correlation_timed_out", None)
                    if fn is not None:
                        await fn(d)
        elif isinstance(d, RunRequested):
            await self._request_run(d, changes, to_start)

    async def _request_run(
        self, d: RunRequested, changes: Changes, to_start: list[RunRecord]
    ) -> None:
        run_id = _rule_run_id(d.key)
        subjects = [f"event:{eid}" for eid in d.event_ids]
        if (
            run_id in self._active
            or any(r.id == run_id for r in changes.runs)
            or await self.store.run_exists(run_id)
        ):
            for s in subjects:
                changes.audit.append(
                    AuditEntry("rule.duplicate", s, {"rule": d.rule, "run_id": run_id})
                )
            return
        flow = self.flows.get(d.flow)
        if flow is None:
            for s in subjects:
                changes.audit.append(
                    AuditEntry("rule.flow_missing", s, {"rule": d.rule, "flow": d.flow})
                )
            return
        rule = self.rules.get(d.rule)
        active = self.active_runs(flow.name)
        action = policy_action(rule.when_running, len(active))
        if action == "skip":
            for s in subjects:
                changes.audit.append(
                    AuditEntry(
                        "rule.skipped",
                        s,
                        {
                            "rule": d.rule,
                            "reason": f"flow {flow.name!r} is already running "
                            f"({len(active)} active run(s))",
                        },
                    )
                )
            return
        try:
            run = self._new_run(
                flow,
                d.params,
                run_id=run_id,
                priority=rule.priority,
                trigger={"kind": "event", "rule": d.rule, "events": list(d.event_ids)},
            )
        except EvflowError as exc:
            for s in subjects:
                changes.audit.append(
                    AuditEntry("rule.not_mapped", s, {"rule": d.rule, "reason": str(exc)})
                )
            await self.intake.dead_letter(
                source="evflow.rules",
                reason=str(exc),
                payload=orjson.dumps({"rule": d.rule, "events": d.event_ids}),
                dedup_key=f"badparams:{d.key}",
            )
            return
        if action == "replace":
            for rid in active:
                a = self._active.get(rid)
                if a is not None:
                    a.cancel_reason = f"replaced by run {run_id}"
                    if a.execution is not None:
                        a.execution.cancel(a.cancel_reason)
                    else:
                        a.scope.cancel()
        changes.runs.append(run)
        changes.tasks.extend(self._pending_tasks(flow, run))
        for s in subjects:
            changes.audit.append(AuditEntry("rule.matched", s, {"rule": d.rule, "run_id": run_id}))
        changes.audit.append(
            AuditEntry("run.queued", f"run:{run_id}", {"flow": flow.name, "trigger": run.trigger})
        )
        to_start.append(run)

    # -- introspection -----------------------------------------------------------------------
    def describe_sensors(self) -> list[dict[str, str]]:
        return [
            {
                "name": n,
                "source": s.source,
                "describe": s.describe(),
                "status": self.sensor_status.get(n, ""),
            }
            for n, s in self.sensors.items()
        ]


def _slot_params(flow: Flow, slot: datetime) -> dict[str, Any]:
    """A flow that takes a ``scheduled_time`` parameter gets its slot's time (ISO 8601)."""
    if "scheduled_time" in flow.defaults or "scheduled_time" in flow.required:
        return {"scheduled_time": slot.isoformat()}
    return {}


def _unmatched_reason(decisions: Iterable[Decision]) -> str:
    reasons = [f"{d.rule}: {d.reason}" for d in decisions if isinstance(d, NotMatched)]
    return "; ".join(reasons) if reasons else "no rules"
