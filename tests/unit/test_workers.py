"""Workers: each item run once, in order, by about as many tasks as run at once."""

from __future__ import annotations

import anyio

from evflow.run.workers import Workers


async def test_items_run_in_order_in_about_as_many_workers_as_run_at_once() -> None:
    limit = anyio.Semaphore(5)
    started: list[int] = []
    done: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        try:
            await anyio.sleep(0.001 * (item % 3))
            done.append(item)
        finally:
            limit.release()

    async with anyio.create_task_group() as tg:
        workers: Workers[int] = Workers(tg, work)
        try:
            for item in range(200):
                await limit.acquire()  # as the executor takes an instance's slots first
                workers.put(item)
        finally:
            workers.close()
    assert started == list(range(200))
    assert sorted(done) == list(range(200))
    assert workers.spawned <= 6, workers.spawned  # not one per item


async def test_cancelling_the_group_ends_busy_and_idle_workers() -> None:
    gate = anyio.Event()
    finished: list[int] = []

    async def work(item: int) -> None:
        if item == 0:
            await gate.wait()  # busy until cancelled
        finished.append(item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            workers: Workers[int] = Workers(tg, work)
            workers.put(0)
            workers.put(1)
            await anyio.wait_all_tasks_blocked()  # one busy, one idle after its item
            tg.cancel_scope.cancel()
    assert finished == [1]
