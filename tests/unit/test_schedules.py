"""Cron and interval triggers, DST handling, misfire policies and the clocks."""

from __future__ import annotations

import bisect
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest

from evflow.clock import Clock, ManualClock, SystemClock
from evflow.errors import ScheduleError
from evflow.schedules import (
    EPOCH,
    Cron,
    Interval,
    Misfire,
    Schedule,
    due_fires,
    next_fire,
    parse_schedule,
)

PARIS = "Europe/Paris"
NEW_YORK = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def walk(trigger: Schedule, start: datetime, n: int) -> list[datetime]:
    """The first ``n`` fire times after ``start``."""
    out: list[datetime] = []
    t = start
    for _ in range(n):
        t = trigger.next_after(t)
        out.append(t)
    return out


# --- Cron across daylight-saving changes -------------------------------------------------------

# Europe/Paris 2024: forward on 31 March at 01:00Z (02:00 CET -> 03:00 CEST),
#                    back on 27 October at 01:00Z (03:00 CEST -> 02:00 CET).
# America/New_York 2024: forward on 10 March at 07:00Z (02:00 EST -> 03:00 EDT),
#                        back on 3 November at 06:00Z (02:00 EDT -> 01:00 EST).
DAILY_CASES = [
    # 02:30 does not exist on the spring-forward day: fires once at 03:00 local.
    (
        "30 2 * * *",
        PARIS,
        utc(2024, 3, 29, 12),
        [utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30)],
    ),
    (
        "30 2 * * *",
        NEW_YORK,
        utc(2024, 3, 8, 12),
        [utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 30)],
    ),
    # 02:30 happens twice in Paris on the fall-back day: fires once, at the first (CEST) one.
    (
        "30 2 * * *",
        PARIS,
        utc(2024, 10, 25, 12),
        [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)],
    ),
    # 01:30 happens twice in New York on the fall-back day: once, at 01:30 EDT.
    (
        "30 1 * * *",
        NEW_YORK,
        utc(2024, 11, 1, 12),
        [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)],
    ),
    # 01:30 is unaffected in Paris (its changes happen at 02:00/03:00 local).
    (
        "30 1 * * *",
        PARIS,
        utc(2024, 10, 25, 12),
        [utc(2024, 10, 25, 23, 30), utc(2024, 10, 26, 23, 30), utc(2024, 10, 28, 0, 30)],
    ),
    # Several slots in the skipped hour collapse into one fire at 03:00 local.
    (
        "*/20 2 * * *",
        PARIS,
        utc(2024, 3, 31, 0),
        [utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 0), utc(2024, 4, 1, 0, 20)],
    ),
    # Specific hours around the repeated hour: 01:00 EDT, then 02:00 and 03:00 EST.
    (
        "0 1-3 * * *",
        NEW_YORK,
        utc(2024, 11, 3, 4),
        [utc(2024, 11, 3, 5), utc(2024, 11, 3, 7), utc(2024, 11, 3, 8), utc(2024, 11, 4, 6)],
    ),
]


@pytest.mark.parametrize(("expr", "tz", "start", "expected"), DAILY_CASES)
def test_cron_specific_hours_across_dst(
    expr: str, tz: str, start: datetime, expected: list[datetime]
) -> None:
    assert walk(Cron(expr, tz=tz), start, len(expected)) == expected


