"""Grouped commits, shared by every backend.

Every write goes through one :class:`WriteQueue`. Writes queued while a transaction commits are
grouped into the next one, so persistence does not cap throughput: under load one commit
carries hundreds of state changes. A backend supplies only ``commit(batch)``, which writes a
whole batch in one transaction and, on failure, sets ``error`` on each of its ops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ..errors import StoreError, StoreUnavailable
from ..events import Event
from .base import Changes, DeadLetter, Rows

__all__ = ["Op", "WriteQueue"]


@dataclass(slots=True)
class Op:
    """One caller's share of a grouped transaction."""

    changes: Changes | None = None
    events: Sequence[Event] = ()
    cursors: Mapping[str, str] = field(default_factory=dict)
    dead_letter: DeadLetter | None = None
    rows: Rows | None = None
    done: anyio.Event | None = None
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
        self._wake = anyio.Event()
        self._space = anyio.Event()
        self._batch_done = anyio.Event()
        self._open = False
        self._closing = False
        self._stopped = False

    @property
    def backlog(self) -> int:
        """Writes queued but not yet committed."""
        return self._pending_count

    def _check_open(self) -> None:
        if self._stopped or not (self._open or self._closing):
            raise StoreError(f"the store {self.where} is not open (or already closed)")

    async def enqueue(self, op: Op, weight: int, *, wait: bool = False) -> None:
        self._check_open()
        while self._pending_count >= self.max_pending:
            self._space = anyio.Event() if self._space.is_set() else self._space
            await self._space.wait()
        if wait:  # every op of a batch is committed together: one event tells them all
            op.done = self._batch_done
        self._pending.append(op)
        self._pending_count += weight
        self._wake.set()

    def put_nowait(self, op: Op) -> None:
        """Queue ``op`` without waiting for room (for small notes from sync callbacks)."""
        self._check_open()
        self._pending.append(op)
        self._pending_count += 1
        self._wake.set()

    def requeue(self, ops: list[Op]) -> None:
        """Put ``ops`` of a batch that could not commit first in the next one; their callers
        keep waiting (for the next batch's outcome)."""
        for op in ops:
            op.error = None
            if op.done is not None:
                op.done = self._batch_done
        self._pending[:0] = ops
        self._pending_count += len(ops)
        self._wake.set()

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
        if self._pending or self._pending_count:
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
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch, self._pending = self._pending, []
            done, self._batch_done = self._batch_done, anyio.Event()
            self._pending_count = 0
            self._space.set()
            with anyio.CancelScope(shield=True):
                await self._commit(batch)
            done.set()

    async def close(self) -> None:
        """Commit what is queued, then let the loop end. Shielded, so a cancelled owner still
        leaves every accepted write committed."""
        with anyio.CancelScope(shield=True):
            self._open = False
            self._closing = True
            await self.flush()
            self._wake.set()
