"""Schedules through a running Engine on a manual clock: slots, restarts, misfires, DST.

A flow with ``schedule=`` gets a schedule sensor inside the engine; its fires go through the
durable intake and the rule layer like any other event. The engine is given a
:class:`~evflow.clock.ManualClock`, so hours and days pass instantly and exactly. Before the
clock is moved, the test waits until the schedule sensor sleeps on the clock: it has then
handled everything due at the current time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from evflow import Cron, Engine, RunState, flow, task
from evflow.clock import ManualClock
from evflow.records import RunRecord
from tests.engines import listening
from tests.observers import LIMIT_S, RunLog

PARIS = ZoneInfo("Europe/Paris")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def scheduled_flow(expr: str, *, tz: str = "UTC", misfire: str = "latest") -> Any:
    """A flow on ``Cron(expr, tz)`` whose task returns the slot it ran for."""

    @task
    def tick(scheduled_time: str) -> str:
        return scheduled_time

    @flow(schedule=Cron(expr, tz=tz), misfire=misfire)
    def report(scheduled_time: str = "") -> None:
        tick(scheduled_time)

    return report


@asynccontextmanager
async def engine_on(db: str, fl: Any, clock: ManualClock, runs: RunLog) -> AsyncIterator[Engine]:
    """A running engine on ``db`` with ``fl`` registered and its schedule sensor listening."""
    engine = Engine(db, clock=clock, grace_period_s=0)
    runs.attach(engine)
    engine.add(fl)
    async with listening(engine):
        assert engine.sensor_status[f"schedule:{fl.name}"] == "listening"
        yield engine


async def schedule_idle(clock: ManualClock) -> None:
    """Wait until the schedule sensor sleeps on the clock.

    The sensor goes to sleep only after handling the time it woke at, so when the clock has
    not moved since the sensor started or last fired, this means it has handled the present.
    """
    with anyio.fail_after(LIMIT_S):
        while True:
            if clock.sleepers >= 1:
                return
            await anyio.sleep(0.005)


async def move(clock: ManualClock, to: datetime) -> None:
    await schedule_idle(clock)
    clock.set(to)


def slot(run: RunRecord) -> str:
    value: str = run.params["scheduled_time"]
    return value


async def all_slots(engine: Engine, name: str) -> list[str]:
    """The slot of every run of flow ``name`` in the store, after each has finished."""
    await engine.store.flush()
    stored = await engine.store.list_runs(flow=name, limit=1000)
    results = []
    for r in stored:
        with anyio.fail_after(LIMIT_S):
            results.append(await engine.wait(r.id))
    assert all(r.state is RunState.SUCCEEDED for r in results), [r.error for r in results]
    return sorted(r.params["scheduled_time"] for r in results)


# -- firing ---------------------------------------------------------------------------------------


async def test_a_schedule_fires_once_at_its_slot(store: str) -> None:
    clock = ManualClock(utc(2024, 1, 1, 0, 30))
    runs = RunLog()
    fl = scheduled_flow("0 * * * *")
    async with engine_on(store, fl, clock, runs) as engine:
        await move(clock, utc(2024, 1, 1, 1, 0, 5))  # just past the 01:00 slot
        (run,) = await runs.wait_for(1)
        assert run.state is RunState.SUCCEEDED
        assert slot(run) == "2024-01-01T01:00:00+00:00"
        assert run.trigger["kind"] == "event"
        assert run.trigger["rule"] == f"schedule:{fl.name}"
        result = await engine.wait(run.id)
        assert result.result("tick") == "2024-01-01T01:00:00+00:00"

        await move(clock, utc(2024, 1, 1, 2, 0))  # the next slot
        await runs.wait_for(2)
        assert await all_slots(engine, fl.name) == [
            "2024-01-01T01:00:00+00:00",
            "2024-01-01T02:00:00+00:00",
        ]
        event = (await engine.store.list_events(source=f"schedule/{fl.name}", limit=1))[0]
        assert event.dedup_key == f"schedule:{fl.name}:cron:0 * * * *@UTC@2024-01-01T02:00:00+00:00"


async def test_a_restart_within_a_slot_does_not_fire_it_again(store: str) -> None:
    db = store
    clock = ManualClock(utc(2024, 1, 1, 0, 30))
    runs = RunLog()
    fl = scheduled_flow("0 * * * *")
    async with engine_on(db, fl, clock, runs):
        await move(clock, utc(2024, 1, 1, 1, 0, 10))
        await runs.wait_for(1)

    # a new process, the same store, still 01:00:10: the 01:00 slot is recorded as fired
    async with engine_on(db, fl, clock, runs) as engine:
        await move(clock, utc(2024, 1, 1, 2, 0))
        await runs.wait_for(2)
        assert await all_slots(engine, fl.name) == [
            "2024-01-01T01:00:00+00:00",
            "2024-01-01T02:00:00+00:00",
        ]
        # the slot was not even submitted again (the cursor knew), so nothing was dropped
        assert await engine.store.count_duplicates() == 0


@pytest.mark.parametrize(
    ("misfire", "after_restart"),
    [
        ("catchup", ["02:00", "03:00", "04:00", "05:00"]),
        ("latest", ["04:00", "05:00"]),
        ("skip", ["05:00"]),
    ],
)
async def test_slots_missed_while_stopped_follow_the_misfire_policy(
    store: str, misfire: str, after_restart: list[str]
) -> None:
    db = store
    clock = ManualClock(utc(2024, 1, 1, 0, 30))
    runs = RunLog()
    fl = scheduled_flow("0 * * * *", misfire=misfire)
    async with engine_on(db, fl, clock, runs):
        await move(clock, utc(2024, 1, 1, 1, 0))
        await runs.wait_for(1)

    clock.set(utc(2024, 1, 1, 4, 30))  # down from 01:00 to 04:30: 02:00, 03:00, 04:00 missed
    async with engine_on(db, fl, clock, runs) as engine:
        # the restart has handled 04:30 once the sensor sleeps; then the next slot comes
        await move(clock, utc(2024, 1, 1, 5, 0))
        await runs.wait_until(lambda rs: any(slot(r).startswith("2024-01-01T05:00") for r in rs))
        slots = await all_slots(engine, fl.name)
    expected = ["01:00", *after_restart]
    assert slots == [f"2024-01-01T{hm}:00+00:00" for hm in expected]


# -- daylight saving time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "fires", "local"),
    [
        # spring forward, 31 March 2024: 02:00 → 03:00, so 02:30 does not exist that night and
        # the schedule fires once, at 03:00 local (01:00 UTC)
        (
            utc(2024, 3, 30, 12),
            [utc(2024, 3, 31, 1, 0), utc(2024, 4, 1, 0, 30)],
            ["03-31 03:00", "04-01 02:30"],
        ),
        # fall back, 27 October 2024: 03:00 → 02:00, so 02:30 happens twice; it fires once, at
        # the first (00:30 UTC)
        (
            utc(2024, 10, 26, 12),
            [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)],
            ["10-27 02:30", "10-28 02:30"],
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_a_paris_schedule_fires_once_on_a_dst_night(
    store: str, start: datetime, fires: list[datetime], local: list[str]
) -> None:
    clock = ManualClock(start)
    runs = RunLog()
    # catchup: every slot the trigger yields is run, so a doubled slot would show as a run
    fl = scheduled_flow("30 2 * * *", tz="Europe/Paris", misfire="catchup")
    async with engine_on(store, fl, clock, runs) as engine:
        await move(clock, start + timedelta(days=1))  # across the DST night
        await runs.wait_for(1)
        await move(clock, start + timedelta(days=2))  # and the ordinary night after
        await runs.wait_for(2)
        slots = await all_slots(engine, fl.name)
    assert slots == [f.isoformat() for f in fires]
    assert [datetime.fromisoformat(s).astimezone(PARIS).strftime("%m-%d %H:%M") for s in slots] == (
        local
    )
