"""One run: walk the DAG, run each task's attempts under the limits, record everything.

All ready tasks start at once in the run's task group (a run whose tasks form one line
has one ready at a time, and opens no group). A task starts when every upstream task
has finished and its trigger rule (:mod:`evflow.flows.trigger_rules`) says so; a task that a
branch did not choose is skipped whatever its rule. Each attempt
(:mod:`evflow.run.attempt`) holds its pool and global slots only while it runs (not while it
waits to retry); slots are released however the attempt ends. Every state change goes to the
store through the run's :class:`~evflow.run.ledger.Ledger` and is published as a signal.
Timestamps and retry delays come from the injected clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.abc
import orjson

from ..audit_kinds import AuditKind
from ..clock import Clock, SystemClock
from ..flows import binding
from ..flows.dag import Flow, Node
from ..flows.trigger_rules import FAILED_STATES, decide
from ..records import AttemptRecord, LogRecord, RunRecord, TaskRecord, evolver
from ..signals import RunStateChanged, Signals, TaskStateChanged
from ..states import RunState, TaskState
from ..store.base import Store
from .attempt import Instance, TaskAttempts
from .ledger import Ledger
from .limits import Limits, Slots
from .workers import Workers

__all__ = ["RunExecution"]

log = logging.getLogger("evflow.executor")

_evolve_run = evolver(RunRecord)


_MID_ATTEMPT = (TaskState.RUNNING, TaskState.WAITING, TaskState.RETRYING)

#: One instance of a mapped task, ready to start: its arguments and the slots taken for it.
_Child = tuple[Instance, list[Any], dict[str, Any], Slots]


class Liveness(Protocol):
    """An instance of a cluster, asked before each task try starts: could the others have
    counted it dead (its loop or database stalled past its TTL) and taken its work over?"""

    def current(self) -> bool: ...

    async def until_current(self) -> None: ...


class RunExecution:
    """Executes one run of ``flow`` to its end (or until cancelled)."""

    def __init__(
        self,
        *,
        run: RunRecord,
        flow: Flow,
        store: Store,
        limits: Limits,
        signals: Signals,
        clock: Clock,
        log_level: int = logging.INFO,
        live: Liveness | None = None,
    ) -> None:
        self.run = run
        self.live = live  # in a cluster: no task starts unless this instance is surely alive
        self.flow = flow
        self.ledger = Ledger(store, run.id)
        self.limits = limits
        self.signals = signals
        self.clock = clock
        #: The clock's time as a POSIX timestamp (what the records hold); the system clock's
        #: is ``time.time()``, read without building a datetime on every transition.
        self.now: Callable[[], float] = (
            time.time if type(clock) is SystemClock else self._clock_time
        )
        self.log_level = log_level
        self.params = dict(run.params)
        self.state = run.state
        self.instances: dict[str, Instance] = {}
        self.node_state: dict[str, TaskState] = {}
        self.skipped_edges: set[tuple[str, str]] = set()
        self.cancel_scope: anyio.CancelScope | None = None
        self.cancel_reason: str | None = None
        self.interrupting = False
        self._tg: anyio.abc.TaskGroup | None = None
        #: Log lines written by this run's tasks, not yet handed to the store.
        self.log_buffer: list[LogRecord] = []
        self._load(run)

    def _clock_time(self) -> float:
        return self.clock.now().timestamp()

    # -- restoring state ---------------------------------------------------------------------
    def _load(self, run: RunRecord) -> None:
        for t in run.tasks:
            inst = Instance(t)
            if t.result is not None:
                inst.result = orjson.loads(t.result)
            self.instances[t.name] = inst
        for name, node in self.flow.nodes.items():
            known = self.instances.get(name)
            if known is not None and known.record.state.finished:
                self.node_state[name] = known.record.state
                if node.options.branch and known.record.state is TaskState.SUCCEEDED:
                    self.apply_branch(node, known)

    # -- bookkeeping -------------------------------------------------------------------------
    async def save(
        self,
        insts: list[Instance],
        kind: AuditKind | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        attempts: list[AttemptRecord] | None = None,
    ) -> None:
        """Record the instances' current records (one commit group) and publish them."""
        records = [i.record for i in insts]
        await self.ledger.tasks_changed(records, kind, data, attempts)
        if self.signals.wants(TaskStateChanged):
            publish, flow = self.signals.publish, self.flow.name
            for rec in records:
                publish(TaskStateChanged(flow, rec))

    def _publish_run(self, run: RunRecord) -> None:
        if self.signals.wants(RunStateChanged):
            self.signals.publish(RunStateChanged(run=run))

    def log_sink(
        self, run_id: str, task: str, attempt: int, t: float, level: str, message: str
    ) -> None:
        # Called from the event loop or a worker thread; the store's queue is loop-bound,
        # so lines are buffered and flushed by the attempt that wrote them.
        self.log_buffer.append(LogRecord(run_id, task, attempt, t, level, message))

    async def flush_logs(self) -> None:
        if self.log_buffer:
            buf, self.log_buffer = self.log_buffer, []
            await self.ledger.logs(buf)

    def blocked(self, inst: Instance, reason: str) -> None:
        """A limit made ``inst`` wait: record why now, so the store shows it while it waits."""
        rec = inst.update(state=TaskState.WAITING, waiting=reason)
        self.ledger.task_waiting(rec, reason)
        if self.signals.wants(TaskStateChanged):
            self.signals.publish(TaskStateChanged(self.flow.name, rec))

    # -- the walk ----------------------------------------------------------------------------
    async def execute(self) -> RunState:
        """Run to the end; returns the final state (``running`` if interrupted by shutdown)."""
        self.log_buffer = []
        # Never started before, so no task of it can have been cut short: a run's start is
        # committed before, or with, the start of any of its tasks.
        fresh = self.run.started_at is None
        # The run's record as written and published: its tasks are recorded on their own.
        self.run = running = _evolve_run(
            self.run,
            state=RunState.RUNNING,
            waiting=None,
            started_at=self.run.started_at or self.now(),
            tasks=(),
        )
        self.state = RunState.RUNNING
        await self.ledger.run_changed(running, AuditKind.RUN_RUNNING)
        self._publish_run(running)
        if not fresh:
            await self._interrupted_before()
        try:
            with anyio.CancelScope() as scope:
                self.cancel_scope = scope
                if self.cancel_reason is not None or self.interrupting:
                    scope.cancel()  # cancelled before the scope existed
                # The first ready task runs in this task: one spawn less per run. A chain has
                # one task ready at a time: it needs no task group of its own.
                if self.flow.is_chain:
                    await self._run_node(self._start(self._ready_at_start()))
                else:
                    async with anyio.create_task_group() as self._tg:
                        await self._run_node(self._start(self._ready_at_start()))
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()
        return self.state

    async def _interrupted_before(self) -> None:
        """Tasks that were mid-attempt when the process died are interrupted, not lost.

        The attempt cut short is recorded, so interruptions (and the failures that count
        against the retries) are counted across restarts.
        """
        interrupted = [i for i in self.instances.values() if i.record.state in _MID_ATTEMPT]
        if interrupted:
            cut_short = _cut_short(self.run.id, interrupted, self.now())
            for inst in interrupted:
                inst.update(state=TaskState.INTERRUPTED)
            await self.save(interrupted, AuditKind.TASK_INTERRUPTED, attempts=cut_short)
        if any(i.record.state is TaskState.INTERRUPTED for i in self.instances.values()):
            for a in await self.ledger.past_attempts():
                known = self.instances.get(a.task)
                if known is not None and a.state is TaskState.INTERRUPTED:
                    known.interruptions += 1
                elif known is not None and a.state is TaskState.FAILED:
                    known.failures += 1

    def _ready_at_start(self) -> list[Node]:
        """The nodes to start with: the roots not yet run, and after a restart the nodes
        whose upstreams all finished before the crash."""
        return _ready(self.flow.order(), self.node_state)

    async def _finish(self) -> None:
        if self.interrupting:
            # Shutdown: the run stays ``running`` and resumes at the next start.
            await self.flush_logs()
            await self.ledger.flush()
            return
        now = self.now()
        leftover = [i for i in self.instances.values() if not i.record.state.finished]
        for node in self.flow.nodes.values():
            if node.name not in self.instances and node.name not in self.node_state:
                leftover.append(self._instance(node.name, node.name))
        for inst in leftover:
            inst.update(
                state=TaskState.SKIPPED  # never ran
                if inst.record.state in (TaskState.PENDING, TaskState.WAITING)
                else TaskState.CANCELLED,
                ended_at=inst.record.ended_at or now,
            )
        if leftover:
            for state in (TaskState.SKIPPED, TaskState.CANCELLED):
                group = [i for i in leftover if i.record.state is state]
                if group:
                    await self.save(group, AuditKind.of_task(state))
        error: str | None
        if self.cancel_reason is not None:
            self.state = RunState.CANCELLED
            error = self.cancel_reason
        else:
            failed = [n for n, s in self.node_state.items() if s in FAILED_STATES]
            self.state = RunState.FAILED if failed else RunState.SUCCEEDED
            error = _failure(failed, self.node_state) if failed else None
        self.run = ended = _evolve_run(
            self.run, state=self.state, ended_at=now, error=error, waiting=None
        )
        await self.flush_logs()
        await self.ledger.run_changed(
            ended,
            AuditKind.of_run(self.state),
            {"error": error} if error else None,
            wait=True,
        )
        self._publish_run(ended)

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel the run: running tasks are cancelled, pending ones skipped."""
        if self.cancel_reason is None and not self.interrupting:
            self.cancel_reason = reason
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def interrupt(self) -> None:
        """Stop for shutdown: running attempts are recorded as interrupted, to resume later."""
        self.interrupting = True
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def _instance(self, name: str, node: str, map_index: int | None = None) -> Instance:
        inst = self.instances.get(name)
        if inst is None:
            rec = TaskRecord(
                self.run.id,
                name,
                node,
                TaskState.PENDING,
                map_index=map_index,
                queued_at=self.now(),
            )
            inst = self.instances[name] = Instance(rec)
        return inst

    def _result_of(self, name: str) -> Any:
        inst = self.instances.get(name)
        return inst.result if inst is not None else None

    def _node_done(self, node: Node, state: TaskState) -> Node | None:
        """Record ``node`` finished; start the downstream tasks it made ready.

        One of them is returned for the caller to run in its own task, so a chain of tasks
        runs in one task instead of spawning one per step.
        """
        self.node_state[node.name] = state
        return self._start(_ready(node.downstream, self.node_state))

    def _start(self, ready: list[Node]) -> Node | None:
        """Start all of ``ready`` but the first in the run's task group; the first is
        returned, for the caller to run in its own task."""
        if len(ready) > 1:
            tg = self._tg
            assert tg is not None, "only a chain runs without a task group"
            for node in ready[1:]:
                tg.start_soon(self._run_node, node)
        return ready[0] if ready else None

    async def _run_node(self, node: Node | None) -> None:
        current = node
        while current is not None:
            state = await self._run_one(current)
            if current.downstream:
                # What runs next acts on this outcome: it is committed first, so a crash
                # never re-runs a task whose downstream already started.
                await self.ledger.flush()
            current = self._node_done(current, state)

    async def _run_one(self, node: Node) -> TaskState:
        """Run one node (all its instances, if mapped) or settle it by its trigger rule."""
        verdict: TaskState | None = None
        if not node.upstream:
            pass  # a root task always runs
        elif self.skipped_edges and _not_chosen(node, self.skipped_edges):
            verdict = TaskState.SKIPPED  # a branch did not choose it
        else:
            verdict = decide(node.options.trigger_rule, self._upstream_states(node))
        if verdict is not None:
            inst = self._instance(node.name, node.name)
            inst.update(state=verdict, ended_at=self.now())
            await self.save(
                [inst], AuditKind.of_task(verdict), {"trigger_rule": node.options.trigger_rule}
            )
            return verdict
        if node.mapped:
            return await self._run_mapped(node)
        inst = self._instance(node.name, node.name)
        args, kwargs = binding.bind(node, self._result_of, self.params)
        return await TaskAttempts(self, node, inst, args, kwargs).run()

    def _upstream_states(self, node: Node) -> list[TaskState]:
        skipped, done, name = self.skipped_edges, self.node_state, node.name
        states = []
        for u in node.upstream:
            states.append(TaskState.SKIPPED if (u.name, name) in skipped else done[u.name])
        return states

    async def _run_mapped(self, node: Node) -> TaskState:
        parent = self._instance(node.name, node.name)
        try:
            calls = binding.expand(node, self._result_of, self.params)
        except Exception as exc:  # a bad mapping input fails the task, not the engine
            parent.update(state=TaskState.FAILED, error=str(exc), ended_at=self.now())
            await self.save([parent], AuditKind.TASK_FAILED, {"error": str(exc)})
            return TaskState.FAILED
        parent.update(state=TaskState.RUNNING, started_at=parent.record.started_at or self.now())
        children = [self._instance(f"{node.name}[{i}]", node.name, i) for i in range(len(calls))]
        await self.save([parent, *children], None)
        # Each instance's slots are taken here, in order, before it is handed to a worker: a
        # mapped task of 100,000 items under a pool of 10 keeps about 10 tasks and 99,990
        # plain records, not 100,000 parked tasks.
        opts = node.options
        ahead: set[Slots] = set()  # slots taken for instances that have not started yet
        try:
            async with anyio.create_task_group() as tg:
                workers: Workers[_Child] = Workers(tg, partial(self._run_child, node, ahead))
                try:
                    for child, (args, kwargs) in zip(children, calls, strict=True):
                        if child.record.state.finished:
                            continue
                        held = await self.limits.hold(
                            opts.pool,
                            opts.slots,
                            opts.priority,
                            partial(self.blocked, child),
                            f"{self.run.id}/{child.record.name}" if opts.pool is not None else None,
                        )
                        ahead.add(held)
                        workers.put((child, args, kwargs, held))
                finally:
                    workers.close()
        finally:
            for held in ahead:  # spawned but cancelled before they started
                await _give_back(held)
        failed = [c.record.name for c in children if c.record.state is not TaskState.SUCCEEDED]
        parent.result = [c.result for c in children]
        parent.update(
            ended_at=self.now(),
            state=TaskState.FAILED if failed else TaskState.SUCCEEDED,
            error=f"{len(failed)} of {len(children)} instances failed" if failed else None,
            result=orjson.dumps(parent.result),
        )
        await self.save(
            [parent], AuditKind.of_task(parent.record.state), {"instances": len(children)}
        )
        return parent.record.state

    async def _run_child(self, node: Node, ahead: set[Slots], child: _Child) -> None:
        """One instance of a mapped task, started with the slots its parent took for it."""
        inst, args, kwargs, held = child
        ahead.discard(held)
        try:
            await TaskAttempts(self, node, inst, args, kwargs).run(held)
        finally:
            await _give_back(held)

    def apply_branch(self, node: Node, inst: Instance) -> None:
        """A branch task succeeded: the downstream tasks it did not choose are skipped."""
        chosen = inst.result
        names = {chosen} if isinstance(chosen, str) else set(chosen or [])
        known = {d.name for d in node.downstream}
        unknown = names - known
        if unknown:
            log.warning(
                "branch task %r of flow %r chose unknown task(s) %s; downstream: %s",
                node.name,
                self.flow.name,
                sorted(unknown),
                sorted(known),
            )
        for d in node.downstream:
            if d.name not in names:
                self.skipped_edges.add((node.name, d.name))


async def _give_back(held: Slots) -> None:
    """Give back slots taken ahead (idempotent); cluster places take a write, even when
    cancelled."""
    if not held.release_now():
        with anyio.CancelScope(shield=True):
            await held.aclose()


# Helpers kept out of the methods above: in a function with a comprehension (or generator)
# that reads one of its locals, that local is a cell, allocated at every call, whether the
# comprehension runs or not. Out here, they cost only when they run.
def _ready(nodes: Iterable[Node], done: Mapping[str, TaskState]) -> list[Node]:
    """The ``nodes`` not yet run whose upstream tasks have all finished."""
    ready = []
    for node in nodes:
        if node.name in done:
            continue
        for u in node.upstream:
            if u.name not in done:
                break
        else:
            ready.append(node)
    return ready


def _not_chosen(node: Node, skipped_edges: set[tuple[str, str]]) -> bool:
    """Whether a branch upstream of ``node`` did not choose it."""
    return any((u.name, node.name) in skipped_edges for u in node.upstream)


def _failure(failed: list[str], states: Mapping[str, TaskState]) -> str:
    """A failed run's error: the tasks that failed themselves, not those their failure
    stopped."""
    culprits = [n for n in failed if states[n] is TaskState.FAILED] or failed
    return f"task(s) failed: {', '.join(sorted(culprits))}"


def _cut_short(run_id: str, interrupted: list[Instance], now: float) -> list[AttemptRecord]:
    """The attempts that were running when the process stopped, recorded as interrupted."""
    return [
        AttemptRecord(
            run_id,
            i.record.name,
            i.record.attempt,
            TaskState.INTERRUPTED,
            i.record.started_at,
            now,
            "the process stopped during this attempt",
        )
        for i in interrupted
        if i.record.state is TaskState.RUNNING and i.record.attempt > 0
    ]
