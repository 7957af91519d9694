"""Time triggers: when a schedule fires, and which fires are due after a pause.

Pure time logic, no I/O. A :class:`Schedule` is a fixed set of instants; ``next_after`` walks it.
:func:`due_fires` and :func:`next_fire` apply a misfire policy for a scheduler loop, e.g.::

    last = stored_last_fire          # None if the trigger never fired
    started = clock.now()
    while True:
        now = clock.now()
        first = None if last else started
        for slot in due_fires(trigger, last, now, "catchup", first_start=first):
            emit(slot)
            last = slot
        await clock.sleep_until(next_fire(trigger, last, now))

Cron schedules follow local wall time in their time zone. Across daylight-saving changes:

* a schedule for specific hours (``30 1 * * *``, ``0 9-17 * * 1-5``) fires once per matching
  wall-clock time. A time that occurs twice (clocks go back) fires once, at its first
  occurrence. A time that does not exist (clocks go forward) fires once, at the first instant
  after the gap: 02:30 on the spring-forward day in Europe/Paris fires at 03:00 local, and any
  other slots that land on the same instant fire only once.
* a schedule for every hour (``*/15 * * * *``, ``@hourly``) follows real time, like cron(8):
  it fires at each instant whose local time matches, so it fires in both copies of a repeated
  hour and not at all in a skipped one; its fires keep their regular spacing in UTC.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol, get_args, runtime_checkable

from .errors import ScheduleError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = [
    "CRON_ALIASES",
    "EPOCH",
    "Cron",
    "Interval",
    "Misfire",
    "Schedule",
    "due_fires",
    "next_fire",
    "parse_schedule",
]

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Default anchor of an :class:`Interval`: fixed, so its fire times survive restarts."""

CRON_ALIASES: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
"""The cron aliases :class:`Cron` accepts, with the expression each stands for."""

Misfire = Literal["catchup", "latest", "skip"]
"""What to do with fire times that passed while nothing was running (see :func:`due_fires`)."""

_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
# croniter's hashed ("H") and random ("R") values: not reproducible, so not accepted.
_HASHED = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_TICK = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)


