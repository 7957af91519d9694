"""Grouped commits, shared by every backend.

Every write goes through one :class:`WriteQueue`. Writes queued while a transaction commits are
grouped into the next one, so persistence does not cap throughput: under load one commit
carries hundreds of state changes. A backend supplies only ``commit(batch)``, which writes a
whole batch in one transaction and, on failure, sets ``error`` on each of its ops.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ..abc import Accepted
from ..audit_kinds import AuditKind
from ..errors import StoreError, StoreUnavailable
from ..events import Event
from ..latch import Latch
from ..records import AttemptRecord, LogRecord, RunRecord, TaskRecord
from .base import AuditEntry, Changes, DeadLetter, Rows

__all__ = [
    "Gathered",
    "Op",
    "WriteQueue",
    "first_copies",
    "gather",
    "last_by_key",
    "last_runs",
    "last_tasks",
    "settle_events",
]


@dataclass(slots=True)
class Op:
    """One caller's share of a grouped transaction."""

    changes: Changes | None = None
    events: Sequence[Event] = ()
    cursors: Mapping[str, str] | None = None
    dead_letter: DeadLetter | None = None
    rows: Rows | None = None
    done: Latch | None = None  # set when the batch carrying it has committed
    result: Any = None
    error: BaseException | None = None


class WriteQueue:
    """The queue of writes one store commits in groups, and the loop that commits them.

    ``max_pending`` bounds the queue (by weight, roughly rows): a writer that finds it full
    waits for the next commit, which is how a slow disk or database slows intake down.
    """

    def __init__(
        self,
        where: str,
        commit: Callable[[list[Op]], Awaitable[None]],
        *,
        max_pending: int = 50_000,
    ) -> None:
        self.where = where
        self.max_pending = max_pending
        self._commit = commit
        self._pending: list[Op] = []
        self._pending_count = 0
        self._wakeup: asyncio.Future[None] | None = None  # the writer's, while it waits for work
        self._space = anyio.Event()
        self._batch_done = Latch()
        self._open = False
        self._closing = False
        self._stopped = False
        self._committing = False  # a batch taken off the queue is being committed

    @property
    def backlog(self) -> int:
        """Writes queued but not yet committed."""
        return self._pending_count

    def _check_open(self) -> None:
        if self._stopped or not (self._open or self._closing):
            raise StoreError(f"the store {self.where} is not open (or already closed)")

    def _wake(self) -> None:
        """Wake the writer if it waits for work (a plain future: this runs for every write)."""
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def enqueue(self, op: Op, weight: int, *, wait: bool = False) -> None:
        self._check_open()
        while self._pending_count >= self.max_pending:
            self._space = anyio.Event() if self._space.is_set() else self._space
            await self._space.wait()
        if wait:  # every op of a batch is committed together: one event tells them all
            op.done = self._batch_done
        self._pending.append(op)
        self._pending_count += weight
        if self._wakeup is not None:  # else the writer is busy, and takes this op next
            self._wake()

    def put_nowait(self, op: Op) -> None:
        """Queue ``op`` without waiting for room (for small notes from sync callbacks)."""
        self._check_open()
        self._pending.append(op)
        self._pending_count += 1
        self._wake()

    def requeue(self, ops: list[Op]) -> None:
        """Put ``ops`` of a batch that could not commit first in the next one; their callers
        keep waiting (for the next batch's outcome)."""
        for op in ops:
            op.error = None
            if op.done is not None:
                op.done = self._batch_done
        self._pending[:0] = ops
        self._pending_count += len(ops)
        self._wake()

    def apply(self, changes: Changes, wait: bool = False) -> Coroutine[Any, Any, None]:
        """Queue ``changes`` (weighed by their rows); with ``wait``, until committed.

        Returns the queue's awaitable directly, with no coroutine of its own: this runs for
        every state change of every task."""
        op = Op(changes=changes)
        weight = len(changes.tasks) + len(changes.runs) + len(changes.logs) + 1
        return self.submit(op, weight) if wait else self.enqueue(op, weight)

    async def submit(self, op: Op, weight: int = 1) -> Any:
        """Queue ``op`` and return its result once committed; raise if the commit failed."""
        await self.enqueue(op, weight, wait=True)
        while True:
            done = op.done
            assert done is not None
            await done.wait()
            if op.done is done:  # else it was requeued into a later batch
                break
        if isinstance(op.error, StoreUnavailable):
            raise op.error  # the caller may try again later, and is told so
        if op.error is not None:
            raise StoreError(f"store {self.where}: write failed: {op.error}") from op.error
        return op.result

    async def flush(self) -> None:
        """Wait until every write queued so far is committed, the batch being committed now
        included; raise if that failed."""
        if self._pending or self._committing:
            # An empty op commits in the next batch: after the one in flight, with the rest.
            await self.submit(Op())

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """The writer loop (start it in the store's task group); returns after :meth:`close`."""
        self._open = True
        task_status.started()
        while True:
            if not self._pending:
                if self._closing:
                    self._stopped = True
                    return
                self._wakeup = wakeup = asyncio.get_running_loop().create_future()
                try:
                    await wakeup
                finally:
                    self._wakeup = None
                # Woken by the first write of a burst: let the tasks already runnable on the
                # loop add theirs first (one turn of the loop), so that one commit carries the
                # burst. A task that writes its start, yields once, and writes its end then
                # has both in one batch, folded into one row.
                await asyncio.sleep(0)
                continue
            batch, self._pending = self._pending, []
            done, self._batch_done = self._batch_done, Latch()
            self._pending_count = 0
            self._space.set()
            self._committing = True
            try:
                with anyio.CancelScope(shield=True):
                    await self._commit(batch)
            finally:
                self._committing = False
            done.set()
            del batch  # not kept alive (and scanned by the GC) until the next batch

    async def close(self) -> None:
        """Commit what is queued, then let the loop end. Shielded, so a cancelled owner still
        leaves every accepted write committed."""
        with anyio.CancelScope(shield=True):
            self._open = False
            self._closing = True
            await self.flush()
            self._wake()


