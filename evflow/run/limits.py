"""Task limits: the global task limit, named pools with slots, and the thread limiter.

Every task attempt runs inside ``async with limits.slots(...)``: it takes its pool's slots first,
then, for a pool declared cluster-wide, as many places of the pool across the cluster, then one
slot of the global limit (always in that order, so two attempts can never hold one each and wait
for the other). The slots themselves are :class:`~evflow.run.pools.SlotPool` (strict priority
order, no CPU while waiting); per-flow active runs are :class:`~evflow.run.gates.RunGate`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Literal

import anyio

from ..errors import UnknownPoolError
from ..frozen import record
from .gates import RunGate
from .pools import NOTE_AFTER_S, OnWait, PoolUsage, SlotPool

if TYPE_CHECKING:
    from ..cluster.slots import ClusterSlots

__all__ = ["GLOBAL_POOL", "Limits", "Pool", "PoolUsage", "RunGate", "SlotPool", "Slots"]

Scope = Literal["instance", "cluster"]
SCOPES: tuple[Scope, ...] = ("instance", "cluster")


@record
class Pool:
    """A named pool's declaration: its slots, and where they are counted.

    ``scope="instance"`` (the default): each instance has ``slots`` of its own.
    ``scope="cluster"``: ``slots`` in all across the instances sharing a PostgreSQL store (a
    warehouse that takes four connections, whichever instance opens them). On one machine's
    store there is one instance, so both scopes mean the same.
    """

    slots: int
    scope: Scope = "instance"

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"a pool needs at least 1 slot, got {self.slots}")
        if self.scope not in SCOPES:
            raise ValueError(f"a pool's scope is 'instance' or 'cluster', not {self.scope!r}")


def places_name(pool: str) -> str:
    """The name of a cluster pool's places in the store."""
    return f"pool:{pool}"


GLOBAL_POOL = "<global>"
"""The name of the pool that enforces ``max_tasks``; no named pool may use it."""


def _pool_reason(pool: SlotPool) -> str:
    return (
        f"waiting for pool {pool.name!r} ({pool.in_use}/{pool.capacity} slots in use, "
        f"{pool.waiting} waiting)"
    )


def _global_reason(pool: SlotPool) -> str:
    return f"waiting for the global task limit (max_tasks={pool.capacity}, {pool.in_use} running)"