def _utc(t: datetime, what: str) -> datetime:
    """Return ``t`` in UTC; a naive datetime is refused (its time zone would be a guess)."""
    if not isinstance(t, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ScheduleError(f"{what} must be timezone-aware, got naive {t.isoformat()}")
    return t.astimezone(UTC)


@runtime_checkable
class Schedule(Protocol):
    """A schedule: a fixed set of instants at which it fires."""

    @property
    def key(self) -> str:
        """Stable text naming the schedule, e.g. ``cron:0 2 * * *@Europe/Paris``."""
        ...

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t`` (aware), as an aware UTC datetime."""
        ...

    def describe(self) -> str:
        """A short human-readable description."""
        ...


class Cron:
    """A 5-field cron expression (or an alias such as ``@daily``) in an IANA time zone.

    The expression and the zone are checked here: a bad one raises :class:`ScheduleError`.
    Daylight-saving changes are handled as described in this module's docstring.
    """

    __slots__ = ("_every_hour", "_expr", "_source", "_zone")

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        if not isinstance(expr, str):
            raise ScheduleError(f"cron expression must be a string, got {expr!r}")
        self._source = " ".join(expr.split())
        self._expr = _expand_cron(self._source)
        self._zone = _zone(tz, self._source)
        from croniter import CroniterBadDateError, croniter  # with dateutil: 15 ms to import

        try:
            it = croniter(self._expr, datetime(2000, 1, 1))
            it.get_next(datetime)
        except CroniterBadDateError:
            raise ScheduleError(
                f"cron expression {self._source!r} never matches a date (such as 31 April)"
            ) from None
        except (ValueError, LookupError, TypeError) as exc:
            raise ScheduleError(f"invalid cron expression {self._source!r}: {exc}") from None
        hours = it.expanded[1]
        self._every_hour = hours == ["*"] or set(hours) >= set(range(24))

    @property
    def expr(self) -> str:
        """The 5-field expression (an alias is expanded)."""
        return self._expr

    @property
    def tz(self) -> str:
        """The IANA name of the time zone."""
        return self._zone.key

    @property
    def key(self) -> str:
        """``cron:<expression>@<zone>``, e.g. ``cron:0 2 * * *@Europe/Paris``."""
        return f"cron:{self._expr}@{self._zone.key}"

    def describe(self) -> str:
        """E.g. ``cron '0 2 * * *' in Europe/Paris``."""
        shown = self._source if self._source == self._expr else f"{self._source} = {self._expr}"
        return f"cron '{shown}' in {self._zone.key}"

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t``, in UTC."""
        t = _utc(t, "time")
        local = t.astimezone(self._zone)
        start = local.replace(tzinfo=None, fold=0)
        if self._every_hour and local.fold == 0:
            # In the first copy of a repeated hour, the second copies of earlier wall times
            # are still ahead: start the walk from the beginning of the repeated hour.
            first = start.replace(tzinfo=self._zone, fold=0).utcoffset()
            second = start.replace(tzinfo=self._zone, fold=1).utcoffset()
            if first is not None and second is not None and first > second:
                start -= first - second
        from croniter import croniter

        walk = croniter(self._expr, start - timedelta(minutes=1))
        best: datetime | None = None
        while True:
            instants = self._instants(walk.get_next(datetime))
            for instant in instants:
                if instant > t and (best is None or instant < best):
                    best = instant
            # The earliest instant of a wall time never decreases as the walk goes on.
            if best is not None and instants and instants[0] >= best:
                return best

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants at which the naive local time ``wall`` fires, earliest first."""
        first = wall.replace(tzinfo=self._zone, fold=0)
        second = wall.replace(tzinfo=self._zone, fold=1)
        a, b = first.astimezone(UTC), second.astimezone(UTC)
        if a == b:
            return [a]
        if a < b:  # clocks went back: the wall time happens twice
            return [a, b] if self._every_hour else [a]
        # clocks went forward: the wall time does not exist; ``b < gap end <= a``
        return [] if self._every_hour else [_gap_end(b, a, self._zone)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cron) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Cron({self._source!r}, tz={self._zone.key!r})"


class Interval:
    """Fires every ``every`` (a timedelta or seconds) at ``start + k * every``, k >= 0.

    ``start`` defaults to :data:`EPOCH`, so the fire times are the same after a restart.
    """

    __slots__ = ("_anchor", "_every")

    def __init__(self, every: timedelta | float, start: datetime | None = None) -> None:
        if isinstance(every, timedelta):
            step = every
        elif isinstance(every, int | float) and not isinstance(every, bool):
            if not math.isfinite(every):
                raise ScheduleError(f"interval must be a finite number of seconds, got {every!r}")
            step = timedelta(seconds=every)
        else:
            raise ScheduleError(f"interval must be a timedelta or seconds, got {every!r}")
        if step <= timedelta(0):
            raise ScheduleError(f"interval must be > 0 (at least 1 microsecond), got {every!r}")
        self._every = step
        self._anchor = EPOCH if start is None else _utc(start, "interval start")

    @property
    def every(self) -> timedelta:
        """The time between two fires."""
        return self._every

    @property
    def start(self) -> datetime:
        """The first fire time; every other is a whole number of intervals later."""
        return self._anchor

    @property
    def key(self) -> str:
        """``interval:<seconds>s@<start>``, e.g. ``interval:90s@2000-01-01T00:00:00+00:00``."""
        return f"interval:{_seconds(self._every)}s@{self._anchor.isoformat()}"

    def describe(self) -> str:
        """E.g. ``every 90s from 2000-01-01T00:00:00+00:00``."""
        return f"every {_seconds(self._every)}s from {self._anchor.isoformat()}"

    def next_after(self, t: datetime) -> datetime:
        """The first fire time strictly after ``t``, in UTC."""
        t = _utc(t, "time")
        if t < self._anchor:
            return self._anchor
        return self._anchor + ((t - self._anchor) // self._every + 1) * self._every

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Interval) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Interval({self._every!r}, start={self._anchor!r})"


def due_fires(
    trigger: Schedule,
    last_fire: datetime | None,
    now: datetime,
    policy: Misfire,
    *,
    first_start: datetime | None = None,
    max_catchup: int = 1000,
    grace_s: float = 1.0,
) -> list[datetime]:
    """The fire times to emit at ``now``, oldest first, under a misfire ``policy``.

    A slot is due if it is after ``last_fire`` and at or before ``now``; with ``first_start``,
    it must also be at or after ``first_start``. With neither (never fired, no start given),
    nothing is due: the schedule starts from now.

    * ``catchup``: every due slot, oldest first, at most ``max_catchup``. If the list is full,
      record its last item as ``last_fire`` and call again for the rest.
    * ``latest``: only the most recent due slot.
    * ``skip``: only a slot that is on time (at most ``grace_s`` before ``now``); missed slots
      are dropped.
    """
    if policy not in get_args(Misfire):
        choices = ", ".join(get_args(Misfire))
        raise ScheduleError(f"unknown misfire policy {policy!r}; expected one of {choices}")
    if max_catchup < 1:
        raise ValueError(f"max_catchup must be >= 1, got {max_catchup!r}")
    if not grace_s >= 0:
        raise ValueError(f"grace_s must be >= 0, got {grace_s!r}")
    now = _utc(now, "now")
    after = None if last_fire is None else _utc(last_fire, "last_fire")
    if first_start is not None:
        before_start = _utc(first_start, "first_start") - _TICK
        after = before_start if after is None else max(after, before_start)
    if after is None or trigger.next_after(after) > now:
        return []
    if policy == "catchup":
        fires: list[datetime] = []
        slot = trigger.next_after(after)
        while slot <= now and len(fires) < max_catchup:
            fires.append(slot)
            slot = trigger.next_after(slot)
        return fires
    slot = _latest_slot(trigger, after, now)
    if policy == "skip" and (now - slot).total_seconds() > grace_s:
        return []
    return [slot]


def next_fire(trigger: Schedule, last_fire: datetime | None, now: datetime) -> datetime:
    """When a scheduler loop should wake next: the first slot after ``now`` and ``last_fire``.

    Call it after emitting what :func:`due_fires` returned for the same ``now``.
    """
    now = _utc(now, "now")
    if last_fire is not None:
        now = max(now, _utc(last_fire, "last_fire"))
    return trigger.next_after(now)


def parse_schedule(
    value: object, *, tz: str = "UTC", start: datetime | None = None
) -> Schedule | None:
    """Turn a schedule as users write it into a :class:`Schedule` (``None`` stays ``None``).

    Accepts a Schedule, a cron string or alias such as ``"@daily"`` (in time zone ``tz``), or a
    timedelta (an :class:`Interval` from ``start``). Anything else raises :class:`ScheduleError`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("@once", "@continuous", "@reboot"):
            raise ScheduleError(
                f"schedule {value.strip()!r} is not a recurring time schedule; "
                "start such runs from an event or a direct run instead"
            )
        return Cron(value, tz=tz)
    if isinstance(value, timedelta):
        return Interval(value, start=start)
    if isinstance(value, Schedule):
        return value
    raise ScheduleError(
        f"cannot use {value!r} ({type(value).__name__}) as a schedule; expected a cron "
        "expression, an alias such as '@daily', a timedelta, a Schedule or None"
    )


def _expand_cron(text: str) -> str:
    """Expand an alias and check the field count; return the 5-field expression."""
    if text.startswith("@"):
        expanded = CRON_ALIASES.get(text.lower())
        if expanded is None:
            known = ", ".join(CRON_ALIASES)
            raise ScheduleError(f"unknown cron alias {text!r}; expected one of {known}")
        return expanded
    fields = text.split(" ") if text else []
    if len(fields) != len(_FIELDS):
        raise ScheduleError(
            f"invalid cron expression {text!r}: expected 5 fields "
            f"({' '.join(_FIELDS)}), got {len(fields)}"
        )
    for name, field in zip(_FIELDS, fields, strict=True):
        if any(_HASHED.match(part) for part in field.split(",")):
            raise ScheduleError(
                f"invalid cron expression {text!r}: random or hashed value {field!r} "
                f"in the {name} field is not supported"
            )
    return text


def _zone(tz: str, expr: str) -> ZoneInfo:
    """The ZoneInfo for ``tz``; an unknown name raises :class:`ScheduleError`."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(tz, str) or not tz:
        raise ScheduleError(f"time zone for cron expression {expr!r} must be a name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(
            f"unknown time zone {tz!r} for cron expression {expr!r} "
            "(expected an IANA name such as 'Europe/Paris')"
        ) from None


def _gap_end(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The instant in ``(before, after]`` at which the UTC offset of ``zone`` changes."""
    offset = before.astimezone(zone).utcoffset()
    lo, hi = before, after
    while hi - lo > _SECOND:
        mid = lo + max((hi - lo) // _SECOND // 2, 1) * _SECOND
        if mid.astimezone(zone).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi


def _latest_slot(trigger: Schedule, after: datetime, now: datetime) -> datetime:
    """The last slot in ``(after, now]``, which must hold at least one."""
    span = now - after
    back = _SECOND
    while True:  # look back ever further from now until a slot is in sight
        if back >= span:
            since = after
            break
        since = now - back
        if trigger.next_after(since) <= now:
            break
        back *= 2
    slot = trigger.next_after(since)
    while (following := trigger.next_after(slot)) <= now:
        slot = following
    return slot


def _seconds(step: timedelta) -> str:
    """A timedelta as exact seconds text: ``90``, ``0.5``, ``86400.000001``."""
    whole, micro = divmod(step // _TICK, 1_000_000)
    return str(whole) if micro == 0 else f"{whole}.{micro:06d}".rstrip("0")
