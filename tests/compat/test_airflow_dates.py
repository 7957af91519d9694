"""Logical dates and data intervals of Airflow DAG runs: pure time logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evflow.compat.airflow.dates import RunDates, previous_slot
from evflow.run.queue import run_id_for
from evflow.schedules import Cron, Interval


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "t", "expected"),
    [
        (Cron("@daily"), utc(2026, 11, 29), utc(2026, 11, 28)),
        (Cron("@daily"), utc(2026, 11, 29, 12), utc(2026, 11, 29)),
        (Cron("0 9-17 * * 1-5"), utc(2026, 11, 30, 9), utc(2026, 11, 27, 17)),  # Mon -> Fri
        (Cron("0 0 1 * *"), utc(2026, 3, 1), utc(2026, 2, 1)),
        # 02:30 in Paris on the day clocks go forward fires at 03:00 local (01:00 UTC)
        (Cron("30 2 * * *", tz="Europe/Paris"), utc(2026, 3, 30, 0, 30), utc(2026, 3, 29, 1)),
        (
            Interval(timedelta(hours=6), start=utc(2026, 1, 1, 1)),
            utc(2026, 1, 2, 1),
            utc(2026, 1, 1, 19),
        ),
    ],
)
def test_previous_slot(schedule: Cron | Interval, t: datetime, expected: datetime) -> None:
    assert previous_slot(schedule, t) == expected
    assert schedule.next_after(expected) >= t  # no fire time between the two


def test_intervals_by_kind_of_run() -> None:
    dates = RunDates("d", Cron("@daily"))
    slot = "2026-11-29T00:00:00+00:00"
    scheduled = dates.interval("some-run", {"scheduled_time": slot})
    assert (scheduled.run_type, scheduled.start, scheduled.end) == (
        "scheduled",
        utc(2026, 11, 28),
        utc(2026, 11, 29),
    )
    backfill = dates.interval(run_id_for(f"backfill:d:{slot}"), {"scheduled_time": slot})
    assert (backfill.run_type, backfill.start, backfill.end) == (
        "backfill",
        utc(2026, 11, 29),
        utc(2026, 11, 30),
    )
    given = dates.interval("r", {"logical_date": "2026-11-28T01:00:00+01:00"})
    assert (given.logical_date, given.end) == (utc(2026, 11, 28), utc(2026, 11, 29))
    manual = dates.interval("m", {})
    assert manual.start == manual.end == manual.logical_date
    assert dates.interval("m", {}) == manual  # the same run keeps its date
    with pytest.raises(ValueError, match="logical_date='soon' is not ISO 8601"):
        dates.interval("x", {"logical_date": "soon"})
