"""Waiting notes: an acquisition is noted waiting only once its wait has lasted the pool's
``note_after_s``; waits that end sooner, or are cancelled, are never noted."""

from __future__ import annotations

import logging
import time

import anyio
import anyio.abc
import pytest
from anyio.lowlevel import checkpoint

from evflow.run.limits import Limits, SlotPool

TIMEOUT = 5
AFTER_S = 0.2


def _full_pool(note_after_s: float = AFTER_S) -> SlotPool:
    """A pool of one slot, taken: every acquisition waits."""
    pool = SlotPool("p", 1, note_after_s=note_after_s)
    assert pool.try_acquire()
    return pool


async def _witness_noted(tg: anyio.abc.TaskGroup, pool: SlotPool, notes: list[str]) -> None:
    """Queue a waiter behind the others and return once it is noted. Notes go out in arrival
    order, so by then every earlier waiter was due: any note it was to get, it has."""
    noted = anyio.Event()

    def note() -> None:
        notes.append("witness")
        noted.set()

    tg.start_soon(pool.acquire, 1, 0, note)
    await noted.wait()


async def test_a_wait_that_ends_before_it_is_due_is_never_noted() -> None:
    pool = _full_pool()
    notes: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.acquire, 1, 0, lambda: notes.append("quick"))
            await checkpoint()
            assert pool.waiting == 1
            pool.release()  # handed to the quick waiter, which keeps it
            await _witness_noted(tg, pool, notes)
            tg.cancel_scope.cancel()
    assert notes == ["witness"]


async def test_a_wait_that_lasts_is_noted_once_and_not_before_it_is_due() -> None:
    pool = _full_pool()
    notes: list[str] = []
    noted = anyio.Event()
    noted_after: list[float] = []

    def note() -> None:
        notes.append("slow")
        noted_after.append(time.monotonic() - started)
        noted.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            started = time.monotonic()
            tg.start_soon(pool.acquire, 1, 0, note)
            await noted.wait()
            await _witness_noted(tg, pool, notes)  # no second note while it goes on waiting
            tg.cancel_scope.cancel()
    assert notes == ["slow", "witness"]
    assert noted_after[0] >= AFTER_S * 0.99  # the loop's clock, not ours: rounding
    assert (pool.in_use, pool.waiting) == (1, 0)


async def test_a_cancelled_wait_is_never_noted() -> None:
    pool = _full_pool()
    notes: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as gone:
                gone.start_soon(pool.acquire, 1, 0, lambda: notes.append("gone"))
                await checkpoint()
                assert pool.waiting == 1
                gone.cancel_scope.cancel()
            assert pool.waiting == 0
            await _witness_noted(tg, pool, notes)
            tg.cancel_scope.cancel()
    assert notes == ["witness"]


async def test_many_due_waits_are_all_noted_in_arrival_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """More than one turn's worth of notes (they go out in chunks); one note that raises is
    logged and does not keep the others from being noted."""
    pool = _full_pool(note_after_s=0.05)
    n = 1_200
    notes: list[int] = []
    all_noted = anyio.Event()

    def note(i: int) -> None:
        if i == 7:
            raise RuntimeError("this note fails")
        notes.append(i)
        if len(notes) == n - 1:
            all_noted.set()

    with anyio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR, logger="evflow.engine"):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(pool.acquire, 1, 0, lambda i=i: note(i))
            await all_noted.wait()
            tg.cancel_scope.cancel()
    assert notes == [i for i in range(n) if i != 7]
    assert "noting a waiter failed" in caplog.text


async def test_slots_note_the_limit_waited_on_with_its_state_when_due() -> None:
    limits = Limits(max_tasks=1, note_waits_after_s=AFTER_S)
    reasons: list[str] = []
    both_noted = anyio.Event()

    def on_wait(reason: str) -> None:
        reasons.append(reason)
        if len(reasons) == 2:
            both_noted.set()

    async def waiter() -> None:
        async with limits.slots(None, on_wait=on_wait):
            pass

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            held = await limits.hold(None)
            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await both_noted.wait()
            await held.aclose()
    # Each reason describes the limit when the wait was noted: one running, two waiting.
    assert reasons == ["waiting for the global task limit (max_tasks=1, 1 running)"] * 2
    assert limits.global_pool is not None and limits.global_pool.in_use == 0
