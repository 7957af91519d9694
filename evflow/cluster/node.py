"""One instance of a cluster: its membership, its campaign for leadership, its feed of
events from the others, and the adoption of dead instances' runs — started and stopped
together by the :class:`~evflow.engine.Engine` on a shared (PostgreSQL) store.

What runs where: every instance accepts events (webhooks, its share of the Kafka partitions)
and drives the runs it creates or adopts; the leader alone decides on events and runs the
schedules and watched folders (see :mod:`~evflow.cluster.leader`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

import anyio
import anyio.abc

from ..events import Event
from ..run.queue import RunQueue
from .adoption import Adoption
from .feed import PendingFeed
from .leader import Leadership
from .listener import EVENTS_CHANNEL, RUN_ENDS_CHANNEL, RUNS_CHANNEL, Listener
from .membership import ClusterOptions, Membership
from .registry import InstanceRegistry
from .slots import ClusterSlots

__all__ = ["ClusterNode"]

log = logging.getLogger("evflow.cluster")


class ClusterNode:
    """This instance's part in the cluster on ``store``.

    ``offer`` hands events to the rule loop; ``flows`` names the flows this instance can run
    (it adopts runs of those only); ``on_elected`` runs once it becomes the leader.
    """

    def __init__(
        self,
        store: InstanceRegistry,
        options: ClusterOptions,
        *,
        runs: RunQueue,
        flows: Callable[[], Collection[str]],
        offer: Callable[[Sequence[Event]], None],
        on_elected: Callable[[], Awaitable[None]],
        serving: bool = True,
    ) -> None:
        self.serving = serving
        self.store = store
        self.membership = Membership(store, options)
        self.runs = runs
        self.adoption = Adoption(store, self.membership, runs, flows)
        self._offer = offer
        self._on_elected = on_elected
        self.feed = PendingFeed(runs.store, offer, poll_s=max(options.heartbeat_s, 0.05))
        self.leadership = Leadership(runs.store, self.membership, self._elected)
        self.slots = ClusterSlots(store, self.membership.id)
        self.listener = Listener(
            store.url,
            {
                EVENTS_CHANNEL: lambda _: self.feed.wake(),
                RUNS_CHANNEL: lambda _: self._runs_changed(),
                RUN_ENDS_CHANNEL: runs.ends.ended_elsewhere,
            },
        )
        self._tg: anyio.abc.TaskGroup | None = None

    @property
    def id(self) -> str:
        return self.membership.id

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    async def join(self) -> None:
        """Register, and have the store refuse this instance's writes once it is taken over."""
        await self.membership.join()
        self.store.fence_as(self.membership.id)
        self.runs.join_cluster(self.store, self.membership.id)
        self.runs.slots = self.slots
        self.runs.live = self.membership
        self.runs.limits.join_cluster(self.slots)  # cluster-wide pools count here
        if self.serving:
            self.runs.capacity = self.membership.options.max_runs
            self.runs.freed = self.adoption.freed

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Heartbeat and listen, in ``tg``; a serving instance also adopts what dead
        instances left (at once, then at each heartbeat) and campaigns for leadership. A
        command-line engine (``evflow run``, ``retry``) only drives its own runs — as a member,
        so that they are not taken from it while it lives, and are adopted if it dies."""
        self._tg = tg
        await tg.start(self.membership.keep)
        tg.start_soon(self.listener.run)
        if self.serving:
            await tg.start(self.adoption.run)
            await tg.start(self.leadership.run)

    def _runs_changed(self) -> None:
        """Runs were handed back, a cancel asked, or a place given back: look again."""
        self.adoption.wake()
        self.slots.freed()

    async def _elected(self) -> None:
        assert self._tg is not None
        await self._tg.start(self.feed.run)  # offers every pending event: the held state
        await self._on_elected()

    def accepted(self, events: Sequence[Event]) -> None:
        """Events this instance stored: decided here if it leads, else by the leader (the
        store's notification wakes it)."""
        if self.is_leader:
            fresh = self.feed.unoffered(events)
            if fresh:
                self._offer(fresh)

    async def stop_leading(self) -> None:
        """At a clean stop, before the runs drain: give the leader lease back at once."""
        await self.leadership.release()

    async def hand_back(self) -> None:
        """At a clean stop, after the runs drained: give back the unfinished ones, for the
        others to adopt at their next heartbeat (shielded)."""
        with anyio.CancelScope(shield=True):
            n = await self.store.hand_back_runs(self.membership.id)
            if n:
                log.info("instance %s handed back %d unfinished run(s)", self.id, n)

    async def leave(self) -> None:
        await self.membership.leave()
