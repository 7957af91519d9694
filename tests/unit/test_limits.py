"""Resource limits: pools, the global limit, priorities, cancellation safety, per-flow gates."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.lowlevel import checkpoint

from evflow.errors import UnknownPoolError
from evflow.run.limits import GLOBAL_POOL, Limits, Pool, PoolUsage, RunGate, SlotPool

TIMEOUT = 5


async def start_waiter(
    tg: anyio.abc.TaskGroup,
    pool: SlotPool,
    name: str,
    log: list[str],
    n: int = 1,
    priority: int = 0,
) -> None:
    """Start a task that waits on ``pool``, logs its name when granted and releases at once.

    Returns once the waiter is queued, so waiters are queued in the order they are started.
    """

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await pool.acquire(n, priority)
        log.append(name)
        pool.release(n)

    before = pool.waiting
    await tg.start(run)
    assert pool.waiting == before + 1, "the waiter should be queued by now"


# --- SlotPool --------------------------------------------------------------------------------


async def test_uncontended_acquire_and_release() -> None:
    pool = SlotPool("p", 3)
    await pool.acquire(2)
    assert (pool.in_use, pool.waiting, pool.waiting_slots) == (2, 0, 0)
    assert pool.try_acquire(1)
    assert not pool.try_acquire(1)
    pool.release(3)
    assert pool.in_use == 0
    assert pool.capacity == 3
    assert pool.usage() == PoolUsage("p", 3, 0, 0)


async def test_request_larger_than_capacity_names_the_pool() -> None:
    pool = SlotPool("warehouse", 2)
    with pytest.raises(ValueError, match=r"'warehouse'.*3 slots.*only 2"):
        await pool.acquire(3)
    with pytest.raises(ValueError, match="warehouse"):
        pool.try_acquire(0)
    with pytest.raises(ValueError):
        SlotPool("empty", 0)
    assert pool.in_use == 0


async def test_release_more_than_held_is_refused() -> None:
    pool = SlotPool("p", 2)
    pool.try_acquire(1)
    with pytest.raises(RuntimeError, match="only 1"):
        pool.release(2)
    assert pool.in_use == 1


async def test_priority_order_of_freed_slots() -> None:
    pool = SlotPool("p", 1)
    assert pool.try_acquire()
    log: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await start_waiter(tg, pool, "low", log, priority=0)
            await start_waiter(tg, pool, "high", log, priority=10)
            await start_waiter(tg, pool, "mid", log, priority=5)
            await start_waiter(tg, pool, "negative", log, priority=-1)
            await start_waiter(tg, pool, "high2", log, priority=10)
            assert (pool.waiting, pool.waiting_slots) == (5, 5)
            pool.release()
    assert log == ["high", "high2", "mid", "low", "negative"]
    assert (pool.in_use, pool.waiting, pool.waiting_slots) == (0, 0, 0)


async def test_fifo_within_a_priority() -> None:
    pool = SlotPool("p", 2)
    assert pool.try_acquire(2)
    log: list[str] = []
    names = [f"w{i}" for i in range(50)]
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for name in names:
                await start_waiter(tg, pool, name, log)
            pool.release(2)
    assert log == names
    assert pool.in_use == 0


async def test_weighted_request_waits_and_blocks_later_small_ones() -> None:
    pool = SlotPool("p", 4)
    assert pool.try_acquire(1)
    assert pool.try_acquire(1)
    big_granted = anyio.Event()
    big_release = anyio.Event()
    log: list[str] = []

    async def big(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await pool.acquire(3)
        log.append("big")
        big_granted.set()
        await big_release.wait()
        pool.release(3)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(big)
            assert (pool.in_use, pool.waiting, pool.waiting_slots) == (2, 1, 3)
            # Two slots are free, but the 3-slot head waiter comes first.
            assert not pool.try_acquire(1)
            await start_waiter(tg, pool, "small", log, n=1)
            assert (pool.waiting, pool.waiting_slots) == (2, 4)

            pool.release(1)  # 3 free: the big one goes, the small one still does not fit
            await big_granted.wait()
            assert log == ["big"]
            assert (pool.in_use, pool.waiting) == (4, 1)

            pool.release(1)
            big_release.set()
    assert log == ["big", "small"]
    assert pool.in_use == 0


async def test_higher_priority_newcomer_goes_ahead_of_the_queue_if_it_fits() -> None:
    pool = SlotPool("p", 4)
    assert pool.try_acquire(2)
    log: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await start_waiter(tg, pool, "big", log, n=3, priority=0)
            assert not pool.try_acquire(1, priority=0)  # behind the head: waits
            assert pool.try_acquire(1, priority=1)  # ahead of the head and fits
            pool.release(3)
    assert log == ["big"]
    assert pool.in_use == 0


async def test_cancelled_waiters_leak_nothing() -> None:
    pool = SlotPool("p", 2)
    assert pool.try_acquire(2)
    log: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for i in range(200):
                await start_waiter(tg, pool, f"w{i}", log, n=1 + i % 2)
            assert (pool.waiting, pool.waiting_slots) == (200, 300)
            tg.cancel_scope.cancel()
    assert log == []
    assert (pool.in_use, pool.waiting, pool.waiting_slots) == (2, 0, 0)
    pool.release(2)
    assert pool.in_use == 0
    # Full capacity is reusable, immediately and through the queue.
    assert pool.try_acquire(2)
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await start_waiter(tg, pool, "after", log, n=2)
            pool.release(2)
    assert log == ["after"]
    assert pool.in_use == 0


async def test_cancelling_the_head_wakes_those_behind_it() -> None:
    pool = SlotPool("p", 3)
    assert pool.try_acquire(1)
    log: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as big_scope:
                async with anyio.create_task_group() as inner:
                    await start_waiter(inner, pool, "big", log, n=3)
                    await start_waiter(tg, pool, "small", log, n=1)
                    big_scope.cancel()
    assert log == ["small"]
    assert (pool.in_use, pool.waiting) == (1, 0)
    pool.release(1)


@pytest.mark.parametrize("cancel_first", [False, True])
async def test_grant_and_cancel_in_the_same_iteration_give_the_slot_back(
    cancel_first: bool,
) -> None:
    pool = SlotPool("p", 1)
    assert pool.try_acquire()
    a = asyncio.create_task(pool.acquire())
    await checkpoint()
    assert pool.waiting == 1
    b_granted: list[bool] = []

    async def b_acquire() -> None:
        await pool.acquire()
        b_granted.append(True)

    b = asyncio.create_task(b_acquire())
    await checkpoint()
    assert pool.waiting == 2

    # Same loop iteration: the slot is handed to A, and A is cancelled.
    if cancel_first:
        a.cancel()
        pool.release()
    else:
        pool.release()
        a.cancel()
    assert (pool.in_use, pool.waiting) == (1, 1), "the release handed the slot to A"

    with anyio.fail_after(TIMEOUT):
        with pytest.raises(asyncio.CancelledError):
            await a
        await b
    assert b_granted == [True]
    assert (pool.in_use, pool.waiting) == (1, 0)
    pool.release()
    assert pool.in_use == 0
    assert pool.try_acquire()


async def test_grant_and_cancel_scope_race_through_limits() -> None:
    limits = Limits(max_tasks=1, pools={"p": 1})
    holder = limits.slots("p")
    await holder.__aenter__()
    a_scope = anyio.CancelScope()
    b_done = anyio.Event()

    async def a(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with a_scope:
            task_status.started()
            async with limits.slots("p"):
                await checkpoint()
                pytest.fail("A's body should have been cancelled")

    async def b(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        async with limits.slots("p"):
            b_done.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(a)
            await tg.start(b)
            assert limits.pool("p").waiting == 2
            await holder.__aexit__(None, None, None)
            a_scope.cancel()
            await b_done.wait()
    assert [u.in_use for u in limits.snapshot()] == [0, 0]
    assert [u.waiting for u in limits.snapshot()] == [0, 0]


async def test_randomised_waiters_with_cancellations_never_exceed_or_leak() -> None:
    rng = random.Random(1234)
    pool = SlotPool("p", 8)
    peak = 0
    granted = 0

    async def worker(n: int, priority: int, scope: anyio.CancelScope) -> None:
        nonlocal peak, granted
        with scope:
            await pool.acquire(n, priority)
            try:
                assert pool.in_use <= pool.capacity
                peak = max(peak, pool.in_use)
                granted += 1
                for _ in range(rng.randint(0, 3)):
                    await checkpoint()
            finally:
                pool.release(n)

    scopes = [anyio.CancelScope() for _ in range(1000)]
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for scope in scopes:
                tg.start_soon(worker, rng.randint(1, 4), rng.randint(0, 3), scope)
            for _ in range(200):
                await checkpoint()
                for _ in range(3):
                    rng.choice(scopes).cancel()
    assert peak == 8
    assert 0 < granted < 1000
    assert (pool.in_use, pool.waiting, pool.waiting_slots) == (0, 0, 0)


# --- Limits ----------------------------------------------------------------------------------


async def run_holders(limits: Limits, pool: str | None, count: int) -> int:
    """Run ``count`` concurrent holders of ``pool`` and return the peak number inside at once."""
    inside = 0
    peak = 0

    async def holder() -> None:
        nonlocal inside, peak
        async with limits.slots(pool):
            inside += 1
            peak = max(peak, inside)
            await checkpoint()
            await checkpoint()
            inside -= 1

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(holder)
    return peak


async def test_pool_of_8_is_never_exceeded_by_1000_holders() -> None:
    limits = Limits(pools={"p": 8})
    assert await run_holders(limits, "p", 1000) == 8
    assert limits.snapshot() == [PoolUsage("p", 8, 0, 0)]


async def test_global_limit_is_never_exceeded() -> None:
    limits = Limits(max_tasks=5, pools={"p": 8})
    assert await run_holders(limits, "p", 1000) == 5
    assert await run_holders(limits, None, 1000) == 5
    assert limits.snapshot() == [PoolUsage(GLOBAL_POOL, 5, 0, 0), PoolUsage("p", 8, 0, 0)]


async def test_no_global_limit_means_no_global_pool() -> None:
    limits = Limits()
    assert limits.global_pool is None
    assert limits.snapshot() == []
    assert await run_holders(limits, None, 100) == 100


async def test_weighted_slots_through_limits() -> None:
    limits = Limits(pools={"p": 4})
    async with limits.slots("p", slots=3):
        assert limits.pool("p").in_use == 3
        assert not limits.pool("p").try_acquire(2)
    assert limits.pool("p").in_use == 0


async def test_exception_inside_the_context_releases() -> None:
    limits = Limits(max_tasks=2, pools={"p": 2})
    with pytest.raises(RuntimeError, match="boom"):
        async with limits.slots("p", slots=2):
            assert [u.in_use for u in limits.snapshot()] == [1, 2]
            raise RuntimeError("boom")
    assert [u.in_use for u in limits.snapshot()] == [0, 0]


async def test_cancellation_and_timeout_inside_the_context_release() -> None:
    limits = Limits(max_tasks=2, pools={"p": 2})
    with anyio.CancelScope() as scope:
        async with limits.slots("p"):
            scope.cancel()
            await checkpoint()
    assert scope.cancelled_caught
    with anyio.move_on_after(0) as timeout:
        async with limits.slots("p"):
            await anyio.sleep_forever()
    assert timeout.cancelled_caught
    assert [u.in_use for u in limits.snapshot()] == [0, 0]


async def test_cancelled_while_waiting_for_global_gives_the_pool_back() -> None:
    limits = Limits(max_tasks=1, pools={"p": 2}, note_waits_after_s=0)
    reasons: list[str] = []
    async with limits.slots(None):
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    async with limits.slots("p", on_wait=reasons.append):
                        pytest.fail("should not get in")

                tg.start_soon(waiter)
                await checkpoint()
                # It holds its pool slot and waits on the global limit.
                assert limits.pool("p").in_use == 1
                assert limits.global_pool is not None
                assert limits.global_pool.waiting == 1
                tg.cancel_scope.cancel()
    assert reasons == ["waiting for the global task limit (max_tasks=1, 1 running)"]
    assert [u.in_use for u in limits.snapshot()] == [0, 0]
    assert [u.waiting for u in limits.snapshot()] == [0, 0]


async def test_on_wait_reasons() -> None:
    limits = Limits(max_tasks=8, pools={"warehouse": 2}, note_waits_after_s=0)
    warehouse = limits.pool("warehouse")
    assert limits.global_pool is not None
    assert warehouse.try_acquire(2)
    log: list[str] = []
    reasons: list[str] = []
    second_reason = anyio.Event()

    def on_wait(reason: str) -> None:
        reasons.append(reason)
        if len(reasons) == 2:
            second_reason.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                await start_waiter(tg, warehouse, f"w{i}", log)

            async def task(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                task_status.started()
                async with limits.slots("warehouse", on_wait=on_wait):
                    pass

            await tg.start(task)
            assert reasons == ["waiting for pool 'warehouse' (2/2 slots in use, 5 waiting)"]
            # Fill the global limit so the task waits on it as well, once it has its pool slot.
            assert limits.global_pool.try_acquire(8)
            warehouse.release(2)
            await second_reason.wait()
            assert reasons[1:] == ["waiting for the global task limit (max_tasks=8, 8 running)"]
            limits.global_pool.release(8)
    assert len(reasons) == 2
    assert log == [f"w{i}" for i in range(5)]
    assert [u.in_use for u in limits.snapshot()] == [0, 0]


async def test_no_on_wait_call_when_nothing_waits() -> None:
    limits = Limits(max_tasks=2, pools={"p": 2})
    reasons: list[str] = []
    async with limits.slots("p", on_wait=reasons.append):
        pass
    assert reasons == []


async def test_unknown_pool_error_lists_known_pools() -> None:
    limits = Limits(pools={"warehouse": 2, "api": 1})
    with pytest.raises(
        UnknownPoolError, match=r"unknown pool 'gpu' \(known pools: 'api', 'warehouse'\)"
    ):
        limits.check("gpu", 1)
    with pytest.raises(LookupError, match="'gpu'"):
        limits.slots("gpu")
    with pytest.raises(UnknownPoolError, match="none are configured"):
        Limits().pool("gpu")
    assert limits.has_pool("api") and not limits.has_pool("gpu")
    assert set(limits.pools) == {"warehouse", "api"}


async def test_check_slots_against_capacity() -> None:
    limits = Limits(pools={"warehouse": 2})
    limits.check("warehouse", 2)
    limits.check(None, 1)
    with pytest.raises(ValueError, match="3 slots of pool 'warehouse', which has only 2"):
        limits.check("warehouse", 3)
    with pytest.raises(ValueError):
        limits.check(None, 0)
    with pytest.raises(ValueError, match="'warehouse'"):
        limits.slots("warehouse", slots=3)


async def test_constructor_validation_and_thread_limiter() -> None:
    limits = Limits(max_threads=7)
    assert isinstance(limits.thread_limiter, anyio.CapacityLimiter)
    assert limits.thread_limiter.total_tokens == 7
    with pytest.raises(ValueError):
        Limits(max_tasks=0)
    with pytest.raises(ValueError):
        Limits(pools={GLOBAL_POOL: 1})
    with pytest.raises(ValueError):
        Limits(pools={"p": 0})


# --- RunGate ---------------------------------------------------------------------------------


async def test_run_gate_first_come_first_served_within_priority() -> None:
    gate = RunGate()
    order: list[str] = []
    reasons: list[str] = []
    release = anyio.Event()

    def run(name: str, priority: int = 0) -> Callable[..., Coroutine[Any, Any, None]]:
        async def body(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            async with gate.admit("etl", 2, priority=priority, on_wait=reasons.append):
                order.append(name)
                await release.wait()

        return body

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            for name in ["r1", "r2", "r3", "r4", "r5"]:
                await tg.start(run(name))
            await tg.start(run("urgent", priority=1))
            assert order == ["r1", "r2"]
            assert (gate.active("etl"), gate.waiting("etl")) == (2, 4)
            assert gate.snapshot() == [PoolUsage("etl", 2, 2, 4)]
            release.set()
    assert order == ["r1", "r2", "urgent", "r3", "r4", "r5"]
    assert reasons[0] == "waiting for flow 'etl' (max_active_runs=2, 2 active, 0 waiting)"
    assert len(reasons) == 4
    # Idle flows are forgotten.
    assert gate.snapshot() == []
    assert (gate.active("etl"), gate.waiting("etl")) == (0, 0)


async def test_run_gate_flows_are_independent_and_none_is_unlimited() -> None:
    gate = RunGate()
    async with gate.admit("a", 1), gate.admit("b", 1):
        assert (gate.active("a"), gate.active("b")) == (1, 1)
        for _ in range(3):
            async with gate.admit("a", None):
                pass
    assert gate.snapshot() == []
    with pytest.raises(ValueError, match="'a'"):
        gate.admit("a", 0)


async def test_run_gate_cancelled_waiter_leaks_nothing() -> None:
    gate = RunGate()
    with anyio.fail_after(TIMEOUT):
        async with gate.admit("etl", 1):
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    async with gate.admit("etl", 1):
                        pytest.fail("should not be admitted")

                tg.start_soon(waiter)
                await checkpoint()
                assert gate.waiting("etl") == 1
                tg.cancel_scope.cancel()
            assert (gate.active("etl"), gate.waiting("etl")) == (1, 0)
    assert gate.snapshot() == []


async def test_run_gate_raised_limit_wakes_waiters() -> None:
    gate = RunGate()
    order: list[str] = []
    release = anyio.Event()

    async def run(name: str, limit: int, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        async with gate.admit("etl", limit):
            order.append(name)
            await release.wait()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await tg.start(run, "r1", 1)
            await tg.start(run, "r2", 1)
            assert order == ["r1"]
            await tg.start(run, "r3", 3)  # the flow was reloaded with a higher limit
            await checkpoint()
            assert sorted(order) == ["r1", "r2", "r3"]
            release.set()
    assert gate.snapshot() == []


async def test_many_cancelled_waiters_behind_a_live_head_are_purged() -> None:
    pool = SlotPool("p", 2)
    assert pool.try_acquire(2)
    log: list[str] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            await start_waiter(tg, pool, "head", log, n=2)
            async with anyio.create_task_group() as doomed:
                for i in range(500):
                    await start_waiter(doomed, pool, f"d{i}", log)
                doomed.cancel_scope.cancel()
            assert (pool.waiting, pool.waiting_slots) == (1, 2)
            # Cancelled entries do not pile up in the queue (memory stays flat).
            assert len(pool._heap) < 100
            await start_waiter(tg, pool, "tail", log)
            pool.release(2)
    assert log == ["head", "tail"]
    assert pool.in_use == 0


async def test_slots_taken_ahead_are_used_once_and_released_once() -> None:
    limits = Limits(max_tasks=2, pools={"db": 2})
    db, glob = limits.pool("db"), limits.global_pool
    assert glob is not None
    held = await limits.hold("db", 2)
    assert (db.in_use, glob.in_use) == (2, 1)
    async with held:  # entering uses what is held: nothing more is taken
        assert (db.in_use, glob.in_use) == (2, 1)
    assert (db.in_use, glob.in_use) == (0, 0)
    held.release()  # idempotent
    assert (db.in_use, glob.in_use) == (0, 0)

    unused = await limits.hold("db", 1)
    unused.release()  # given back without being used
    assert (db.in_use, glob.in_use) == (0, 0)
    async with limits.slots("db", 2):
        assert db.in_use == 2


async def test_slots_taken_at_once_when_none_has_to_be_waited_for() -> None:
    """``take_now``: what ``async with`` takes, without waiting, or nothing at all."""
    limits = Limits(max_tasks=2, pools={"db": 2})
    db, glob = limits.pool("db"), limits.global_pool
    assert glob is not None
    first = limits.slots("db", 2)
    assert first.take_now()
    assert (db.in_use, glob.in_use) == (2, 1)
    second = limits.slots("db", 1)
    assert not second.take_now()  # the pool is full: nothing taken
    assert (db.in_use, glob.in_use) == (2, 1)
    first.release()
    plain = [limits.slots(None), limits.slots(None)]
    assert all(p.take_now() for p in plain)  # every global slot
    no_global = limits.slots("db", 1)
    assert not no_global.take_now()  # the pool has room, the global limit not: both untaken
    assert (db.in_use, glob.in_use) == (0, 2)
    plain[0].release()
    assert no_global.take_now()
    assert (db.in_use, glob.in_use) == (1, 2)
    plain[1].release()
    await no_global.give_back()
    assert (db.in_use, glob.in_use) == (0, 0)
    held = await limits.hold("db", 1)
    assert held.take_now()  # taken ahead: nothing more is taken
    assert (db.in_use, glob.in_use) == (1, 1)
    held.release()
    assert (db.in_use, glob.in_use) == (0, 0)


def test_a_pool_is_declared_with_its_slots_and_scope() -> None:
    limits = Limits(pools={"plain": 2, "local": Pool(3), "shared": Pool(4, scope="cluster")})
    assert [(p.name, p.capacity, p.scope) for p in limits.snapshot()] == [
        ("plain", 2, "instance"),
        ("local", 3, "instance"),
        ("shared", 4, "cluster"),
    ]
    assert (limits.scope("plain"), limits.scope("shared")) == ("instance", "cluster")
    with pytest.raises(ValueError, match="scope is 'instance' or 'cluster', not 'all'"):
        Pool(2, scope="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1 slot"):
        Pool(0)


async def test_outside_a_cluster_a_cluster_pool_counts_here() -> None:
    """One machine's store has one instance: the pool's slots are this instance's."""
    limits = Limits(pools={"shared": Pool(1, scope="cluster")})
    async with limits.slots("shared"):
        assert not limits.pool("shared").try_acquire(1)
    assert limits.pool("shared").in_use == 0