# -- what every backend does with a batch, whatever its SQL ------------------------------------


@dataclass(slots=True)
class Gathered:
    """A batch's changes by kind, in the order they were queued (records, not rows: each
    backend makes its own rows). A dead letter carries the id it is stored under."""

    cursors: dict[str, str] = field(default_factory=dict)
    dead: list[tuple[str, DeadLetter]] = field(default_factory=list)
    new_runs: list[tuple[Changes, RunRecord]] = field(default_factory=list)
    new_tasks: list[TaskRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)


def gather(batch: Sequence[Op]) -> Gathered:
    """Every op's changes by kind; an op's dead letter gets its id (the op's result) here."""
    g = Gathered()
    for op in batch:
        if op.cursors:
            g.cursors.update(op.cursors)
        if op.dead_letter is not None:
            op.result = uuid.uuid4().hex
            g.dead.append((op.result, op.dead_letter))
        ch = op.changes
        if ch is None:
            continue
        # Most changes name one or two kinds of record: test before extending, as this runs
        # for every state change of every task.
        if ch.created_runs:
            ch.created_runs.clear()  # a batch tried again reports afresh
        if ch.cursors:
            g.cursors.update(ch.cursors)
        if ch.dead_letters:
            g.dead.extend((uuid.uuid4().hex, d) for d in ch.dead_letters)
        if ch.new_runs:
            g.new_runs.extend((ch, r) for r in ch.new_runs)
        if ch.new_tasks:
            g.new_tasks.extend(ch.new_tasks)
        if ch.runs:
            g.runs.extend(ch.runs)
        if ch.tasks:
            g.tasks.extend(ch.tasks)
        if ch.attempts:
            g.attempts.extend(ch.attempts)
        if ch.logs:
            g.logs.extend(ch.logs)
        if ch.processed_events:
            g.processed.extend(ch.processed_events)
        if ch.audit:
            g.audit.extend(ch.audit)
    return g


def last_runs(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Each run's last record in a batch, in first-seen order (see :func:`last_by_key`): the
    records folded before their rows are built."""
    return list({r.id: r for r in runs}.values())


def last_tasks(tasks: Iterable[TaskRecord]) -> list[TaskRecord]:
    """Each task's last record in a batch, in first-seen order (a task's ``running`` and its
    end often share a batch)."""
    return list({(t.run_id, t.name): t for t in tasks}.values())


def last_by_key(rows: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """One row per key (its first ``width`` columns), the last written, in first-seen order.

    A record often changes twice within one batch (a task running, then ended); an upsert
    writes every column a change can touch, so the last row alone leaves the same row as
    writing each in turn (PostgreSQL's upsert may touch each row only once). The audit records
    are kept, one per change."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        out[row[:width]] = row
    return list(out.values())


def first_copies(ops: Sequence[Op]) -> dict[str, str]:
    """Per dedup key in the batch, the uid of its first event (the copy an insert keeps when
    the key is new)."""
    first: dict[str, str] = {}
    for op in ops:
        for ev in op.events:
            first.setdefault(ev.dedup_key, ev.uid)
    return first


def settle_events(
    ops: Sequence[Op], first: Mapping[str, str], stored: Mapping[str, str], now: float
) -> tuple[list[AuditEntry], dict[str, int]]:
    """Given which uid the store kept per dedup key, each op's results (new or repeat), the
    ``event.received`` records of the new events, and the repeats counted per source."""
    dup_counts: dict[str, int] = {}
    claimed: set[str] = set()
    received: list[AuditEntry] = []
    for op in ops:
        results = []
        for ev in op.events:
            eid = stored[ev.dedup_key]
            fresh = eid == first[ev.dedup_key] and ev.dedup_key not in claimed
            if fresh:
                claimed.add(ev.dedup_key)
                data = {
                    "type": ev.type,
                    "source": ev.source,
                    "id": ev.id,
                    "dedup_key": ev.dedup_key,
                }
                received.append(
                    AuditEntry(AuditKind.EVENT_RECEIVED, f"event:{eid}", data, time=now)
                )
            else:
                dup_counts[ev.source] = dup_counts.get(ev.source, 0) + 1
            results.append(Accepted(event_id=eid, duplicate=not fresh))
        op.result = results
    return received, dup_counts
