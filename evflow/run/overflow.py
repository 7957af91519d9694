"""The runs an instance creates past its capacity (cluster mode): handed back, together, for
the instances with room to claim, and their records kept in case this instance claims them
back itself.

A burst of submissions would send one statement per run; here the runs placed while a
hand-back is on its way go together in the next one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from ..errors import StoreError
from ..records import RunRecord

__all__ = ["Overflow"]

KEPT = 10_000  # handed-back records kept for a claim back; older ones are read again
FIRST_CLAIM = 2  # a run's epoch once first claimed (it is inserted at 1)


@dataclass(slots=True)
class _Batch:
    ids: list[str] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


class Overflow:
    """Hands runs back through ``send(run_ids)``, one call for all the runs queued meanwhile.
    :meth:`run` is the sending loop, in the run queue's task group."""

    def __init__(self, send: Callable[[list[str]], Awaitable[object]]) -> None:
        self._send = send
        self._records: OrderedDict[str, RunRecord] = OrderedDict()
        self._next = _Batch()
        self._flight: _Batch | None = None
        self._wake = anyio.Event()
        self.closed = False

    async def hand_back(self, runs: Sequence[RunRecord]) -> None:
        """Hand ``runs`` back; returns once they are, raises what sending them raised."""
        if self.closed:
            raise StoreError("the engine is stopping: runs can no longer be handed back")
        for run in runs:
            self._records[run.id] = run
        while len(self._records) > KEPT:
            self._records.popitem(last=False)
        batch = self._next
        batch.ids.extend(r.id for r in runs)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def reclaimed(self, run_id: str, epoch: int) -> RunRecord | None:
        """The record of a run handed back unstarted and claimed again here at ``epoch``;
        None unless no other instance claimed it in between (its first claim raises the
        epoch of a new run from 1 to 2)."""
        run = self._records.pop(run_id, None)
        return run if run is not None and epoch == FIRST_CLAIM else None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                self._flight, self._next = self._next, _Batch()
                try:
                    await self._send(self._flight.ids)
                except Exception as exc:
                    self._flight.error = exc
                self._flight.done.set()
                self._flight = None
        finally:
            self.closed = True
            for batch in (self._flight, self._next):
                if batch is not None and not batch.done.is_set():
                    batch.error = StoreError("the engine stopped before the runs were handed back")
                    batch.done.set()
