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

    def freed(self) -> None:
        """A place may have been given back somewhere: waiting holders look again."""
        self._freed.set()
        self._freed = anyio.Event()

    @asynccontextmanager
    async def hold(
        self,
        name: str,
        places: int,
        holder: str,
        on_wait: Callable[[str], None] | None = None,
    ) -> AsyncIterator[int]:
        """Hold one of the ``places`` places of ``name`` for the ``async with`` body."""
        waited = False
        while True:
            freed = self._freed
            slot = await self.store.take_slot(name, places, self.me, holder)
            if slot is not None:
                break
            if not waited and on_wait is not None:
                on_wait(f"all {places} place(s) of {name} are taken across the cluster")
            waited = True
            with anyio.move_on_after(POLL_S):
                await freed.wait()
        try:
            yield slot
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.give_slot(name, slot, self.me, holder)
