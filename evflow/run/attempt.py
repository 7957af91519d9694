"""One task instance's attempts, with one handler per outcome.

An attempt takes the instance's slots, calls the task function and ends in exactly one of:
success, an exception (then a retry or a failure), a timeout (likewise), a result that cannot
be stored (a failure, never retried), cancellation of the run, or interruption by shutdown.
Each outcome has its own handler below, which records it and says what happens next.

Retry delays wait on the run's clock, so a test with a manual clock sees retries without real
waiting. Task timeouts run on real time (``anyio.fail_after``): they guard against code that
hangs in the real world, which a manual clock would never notice.
"""

from __future__ import annotations

import contextvars
import inspect
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from .. import tracing
from ..audit_kinds import AuditKind
from ..errors import ResultNotSerializable
from ..flows.callbacks import task_callbacks
from ..flows.dag import Node
from ..flows.tasks import Task
from ..frozen import record
from ..records import AttemptRecord, TaskRecord, evolver
from ..states import TaskState
from .context import TaskContext, reset_current, set_current

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from .executor import RunExecution
    from .limits import Slots

__all__ = ["MAX_INTERRUPTIONS", "Instance", "TaskAttempts"]

_evolve_task = evolver(TaskRecord)

#: Result types that are never awaitable: no ``inspect.isawaitable`` (an ABC check) for them.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})

#: An instance interrupted more often than this (by crashes or shutdowns) fails.
MAX_INTERRUPTIONS = 3


@dataclass(slots=True)
class Instance:
    """One task instance while its run executes: its current record (frozen, replaced on
    every change) and what only the running process knows."""

    record: TaskRecord
    failures: int = 0  # failed attempts, across restarts
    interruptions: int = 0  # interrupted attempts, across restarts
    result: Any = None  # the result as a Python value (the record holds its JSON)

    def update(self, **changes: Any) -> TaskRecord:
        """Replace the record with ``changes`` applied (one copy per transition)."""
        self.record = rec = _evolve_task(self.record, **changes)
        return rec


# -- what one call of the task function came to ---------------------------------------------
@record
class Succeeded:
    result_json: bytes
    result: Any


@record
class Raised:
    error: str
    traceback: str | None


@record
class TimedOut:
    error: str


@record
class NotSerializable:
    error: str


Outcome = Succeeded | Raised | TimedOut | NotSerializable


