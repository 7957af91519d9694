"""Waiting for a run to end when this process does not hold it.

``engine.run`` and ``wait`` on a run held here wait on the run itself. A run not held here
(queued elsewhere, handed back, driven by another instance) is waited on through
:class:`RunEnds`: the waiter registers, reads the run from the store, and sleeps until the run
ends here or, in a cluster, its end is told by the instance that drove it (a ``NOTIFY`` sent at
the commit, see :mod:`evflow.cluster.listener`). In a cluster it also reads the run again every
:data:`RECHECK_S`, as a notification can be lost while the listener reconnects.
"""

from __future__ import annotations

import math

import anyio

from ..store.base import Store

__all__ = ["RECHECK_S", "RunEnds"]

# How often, at least, a waiter in a cluster reads the run again.
RECHECK_S = 5.0


class RunEnds:
    """Who waits for which run to end here, and telling them."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: dict[str, anyio.Event] = {}

    def waiting_on(self, run_id: str) -> bool:
        return run_id in self._waiters

    async def until_finished(self, store: Store, run_id: str, *, shared: bool) -> None:
        """Return once ``run_id`` has ended (``shared``: the store is a cluster's). A run's end
        is committed before it is told, so the waiter registers first and reads after."""
        while True:
            ev = self._waiters.setdefault(run_id, anyio.Event())
            if (await store.get_run(run_id, with_tasks=False)).state.finished:
                if self._waiters.get(run_id) is ev:
                    del self._waiters[run_id]
                return
            with anyio.move_on_after(RECHECK_S if shared else math.inf):
                await ev.wait()

    def ended(self, run_id: str) -> None:
        """``run_id`` ended here (its end committed): its waiters return."""
        waiter = self._waiters.pop(run_id, None)
        if waiter is not None:
            waiter.set()

    def ended_elsewhere(self, run_ids: str | None) -> None:
        """Runs ended on other instances (their ids, space-separated): their waiters here read
        them again. None: ends may have been missed, every waiter reads again."""
        ended = self._waiters.keys() & run_ids.split() if run_ids else list(self._waiters)
        for run_id in ended:
            self._waiters.pop(run_id).set()
