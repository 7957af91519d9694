"""The latch: set once, every waiter released, a cancelled waiter cancels only itself."""

from __future__ import annotations

import anyio

from evflow.latch import Latch


async def wait_then_note(latch: Latch, woken: list[str], name: str) -> None:
    await latch.wait()
    woken.append(name)


async def test_every_waiter_returns_once_set_and_later_waits_return_at_once() -> None:
    latch = Latch()
    woken: list[str] = []
    async with anyio.create_task_group() as tg:
        for name in "abc":
            tg.start_soon(wait_then_note, latch, woken, name)
        await anyio.wait_all_tasks_blocked()
        assert woken == [] and not latch.is_set()
        latch.set()
    assert sorted(woken) == ["a", "b", "c"]
    with anyio.fail_after(1):
        await latch.wait()  # already set


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    latch = Latch()
    woken: list[str] = []
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as gone:
            tg.start_soon(wait_then_note, latch, woken, "kept")
            async with anyio.create_task_group() as inner:
                inner.start_soon(wait_then_note, latch, woken, "cancelled")
                await anyio.wait_all_tasks_blocked()
                gone.cancel()
        assert woken == []
        latch.set()
    assert woken == ["kept"]