class Slots:
    """The context manager returned by :meth:`Limits.slots`: pool slots first, then global."""

    __slots__ = (
        "_cluster",
        "_global",
        "_global_held",
        "_held",
        "_holder",
        "_n",
        "_on_wait",
        "_places",
        "_pool",
        "_pool_held",
        "_priority",
    )

    def __init__(
        self,
        pool: SlotPool | None,
        global_pool: SlotPool | None,
        n: int,
        priority: int,
        on_wait: OnWait | None,
        cluster: ClusterSlots | None = None,
        holder: str | None = None,
    ) -> None:
        self._pool = pool
        self._global = global_pool
        self._n = n
        self._priority = priority
        self._on_wait = on_wait
        self._pool_held = False
        self._global_held = False
        self._held = False
        self._cluster = cluster  # set for a cluster-wide pool in a cluster
        self._holder = holder
        self._places: list[int] | None = None  # the cluster places held

    def take_now(self) -> bool:
        """Take every slot at once if none has to be waited for (and no cluster place is
        involved); False: nothing is taken, and :meth:`take` waits for them.

        The common case of every task: no coroutine is made for it. :meth:`release_now` (or
        :meth:`give_back`) gives back what is taken, as leaving ``async with`` does."""
        if self._held:
            return True
        pool, gpool = self._pool, self._global
        if pool is not None:
            if self._cluster is not None or not pool.try_acquire(self._n, self._priority):
                return False
            self._pool_held = True
        if gpool is not None:
            if not gpool.try_acquire(1, self._priority):
                self._release()  # the named pool's slots, taken just now
                return False
            self._global_held = True
        self._held = True
        return True

    async def take(self) -> None:
        """Take the slots, waiting for them (what ``async with`` does on entry)."""
        if self._held:
            return  # taken ahead (see Limits.hold): entering uses them, leaving releases them
        pool = self._pool
        if pool is not None:
            if not pool.try_acquire(self._n, self._priority):
                await pool.acquire(
                    self._n, self._priority, None if self._on_wait is None else self._note_pool
                )
            self._pool_held = True
            if self._cluster is not None:
                if self._holder is None:
                    self._holder = uuid.uuid4().hex
                try:
                    self._places = await self._cluster.take(
                        places_name(pool.name),
                        pool.capacity,
                        self._holder,
                        self._n,
                        self._on_wait,
                    )
                except BaseException:
                    self._release()
                    raise
        gpool = self._global
        if gpool is not None:
            try:
                if not gpool.try_acquire(1, self._priority):
                    await gpool.acquire(
                        1, self._priority, None if self._on_wait is None else self._note_global
                    )
            except BaseException:
                await self.aclose()
                raise
            self._global_held = True
        self._held = True

    __aenter__ = take

    async def give_back(self) -> None:
        """Give the slots back (what ``async with`` does on exit)."""
        if not self.release_now():
            await self.aclose()

    def release_now(self) -> bool:
        """Give the slots back if that needs no write (idempotent); False: cluster places are
        held, and only :meth:`aclose` gives them back. The other half of :meth:`take_now`."""
        if self._places is not None:
            return False
        self._release()
        return True

    # What notes a wait, if it lasts: ``on_wait`` with the pool's state then. Bound methods,
    # not closures: a waiting task keeps one object alive for it, not four.
    def _note_pool(self) -> None:
        assert self._on_wait is not None and self._pool is not None
        self._on_wait(_pool_reason(self._pool))

    def _note_global(self) -> None:
        assert self._on_wait is not None and self._global is not None
        self._on_wait(_global_reason(self._global))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.give_back()

    async def aclose(self) -> None:
        """Give everything back, cluster places included (idempotent; finishes even when
        cancelled)."""
        places, self._places = self._places, None
        if self._global_held:  # the global slot first: nothing here waits on it
            self._global_held = False
            assert self._global is not None
            self._global.release(1)
        if places is not None:
            assert self._cluster is not None and self._pool is not None
            await self._cluster.give(places_name(self._pool.name), places, self._holder or "")
        self._release()

    def release(self) -> None:
        """Give the slots back (idempotent); cluster places need :meth:`aclose`."""
        assert self._places is None, "cluster places are given back by aclose()"
        self._release()

    def _release(self) -> None:
        # Synchronous, so cancellation cannot interrupt it half-way.
        self._held = False
        if self._global_held:
            self._global_held = False
            assert self._global is not None
            self._global.release(1)
        if self._pool_held:
            self._pool_held = False
            assert self._pool is not None
            self._pool.release(self._n)


