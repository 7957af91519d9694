"""Resource limits: the global task limit, named pools with slots, per-flow active runs.

Every task attempt runs inside ``async with limits.slots(...)``: it takes its pool's slots first,
then one slot of the global limit (always in that order, so two attempts can never hold one each
and wait for the other). Waiters are served in strict priority order (higher first, then by
arrival); the head waiter blocks those behind it, so a request for many slots is never starved
by a stream of small ones. Waiting costs no CPU: a waiter sleeps on an event that the releasing
task sets after handing it the slots directly, so nobody can barge in between.

The uncontended path is a few integer operations and allocates no event or waiter record,
because it runs once per task attempt on the engine's hot path.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from types import MappingProxyType, TracebackType

import anyio

from ..errors import UnknownPoolError

__all__ = ["GLOBAL_POOL", "Limits", "PoolUsage", "RunGate", "SlotPool"]

GLOBAL_POOL = "<global>"
"""The name of the pool that enforces ``max_tasks``; no named pool may use it."""

OnWait = Callable[[str], object]
"""Called once, with a human-readable reason, each time an acquisition has to wait."""

# Lazily dropped cancelled waiters are purged from the queue once there are more than this many
# and they outnumber the live ones, so mass cancellation cannot keep memory high.
_COMPACT_THRESHOLD = 64


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """A point-in-time view of one pool, for the API, the UI and metrics."""

    name: str
    capacity: int
    in_use: int
    waiting: int


class _Waiter:
    """One blocked acquisition: how many slots it wants and how it is woken."""

    __slots__ = ("cancelled", "event", "granted", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.event = anyio.Event()
        self.granted = False  # slots handed over: the owner must give them back
        self.cancelled = False  # left the queue without slots; skipped when it reaches the head


class SlotPool:
    """A counting resource with weighted acquisition and strict priority order.

    ``acquire(n, priority)`` is granted at once only if ``n`` slots are free and no queued waiter
    comes before it (higher priority, or equal priority and earlier arrival). Otherwise it waits
    until a release hands it its slots. Cancellation while waiting removes the waiter; if the
    slots were handed over in the same instant, they are given back, never leaked.
    """

    __slots__ = (
        "_capacity",
        "_dead",
        "_heap",
        "_in_use",
        "_seq",
        "_waiting",
        "_waiting_slots",
        "name",
    )

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"pool {name!r} needs a capacity of at least 1, got {capacity}")
        self.name = name
        self._capacity = capacity
        self._in_use = 0
        self._waiting = 0  # live waiters (not granted, not cancelled)
        self._waiting_slots = 0
        self._dead = 0  # cancelled waiters still in the heap
        self._seq = 0
        # (-priority, arrival, waiter): the smallest entry is the next to be served.
        self._heap: list[tuple[int, int, _Waiter]] = []

    def __repr__(self) -> str:
        return (
            f"SlotPool({self.name!r}, capacity={self._capacity}, in_use={self._in_use}, "
            f"waiting={self._waiting})"
        )

    @property
    def capacity(self) -> int:
        """The number of slots in the pool."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """Slots currently held (including those handed to waiters not yet resumed)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """The number of acquisitions waiting for slots."""
        return self._waiting

    @property
    def waiting_slots(self) -> int:
        """The total number of slots the waiting acquisitions ask for."""
        return self._waiting_slots

    def usage(self) -> PoolUsage:
        """A snapshot of this pool."""
        return PoolUsage(self.name, self._capacity, self._in_use, self._waiting)

    def set_capacity(self, capacity: int) -> None:
        """Change the size of the pool; a larger pool wakes waiters that now fit.

        Shrinking below ``in_use`` is allowed (holders keep their slots; nobody new is admitted
        until usage drops). Shrinking below what a queued waiter asks for is refused, since that
        waiter could never be served.
        """
        if capacity < 1:
            raise ValueError(f"pool {self.name!r} needs a capacity of at least 1, got {capacity}")
        biggest = max((w.n for _, _, w in self._heap if not w.cancelled), default=0)
        if biggest > capacity:
            raise ValueError(
                f"cannot shrink pool {self.name!r} to {capacity}: a waiter asks for {biggest} slots"
            )
        self._capacity = capacity
        self._wake()

    def _validate(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"must ask pool {self.name!r} for at least 1 slot, not {n}")
        if n > self._capacity:
            raise ValueError(
                f"asked pool {self.name!r} for {n} slots but it has only {self._capacity}"
            )

    def _head(self) -> tuple[int, int, _Waiter] | None:
        """The next live waiter's heap entry, dropping cancelled ones on the way."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if not entry[2].cancelled:
                return entry
            heapq.heappop(heap)
            self._dead -= 1
        return None

    def try_acquire(self, n: int = 1, priority: int = 0) -> bool:
        """Take ``n`` slots if that is possible without waiting; never blocks."""
        if self._waiting == 0 and 0 < n <= self._capacity - self._in_use:
            self._in_use += n  # the hot path
            return True
        self._validate(n)
        if self._in_use + n > self._capacity:
            return False
        head = self._head()
        if head is not None and -head[0] >= priority:
            return False  # a waiter of equal or higher priority is first in line
        self._in_use += n
        return True

    async def acquire(self, n: int = 1, priority: int = 0) -> None:
        """Take ``n`` slots, waiting in (priority, arrival) order if they are not available.

        Raises ``ValueError`` (naming the pool) if ``n`` is below 1 or above the capacity.
        The immediate path does not yield to the event loop.
        """
        if self.try_acquire(n, priority):
            return
        waiter = _Waiter(n)
        heapq.heappush(self._heap, (-priority, self._seq, waiter))
        self._seq += 1
        self._waiting += 1
        self._waiting_slots += n
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                # Handed the slots in the same instant we were cancelled: give them back.
                self.release(n)
            else:
                waiter.cancelled = True
                self._waiting -= 1
                self._waiting_slots -= n
                self._dead += 1
                self._wake()  # if we were the head, those behind us may fit now
                if self._dead > _COMPACT_THRESHOLD and self._dead > self._waiting:
                    self._compact()
            raise

    def release(self, n: int = 1) -> None:
        """Give back ``n`` slots and hand them to the waiters at the head that fit."""
        if n < 1 or n > self._in_use:
            raise RuntimeError(
                f"pool {self.name!r}: releasing {n} slots but only {self._in_use} are held"
            )
        self._in_use -= n
        if self._heap:
            self._wake()

    def _wake(self) -> None:
        """Grant slots to waiters in order while the head fits; the head blocks the rest."""
        heap = self._heap
        while heap:
            waiter = heap[0][2]
            if waiter.cancelled:
                heapq.heappop(heap)
                self._dead -= 1
                continue
            if self._in_use + waiter.n > self._capacity:
                return
            heapq.heappop(heap)
            self._in_use += waiter.n
            self._waiting -= 1
            self._waiting_slots -= waiter.n
            waiter.granted = True
            waiter.event.set()

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._dead = 0


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


class _Admission:
    """The context manager returned by :meth:`RunGate.admit`."""

    __slots__ = ("_flow", "_gate", "_max", "_on_wait", "_pool", "_priority")

    def __init__(
        self, gate: RunGate, flow: str, max_active: int, priority: int, on_wait: OnWait | None
    ) -> None:
        self._gate = gate
        self._flow = flow
        self._max = max_active
        self._priority = priority
        self._on_wait = on_wait
        self._pool: SlotPool | None = None

    async def __aenter__(self) -> None:
        pool = self._gate._pool_for(self._flow, self._max)
        if not pool.try_acquire(1, self._priority):
            try:
                if self._on_wait is not None:
                    self._on_wait(
                        f"waiting for flow {self._flow!r} (max_active_runs="
                        f"{pool.capacity}, {pool.in_use} active, {pool.waiting} waiting)"
                    )
                await pool.acquire(1, self._priority)
            except BaseException:
                self._gate._forget_if_idle(self._flow, pool)
                raise
        self._pool = pool

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(1)
            self._gate._forget_if_idle(self._flow, pool)


class RunGate:
    """Enforces ``max_active_runs`` per flow: excess runs wait in (priority, arrival) order.

    One :class:`SlotPool` per flow, created when a run first needs it and dropped when the flow
    is idle, so memory follows the number of flows that are busy, not ever seen.
    """

    def __init__(self) -> None:
        self._pools: dict[str, SlotPool] = {}

    def admit(
        self,
        flow_name: str,
        max_active: int | None,
        priority: int = 0,
        on_wait: OnWait | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold one active-run place of ``flow_name`` for the ``async with`` body.

        ``max_active=None`` means unlimited (nothing is counted). If the flow's limit changed
        since the last run, the new value applies from now on.
        """
        if max_active is None:
            return nullcontext()
        if max_active < 1:
            raise ValueError(
                f"max_active_runs of flow {flow_name!r} must be at least 1 or None, "
                f"got {max_active}"
            )
        return _Admission(self, flow_name, max_active, priority, on_wait)

    def active(self, flow_name: str) -> int:
        """The number of runs of the flow holding a place."""
        pool = self._pools.get(flow_name)
        return pool.in_use if pool is not None else 0

    def waiting(self, flow_name: str) -> int:
        """The number of runs of the flow waiting for a place."""
        pool = self._pools.get(flow_name)
        return pool.waiting if pool is not None else 0

    def snapshot(self) -> list[PoolUsage]:
        """Usage per busy flow (name is the flow name, capacity its ``max_active_runs``)."""
        return [p.usage() for p in self._pools.values()]

    def _pool_for(self, flow: str, max_active: int) -> SlotPool:
        pool = self._pools.get(flow)
        if pool is None:
            pool = self._pools[flow] = SlotPool(flow, max_active)
        elif pool.capacity != max_active:
            pool.set_capacity(max_active)
        return pool

    def _forget_if_idle(self, flow: str, pool: SlotPool) -> None:
        if pool.in_use == 0 and pool.waiting == 0 and self._pools.get(flow) is pool:
            del self._pools[flow]