HOURLY_CASES = [
    # Spring forward: real time keeps its hourly spacing, no fire in the skipped hour.
    (
        "0 * * * *",
        PARIS,
        utc(2024, 3, 30, 23),
        [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)],
    ),
    (
        "30 * * * *",
        PARIS,
        utc(2024, 3, 31, 0),
        [utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 30), utc(2024, 3, 31, 2, 30)],
    ),
    (
        "@hourly",
        NEW_YORK,
        utc(2024, 3, 10, 5),
        [utc(2024, 3, 10, 6), utc(2024, 3, 10, 7), utc(2024, 3, 10, 8)],
    ),
    # Fall back: fires in both copies of the repeated hour, still one hour apart in UTC.
    (
        "30 * * * *",
        NEW_YORK,
        utc(2024, 11, 3, 4),
        [
            utc(2024, 11, 3, 4, 30),
            utc(2024, 11, 3, 5, 30),
            utc(2024, 11, 3, 6, 30),
            utc(2024, 11, 3, 7, 30),
        ],
    ),
    (
        "0 * * * *",
        PARIS,
        utc(2024, 10, 26, 22, 30),
        [utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 1), utc(2024, 10, 27, 2)],
    ),
]


@pytest.mark.parametrize(("expr", "tz", "start", "expected"), HOURLY_CASES)
def test_cron_every_hour_across_dst(
    expr: str, tz: str, start: datetime, expected: list[datetime]
) -> None:
    assert walk(Cron(expr, tz=tz), start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expr", "t", "expected"),
    [
        # 01:10 EDT (first copy): the 01:00 EST slot is still ahead.
        ("0 * * * *", utc(2024, 11, 3, 5, 10), utc(2024, 11, 3, 6)),
        # 01:10 EST (second copy): next is 02:00 EST.
        ("0 * * * *", utc(2024, 11, 3, 6, 10), utc(2024, 11, 3, 7)),
        # A daily 01:30 already fired at 01:30 EDT: not again at 01:30 EST.
        ("30 1 * * *", utc(2024, 11, 3, 5, 40), utc(2024, 11, 4, 6, 30)),
        ("30 1 * * *", utc(2024, 11, 3, 6, 10), utc(2024, 11, 4, 6, 30)),
        # Exactly on a fire time: strictly after.
        ("30 1 * * *", utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)),
    ],
)
def test_cron_next_after_from_inside_the_repeated_hour(
    expr: str, t: datetime, expected: datetime
) -> None:
    assert Cron(expr, tz=NEW_YORK).next_after(t) == expected


def _field_matches(field: str, value: int) -> bool:
    """Plain cron field syntax: ``*``, ``*/n``, ``a``, ``a-b``, comma lists."""
    for part in field.split(","):
        base, _, step = part.partition("/")
        if base == "*":
            if value % int(step or 1) == 0:
                return True
        elif "-" in base:
            a, b = map(int, base.split("-"))
            if a <= value <= b and (value - a) % int(step or 1) == 0:
                return True
        elif int(base) == value:
            return True
    return False


def _matches(expr: str, wall: datetime) -> bool:
    minute, hour, dom, month, dow = expr.split()
    assert (dom, month, dow) == ("*", "*", "*")
    return _field_matches(minute, wall.minute) and _field_matches(hour, wall.hour)


def _oracle(expr: str, tz: str, lo: datetime, hi: datetime, every_hour: bool) -> list[datetime]:
    """Fire times in ``(lo, hi]`` by brute force over every UTC minute.

    Every-hour schedules fire at each instant whose local time matches. Others fire, for each
    matching local time w, at the first instant whose local time is >= w.
    """
    zone = ZoneInfo(tz)
    instants: list[datetime] = []
    walls: list[datetime] = []
    u = lo - timedelta(hours=3)
    while u <= hi + timedelta(hours=3):
        instants.append(u)
        walls.append(u.astimezone(zone).replace(tzinfo=None, fold=0))
        u += timedelta(minutes=1)
    if every_hour:
        fires = {u for u, wall in zip(instants, walls, strict=True) if _matches(expr, wall)}
    else:
        reached = list(itertools.accumulate(walls, max))  # latest local time seen so far
        fires = set()
        wall = walls[0]
        while wall <= reached[-1]:  # every local minute, including ones that do not exist
            if _matches(expr, wall):
                fires.add(instants[bisect.bisect_left(reached, wall)])
            wall += timedelta(minutes=1)
    return sorted(f for f in fires if lo < f <= hi)


