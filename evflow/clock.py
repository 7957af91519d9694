"""Clocks: where time-based logic reads the time and waits for it.

Everything that schedules takes a :class:`Clock`, so the real one can be swapped for a
:class:`ManualClock` that only moves when told to: cron and DST behaviour is then testable
instantly, and an embedding application can drive evflow's time itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import anyio
import anyio.lowlevel

__all__ = ["Clock", "ManualClock", "SystemClock"]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _require_aware(t: datetime, what: str) -> datetime:
    """Return ``t`` in UTC; a naive datetime is an error (its zone would be a guess)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {t.isoformat()}")
    return t.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """A source of the current time and a way to wait for a later one."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    async def sleep_until(self, t: datetime) -> None:
        """Return once ``now() >= t`` (at once if that already holds)."""
        ...


class SystemClock:
    """The real wall clock.

    ``sleep_until`` naps at most ``max_nap_s`` at a time and re-reads the wall clock after each
    nap, so a wall-clock step (NTP correction, suspend and resume) is noticed within that time.
    """

    def __init__(self, *, max_nap_s: float = 60.0) -> None:
        if not max_nap_s > 0:
            raise ValueError(f"max_nap_s must be > 0, got {max_nap_s!r}")
        self._max_nap_s = max_nap_s

    def now(self) -> datetime:
        """The current time in UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, t: datetime) -> None:
        """Sleep until the wall clock reaches ``t``."""
        target = _require_aware(t, "sleep_until time")
        remaining = (target - self.now()).total_seconds()
        if remaining <= 0:
            await anyio.lowlevel.checkpoint()
        while remaining > 0:
            await anyio.sleep(min(remaining, self._max_nap_s))
            remaining = (target - self.now()).total_seconds()

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when :meth:`advance` or :meth:`set` is called.

    Tasks waiting in :meth:`sleep_until` wake when the clock is moved to or past their time.
    It starts at ``start`` (default 2000-01-01T00:00Z).
    """

    def __init__(self, start: datetime = _EPOCH) -> None:
        self._now = _require_aware(start, "start")
        # Created lazily: an anyio Event needs a running event loop, the clock may be made without.
        self._moved: anyio.Event | None = None
        self._sleepers = 0

    def now(self) -> datetime:
        """The clock's current time in UTC."""
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting in :meth:`sleep_until` right now."""
        return self._sleepers

    def advance(self, by: timedelta | float) -> datetime:
        """Move the clock forward by ``by`` (a timedelta or seconds); return the new time."""
        delta = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if delta < timedelta(0):
            raise ValueError(f"cannot advance by a negative amount ({by!r}); use set()")
        return self.set(self._now + delta)

    def set(self, t: datetime) -> datetime:
        """Move the clock to ``t`` (forward or back); return the new time."""
        self._now = _require_aware(t, "clock time")
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()
        return self._now

    async def sleep_until(self, t: datetime) -> None:
        """Wait until the clock has been moved to ``t`` or later."""
        target = _require_aware(t, "sleep_until time")
        if self._now >= target:
            await anyio.lowlevel.checkpoint()
            return
        self._sleepers += 1
        try:
            while self._now < target:
                if self._moved is None:
                    self._moved = anyio.Event()
                await self._moved.wait()
        finally:
            self._sleepers -= 1

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"
