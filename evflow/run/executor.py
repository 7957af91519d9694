"""One run: walk the DAG, run each task's attempts under the limits, record everything.

All ready tasks start at once in the run's task group. A task starts when every upstream task
has finished and its trigger rule says so. Each attempt holds its pool and global slots only
while it runs (not while it waits to retry); slots are released however the attempt ends.
Every state change is written to the store (grouped commits) and to the audit trail.

Trigger rules are evaluated when all upstream tasks have finished. Skipped upstream tasks (a
branch not taken) are left out of the count, so a join after a branch still runs:

* ``all_success`` — all non-skipped upstreams succeeded (all skipped → skipped);
* ``none_failed`` — no upstream failed (runs even if all were skipped);
* ``all_done`` — always runs;
* ``one_success`` — at least one succeeded; ``one_failed`` — at least one failed;
* ``all_failed`` — every non-skipped upstream failed.

A task whose rule is not met is ``upstream_failed`` when an upstream failed, else ``skipped``.
A task that a branch did not choose is ``skipped`` whatever its rule and other upstreams.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import random
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio
import orjson

from ..errors import ResultNotSerializable
from ..flows.callbacks import task_callbacks
from ..flows.dag import Flow, Node, Param, Task, unmapped
from ..records import AttemptRecord, LogRecord, RunRecord, TaskRecord
from ..states import RunState, TaskState
from ..store.base import AuditEntry, Changes, Store
from .context import TaskContext, reset_current, set_current
from .limits import Limits, Slots

__all__ = ["RunExecution", "decide"]

log = logging.getLogger("evflow.executor")

_FAILED = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED})
MAX_INTERRUPTIONS = 3


def decide(rule: str, states: list[TaskState]) -> TaskState | None:
    """What a task with trigger ``rule`` does given its finished upstream states.

    Returns ``None`` to run it, or the state to give it instead (skipped / upstream_failed).
    """
    if not states:
        return None
    live = [s for s in states if s is not TaskState.SKIPPED]
    failed = sum(1 for s in live if s in _FAILED)
    ok = sum(1 for s in live if s is TaskState.SUCCEEDED)
    if rule == "all_done":
        return None
    if rule == "none_failed":
        return None if failed == 0 else TaskState.UPSTREAM_FAILED
    if not live:
        return TaskState.SKIPPED
    if rule == "all_success":
        return None if failed == 0 else TaskState.UPSTREAM_FAILED
    if rule == "one_success":
        return None if ok else TaskState.UPSTREAM_FAILED
    if rule == "one_failed":
        return None if failed else TaskState.SKIPPED
    if rule == "all_failed":
        return None if failed == len(live) else TaskState.SKIPPED
    raise ValueError(f"unknown trigger rule {rule!r}")


@dataclass(slots=True)
class Instance:
    """The mutable state of one task instance while its run executes."""

    name: str
    node: str
    map_index: int | None = None
    state: TaskState = TaskState.PENDING
    attempt: int = 0
    failures: int = 0
    interruptions: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    waiting: str | None = None
    error: str | None = None
    traceback: str | None = None
    result_json: bytes | None = None
    result: Any = None

    def record(self, run_id: str) -> TaskRecord:
        return TaskRecord(
            run_id=run_id,
            name=self.name,
            node=self.node,
            state=self.state,
            attempt=self.attempt,
            map_index=self.map_index,
            queued_at=self.queued_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            waiting=self.waiting,
            error=self.error,
            traceback=self.traceback,
            result=self.result_json,
        )


@dataclass
class Hooks:
    """Callbacks the engine gives each execution (alerts, metrics, streaming)."""

    on_task_state: Callable[[str, str, Instance], None] | None = None
    on_run_state: Callable[[RunRecord], None] | None = None


class RunExecution:
    """Executes one run of ``flow`` to its end (or until cancelled)."""

    def __init__(
        self,
        *,
        run: RunRecord,
        flow: Flow,
        store: Store,
        limits: Limits,
        hooks: Hooks | None = None,
        log_level: int = logging.INFO,
    ) -> None:
        self.run = run
        self.flow = flow
        self.store = store
        self.limits = limits
        self.hooks = hooks or Hooks()
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
        self._load(run)

    # -- restoring state ---------------------------------------------------------------------
    def _load(self, run: RunRecord) -> None:
        for t in run.tasks:
            inst = Instance(
                name=t.name,
                node=t.node,
                map_index=t.map_index,
                state=t.state,
                attempt=t.attempt,
                queued_at=t.queued_at,
                started_at=t.started_at,
                ended_at=t.ended_at,
                waiting=t.waiting,
                error=t.error,
                traceback=t.traceback,
                result_json=t.result,
            )
            if t.result is not None:
                inst.result = orjson.loads(t.result)
            self.instances[t.name] = inst
        for name, node in self.flow.nodes.items():
            known = self.instances.get(name)
            if known is not None and known.state.finished:
                self.node_state[name] = known.state
                if node.options.branch and known.state is TaskState.SUCCEEDED:
                    self._apply_branch(node, known)

    # -- bookkeeping -------------------------------------------------------------------------
    def _run_record(self) -> RunRecord:
        return replace(self.run, state=self.state, tasks=())

    async def _save(
        self,
        insts: list[Instance],
        kind: str | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        attempts: list[AttemptRecord] | None = None,
    ) -> None:
        rid = self.run.id
        audit = [AuditEntry(kind, f"run:{rid}/task:{i.name}", data) for i in insts] if kind else []
        await self.store.apply(
            Changes(tasks=[i.record(rid) for i in insts], audit=audit, attempts=attempts or [])
        )
        cb = self.hooks.on_task_state
        if cb is not None:
            for i in insts:
                cb(rid, self.flow.name, i)

    def _log_sink(
        self, run_id: str, task: str, attempt: int, t: float, level: str, message: str
    ) -> None:
        # Called from the event loop or a worker thread; the store's queue is loop-bound,
        # so lines are buffered and flushed by the attempt that wrote them.
        self._log_buffer.append(LogRecord(run_id, task, attempt, t, level, message))

    _log_buffer: list[LogRecord]

    async def _flush_logs(self) -> None:
        if self._log_buffer:
            buf, self._log_buffer = self._log_buffer, []
            await self.store.apply(Changes(logs=buf))

    # -- the walk ----------------------------------------------------------------------------
    async def execute(self) -> RunState:
        """Run to the end; returns the final state (``running`` if interrupted by shutdown)."""
        self._log_buffer = []
        self.run = replace(
            self.run,
            state=RunState.RUNNING,
            waiting=None,
            started_at=self.run.started_at or time.time(),
        )
        self.state = RunState.RUNNING
        await self.store.apply(
            Changes(
                runs=[self._run_record()], audit=[AuditEntry("run.running", f"run:{self.run.id}")]
            )
        )
        self._notify_run()
        # Tasks that were mid-attempt when the process died are interrupted, not lost. The
        # attempt cut short is recorded, so interruptions (and the failures that count against
        # the retries) are counted across restarts.
        interrupted = [
            i
            for i in self.instances.values()
            if i.state in (TaskState.RUNNING, TaskState.WAITING, TaskState.RETRYING)
        ]
        now = time.time()
        cut_short = [
            AttemptRecord(
                self.run.id,
                i.name,
                i.attempt,
                TaskState.INTERRUPTED,
                i.started_at,
                now,
                "the process stopped during this attempt",
            )
            for i in interrupted
            if i.state is TaskState.RUNNING and i.attempt > 0
        ]
        for inst in interrupted:
            inst.state = TaskState.INTERRUPTED
        if interrupted:
            await self._save(interrupted, "task.interrupted", attempts=cut_short)
        if any(i.state is TaskState.INTERRUPTED for i in self.instances.values()):
            await self.store.flush()
            for a in await self.store.list_attempts(self.run.id):
                known = self.instances.get(a.task)
                if known is not None and a.state is TaskState.INTERRUPTED:
                    known.interruptions += 1
                elif known is not None and a.state is TaskState.FAILED:
                    known.failures += 1
        try:
            with anyio.CancelScope() as scope:
                self.cancel_scope = scope
                if self.cancel_reason is not None or self.interrupting:
                    scope.cancel()  # cancelled before the scope existed
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    for node in self.flow.order():
                        if node.name not in self.node_state and not node.upstream:
                            tg.start_soon(self._run_node, node)
                    if self.node_state:
                        self._resume_ready(tg)
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish()
        return self.state

    def _resume_ready(self, tg: anyio.abc.TaskGroup) -> None:
        """After a restart: start nodes whose upstreams all finished before the crash."""
        for node in self.flow.order():
            if node.name in self.node_state or not node.upstream:
                continue
            if all(u.name in self.node_state for u in node.upstream):
                tg.start_soon(self._run_node, node)

    async def _finish(self) -> None:
        if self.interrupting:
            # Shutdown: the run stays ``running`` and resumes at the next start.
            await self._flush_logs()
            await self.store.flush()
            return
        now = time.time()
        leftover = [i for i in self.instances.values() if not i.state.finished]
        for node in self.flow.nodes.values():
            if node.name not in self.instances and node.name not in self.node_state:
                leftover.append(self._instance(node.name, node.name))
        for inst in leftover:
            inst.state = (
                TaskState.SKIPPED  # never ran
                if inst.state in (TaskState.PENDING, TaskState.WAITING)
                else TaskState.CANCELLED
            )
            inst.ended_at = inst.ended_at or now
        for state in (TaskState.SKIPPED, TaskState.CANCELLED):
            group = [i for i in leftover if i.state is state]
            if group:
                await self._save(group, f"task.{state}")
        error: str | None
        if self.cancel_reason is not None:
            self.state = RunState.CANCELLED
            error = self.cancel_reason
        else:
            failed = [n for n, s in self.node_state.items() if s in _FAILED]
            self.state = RunState.FAILED if failed else RunState.SUCCEEDED
            error = f"task(s) failed: {', '.join(sorted(failed))}" if failed else None
        self.run = replace(self.run, state=self.state, ended_at=now, error=error, waiting=None)
        await self._flush_logs()
        await self.store.apply(
            Changes(
                runs=[self._run_record()],
                audit=[
                    AuditEntry(
                        f"run.{self.state}",
                        f"run:{self.run.id}",
                        {"error": error} if error else None,
                    )
                ],
            ),
            wait=True,
        )
        self._notify_run()

    def _notify_run(self) -> None:
        if self.hooks.on_run_state is not None:
            self.hooks.on_run_state(self._run_record())

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
            inst = Instance(name=name, node=node, map_index=map_index, queued_at=time.time())
            self.instances[name] = inst
        return inst

    def _node_done(self, node: Node, state: TaskState) -> Node | None:
        """Record ``node`` finished; start the downstream tasks it made ready.

        One of them is returned for the caller to run in its own task, so a chain of tasks
        runs in one task instead of spawning one per step.
        """
        self.node_state[node.name] = state
        ready = [
            down
            for down in node.downstream
            if down.name not in self.node_state
            and all(u.name in self.node_state for u in down.upstream)
        ]
        if not ready:
            return None
        tg = self._tg
        assert tg is not None
        for down in ready[1:]:
            tg.start_soon(self._run_node, down)
        return ready[0]

    async def _run_node(self, node: Node) -> None:
        current: Node | None = node
        while current is not None:
            current = self._node_done(current, await self._run_one(current))

    async def _run_one(self, node: Node) -> TaskState:
        """Run one node (all its instances, if mapped) or settle it by its trigger rule."""
        if any((u.name, node.name) in self.skipped_edges for u in node.upstream):
            verdict: TaskState | None = TaskState.SKIPPED  # a branch did not choose it
        else:
            verdict = decide(node.options.trigger_rule, self._upstream_states(node))
        if verdict is not None:
            inst = self._instance(node.name, node.name)
            inst.state = verdict
            inst.ended_at = time.time()
            await self._save([inst], f"task.{verdict}", {"trigger_rule": node.options.trigger_rule})
            return verdict
        if node.mapped:
            return await self._run_mapped(node)
        inst = self._instance(node.name, node.name)
        args, kwargs = self._resolve(node)
        return await self._run_instance(node, inst, args, kwargs)

    def _upstream_states(self, node: Node) -> list[TaskState]:
        return [
            TaskState.SKIPPED
            if (u.name, node.name) in self.skipped_edges
            else self.node_state[u.name]
            for u in node.upstream
        ]

    async def _run_mapped(self, node: Node) -> TaskState:
        parent = self._instance(node.name, node.name)
        try:
            calls = self._expand(node)
        except Exception as exc:  # a bad mapping input fails the task, not the engine
            parent.state, parent.error = TaskState.FAILED, str(exc)
            parent.ended_at = time.time()
            await self._save([parent], "task.failed", {"error": str(exc)})
            return TaskState.FAILED
        parent.state = TaskState.RUNNING
        parent.started_at = parent.started_at or time.time()
        children = [self._instance(f"{node.name}[{i}]", node.name, i) for i in range(len(calls))]
        await self._save([parent, *children], None)
        # Each instance's slots are taken here, in order, before it is spawned: a mapped task
        # of 100,000 items under a pool of 10 keeps 10 running tasks and 99,990 plain records,
        # not 100,000 parked tasks.
        opts = node.options
        ahead: set[Slots] = set()  # slots taken for instances that have not started yet
        try:
            async with anyio.create_task_group() as tg:
                for child, (args, kwargs) in zip(children, calls, strict=True):
                    if child.state.finished:
                        continue
                    held = await self.limits.hold(
                        opts.pool, opts.slots, opts.priority, partial(self._blocked, child)
                    )
                    ahead.add(held)
                    tg.start_soon(self._run_child, node, child, args, kwargs, held, ahead)
        finally:
            for held in ahead:  # spawned but cancelled before they started
                held.release()
        failed = [c.name for c in children if c.state is not TaskState.SUCCEEDED]
        parent.ended_at = time.time()
        parent.state = TaskState.FAILED if failed else TaskState.SUCCEEDED
        parent.error = f"{len(failed)} of {len(children)} instances failed" if failed else None
        parent.result = [c.result for c in children]
        parent.result_json = orjson.dumps(parent.result)
        await self._save([parent], f"task.{parent.state}", {"instances": len(children)})
        return parent.state

    # -- arguments ---------------------------------------------------------------------------
    def _value(self, v: Any) -> Any:
        if isinstance(v, unmapped):
            return self._value(v.value)
        if isinstance(v, Node):
            inst = self.instances.get(v.name)
            return inst.result if inst is not None else None
        if isinstance(v, Param):
            return self.params.get(v.name)
        return v

    def _resolve(self, node: Node) -> tuple[list[Any], dict[str, Any]]:
        if not node.explicit:
            return [self._value(a) for a in node.args], {
                k: self._value(v) for k, v in node.kwargs.items()
            }
        return _bind_explicit(node, self.params, {u.name: self._value(u) for u in node.upstream})

    def _expand(self, node: Node) -> list[tuple[list[Any], dict[str, Any]]]:
        def items(v: Any) -> list[Any] | None:
            if isinstance(v, unmapped):
                return None
            val = self._value(v)
            if isinstance(v, Node | Param) or isinstance(val, list | tuple):
                if not isinstance(val, list | tuple):
                    raise TypeError(
                        f"task {node.name!r} maps over {type(val).__name__}, which is not a list"
                    )
                return list(val)
            return None

        pos = [(a, items(a)) for a in node.args]
        kw = {k: (v, items(v)) for k, v in node.kwargs.items()}
        lengths = {len(it) for _, it in [*pos, *kw.values()] if it is not None}
        if len(lengths) > 1:
            raise ValueError(
                f"task {node.name!r}: mapped arguments have different lengths {sorted(lengths)}"
            )
        n = lengths.pop() if lengths else 0
        calls = []
        for i in range(n):
            args = [it[i] if it is not None else self._value(a) for a, it in pos]
            kwargs = {k: it[i] if it is not None else self._value(v) for k, (v, it) in kw.items()}
            calls.append((args, kwargs))
        return calls

    # -- attempts ----------------------------------------------------------------------------
    async def _run_child(
        self,
        node: Node,
        inst: Instance,
        args: list[Any],
        kwargs: dict[str, Any],
        held: Any,
        ahead: set[Any],
    ) -> None:
        """One instance of a mapped task, started with the slots its parent took for it."""
        ahead.discard(held)
        try:
            await self._run_instance(node, inst, args, kwargs, held=held)
        finally:
            held.release()

    async def _run_instance(
        self,
        node: Node,
        inst: Instance,
        args: list[Any],
        kwargs: dict[str, Any],
        *,
        held: AbstractAsyncContextManager[None] | None = None,
    ) -> TaskState:
        opts = node.options
        rid = self.run.id
        if inst.state is TaskState.INTERRUPTED and inst.interruptions > MAX_INTERRUPTIONS:
            inst.state, inst.ended_at = TaskState.FAILED, time.time()
            inst.error = f"interrupted {inst.interruptions} times; giving up"
            await self._save([inst], "task.failed", {"error": inst.error})
            await task_callbacks("failure", self.flow, node.task, rid, inst, self.params)
            return inst.state
        on_wait = partial(self._blocked, inst)
        while True:
            if held is not None:  # the first attempt's slots were taken ahead
                slots, held = held, None
            else:
                slots = self.limits.slots(opts.pool, opts.slots, opts.priority, on_wait)
            try:
                async with slots:
                    inst.attempt += 1
                    inst.state = TaskState.RUNNING
                    inst.started_at = time.time()
                    inst.ended_at = None
                    inst.error = inst.traceback = inst.waiting = None
                    await self._save([inst], "task.running", {"attempt": inst.attempt})
                    outcome = await self._attempt(node, inst, args, kwargs)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    now = time.time()
                    was_running = inst.state is TaskState.RUNNING
                    if self.interrupting:
                        inst.state = TaskState.INTERRUPTED
                    else:
                        inst.state = TaskState.CANCELLED if was_running else TaskState.SKIPPED
                    inst.ended_at = now
                    attempts = (
                        [
                            AttemptRecord(
                                rid,
                                inst.name,
                                inst.attempt,
                                inst.state,
                                inst.started_at,
                                now,
                                "cancelled",
                            )
                        ]
                        if was_running
                        else []
                    )
                    await self._flush_logs()
                    await self._save([inst], f"task.{inst.state}", attempts=attempts)
                raise
            await self._flush_logs()
            now = time.time()
            inst.ended_at = now
            attempt_rec = AttemptRecord(
                rid, inst.name, inst.attempt, outcome, inst.started_at, now, inst.error
            )
            if outcome is TaskState.SUCCEEDED:
                inst.state = TaskState.SUCCEEDED
                await self._save([inst], "task.succeeded", attempts=[attempt_rec])
                if opts.branch:
                    self._apply_branch(node, inst)
                await task_callbacks("success", self.flow, node.task, rid, inst, self.params)
                return inst.state
            inst.failures += 1
            retryable = not isinstance(inst.result, ResultNotSerializable)
            if retryable and inst.failures <= opts.retries:
                delay = opts.retry_delay(inst.failures, random.random())
                inst.state = TaskState.RETRYING
                inst.waiting = (
                    f"retrying in {delay:.2f}s (attempt {inst.attempt + 1} of "
                    f"{opts.retries + 1 + inst.interruptions})"
                )
                await self._save(
                    [inst],
                    "task.retrying",
                    {"error": inst.error, "delay_s": round(delay, 3)},
                    attempts=[attempt_rec],
                )
                await task_callbacks("retry", self.flow, node.task, rid, inst, self.params)
                await anyio.sleep(delay)
                continue
            inst.state = TaskState.FAILED
            inst.result = None
            await self._save([inst], "task.failed", {"error": inst.error}, attempts=[attempt_rec])
            await task_callbacks("failure", self.flow, node.task, rid, inst, self.params)
            return inst.state

    def _blocked(self, inst: Instance, reason: str) -> None:
        """A limit made ``inst`` wait: record why now, so the store shows it while it waits."""
        inst.state, inst.waiting = TaskState.WAITING, reason
        rid = self.run.id
        self.store.apply_nowait(
            Changes(
                tasks=[inst.record(rid)],
                audit=[
                    AuditEntry("task.waiting", f"run:{rid}/task:{inst.name}", {"reason": reason})
                ],
            )
        )
        if self.hooks.on_task_state is not None:
            self.hooks.on_task_state(rid, self.flow.name, inst)

    async def _call(self, t: Task, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Call the task function: async ones on the loop, sync ones in a worker thread."""
        if t.is_async:
            value = await t.fn(*args, **kwargs)
        else:
            run = contextvars.copy_context().run
            value = await anyio.to_thread.run_sync(
                lambda: run(t.fn, *args, **kwargs),
                limiter=self.limits.thread_limiter,
                abandon_on_cancel=True,
            )
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _attempt(
        self, node: Node, inst: Instance, args: list[Any], kwargs: dict[str, Any]
    ) -> TaskState:
        """One call of the task function; fills the instance's result or error."""
        t = node.task
        ctx = TaskContext(
            self.run.id,
            self.flow.name,
            inst.name,
            inst.attempt,
            self.params,
            self._log_sink,
            self.log_level,
        )
        token = set_current(ctx)
        try:
            if node.options.timeout_s is None:
                value = await self._call(t, args, kwargs)
            else:
                with anyio.fail_after(node.options.timeout_s):
                    value = await self._call(t, args, kwargs)
        except TimeoutError:
            inst.error = (
                f"TimeoutError: task {inst.name!r} timed out after {node.options.timeout_s:g}s"
            )
            inst.traceback = None
            return TaskState.FAILED
        except Exception as exc:
            inst.error = f"{type(exc).__name__}: {exc}"
            inst.traceback = traceback.format_exc()
            return TaskState.FAILED
        finally:
            reset_current(token)
        try:
            inst.result_json = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            err = ResultNotSerializable(
                f"task {inst.name!r} of flow {self.flow.name!r} returned a "
                f"{type(value).__module__}.{type(value).__qualname__}, which cannot be stored "
                "as JSON; return plain data (dict, list, str, number, bool, None)"
            )
            inst.error, inst.traceback, inst.result = str(err), None, err
            return TaskState.FAILED
        inst.result = orjson.loads(inst.result_json)
        return TaskState.SUCCEEDED

    def _apply_branch(self, node: Node, inst: Instance) -> None:
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


def _bind_explicit(
    node: Node, params: Mapping[str, Any], upstream: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments of an explicit-style task (``task(fn)`` and ``>>``).

    A parameter named like an upstream task gets its result; one named like a run parameter
    gets that value; remaining positional parameters without a default take the remaining
    upstream results in order; ``**kwargs`` receives the run parameters not used.
    """
    try:
        sig = inspect.signature(node.task.fn)
    except (TypeError, ValueError):
        return list(upstream.values()), {}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    named = {
        p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    rest = [v for k, v in upstream.items() if k not in named]
    has_var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            has_var_kw = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            args.extend(rest)
            rest = []
            continue
        if p.name in upstream:
            value = upstream[p.name]
        elif p.name in params:
            value = params[p.name]
        elif rest and p.default is p.empty:
            value = rest.pop(0)
        else:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[p.name] = value
    if has_var_kw:
        for k, v in params.items():
            kwargs.setdefault(k, v)
    return args, kwargs