@pytest.mark.parametrize(
    ("expr", "tz", "day"),
    [
        (expr, tz, day)
        for expr in ("30 2 * * *", "30 1 * * *", "0 * * * *", "45 * * * *", "*/25 1-3 * * *")
        for tz, day in (
            (PARIS, utc(2024, 3, 31)),
            (PARIS, utc(2024, 10, 27)),
            (NEW_YORK, utc(2024, 3, 10)),
            (NEW_YORK, utc(2024, 11, 3)),
            ("Australia/Lord_Howe", utc(2024, 10, 5)),
            ("Australia/Lord_Howe", utc(2024, 4, 6)),
        )
    ],
)
def test_cron_matches_brute_force_and_never_repeats(expr: str, tz: str, day: datetime) -> None:
    cron = Cron(expr, tz=tz)
    lo, hi = day - timedelta(hours=12), day + timedelta(hours=36)
    got: list[datetime] = []
    t = cron.next_after(lo)
    while t <= hi:
        got.append(t)
        t = cron.next_after(t)
    assert got == sorted(set(got))  # strictly increasing, no duplicates
    assert all(f.tzinfo is UTC for f in got)
    every_hour = expr.split()[1] == "*"
    assert got == _oracle(expr, tz, lo, hi, every_hour)


def test_cron_results_are_aware_utc_and_accept_any_aware_input() -> None:
    cron = Cron("0 2 * * *", tz=PARIS)
    t = datetime(2024, 6, 1, 12, tzinfo=ZoneInfo("Asia/Tokyo"))  # 03:00Z
    assert cron.next_after(t) == utc(2024, 6, 2, 0)
    assert cron.next_after(t).tzinfo is UTC
    with pytest.raises(ScheduleError, match="timezone-aware"):
        cron.next_after(datetime(2024, 6, 1))


# --- Cron parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "expr", "expected"),
    [
        ("@hourly", "0 * * * *", utc(2024, 1, 1, 1)),
        ("@daily", "0 0 * * *", utc(2024, 1, 2)),
        ("@midnight", "0 0 * * *", utc(2024, 1, 2)),
        ("@weekly", "0 0 * * 0", utc(2024, 1, 7)),  # 2024-01-01 is a Monday
        ("@monthly", "0 0 1 * *", utc(2024, 2, 1)),
        ("@yearly", "0 0 1 1 *", utc(2025, 1, 1)),
        ("@annually", "0 0 1 1 *", utc(2025, 1, 1)),
        ("@DAILY", "0 0 * * *", utc(2024, 1, 2)),
    ],
)
def test_cron_aliases(alias: str, expr: str, expected: datetime) -> None:
    cron = Cron(alias)
    assert cron.expr == expr
    assert cron.key == f"cron:{expr}@UTC"
    assert cron.next_after(utc(2024, 1, 1)) == expected
    assert cron == Cron(expr)


def test_cron_alias_in_a_time_zone() -> None:
    cron = Cron("@daily", tz=PARIS)
    assert cron.next_after(utc(2024, 7, 1, 12)) == utc(2024, 7, 1, 22)  # midnight CEST
    assert cron.describe() == "cron '@daily = 0 0 * * *' in Europe/Paris"


def test_cron_key_describe_repr() -> None:
    cron = Cron("  0   2 * *  * ", tz=PARIS)
    assert cron.key == "cron:0 2 * * *@Europe/Paris"
    assert cron.describe() == "cron '0 2 * * *' in Europe/Paris"
    assert cron.tz == PARIS
    assert repr(cron) == "Cron('0 2 * * *', tz='Europe/Paris')"
    assert cron == Cron("0 2 * * *", PARIS)
    assert hash(cron) == hash(Cron("0 2 * * *", PARIS))
    assert cron != Cron("0 2 * * *")
    assert isinstance(cron, Schedule)


