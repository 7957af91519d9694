"""The leader: the one instance at a time that decides events and runs the schedules and
watched folders.

Any instance accepts events; the stateful rule decisions (debounce, batch, correlate, the
already-running policies) and the clock-driven and folder sensors need one decider, or they
would fire once per instance. That instance holds the ``leader`` lease, a row with an owner, an
expiry and an epoch (not an advisory lock: those strand under connection pools and carry no
fencing token). It renews the lease every third of the TTL; one that cannot renew in time stops
(:class:`~evflow.errors.OwnershipLost`), and another takes the lease once it expires. A new
leader rebuilds the held state from the store: every pending event is offered to its rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from ..errors import StoreError, StoreUnavailable
from ..ownership import keep_renewed
from ..records import LeaseRecord
from ..store.base import Store
from .membership import Membership

__all__ = ["LEADER_LEASE", "Leadership"]

log = logging.getLogger("evflow.cluster")

LEADER_LEASE = "leader"


class Leadership:
    """This instance's campaign for the ``leader`` lease, and its term once elected.

    ``on_elected`` runs once the lease is taken (the engine offers the pending events to its
    rules and starts the sensors that run on the leader only).
    """

    def __init__(
        self,
        store: Store,
        membership: Membership,
        on_elected: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.membership = membership
        self.on_elected = on_elected
        self.elected = anyio.Event()
        self.lease: LeaseRecord | None = None

    @property
    def is_leader(self) -> bool:
        return self.lease is not None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Campaign until elected, then hold the lease until cancelled or given back. The
        first try is made before the caller goes on: an instance alone leads from its start."""
        ttl = self.membership.options.ttl_s
        elected = await self._try(ttl)
        task_status.started()
        while not elected:
            # The holder renews every third of the TTL: look again at that pace, so a lease
            # given back or expired is taken soon.
            await anyio.sleep(min(self.membership.options.heartbeat_s, ttl / 3))
            elected = await self._try(ttl)
        await self._hold(ttl)

    async def _try(self, ttl: float) -> bool:
        m = self.membership
        try:
            taken, lease = await self.store.acquire_lease(LEADER_LEASE, m.id, m.host, m.pid, ttl)
        except (StoreUnavailable, StoreError) as exc:
            log.warning("instance %s: could not ask for the leader lease: %s", m.id, exc)
            return False
        if not taken:
            return False
        self.lease = lease
        log.info("instance %s is the leader (epoch %d)", m.id, lease.epoch)
        self.elected.set()
        await self.on_elected()
        return True

    async def _hold(self, ttl: float) -> None:
        me = self.membership.id
        await keep_renewed(
            self,
            ttl,
            failed=lambda exc: (
                f"instance {me} could not renew the leader lease for {ttl:g}s ({exc}); "
                "stopping, so that two leaders never decide at once"
            ),
            lost=(
                f"instance {me} lost the leader lease to another instance (it was too slow to "
                "renew it); stopping"
            ),
        )

    async def release(self) -> None:
        """Give the lease back at once, so another instance leads without waiting for it to
        expire (shielded)."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release_lease(lease)
            except StoreError as exc:
                log.warning("could not give the leader lease back: %s", exc)
