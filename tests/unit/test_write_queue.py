"""The write queue: grouped commits, and what waiting for them means."""

from __future__ import annotations

import asyncio

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from evflow.errors import StoreError
from evflow.store.batching import Op, WriteQueue


class Backend:
    """A commit that waits to be let through, recording each batch it commits."""

    def __init__(self) -> None:
        self.batches: list[list[Op]] = []
        self.taken = asyncio.Event()
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def commit(self, batch: list[Op]) -> None:
        self.taken.set()
        await self.release.wait()
        if self.fail is not None:
            for op in batch:
                op.error = self.fail
            return
        self.batches.append(batch)


async def test_flush_waits_for_the_batch_being_committed() -> None:
    backend = Backend()
    queue = WriteQueue("test", backend.commit)
    flushed = anyio.Event()

    async def flush() -> None:
        await queue.flush()
        flushed.set()

    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        write = Op()
        await queue.enqueue(write, 1)  # not waiting for its commit
        await backend.taken.wait()  # the writer took it and is committing it
        tg.start_soon(flush)
        await wait_all_tasks_blocked()
        assert not flushed.is_set()  # the write is not committed yet: flush must not return
        backend.release.set()
        await flushed.wait()
        assert any(write in batch for batch in backend.batches)
        await queue.close()


async def test_flush_after_a_batch_in_flight_raises_when_the_commits_fail() -> None:
    backend = Backend()
    backend.fail = OSError("disk full")
    queue = WriteQueue("test", backend.commit)
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        await queue.enqueue(Op(), 1)
        await backend.taken.wait()
        backend.release.set()
        with pytest.raises(StoreError, match="disk full"):
            await queue.flush()
        backend.fail = None
        await queue.close()


async def test_flush_with_nothing_queued_or_in_flight_returns_at_once() -> None:
    backend = Backend()
    queue = WriteQueue("test", backend.commit)
    async with anyio.create_task_group() as tg:
        await tg.start(queue.run)
        await queue.flush()
        assert backend.batches == [] and not backend.taken.is_set()
        backend.release.set()
        await queue.close()