def test_cron_names_and_extensions() -> None:
    # Second Friday of the month; month and weekday names.
    assert Cron("0 9 * * 5#2").next_after(utc(2024, 1, 1)) == utc(2024, 1, 12, 9)
    assert Cron("0 0 * mar fri").next_after(utc(2024, 1, 1)) == utc(2024, 3, 1)
    assert Cron("0 0 29 2 *").next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", r"invalid cron expression '61 \* \* \* \*': .*out of range"),
        ("* * * *", r"invalid cron expression '\* \* \* \*': expected 5 fields .* got 4"),
        ("0 0 * * * *", r"expected 5 fields \(minute hour day-of-month month day-of-week\), got 6"),
        ("", r"invalid cron expression '': expected 5 fields"),
        ("every day", r"expected 5 fields .* got 2"),
        ("a b c d e", r"invalid cron expression 'a b c d e'"),
        ("*/0 * * * *", r"invalid cron expression '\*/0 \* \* \* \*': .*step"),
        ("0 0 31 4 *", r"cron expression '0 0 31 4 \*' never matches a date"),
        ("R 2 * * *", r"random or hashed value 'R' in the minute field is not supported"),
        ("0 H * * *", r"random or hashed value 'H' in the hour field"),
        ("@fortnightly", r"unknown cron alias '@fortnightly'; expected one of @hourly, @daily"),
    ],
)
def test_cron_bad_expression(expr: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Cron(expr)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "Europe/"])
def test_cron_unknown_time_zone(tz: str) -> None:
    with pytest.raises(ScheduleError, match=r"time zone .*cron expression '0 2 \* \* \*'"):
        Cron("0 2 * * *", tz=tz)


def test_cron_unknown_time_zone_message() -> None:
    with pytest.raises(ScheduleError) as info:
        Cron("0 2 * * *", tz="Mars/Olympus_Mons")
    assert str(info.value) == (
        "unknown time zone 'Mars/Olympus_Mons' for cron expression '0 2 * * *' "
        "(expected an IANA name such as 'Europe/Paris')"
    )
    assert isinstance(info.value, ValueError)


def test_cron_expression_must_be_text() -> None:
    with pytest.raises(ScheduleError, match="must be a string"):
        Cron(5)  # type: ignore[arg-type]


# --- Interval ----------------------------------------------------------------------------------


def test_interval_anchored_at_epoch() -> None:
    every = Interval(timedelta(minutes=90))
    assert every.start == EPOCH
    assert every.next_after(utc(2024, 1, 1, 0, 10)) == utc(2024, 1, 1, 1, 30)
    assert every.next_after(utc(2024, 1, 1, 1, 30)) == utc(2024, 1, 1, 3)  # strictly after
    # A new instance (a restart) keeps the same fire times and key.
    assert Interval(5400).next_after(utc(2024, 1, 1, 0, 10)) == utc(2024, 1, 1, 1, 30)
    assert every.key == Interval(5400.0).key == "interval:5400s@2000-01-01T00:00:00+00:00"
    assert every.describe() == "every 5400s from 2000-01-01T00:00:00+00:00"


def test_interval_with_start() -> None:
    start = datetime(2024, 5, 1, 12, 0, 7, tzinfo=ZoneInfo(PARIS))  # 10:00:07Z
    every = Interval(0.5, start=start)
    assert every.start == utc(2024, 5, 1, 10, 0, 7)
    assert every.next_after(utc(2024, 1, 1)) == utc(2024, 5, 1, 10, 0, 7)  # never before start
    assert every.next_after(utc(2024, 5, 1, 10, 0, 8)) == utc(2024, 5, 1, 10, 0, 8) + timedelta(
        seconds=0.5
    )
    assert every.key == "interval:0.5s@2024-05-01T10:00:07+00:00"
    assert walk(every, utc(2024, 5, 1, 10, 0, 7), 2) == [
        utc(2024, 5, 1, 10, 0, 7) + timedelta(seconds=0.5),
        utc(2024, 5, 1, 10, 0, 8),
    ]


