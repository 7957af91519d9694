"""Task limits: the global task limit, named pools with slots, and the thread limiter.

Every task attempt runs inside ``async with limits.slots(...)``: it takes its pool's slots first,
then one slot of the global limit (always in that order, so two attempts can never hold one each
and wait for the other). The slots themselves are :class:`~evflow.run.pools.SlotPool` (strict
priority order, no CPU while waiting); per-flow active runs are :class:`~evflow.run.gates.RunGate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType, TracebackType

import anyio

from ..errors import UnknownPoolError
from .gates import RunGate
from .pools import OnWait, PoolUsage, SlotPool

__all__ = ["GLOBAL_POOL", "Limits", "PoolUsage", "RunGate", "SlotPool", "Slots"]

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
        "_global",
        "_global_held",
        "_held",
        "_n",
        "_on_wait",
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
    ) -> None:
        self._pool = pool
        self._global = global_pool
        self._n = n
        self._priority = priority
        self._on_wait = on_wait
        self._pool_held = False
        self._global_held = False
        self._held = False

    async def __aenter__(self) -> None:
        if self._held:
            return  # taken ahead (see Limits.hold): entering uses them, leaving releases them
        pool = self._pool
        if pool is not None:
            if not pool.try_acquire(self._n, self._priority):
                if self._on_wait is not None:
                    self._on_wait(_pool_reason(pool))
                await pool.acquire(self._n, self._priority)
            self._pool_held = True
        gpool = self._global
        if gpool is not None:
            try:
                if not gpool.try_acquire(1, self._priority):
                    if self._on_wait is not None:
                        self._on_wait(_global_reason(gpool))
                    await gpool.acquire(1, self._priority)
            except BaseException:
                self._release()
                raise
            self._global_held = True
        self._held = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def release(self) -> None:
        """Give the slots back (idempotent)."""
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
    run in worker threads bounded by ``thread_limiter``, separately from the slot limits.
    """

    def __init__(
        self,
        max_tasks: int | None = None,
        pools: Mapping[str, int] | None = None,
        max_threads: int = 40,
    ) -> None:
        if max_tasks is not None and max_tasks < 1:
            raise ValueError(f"max_tasks must be at least 1 or None, got {max_tasks}")
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self.max_tasks = max_tasks
        self.global_pool: SlotPool | None = (
            SlotPool(GLOBAL_POOL, max_tasks) if max_tasks is not None else None
        )
        self._pools: dict[str, SlotPool] = {}
        for name, capacity in (pools or {}).items():
            if not name or name == GLOBAL_POOL:
                raise ValueError(f"invalid pool name {name!r}")
            self._pools[name] = SlotPool(name, capacity)
        self.thread_limiter = anyio.CapacityLimiter(max_threads)

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
        self, pool: str | None, slots: int = 1, priority: int = 0, on_wait: OnWait | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Hold ``slots`` of ``pool`` (if any) and one global slot for the ``async with`` body.

        The named pool is taken first, then the global limit; both are released on exit however
        the body ends. ``on_wait(reason)`` is called once for each of the two it has to wait on.
        """
        named = self.pool(pool) if pool is not None else None
        if named is not None:
            named._validate(slots)
        return Slots(named, self.global_pool, slots, priority, on_wait)

    async def hold(
        self, pool: str | None, slots: int = 1, priority: int = 0, on_wait: OnWait | None = None
    ) -> Slots:
        """Take the slots now and return them held: entering the result with ``async with``
        uses them and leaving it releases them; ``release()`` gives them back unused."""
        held = self.slots(pool, slots, priority, on_wait)
        assert isinstance(held, Slots)
        await held.__aenter__()
        return held

    def snapshot(self) -> list[PoolUsage]:
        """Usage of the global limit (if any) and every named pool."""
        out = [self.global_pool.usage()] if self.global_pool is not None else []
        out.extend(p.usage() for p in self._pools.values())
        return out
