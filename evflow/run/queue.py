"""The run queue: creating runs, admitting them through the run gates, driving them to their end.

Every command on runs lives here — submit, wait, cancel, retry, backfill, resume — and so does
every store write the engine makes about a run outside its execution (queued, cancelled,
retried, resumed, crashed). A queued run waits in :class:`~evflow.run.limits.RunGate` for its
flow's ``max_active_runs`` (and a backfill's ``max_active``) in priority order, then one
:class:`~evflow.run.executor.RunExecution` walks its DAG.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from .. import tracing
from ..clock import Clock
from ..errors import EvflowError
from ..flows.callbacks import run_callbacks
from ..flows.dag import Flow
from ..records import RunRecord
from ..signals import RunStateChanged, Signals
from ..states import RunState, TaskState
from ..store import writes
from ..store.base import Store
from .active import ActiveRun
from .drivers import Drivers
from .ends import RunEnds
from .executor import Liveness, RunExecution
from .gates import OPEN
from .limits import Limits, RunGate
from .new_runs import (
    new_run,
    pending_tasks,
    queued_changes,
    run_id_for,
    slot_params,
    with_downstream,
)
from .results import RunResult

if TYPE_CHECKING:
    from ..cluster.registry import InstanceRegistry
    from ..cluster.slots import ClusterSlots
    from .overflow import Overflow

__all__ = ["RunQueue", "new_run", "pending_tasks", "queued_changes", "run_id_for"]

log = logging.getLogger("evflow.engine")


class RunQueue:
    """The runs this engine holds: waiting at a gate or executing.

    ``flow`` resolves a flow by name (raising :class:`~evflow.errors.FlowNotFound`). The queue
    is bound to a store and a task group by :meth:`open` when the engine starts.
    """

    def __init__(
        self,
        *,
        flow: Callable[[str], Flow],
        limits: Limits,
        gate: RunGate,
        signals: Signals,
        clock: Clock,
        log_level: int,
    ) -> None:
        self._flow = flow
        self.limits = limits
        self.gate = gate
        self.signals = signals
        self.clock = clock
        self.log_level = log_level
        self.stopping = False
        self._store: Store | None = None
        self._tg: TaskGroup | None = None
        self._active: dict[str, ActiveRun] = {}
        self.drivers = Drivers(self.stop_all)  # the runs' tasks; the engine starts its owner
        # In cluster mode, the runs created here past this instance's capacity.
        self._overflow: Overflow | None = None
        self.ends = RunEnds()  # waiters on runs not held here
        # In cluster mode: this instance's id (runs may then be driven by other instances),
        # how many runs it holds at most, and who to tell when one of them ends.
        self.instance_id: str | None = None
        self._shared: InstanceRegistry | None = None  # the store, as shared by the cluster
        self.capacity: int | None = None
        self.freed: Callable[[], None] = lambda: None
        self.slots: ClusterSlots | None = None  # max_active_runs across the cluster
        self.live: Liveness | None = None  # this instance's membership of a cluster

    def join_cluster(self, store: InstanceRegistry, instance_id: str) -> None:
        """From now on this queue is instance ``instance_id`` of a cluster sharing ``store``."""
        from .overflow import Overflow

        self._shared, self.instance_id = store, instance_id
        assert self._tg is not None, "the run queue is not open"
        self._overflow = Overflow(partial(store.hand_back_runs, instance_id))
        self._tg.start_soon(self._overflow.run)

    def room(self) -> int:
        """How many more runs this instance takes (cluster mode; else no limit)."""
        if self.capacity is None:
            return 1 << 30
        return max(0, self.capacity - len(self._active))

    async def place(self, runs: Sequence[RunRecord]) -> None:
        """Drive runs created here. In a cluster, only up to this instance's capacity: the
        rest are handed back, for the instances with room to claim."""
        overflow = self._overflow
        keep = len(runs) if overflow is None else self.room()
        for run in runs[:keep]:
            self.start(run)
        if overflow is not None and keep < len(runs):
            await overflow.hand_back(runs[keep:])

    def reclaimed(self, run_id: str, epoch: int) -> RunRecord | None:
        """The record of a run handed back from here unstarted and claimed back at ``epoch``,
        if still exact (see :meth:`Overflow.reclaimed`)."""
        return None if self._overflow is None else self._overflow.reclaimed(run_id, epoch)

    async def _until_finished(self, run_id: str) -> None:
        """Wait for a run not held here to end (see :mod:`evflow.run.ends`)."""
        await self.ends.until_finished(self.store, run_id, shared=self._shared is not None)

    def open(self, store: Store, tg: TaskGroup) -> None:
        self._store, self._tg = store, tg
        self.stopping = False
        self._shared, self.instance_id = None, None
        self.capacity, self.slots, self.freed = None, None, lambda: None
        self.live = None
        self._overflow = None  # one lifespan's
        self.limits.join_cluster(None)

    @property
    def store(self) -> Store:
        assert self._store is not None, "the run queue is not open"
        return self._store

    def active_runs(self, flow: str | None = None) -> list[str]:
        """Ids of the runs held here (executing, or waiting at a gate)."""
        return [rid for rid, a in self._active.items() if flow is None or a.record.flow == flow]

    def is_active(self, run_id: str) -> bool:
        return run_id in self._active

    # -- commands ----------------------------------------------------------------------------
    async def submit(
        self,
        fl: Flow,
        params: Mapping[str, Any],
        *,
        priority: int = 0,
        trigger: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> str:
        run = new_run(fl, params, priority=priority, trigger=trigger)
        await self.store.apply(queued_changes(fl, [run], actor), wait=True)
        await self.place([run])
        return run.id

    async def wait(self, run_id: str) -> RunResult:
        record = await self.store.get_run(run_id, with_tasks=False)
        if not record.state.finished:
            active = self._active.get(record.id)
            if active is not None:
                await active.done.wait()
            else:
                await self._until_finished(record.id)
        await self.store.flush()
        return RunResult.from_record(await self.store.get_run(record.id))

    async def cancel(self, run_id: str, *, reason: str, actor: str | None = None) -> bool:
        record = await self.store.get_run(run_id, with_tasks=False)
        if record.state.finished:
            return False
        await self.store.apply(writes.run_cancel_requested(record.id, reason, actor))
        active = self._active.get(record.id)
        shared = self._shared
        if active is None and shared is not None:
            owner, alive = await shared.run_owner(record.id)
            if alive and owner != self.instance_id:
                # Another instance drives it: ask it, and wait for the run to end there.
                await shared.request_cancel(record.id, reason)
                await self._until_finished(record.id)
                return True
        if active is None:
            await self._mark_cancelled(record, reason)
            self.ends.ended(record.id)
            return True
        self.stop(active, reason)
        await active.done.wait()
        return True

    def replace(self, run_ids: Sequence[str], reason: str) -> None:
        """Cancel these active runs without waiting (a ``when_running="replace"`` rule)."""
        for rid in run_ids:
            active = self._active.get(rid)
            if active is not None:
                self.stop(active, reason)

    @staticmethod
    def stop(active: ActiveRun, reason: str) -> None:
        active.cancel_reason = reason
        if active.execution is not None:
            active.execution.cancel(reason)
        else:
            active.let_go()

    async def retry(
        self,
        run_id: str,
        *,
        from_task: str | None = None,
        whole: bool = False,
        actor: str | None = None,
    ) -> str:
        run = await self.store.get_run(run_id)
        if not run.state.finished:
            raise EvflowError(f"run {run.id} is {run.state}; only a finished run can be retried")
        fl = self._flow(run.flow)
        if whole:
            again = set(fl.nodes)
        elif from_task is not None:
            if from_task not in fl.nodes:
                raise EvflowError(
                    f"flow {fl.name!r} has no task {from_task!r}; tasks: {', '.join(fl.nodes)}"
                )
            again = with_downstream(fl, from_task)
        else:
            if run.state is RunState.SUCCEEDED:
                raise EvflowError(
                    f"run {run.id} succeeded; there is nothing to retry from failed tasks "
                    "(re-run it whole, or from a task)"
                )
            again = {t.node for t in run.tasks if t.state is not TaskState.SUCCEEDED}
        mode = "whole" if whole else f"from {from_task}" if from_task else "from failed"
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
            if t.node in again
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
        shared = self._shared
        if shared is not None and self.instance_id is not None:
            await shared.claim_run(self.instance_id, run.id)  # this instance drives it again
        await self.store.apply(writes.run_retried(queued, reset, mode, actor), wait=True)
        kept = [t for t in run.tasks if t.node not in again]
        self.start(replace(queued, tasks=tuple(kept + reset)))
        return run.id

    async def backfill(
        self,
        fl: Flow,
        start: datetime,
        end: datetime,
        *,
        max_active: int | None = None,
        actor: str | None = None,
    ) -> list[str]:
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
            run_id = run_id_for(f"backfill:{fl.name}:{slot.isoformat()}")
            if await self.store.run_exists(run_id):
                continue
            trigger = {
                "kind": "backfill",
                "scheduled_time": slot.isoformat(),
                "group": group,
                "max_active": max_active,
            }
            runs.append(new_run(fl, slot_params(fl, slot), run_id=run_id, trigger=trigger))
        if runs:
            await self.store.apply(queued_changes(fl, runs, actor), wait=True)
        await self.place(runs)
        return [r.id for r in runs]

    async def resume(self, flows: Mapping[str, Flow]) -> None:
        """Start again the runs the last process left unfinished (of the flows registered)."""
        for run in await self.store.unfinished_runs():
            if run.flow not in flows:
                log.warning(
                    "run %s of flow %r is unfinished but the flow is not registered; it stays %s",
                    run.id,
                    run.flow,
                    run.state,
                )
                continue
            await self.store.apply(writes.run_resumed(run))
            self.start(run)

    async def adopt(self, run: RunRecord) -> None:
        """Drive ``run``, claimed from an instance that died or stopped (cluster mode)."""
        if run.id in self._active or run.state.finished:
            return
        await self.store.apply(writes.run_resumed(run))
        self.start(run)

    def cancel_here(self, run_id: str, reason: str) -> None:
        """Cancel a run held here, as asked on another instance (without waiting)."""
        active = self._active.get(run_id)
        if active is not None and active.cancel_reason is None:
            self.stop(active, reason)

    # -- driving -----------------------------------------------------------------------------
    def start(self, run: RunRecord) -> None:
        """Hold ``run`` and drive it (see :mod:`evflow.run.drivers`)."""
        active = ActiveRun(record=run)
        if self.drivers.spawn(self._drive(active)):
            self._active[run.id] = active

    async def _drive(self, active: ActiveRun) -> None:
        run = active.record
        flow = self._flow(run.flow)
        try:
            cap = run.trigger.get("max_active")  # a backfill's
            group_cap = cap if isinstance(cap, int) else None
            if group_cap is not None or flow.max_active_runs is not None:
                on_wait = partial(self._note_waiting, run)
                group = f"{run.trigger.get('kind')}:{run.trigger.get('group')}"
                active.scope = scope = anyio.CancelScope()
                if active.stopped:
                    scope.cancel()  # stopped before its driver started
                with scope:
                    async with (
                        self.gate.admit(group, group_cap, run.priority, on_wait),
                        self.gate.admit(flow.name, flow.max_active_runs, run.priority, on_wait),
                        self._cluster_place(flow, run, on_wait),
                    ):
                        await self._execute(active, flow)
            else:  # no gate applies: none is entered, and no scope is needed (most runs)
                await self._execute(active, flow)
            if active.execution is None and active.stopped and not self.stopping:
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
                await self.store.apply(writes.run_crashed(failed), wait=True)
                self.signals.publish(RunStateChanged(failed))
            await run_callbacks(flow, failed)
        finally:
            self._active.pop(run.id, None)
            active.done.set()
            self.freed()
            self.ends.ended(run.id)

    async def _execute(self, active: ActiveRun, flow: Flow) -> None:
        """Execute an admitted run, in its span when tracing; a run stopped before it got here
        is not executed (at shutdown it stays queued, else it is recorded cancelled)."""
        if active.stopped:
            return
        run = active.record
        execution = RunExecution(
            run=run,
            flow=flow,
            store=self.store,
            limits=self.limits,
            signals=self.signals,
            clock=self.clock,
            log_level=self.log_level,
            live=self.live,
        )
        active.execution = execution
        if active.cancel_reason is not None:
            execution.cancel(active.cancel_reason)
        if not tracing.enabled():
            await execution.execute()  # nothing built per run when tracing is off
            return
        with tracing.start_span(
            f"evflow.run {flow.name}",
            parent=run.trigger,
            attributes={
                "evflow.flow": flow.name,
                "evflow.run_id": run.id,
                "evflow.trigger": str(run.trigger.get("kind", "")),
            },
            current=True,  # task attempts become its children
        ) as span:
            state = await execution.execute()
            if span is not None:
                span.set_attribute("evflow.state", str(state))
                if state is RunState.FAILED:
                    tracing.failed(span, execution.run.error or "failed")

    def _cluster_place(
        self, flow: Flow, run: RunRecord, on_wait: Callable[[str], None]
    ) -> AbstractAsyncContextManager[object]:
        """In a cluster, a place of the flow's ``max_active_runs`` across every instance."""
        if self.slots is None or flow.max_active_runs is None:
            return OPEN
        return self.slots.hold(
            f"max_active_runs:{flow.name}", flow.max_active_runs, run.id, on_wait
        )

    def _note_waiting(self, run: RunRecord, reason: str) -> None:
        """A run gate made ``run`` wait: record why now, so the store shows it while it waits."""
        self.store.apply_nowait(
            writes.run_waiting(replace(run, state=RunState.QUEUED, waiting=reason, tasks=()))
        )

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
        await self.store.apply(writes.run_cancelled(cancelled, tasks, reason), wait=True)
        self.signals.publish(RunStateChanged(cancelled))

    # -- shutdown ----------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Stop every run held here, without waiting: executing runs are interrupted (to resume
        at the next start), runs waiting at a gate let go."""
        self.stopping = True
        for a in list(self._active.values()):
            if a.execution is not None:
                a.execution.interrupt()
            else:
                a.let_go()

    async def drain(self, grace_period_s: float) -> None:
        """Let executing runs finish for ``grace_period_s``, then interrupt what is left (its
        attempts are recorded interrupted, to resume at the next start). Shielded."""
        self.stopping = True
        with anyio.CancelScope(shield=True):
            executing = [a for a in self._active.values() if a.execution is not None]
            if executing and grace_period_s > 0:
                log.info(
                    "waiting up to %.0fs for %d running run(s) to finish",
                    grace_period_s,
                    len(executing),
                )
                with anyio.move_on_after(grace_period_s):
                    for a in executing:
                        await a.done.wait()
            self.stop_all()
            for a in list(self._active.values()):
                with anyio.move_on_after(10):
                    await a.done.wait()
