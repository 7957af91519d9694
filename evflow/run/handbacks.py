"""Runs handed back to the cluster, sent together.

An instance past its capacity hands the runs it creates back, for the instances with room to
claim. A burst of submissions would send one statement per run; here the runs placed while a
hand-back is on its way go together in the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from ..errors import StoreError

__all__ = ["HandBacks"]


@dataclass(slots=True)
class _Batch:
    ids: list[str] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


class HandBacks:
    """Hands runs back through ``send(run_ids)``, one call for all the runs queued meanwhile.
    :meth:`run` is the sending loop, in the run queue's task group."""

    def __init__(self, send: Callable[[list[str]], Awaitable[object]]) -> None:
        self._send = send
        self._next = _Batch()
        self._flight: _Batch | None = None
        self._wake = anyio.Event()
        self.closed = False

    async def hand_back(self, run_ids: Sequence[str]) -> None:
        """Hand ``run_ids`` back; returns once they are, raises what sending them raised."""
        if self.closed:
            raise StoreError("the engine is stopping: runs can no longer be handed back")
        batch = self._next
        batch.ids.extend(run_ids)
        self._wake.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

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
