"""Run drivers: one plain asyncio task per run, owned by the engine's task group.

Spawning an anyio task costs about three times a plain asyncio task (its handle carries a
cancel scope and an event of its own), and the engine spawns one per run. So a run's driver is
a plain asyncio task, and :meth:`Drivers.run`, started in the engine's task group, owns them:

- it ends only once every driver has, so the engine's lifespan still outlives its runs;
- a driver that fails with an error it did not handle fails the owner, and so the engine's
  task group, as a task of that group would;
- cancellation reaches a driver only through its run's own cancel scope: the owner, when
  cancelled, asks the run queue to stop every run (``stop_all``) and waits for the drivers,
  shielded, so each run records its interruption as at any shutdown.

A driver inherits the context of the code that started its run, as a task spawned by the group
would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc

from ..errors import EngineNotRunning

__all__ = ["Drivers"]

log = logging.getLogger("evflow.engine")

#: How long the owner waits for stopped runs to end before cancelling their drivers outright.
STOP_TIMEOUT_S = 30.0


class Drivers:
    """The tasks that drive runs; ``stop_all()`` asks every run held to stop (not waiting)."""

    __slots__ = ("_closed", "_ended", "_failed", "_failure", "_open", "_stop_all", "_tasks")

    def __init__(self, stop_all: Callable[[], None]) -> None:
        self._stop_all = stop_all
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = False
        self._closed = False  # the owner has ended: the engine is stopping or stopped
        self._failure: BaseException | None = None
        self._failed: asyncio.Future[None] | None = None
        self._ended = self._done  # bound once, not once per run

    def __len__(self) -> int:
        """Drivers not yet ended."""
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Drive a run: run ``coro`` in a task of its own, now.

        Returns ``False``, running nothing, once the engine stops: the run stays queued in the
        store and starts at the next start (as a run spawned into a cancelled task group would)."""
        if not self._open:
            coro.close()
            if self._closed:
                return False
            raise EngineNotRunning("the engine is not running; use `async with Engine(...)`")
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._failure is None:
            self._failure = exc
            if self._failed is not None and not self._failed.done():
                self._failed.set_result(None)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Own the drivers (start it in the engine's task group); raises a driver's failure."""
        self._failed = asyncio.get_running_loop().create_future()
        self._failure = None
        self._open, self._closed = True, False
        task_status.started()
        try:
            await self._failed
            assert self._failure is not None
            raise self._failure
        finally:
            self._open, self._closed = False, True
            with anyio.CancelScope(shield=True):
                await self._stop()

    async def _stop(self) -> None:
        if not self._tasks:
            return
        self._stop_all()
        _, late = await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT_S)
        if late:
            log.warning(
                "%d run(s) did not stop within %.0fs; cancelling them", len(late), STOP_TIMEOUT_S
            )
            for task in late:
                task.cancel()
            await asyncio.wait(late)
