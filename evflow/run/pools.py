"""Slot pools: a counting resource with weighted acquisition in strict priority order.

Waiters are served in strict priority order (higher first, then by arrival); the head waiter
blocks those behind it, so a request for many slots is never starved by a stream of small ones.
Waiting costs no CPU: a waiter sleeps on a future that the releasing task resolves after handing
it the slots directly, so nobody can barge in between.

The uncontended path is a few integer operations and allocates no future or waiter record,
because it runs once per task attempt on the engine's hot path.

A waiter can ask to be noted (``acquire(..., note=...)``) once it has waited ``note_after_s``:
the engine then records the task as waiting, with the reason. Most waits end within a few
milliseconds, and noting each at once cost a state change, an audit record and a row per task
that queued for a slot. One timer per pool notes the waiters that are due, oldest first.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Callable

from ..frozen import record

__all__ = ["NOTE_AFTER_S", "OnWait", "PoolUsage", "SlotPool"]

log = logging.getLogger("evflow.engine")

OnWait = Callable[[str], object]
"""Called once, with a human-readable reason, for an acquisition that has waited
``note_after_s`` (at once when that is 0)."""

#: How long an acquisition waits before it is noted waiting (the engine's default).
NOTE_AFTER_S = 0.5
_NOTES_PER_TURN = 500  # a burst of due notes yields to the loop between chunks

# Lazily dropped cancelled waiters are purged from the queue once there are more than this many
# and they outnumber the live ones, so mass cancellation cannot keep memory high.
_COMPACT_THRESHOLD = 64


@record
class PoolUsage:
    """A point-in-time view of one pool, for the API, the UI and metrics."""

    name: str
    capacity: int
    in_use: int
    waiting: int
    scope: str = "instance"  # "cluster": the capacity is shared by every instance on the store


class _Waiter:
    """One blocked acquisition: how many slots it wants and how it is woken (a plain asyncio
    future: an anyio event costs a lookup of the running async library to make, and one of
    the running loop at each wait)."""

    __slots__ = ("cancelled", "due", "future", "granted", "n", "note")

    def __init__(self, n: int, future: asyncio.Future[None]) -> None:
        self.n = n
        self.future = future
        self.granted = False  # slots handed over: the owner must give them back
        self.cancelled = False  # left the queue without slots; skipped when it reaches the head
        self.note: Callable[[], object] | None = None  # called if still waiting at ``due``
        self.due = 0.0


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
        "_noting",
        "_seq",
        "_unnoted",
        "_waiting",
        "_waiting_slots",
        "name",
        "note_after_s",
    )

    def __init__(self, name: str, capacity: int, *, note_after_s: float = NOTE_AFTER_S) -> None:
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
        self.note_after_s = note_after_s
        self._unnoted: deque[_Waiter] = deque()  # waiters to note, in arrival order
        self._noting: asyncio.Handle | None = None  # the timer that notes the next due

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

    async def acquire(
        self, n: int = 1, priority: int = 0, note: Callable[[], object] | None = None
    ) -> None:
        """Take ``n`` slots, waiting in (priority, arrival) order if they are not available;
        ``note()`` is called if the wait lasts ``note_after_s`` (at once if that is 0).

        Raises ``ValueError`` (naming the pool) if ``n`` is below 1 or above the capacity.
        The immediate path does not yield to the event loop.
        """
        if self.try_acquire(n, priority):
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(n, loop.create_future())
        if note is not None:
            if self.note_after_s <= 0:
                note()
            else:
                waiter.note, waiter.due = note, loop.time() + self.note_after_s
                self._unnoted.append(waiter)
                if self._noting is None:
                    self._noting = loop.call_at(waiter.due, self._note_due)
        heapq.heappush(self._heap, (-priority, self._seq, waiter))
        self._seq += 1
        self._waiting += 1
        self._waiting_slots += n
        try:
            await waiter.future
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

    def _note_due(self) -> None:
        """Note the waiters still waiting at their due time; wait for the next one's."""
        self._noting = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._unnoted
        for _ in range(_NOTES_PER_TURN):
            if not queue:
                return
            waiter = queue[0]
            if waiter.granted or waiter.cancelled:
                queue.popleft()
                continue
            if waiter.due > now:
                self._noting = loop.call_at(waiter.due, self._note_due)
                return
            queue.popleft()
            assert waiter.note is not None
            try:
                waiter.note()
            except Exception:  # one note failing must not leave the others unnoted
                log.exception("pool %r: noting a waiter failed", self.name)
        if queue:
            self._noting = loop.call_soon(self._note_due)  # the rest, after a turn of the loop

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
            if not waiter.future.done():
                waiter.future.set_result(None)

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._dead = 0