@pytest.mark.parametrize(
    ("every", "message"),
    [
        (0, "must be > 0"),
        (-5, "must be > 0"),
        (timedelta(0), "must be > 0"),
        (timedelta(seconds=-1), "must be > 0"),
        (1e-9, "must be > 0"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (True, "timedelta or seconds"),
        ("60", "timedelta or seconds"),
    ],
)
def test_interval_rejects_bad_step(every: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Interval(every)  # type: ignore[arg-type]


def test_interval_rejects_naive_start() -> None:
    with pytest.raises(ScheduleError, match="timezone-aware"):
        Interval(60, start=datetime(2024, 1, 1))


# --- misfire policies --------------------------------------------------------------------------

HOURLY = Cron("0 * * * *")


@pytest.mark.parametrize("policy", ["catchup", "latest", "skip"])
def test_restart_within_a_slot_emits_nothing(policy: Misfire) -> None:
    # Fired at 10:00, restarted at 10:30: the 11:00 slot is still ahead.
    assert due_fires(HOURLY, utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 30), policy) == []
    assert next_fire(HOURLY, utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 30)) == utc(2024, 1, 1, 11)


def test_missed_slots_catchup_latest_skip() -> None:
    last = utc(2024, 1, 1, 10)
    late = utc(2024, 1, 1, 13, 20)  # 11:00, 12:00 and 13:00 were missed
    assert due_fires(HOURLY, last, late, "catchup") == [
        utc(2024, 1, 1, 11),
        utc(2024, 1, 1, 12),
        utc(2024, 1, 1, 13),
    ]
    assert due_fires(HOURLY, last, late, "latest") == [utc(2024, 1, 1, 13)]
    assert due_fires(HOURLY, last, late, "skip") == []
    assert next_fire(HOURLY, last, late) == utc(2024, 1, 1, 14)


def test_on_time_fire_is_due_under_every_policy() -> None:
    last = utc(2024, 1, 1, 12)
    now = utc(2024, 1, 1, 13) + timedelta(milliseconds=300)
    for policy in ("catchup", "latest", "skip"):
        assert due_fires(HOURLY, last, now, policy) == [utc(2024, 1, 1, 13)]
    # Past the grace period, skip drops it.
    now = utc(2024, 1, 1, 13, 0, 2)
    assert due_fires(HOURLY, last, now, "skip") == []
    assert due_fires(HOURLY, last, now, "skip", grace_s=5) == [utc(2024, 1, 1, 13)]


def test_skip_keeps_an_on_time_slot_after_missed_ones() -> None:
    now = utc(2024, 1, 1, 13, 0, 0)
    assert due_fires(HOURLY, utc(2024, 1, 1, 9), now, "skip") == [utc(2024, 1, 1, 13)]


def test_catchup_keeps_the_oldest_and_resumes() -> None:
    last = utc(2024, 1, 1, 0)
    now = utc(2024, 1, 1, 5, 30)
    first = due_fires(HOURLY, last, now, "catchup", max_catchup=2)
    assert first == [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]
    second = due_fires(HOURLY, first[-1], now, "catchup", max_catchup=2)
    assert second == [utc(2024, 1, 1, 3), utc(2024, 1, 1, 4)]
    assert due_fires(HOURLY, second[-1], now, "catchup", max_catchup=2) == [utc(2024, 1, 1, 5)]


def test_never_fired_starts_from_now() -> None:
    now = utc(2024, 1, 1, 13, 20)
    for policy in ("catchup", "latest", "skip"):
        assert due_fires(HOURLY, None, now, policy) == []
    assert next_fire(HOURLY, None, now) == utc(2024, 1, 1, 14)


