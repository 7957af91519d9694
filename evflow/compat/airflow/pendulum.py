"""The few ``pendulum`` calls Airflow DAG files make, on the standard library.

Replace ``import pendulum`` with ``from evflow.compat.airflow import pendulum``:
``pendulum.datetime(2021, 1, 1, tz="UTC")``, ``pendulum.duration(...)``, ``pendulum.now()``,
``pendulum.today()``, ``pendulum.timezone(name)``.
"""

from __future__ import annotations

import datetime as _dt
from zoneinfo import ZoneInfo

__all__ = ["datetime", "duration", "now", "timezone", "today"]


def timezone(name: str) -> _dt.tzinfo:
    """The named IANA time zone (``UTC`` included)."""
    return _dt.UTC if name.upper() == "UTC" else ZoneInfo(name)


def _tz(tz: str | _dt.tzinfo | None) -> _dt.tzinfo:
    if tz is None:
        return _dt.UTC
    return timezone(tz) if isinstance(tz, str) else tz


def datetime(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
    tz: str | _dt.tzinfo | None = "UTC",
) -> _dt.datetime:
    """An aware datetime, in UTC unless ``tz`` says otherwise (as pendulum)."""
    return _dt.datetime(year, month, day, hour, minute, second, microsecond, tzinfo=_tz(tz))


def duration(
    days: float = 0,
    seconds: float = 0,
    microseconds: float = 0,
    milliseconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    weeks: float = 0,
) -> _dt.timedelta:
    """A timedelta (pendulum's ``duration`` without months and years)."""
    return _dt.timedelta(
        days=days,
        seconds=seconds,
        microseconds=microseconds,
        milliseconds=milliseconds,
        minutes=minutes,
        hours=hours,
        weeks=weeks,
    )


def now(tz: str | _dt.tzinfo | None = "UTC") -> _dt.datetime:
    return _dt.datetime.now(_tz(tz))


def today(tz: str | _dt.tzinfo | None = "UTC") -> _dt.datetime:
    return now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
