"""Run drivers: plain asyncio tasks, owned by a task of an anyio task group."""

from __future__ import annotations

import asyncio
import contextvars
import inspect

import anyio
import pytest

from evflow.errors import EngineNotRunning
from evflow.run.drivers import Drivers

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_a_driver_runs_at_once_in_its_starters_context() -> None:
    seen: list[str] = []
    ran = asyncio.Event()

    async def drive() -> None:
        seen.append(who.get())
        ran.set()

    drivers = Drivers(lambda: None)
    async with anyio.create_task_group() as tg:
        await tg.start(drivers.run)
        who.set("submitter")
        assert drivers.spawn(drive())
        await ran.wait()
        tg.cancel_scope.cancel()
    assert seen == ["submitter"]


async def test_spawning_before_the_owner_runs_is_refused() -> None:
    async def drive() -> None:
        raise AssertionError("never runs")

    coro = drive()
    with pytest.raises(EngineNotRunning, match="not running"):
        Drivers(lambda: None).spawn(coro)
    # closed, so no "never awaited" warning
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_cancelling_the_owner_stops_the_runs_through_their_own_scopes() -> None:
    """The owner asks each run to stop, then waits; a run's shielded clean-up completes."""
    scopes: list[anyio.CancelScope] = []
    cleaned: list[str] = []
    both_in = asyncio.Event()

    async def drive(name: str) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            if len(scopes) == 2:
                both_in.set()
            await anyio.sleep_forever()
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.01)  # a write that must finish
            cleaned.append(name)

    def stop_all() -> None:
        for scope in scopes:
            scope.cancel()

    drivers = Drivers(stop_all)
    async with anyio.create_task_group() as tg:
        await tg.start(drivers.run)
        drivers.spawn(drive("a"))
        drivers.spawn(drive("b"))
        await both_in.wait()
        tg.cancel_scope.cancel()
    assert sorted(cleaned) == ["a", "b"]
    assert len(drivers) == 0
    coro = drive("late")
    assert not drivers.spawn(coro)  # stopping: the run is left queued, not driven
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_a_driver_that_fails_fails_the_owners_group() -> None:
    async def drive() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    drivers = Drivers(lambda: None)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with anyio.create_task_group() as tg:
            await tg.start(drivers.run)
            drivers.spawn(drive())
            await anyio.sleep_forever()
    assert caught.group_contains(KeyError, match="boom")