def test_first_start_counts_slots_since_then() -> None:
    now = utc(2024, 1, 1, 13, 20)
    start = utc(2024, 1, 1, 11)  # inclusive: the 11:00 slot counts
    assert due_fires(HOURLY, None, now, "catchup", first_start=start) == [
        utc(2024, 1, 1, 11),
        utc(2024, 1, 1, 12),
        utc(2024, 1, 1, 13),
    ]
    assert due_fires(HOURLY, None, now, "latest", first_start=start) == [utc(2024, 1, 1, 13)]
    assert due_fires(HOURLY, None, now, "skip", first_start=start) == []
    # With a last fire too, both bounds apply.
    assert due_fires(HOURLY, utc(2024, 1, 1, 12), now, "catchup", first_start=start) == [
        utc(2024, 1, 1, 13)
    ]
    assert due_fires(HOURLY, utc(2024, 1, 1, 9), now, "catchup", first_start=start) == [
        utc(2024, 1, 1, 11),
        utc(2024, 1, 1, 12),
        utc(2024, 1, 1, 13),
    ]


def test_latest_after_a_long_outage_of_a_dense_schedule() -> None:
    every_minute = Cron("* * * * *")
    last = utc(2023, 1, 1)
    now = utc(2024, 1, 1, 12, 34, 56)
    assert due_fires(every_minute, last, now, "latest") == [utc(2024, 1, 1, 12, 34)]
    assert due_fires(every_minute, last, now, "catchup", max_catchup=3) == [
        utc(2023, 1, 1, 0, 1),
        utc(2023, 1, 1, 0, 2),
        utc(2023, 1, 1, 0, 3),
    ]
    burst = Cron("* 2 * * *")  # 60 slots at 02:xx, then nothing for 23 hours
    assert due_fires(burst, last, now, "latest") == [utc(2024, 1, 1, 2, 59)]
    assert due_fires(Interval(7), last, utc(2024, 1, 1), "latest") == [
        utc(2023, 12, 31, 23, 59, 55)
    ]


def test_misfire_across_dst() -> None:
    daily = Cron("30 1 * * *", tz=NEW_YORK)
    # Down from before the fall-back day until after it: the 01:30 slot fired once.
    due = due_fires(daily, utc(2024, 11, 2, 5, 30), utc(2024, 11, 4, 12), "catchup")
    assert due == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]


def test_due_fires_rejects_bad_arguments() -> None:
    now = utc(2024, 1, 1)
    with pytest.raises(ScheduleError, match="unknown misfire policy 'never'; expected one of"):
        due_fires(HOURLY, None, now, "never")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_catchup"):
        due_fires(HOURLY, None, now, "catchup", max_catchup=0)
    with pytest.raises(ScheduleError, match="timezone-aware"):
        due_fires(HOURLY, None, datetime(2024, 1, 1), "catchup")


def test_next_fire_when_last_fire_is_ahead_of_now() -> None:
    # The wall clock was set back: never fire a slot twice.
    assert next_fire(HOURLY, utc(2024, 1, 1, 12), utc(2024, 1, 1, 10, 30)) == utc(2024, 1, 1, 13)


# --- parse_schedule ----------------------------------------------------------------------------


