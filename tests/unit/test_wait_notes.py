"""Waiting notes: an acquisition is noted waiting only once its wait has lasted the pool's
``note_after_s``; waits that end sooner, or are cancelled, are never noted."""

from __future__ import annotations

import logging
import time

import anyio
import pytest
from anyio.lowlevel import checkpoint

from evflow.run.limits import Limits, SlotPool

TIMEOUT = 5
AFTER_S = 0.2


async def test_a_wait_that_ends_before_it_is_due_is_never_noted() -> None:
    pool = SlotPool("p", 1, note_after_s=AFTER_S)
    assert pool.try_acquire()
    notes: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:

            async def quick() -> None:
                await pool.acquire(1, note=lambda: notes.append("quick"))
                pool.release()

            tg.start_soon(quick)
            await checkpoint()
            assert pool.waiting == 1
            pool.release()
        await anyio.sleep(2 * AFTER_S)  # past the time it would have been due
    assert notes == []


async def test_a_wait_that_lasts_is_noted_once_and_not_before_it_is_due() -> None:
    pool = SlotPool("p", 1, note_after_s=AFTER_S)
    assert pool.try_acquire()
    noted = anyio.Event()
    notes: list[float] = []

    def note() -> None:
        notes.append(time.monotonic())
        noted.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:

            async def slow() -> None:
                await pool.acquire(1, note=note)
                pool.release()

            started = time.monotonic()
            tg.start_soon(slow)
            await noted.wait()
            await anyio.sleep(2 * AFTER_S)  # no second note while it goes on waiting
            assert len(notes) == 1
            assert notes[0] - started >= AFTER_S * 0.99  # the loop's clock, not ours: rounding
            pool.release()
    assert (pool.in_use, pool.waiting) == (0, 0)


async def test_a_cancelled_wait_is_never_noted() -> None:
    pool = SlotPool("p", 1, note_after_s=AFTER_S)
    assert pool.try_acquire()
    notes: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.acquire, 1, 0, lambda: notes.append("gone"))
            await checkpoint()
            assert pool.waiting == 1
            tg.cancel_scope.cancel()
        await anyio.sleep(2 * AFTER_S)
    assert notes == []
    assert pool.waiting == 0


async def test_many_due_waits_are_all_noted_in_arrival_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """More than one turn's worth of notes (they go out in chunks); one note that raises is
    logged and does not keep the others from being noted."""
    pool = SlotPool("p", 1, note_after_s=0.05)
    assert pool.try_acquire()
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
