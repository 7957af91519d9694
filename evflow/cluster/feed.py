"""The leader's feed of events accepted by other instances.

Any instance stores the events it accepts; only the leader decides on them. The store sends a
notification (``NOTIFY evflow_events``) with each commit that stored new events, which wakes
the leader at once (see :mod:`~evflow.cluster.listener`). A hint may be lost, so a slow poll
backs it up. Idle, the feed costs one read per poll interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import anyio
import anyio.abc

from ..errors import StoreError, StoreUnavailable
from ..events import Event
from ..store.base import Store

__all__ = ["PendingFeed"]

log = logging.getLogger("evflow.cluster")


class PendingFeed:
    """Offers to ``offer`` each pending event not offered yet, when woken or every
    ``poll_s``."""

    def __init__(
        self,
        store: Store,
        offer: Callable[[Sequence[Event]], None],
        *,
        poll_s: float,
    ) -> None:
        self.store = store
        self.offer = offer
        self.poll_s = poll_s
        self.woken = 0  # reads done, for tests
        self._offered: dict[str, float] = {}  # event uid → when it was offered
        self._wake = anyio.Event()

    def note(self, events: Sequence[Event]) -> None:
        """Events offered by another way (accepted on this instance): not to offer again."""
        now = time.monotonic()
        for ev in events:
            self._offered[ev.uid] = now

    def unoffered(self, events: Sequence[Event]) -> list[Event]:
        """Of ``events`` (just accepted on this instance), those the feed has not offered
        yet, noted as offered now. A read that began before they were committed may have
        found them pending and offered them first: they are then not offered twice."""
        fresh = [ev for ev in events if ev.uid not in self._offered]
        self.note(fresh)
        return fresh

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Read the pending events now (a new leader rebuilds what its rules hold), then at
        each hint or poll, until cancelled."""
        await self._read()
        task_status.started()
        while True:
            with anyio.move_on_after(self.poll_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            self.woken += 1
            try:
                await self._read()
            except (StoreUnavailable, StoreError) as exc:
                log.warning("could not read the pending events: %s", exc)
            await anyio.sleep(0.01)  # hints arriving together make one read

    async def _read(self) -> None:
        started = time.monotonic()
        pending = await self.store.pending_events()
        uids = {p.uid for p in pending}
        fresh = [p.to_event() for p in pending if p.uid not in self._offered]
        # Forget what was decided (no longer pending), but not what was offered since the
        # read began: its commit may be newer than what the read saw.
        for uid, at in list(self._offered.items()):
            if uid not in uids and at < started:
                del self._offered[uid]
        if fresh:
            self.note(fresh)
            self.offer(fresh)