def test_parse_schedule() -> None:
    cron = Cron("0 2 * * *")
    assert parse_schedule(None) is None
    assert parse_schedule(cron) is cron
    assert parse_schedule("0 2 * * *") == cron
    assert parse_schedule("@daily") == Cron("0 0 * * *")
    assert parse_schedule("0 2 * * *", tz=PARIS) == Cron("0 2 * * *", tz=PARIS)
    assert parse_schedule(timedelta(hours=1)) == Interval(3600)
    start = utc(2024, 1, 1, 0, 15)
    assert parse_schedule(timedelta(days=1), start=start) == Interval(86400, start=start)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3600, r"cannot use 3600 \(int\) as a schedule"),
        (1.5, r"cannot use 1.5 \(float\)"),
        (["0 2 * * *"], r"\(list\) as a schedule"),
        ("@once", r"'@once' is not a recurring time schedule"),
        ("0 2 * *", r"invalid cron expression '0 2 \* \*'"),
        (timedelta(0), "must be > 0"),
    ],
)
def test_parse_schedule_rejects(value: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(value)


# --- clocks ------------------------------------------------------------------------------------


async def test_manual_clock_wakes_a_sleeper_when_advanced() -> None:
    clock = ManualClock(utc(2024, 1, 1))
    woke: list[datetime] = []

    async def sleeper() -> None:
        await clock.sleep_until(utc(2024, 1, 1, 0, 0, 10))
        woke.append(clock.now())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            assert clock.sleepers == 1
            assert clock.advance(4) == utc(2024, 1, 1, 0, 0, 4)
            await anyio.wait_all_tasks_blocked()
            assert woke == []
            assert clock.sleepers == 1
            clock.advance(timedelta(seconds=6))
    assert woke == [utc(2024, 1, 1, 0, 0, 10)]
    assert clock.sleepers == 0


async def test_manual_clock_drives_a_schedule_loop() -> None:
    clock = ManualClock(utc(2024, 3, 31, 0, 30))
    cron = Cron("0 * * * *", tz=PARIS)
    fired: list[datetime] = []

    async def loop() -> None:
        last: datetime | None = None
        started = clock.now()
        while len(fired) < 3:
            now = clock.now()
            first = None if last else started
            for slot in due_fires(cron, last, now, "catchup", first_start=first):
                fired.append(slot)
                last = slot
            await clock.sleep_until(next_fire(cron, last, now))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(loop)
            await anyio.wait_all_tasks_blocked()
            while len(fired) < 3:
                clock.advance(timedelta(minutes=30))
                await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert fired == [utc(2024, 3, 31, 1), utc(2024, 3, 31, 2), utc(2024, 3, 31, 3)]


async def test_manual_clock_set_and_past_deadline() -> None:
    clock = ManualClock()
    assert clock.now() == EPOCH
    with anyio.fail_after(1):
        await clock.sleep_until(EPOCH)  # already due: returns at once
        await clock.sleep_until(EPOCH - timedelta(days=1))
    assert clock.set(utc(2030, 1, 1)) == utc(2030, 1, 1)
    assert clock.set(utc(2029, 1, 1)) == utc(2029, 1, 1)  # may move back
    with pytest.raises(ValueError, match="negative"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2024, 1, 1))
    assert isinstance(clock, Clock)


async def test_manual_clock_set_wakes_all_due_sleepers_only() -> None:
    clock = ManualClock(utc(2024, 1, 1))
    woke: list[int] = []

    async def sleeper(n: int) -> None:
        await clock.sleep_until(utc(2024, 1, 1) + timedelta(seconds=n))
        woke.append(n)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in (30, 10, 20):
                tg.start_soon(sleeper, n)
            await anyio.wait_all_tasks_blocked()
            assert clock.sleepers == 3
            clock.set(utc(2024, 1, 1, 0, 0, 25))
            await anyio.wait_all_tasks_blocked()
            assert sorted(woke) == [10, 20]
            assert clock.sleepers == 1
            clock.advance(5)
    assert sorted(woke) == [10, 20, 30]


async def test_system_clock() -> None:
    clock = SystemClock()
    before = datetime.now(UTC)
    now = clock.now()
    assert now.tzinfo is UTC
    assert now >= before
    with anyio.fail_after(5):
        await clock.sleep_until(now - timedelta(seconds=1))
        target = clock.now() + timedelta(milliseconds=30)
        await clock.sleep_until(target)
    assert clock.now() >= target
    assert isinstance(clock, Clock)
    with pytest.raises(ValueError, match="max_nap_s"):
        SystemClock(max_nap_s=0)
