"""Places limited across the cluster: a flow's ``max_active_runs``, a cluster pool's slots.

Each place taken is a row naming the instance and the holder (a run, a task attempt), taken
and given back in a statement of its own; a place whose instance died is free again, with no
counter to drift or leak. A holder that finds every place taken waits: a place given back
anywhere wakes every instance (``NOTIFY``), and a slow poll backs that up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from .registry import InstanceRegistry

__all__ = ["ClusterSlots"]

POLL_S = 1.0


class ClusterSlots:
    """Takes places for this instance (``me``) on ``store``."""

    def __init__(self, store: InstanceRegistry, me: str) -> None:
        self.store = store
        self.me = me
        self._freed = anyio.Event()
        self.held: dict[str, int] = {}  # places this instance holds now, by name (metrics)

    def freed(self) -> None:
        """A place may have been given back somewhere: waiting holders look again."""
        self._freed.set()
        self._freed = anyio.Event()

    async def take(
        self,
        name: str,
        places: int,
        holder: str,
        n: int = 1,
        on_wait: Callable[[str], object] | None = None,
    ) -> list[int]:
        """Take ``n`` of the ``places`` places of ``name`` for ``holder``, waiting until they
        are free; ``on_wait(reason)`` is called once if it has to wait."""
        waited = False
        while True:
            freed = self._freed
            with anyio.CancelScope(shield=True):  # taken, then cancelled: still returned
                taken = await self.store.take_slots(name, places, self.me, holder, n)
            if taken:
                self.held[name] = self.held.get(name, 0) + len(taken)
                return taken
            if not waited and on_wait is not None:
                on_wait(f"all {places} place(s) of {name} are taken across the cluster")
            waited = True
            with anyio.move_on_after(POLL_S):
                await freed.wait()

    async def give(self, name: str, taken: list[int], holder: str) -> None:
        """Give back places that :meth:`take` returned (shielded: a cancelled holder still
        gives them back)."""
        with anyio.CancelScope(shield=True):
            await self.store.give_slots(name, taken, self.me, holder)
        self.held[name] -= len(taken)

    @asynccontextmanager
    async def hold(
        self,
        name: str,
        places: int,
        holder: str,
        on_wait: Callable[[str], object] | None = None,
    ) -> AsyncIterator[list[int]]:
        """Hold one of the ``places`` places of ``name`` for the ``async with`` body."""
        taken = await self.take(name, places, holder, 1, on_wait)
        try:
            yield taken
        finally:
            await self.give(name, taken, holder)