class Limits:
    """The engine's resource limits: global task limit, named pools, and the thread limit.

    ``max_tasks=None`` means no global limit (no global pool is consulted at all). Sync tasks
    run in worker threads bounded by ``thread_limiter``, separately from the slot limits. A
    task that has waited ``note_waits_after_s`` for a slot is noted waiting (0: at once).
    """

    def __init__(
        self,
        max_tasks: int | None = None,
        pools: Mapping[str, int | Pool] | None = None,
        max_threads: int = 40,
        *,
        note_waits_after_s: float = NOTE_AFTER_S,
    ) -> None:
        if max_tasks is not None and max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1 or None, got {max_tasks}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_tasks = max_tasks
        self.global_pool: SlotPool | None = (
            SlotPool(GLOBAL_POOL, max_tasks, note_after_s=note_waits_after_s)
            if max_tasks is not None
            else None
        )
        self._pools: dict[str, SlotPool] = {}
        self._cluster_wide: set[str] = set()  # pools declared with scope="cluster"
        for name, spec in (pools or {}).items():
            if not name or name == GLOBAL_POOL:
                raise ValueError(f"invalid pool name {name!r}")
            pool = spec if isinstance(spec, Pool) else Pool(spec)
            self._pools[name] = SlotPool(name, pool.slots, note_after_s=note_waits_after_s)
            if pool.scope == "cluster":
                self._cluster_wide.add(name)
        self.thread_limiter = anyio.CapacityLimiter(max_threads)
        self._cluster: ClusterSlots | None = None

    def join_cluster(self, places: ClusterSlots | None) -> None:
        """Count the cluster-wide pools' slots across the cluster, through ``places`` (None:
        leave the cluster, each pool counted here alone)."""
        self._cluster = places

    def scope(self, name: str) -> Scope:
        """Where a named pool's slots are counted."""
        self.pool(name)
        return "cluster" if name in self._cluster_wide else "instance"

    @property
    def pools(self) -> Mapping[str, SlotPool]:
        """The named pools, read-only, by name."""
        return MappingProxyType(self._pools)

    def has_pool(self, name: str) -> bool:
        """Whether a named pool of that name exists."""
        return name in self._pools

    def pool(self, name: str) -> SlotPool:
        """The named pool; ``UnknownPoolError`` listing the known pools if there is none."""
        try:
            return self._pools[name]
        except KeyError:
            raise UnknownPoolError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        known = ", ".join(repr(p) for p in sorted(self._pools)) or "none are configured"
        return f"unknown pool {name!r} (known pools: {known})"

    def check(self, pool: str | None, slots: int) -> None:
        """Validate a task's pool and slot count, as at flow registration.

        Raises ``UnknownPoolError`` for a pool that does not exist and ``ValueError`` for a slot
        count below 1 or above the pool's capacity.
        """
        if slots < 1:
            raise ValueError(f"a task needs at least 1 slot, not {slots}")
        if pool is None:
            return
        capacity = self.pool(pool).capacity
        if slots > capacity:
            raise ValueError(
                f"a task asks for {slots} slots of pool {pool!r}, which has only {capacity}"
            )

    def slots(
        self,
        pool: str | None,
        slots: int = 1,
        priority: int = 0,
        on_wait: OnWait | None = None,
        holder: str | None = None,
    ) -> Slots:
        """Hold ``slots`` of ``pool`` (if any) and one global slot for the ``async with`` body.

        The named pool is taken first (for a cluster-wide pool in a cluster, its places across
        the cluster next, held by ``holder``), then the global limit; all are released on exit
        however the body ends. ``on_wait(reason)`` is called once for each it has waited on
        for the pools' ``note_after_s`` (the reason describes the pool then).
        """
        if pool is None:
            return Slots(None, self.global_pool, slots, priority, on_wait)
        named = self.pool(pool)
        named._validate(slots)
        cluster = self._cluster if pool in self._cluster_wide else None
        return Slots(named, self.global_pool, slots, priority, on_wait, cluster, holder)

    async def hold(
        self,
        pool: str | None,
        slots: int = 1,
        priority: int = 0,
        on_wait: OnWait | None = None,
        holder: str | None = None,
    ) -> Slots:
        """Take the slots now and return them held: entering the result with ``async with``
        uses them and leaving it releases them; ``aclose()`` gives them back unused."""
        held = self.slots(pool, slots, priority, on_wait, holder)
        await held.__aenter__()
        return held

    def snapshot(self) -> list[PoolUsage]:
        """Usage of the global limit (if any) and every named pool, on this instance."""
        out = [self.global_pool.usage()] if self.global_pool is not None else []
        for name, p in self._pools.items():
            usage = p.usage()
            out.append(replace(usage, scope="cluster") if name in self._cluster_wide else usage)
        return out
