"""One instance runs a store's work: the ``engine`` lease.

An engine that resumes runs and decides events (``evflow serve``, an embedding application)
holds the store's ``engine`` lease while it runs: taken at start, renewed every third of its
time to live, given back at a clean stop. A second such engine on the same store is refused
with :class:`~evflow.errors.StoreInUse`, naming the holder, instead of running every run a
second time. A holder on this host whose process is gone (killed) is replaced at once; one
elsewhere, once its lease expires by the store's clock. An engine that cannot renew before its
lease would expire stops with :class:`~evflow.errors.OwnershipLost`. Command-line engines
(``evflow run``, ``retry``, ``backfill``) run only their own runs and take no lease.

On a PostgreSQL store the two ways of running exclude each other: an engine outside the
cluster (``[cluster] enabled = false``) is refused while cluster instances are alive, and a
cluster instance is refused while such an engine holds the lease (:func:`refuse_sole_engine`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Protocol

import anyio
import anyio.abc

from .cluster.registry import InstanceRegistry
from .errors import OwnershipLost, StoreError, StoreInUse, StoreUnavailable
from .records import LeaseRecord
from .store.base import Store

__all__ = ["ENGINE_LEASE", "HeldLease", "Ownership", "keep_renewed", "refuse_sole_engine"]

log = logging.getLogger("evflow.engine")

ENGINE_LEASE = "engine"
DEFAULT_TTL_S = 30.0
_ONE_STORE_MANY = (
    "several instances on one store need a PostgreSQL store in cluster mode ([cluster] enabled)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class HeldLease(Protocol):
    """Something holding a lease on ``store``: ``lease`` is None once it is given back."""

    store: Store
    lease: LeaseRecord | None


async def keep_renewed(
    holder: HeldLease, ttl_s: float, *, failed: Callable[[BaseException], str], lost: str
) -> None:
    """Renew ``holder.lease`` every third of ``ttl_s`` until cancelled or given back. Raise
    :class:`OwnershipLost` (``failed(error)`` or ``lost`` as its message) when the store could
    not be reached for a whole ``ttl_s`` by our clock (a little before the store's), or another
    holder has the lease now."""
    deadline = time.monotonic() + ttl_s
    while True:
        await anyio.sleep(ttl_s / 3)
        lease = holder.lease
        if lease is None:
            return
        try:
            renewed = await holder.store.renew_lease(lease, ttl_s)
        except (StoreUnavailable, StoreError) as exc:
            if time.monotonic() < deadline:
                log.warning("could not renew the %s lease: %s", lease.name, exc)
                continue
            raise OwnershipLost(failed(exc)) from None
        if renewed is None:
            raise OwnershipLost(lost)
        holder.lease = renewed
        deadline = time.monotonic() + ttl_s


class Ownership:
    """This process's hold on a store's ``engine`` lease."""

    def __init__(self, store: Store, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.lease: LeaseRecord | None = None

    async def acquire(self) -> LeaseRecord:
        """Take the lease, or raise :class:`StoreInUse` naming who holds it."""
        args = (ENGINE_LEASE, self.owner, self.host, self.pid, self.ttl_s)
        taken, lease = await self.store.acquire_lease(*args)
        if not taken and lease.host == self.host and not _alive(lease.pid):
            log.warning(
                "store %s: taking over from evflow pid %d on this host, which is gone",
                self.store.describe(),
                lease.pid,
            )
            taken, lease = await self.store.acquire_lease(*args, force=True)
        if not taken:
            raise StoreInUse(
                f"the store {self.store.describe()} is in use by another evflow instance "
                f"(host {lease.host}, pid {lease.pid}, last heartbeat {_when(lease.renewed_at)}); "
                f"{_ONE_STORE_MANY}: stop the other instance, or give this one a store of its own"
            )
        self.lease = lease
        if isinstance(self.store, InstanceRegistry):
            await self._refuse_cluster(self.store)
        return lease

    async def _refuse_cluster(self, registry: InstanceRegistry) -> None:
        """Give the lease back and raise :class:`StoreInUse` if cluster instances are alive on
        the store (checked after taking the lease: one of the two starting at once sees the
        other)."""
        alive = [i for i in await registry.list_instances() if i.alive]
        if not alive:
            return
        await self.release()
        raise StoreInUse(
            f"the store {self.store.describe()} is run by a cluster of {len(alive)} live "
            f"instance(s) ({', '.join(f'{i.host} pid {i.pid}' for i in alive)}); this one has "
            "[cluster] enabled = false and would run their runs a second time: enable cluster "
            "mode to join them, or stop them first"
        )

    async def keep(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Renew the lease until cancelled; raise :class:`OwnershipLost` if that fails."""
        task_status.started()
        await keep_renewed(
            self,
            self.ttl_s,
            failed=lambda exc: (
                f"could not renew this instance's lease on the store {self.where} for "
                f"{self.ttl_s:.0f}s ({exc}); stopping, so that no other instance runs the "
                "same work twice"
            ),
            lost=(
                f"another evflow instance took the store {self.where} over (this one was "
                "too slow to renew its lease); stopping"
            ),
        )

    @property
    def where(self) -> str:
        return self.store.describe()

    async def release(self) -> None:
        """Give the lease back (a restart need not wait for it to expire)."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        with anyio.CancelScope(shield=True), suppress(StoreError):
            await self.store.release_lease(lease)


async def refuse_sole_engine(store: Store, now: float) -> None:
    """Raise :class:`StoreInUse` if an engine outside the cluster holds ``store``'s ``engine``
    lease (unexpired at ``now``, the store's clock, and not left by a process of this host
    that is gone): a cluster instance joining would run its runs a second time."""
    host = socket.gethostname()
    for lease in await store.list_leases():
        if lease.name != ENGINE_LEASE or lease.expires_at <= now:
            continue
        if lease.host == host and not _alive(lease.pid):
            continue
        raise StoreInUse(
            f"the store {store.describe()} is run by an evflow instance outside the cluster "
            f"(host {lease.host}, pid {lease.pid}, [cluster] enabled = false); stop it, or "
            "enable cluster mode there, before starting cluster instances (if it is gone, its "
            f"lease expires in {lease.expires_at - now:.0f}s)"
        )