class TaskAttempts:
    """Runs the attempts of one instance of ``node`` until it succeeds or fails for good."""

    __slots__ = ("args", "ex", "inst", "kwargs", "node", "opts")

    def __init__(
        self,
        ex: RunExecution,
        node: Node,
        inst: Instance,
        args: list[Any],
        kwargs: dict[str, Any],
    ) -> None:
        self.ex = ex
        self.node = node
        self.opts = node.options
        self.inst = inst
        self.args = args
        self.kwargs = kwargs

    async def run(self, held: Slots | None = None) -> TaskState:
        """Attempt until done; ``held`` are slots already taken for the first attempt."""
        ex, inst = self.ex, self.inst
        if inst.record.state is TaskState.INTERRUPTED and inst.interruptions > MAX_INTERRUPTIONS:
            return await self._on_too_many_interruptions()
        while True:
            if tracing.enabled():
                outcome = await self._traced_attempt(held)
            else:  # nothing built per attempt when tracing is off
                outcome = await self._attempt(
                    held if held is not None else self._slots(self._blocked), None
                )
            held = None  # the first attempt's slots were taken ahead; later ones take their own
            if ex.log_buffer:
                await ex.flush_logs()
            ended = ex.now()
            if isinstance(outcome, Succeeded):
                return await self._on_success(outcome, ended)
            if isinstance(outcome, NotSerializable):
                return await self._on_unstorable_result(outcome, ended)
            if isinstance(outcome, TimedOut):
                delay = await self._on_timeout(outcome, ended)
            else:
                delay = await self._on_exception(outcome, ended)
            if delay is None:
                return inst.record.state
            await ex.clock.sleep_until(ex.clock.now() + timedelta(seconds=delay))

    async def _traced_attempt(self, held: Slots | None) -> Outcome:
        """One attempt in its span."""
        ex, inst = self.ex, self.inst
        with tracing.start_span(
            f"evflow.task {inst.record.name}",
            attributes={
                "evflow.flow": ex.flow.name,
                "evflow.task": inst.record.name,
                "evflow.run_id": ex.run.id,
            },
            current=True,  # the task's own instrumentation nests under its attempt
        ) as span:
            on_wait = self._blocked if span is None else partial(_waiting, span, ex, inst)
            return await self._attempt(held if held is not None else self._slots(on_wait), span)

    def _slots(self, on_wait: Callable[[str], None]) -> Slots:
        """The slots of one attempt (taken when it starts)."""
        ex, opts = self.ex, self.opts
        return ex.limits.slots(
            opts.pool,
            opts.slots,
            opts.priority,
            on_wait,
            f"{ex.run.id}/{self.inst.record.name}" if opts.pool is not None else None,
        )

    def _blocked(self, reason: str) -> None:
        """A limit made this attempt wait (noted once the wait lasts)."""
        self.ex.blocked(self.inst, reason)

    async def _attempt(self, slots: Slots, span: Span | None) -> Outcome:
        """Take the slots, start, call: one attempt, recorded on ``span`` when tracing."""
        ex = self.ex
        try:
            # ``async with slots``, without its two coroutines when no slot has to be waited for
            if not slots.take_now():
                await slots.take()
            try:
                # In a cluster, go on only while the others surely count this instance alive:
                # one that stalled past its TTL may have been taken over, its places given to
                # others. (Checked inline: this runs for every task.)
                live = ex.live
                if live is not None and not live.current():
                    await live.until_current()
                await self._start()
                if live is not None and not live.current():
                    await live.until_current()  # the write may have waited past the TTL
                if span is not None:
                    span.set_attribute("evflow.attempt", self.inst.record.attempt)
                outcome = await self._call()
            finally:
                if not slots.release_now():
                    await slots.aclose()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                if ex.interrupting:
                    await self._on_interruption()
                else:
                    await self._on_cancellation()
            if span is not None:
                span.set_attribute("evflow.state", str(self.inst.record.state))
            raise
        if span is not None:
            if isinstance(outcome, Succeeded):
                span.set_attribute("evflow.state", str(TaskState.SUCCEEDED))
            else:
                span.set_attribute("evflow.state", str(TaskState.FAILED))
                tracing.failed(span, outcome.error)
        return outcome

    async def _start(self) -> None:
        inst = self.inst
        rec = inst.update(
            state=TaskState.RUNNING,
            attempt=inst.record.attempt + 1,
            started_at=self.ex.now(),
            ended_at=None,
            error=None,
            traceback=None,
            waiting=None,
        )
        await self.ex.save([inst], AuditKind.TASK_RUNNING, {"attempt": rec.attempt})

    async def _call(self) -> Outcome:
        """One call of the task function, in the task's context."""
        ex, inst, opts = self.ex, self.inst, self.opts
        attempt = inst.record.attempt
        ctx = TaskContext(
            ex.run.id, ex.flow.name, inst.record.name, attempt, ex.params, ex.log_sink, ex.log_level
        )
        token = set_current(ctx)
        try:
            t = self.node.task
            if opts.timeout_s is not None:
                with anyio.fail_after(opts.timeout_s):
                    value = await _invoke(t, self.args, self.kwargs, ex)
            elif t.is_async:  # most tasks: called here, with no coroutine of _invoke's
                value = await t.fn(*self.args, **self.kwargs)
                # _invoke's check, written twice on purpose: one shared with-block (a null
                # context when there is no timeout) counted 1 % more instructions per task.
                if type(value) not in _PLAIN and inspect.isawaitable(value):
                    value = await value
            else:
                value = await _invoke(t, self.args, self.kwargs, ex)
        except TimeoutError:
            return TimedOut(
                f"TimeoutError: task {inst.record.name!r} timed out after {opts.timeout_s:g}s"
            )
        except Exception as exc:
            return Raised(f"{type(exc).__name__}: {exc}", traceback.format_exc())
        finally:
            reset_current(token)
        try:
            result_json = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return NotSerializable(
                str(
                    ResultNotSerializable(
                        f"task {inst.record.name!r} of flow {ex.flow.name!r} returned a "
                        f"{type(value).__module__}.{type(value).__qualname__}, which cannot be "
                        "stored as JSON; return plain data (dict, list, str, number, bool, None)"
                    )
                )
            )
        return Succeeded(result_json, orjson.loads(result_json))

    def _ended(self, state: TaskState, ended: float, error: str | None) -> AttemptRecord:
        rec = self.inst.record
        return AttemptRecord(rec.run_id, rec.name, rec.attempt, state, rec.started_at, ended, error)

    # -- one handler per outcome -------------------------------------------------------------
    async def _on_success(self, outcome: Succeeded, ended: float) -> TaskState:
        ex, inst = self.ex, self.inst
        inst.result = outcome.result
        inst.update(state=TaskState.SUCCEEDED, ended_at=ended, result=outcome.result_json)
        await ex.save(
            [inst],
            AuditKind.TASK_SUCCEEDED,
            attempts=[self._ended(TaskState.SUCCEEDED, ended, None)],
        )
        if self.opts.branch:
            ex.apply_branch(self.node, inst)
        if self.node.task.on_success is not None:  # most tasks have none: no call made
            await task_callbacks(
                "success", ex.flow, self.node.task, ex.run.id, inst.record, ex.params
            )
        return TaskState.SUCCEEDED

    async def _on_exception(self, outcome: Raised, ended: float) -> float | None:
        """The function raised: retry (returns the delay) or fail (returns ``None``)."""
        self.inst.failures += 1
        if self.inst.failures <= self.opts.retries:
            return await self._on_retry(outcome.error, outcome.traceback, ended)
        await self._on_failure(outcome.error, outcome.traceback, ended)
        return None

    async def _on_timeout(self, outcome: TimedOut, ended: float) -> float | None:
        """The attempt ran out of time: like an exception, without a traceback."""
        return await self._on_exception(Raised(outcome.error, None), ended)

    async def _on_unstorable_result(self, outcome: NotSerializable, ended: float) -> TaskState:
        """The result cannot be stored as JSON: a failure, and retrying would not help."""
        self.inst.failures += 1
        return await self._on_failure(outcome.error, None, ended)

    async def _on_retry(self, error: str, tb: str | None, ended: float) -> float:
        ex, inst, opts = self.ex, self.inst, self.opts
        delay = opts.retry_delay(inst.failures, random.random())
        attempt = inst.record.attempt
        inst.update(
            state=TaskState.RETRYING,
            ended_at=ended,
            error=error,
            traceback=tb,
            waiting=(
                f"retrying in {delay:.2f}s (attempt {attempt + 1} of "
                f"{opts.retries + 1 + inst.interruptions})"
            ),
        )
        await ex.save(
            [inst],
            AuditKind.TASK_RETRYING,
            {"error": error, "delay_s": round(delay, 3)},
            attempts=[self._ended(TaskState.FAILED, ended, error)],
        )
        await task_callbacks("retry", ex.flow, self.node.task, ex.run.id, inst.record, ex.params)
        return delay

    async def _on_failure(self, error: str, tb: str | None, ended: float) -> TaskState:
        ex, inst = self.ex, self.inst
        inst.result = None
        inst.update(state=TaskState.FAILED, ended_at=ended, error=error, traceback=tb)
        await ex.save(
            [inst],
            AuditKind.TASK_FAILED,
            {"error": error},
            attempts=[self._ended(TaskState.FAILED, ended, error)],
        )
        await task_callbacks("failure", ex.flow, self.node.task, ex.run.id, inst.record, ex.params)
        return TaskState.FAILED

    async def _on_cancellation(self) -> None:
        """The run was cancelled: a running attempt is cancelled, a waiting one skipped."""
        running = self.inst.record.state is TaskState.RUNNING
        await self._stopped(TaskState.CANCELLED if running else TaskState.SKIPPED, running)

    async def _on_interruption(self) -> None:
        """Shutdown: the instance is interrupted, to resume at the next start."""
        await self._stopped(TaskState.INTERRUPTED, self.inst.record.state is TaskState.RUNNING)

    async def _stopped(self, state: TaskState, running: bool) -> None:
        ex, inst = self.ex, self.inst
        now = ex.now()
        inst.update(state=state, ended_at=now)
        attempts = [self._ended(state, now, "cancelled")] if running else []
        await ex.flush_logs()
        await ex.save([inst], AuditKind.of_task(state), attempts=attempts)

    async def _on_too_many_interruptions(self) -> TaskState:
        ex, inst = self.ex, self.inst
        error = f"interrupted {inst.interruptions} times; giving up"
        inst.update(state=TaskState.FAILED, ended_at=ex.now(), error=error)
        await ex.save([inst], AuditKind.TASK_FAILED, {"error": error})
        await task_callbacks("failure", ex.flow, self.node.task, ex.run.id, inst.record, ex.params)
        return TaskState.FAILED


def _waiting(span: Span, ex: RunExecution, inst: Instance, reason: str) -> None:
    """The attempt waits for a slot: noted on the task and as an event of its span."""
    span.add_event("waiting", {"evflow.waiting": reason})
    ex.blocked(inst, reason)


async def _invoke(t: Task, args: list[Any], kwargs: dict[str, Any], ex: RunExecution) -> Any:
    """Call the task function: async ones on the loop, sync ones in a worker thread."""
    if t.is_async:
        value = await t.fn(*args, **kwargs)
    else:
        run = contextvars.copy_context().run
        value = await anyio.to_thread.run_sync(
            lambda: run(t.fn, *args, **kwargs),
            limiter=ex.limits.thread_limiter,
            abandon_on_cancel=True,
        )
    if type(value) not in _PLAIN and inspect.isawaitable(value):
        value = await value
    return value
