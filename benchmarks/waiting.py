"""waiting N: N task instances waiting on pool slots at once, and what that costs in memory.

One run maps ``hold`` over N items under a pool of ``pool`` slots. ``hold`` blocks on a gate
until released, so ``pool`` instances hold the slots and the other N - ``pool`` wait for one.
Once they are all parked (the pool reports them waiting) and the store has committed, the
process's resident memory is read from ``/proc/self/status`` (``VmRSS``); then the gate opens
and the run drains. Each side runs in its own fresh process, so ``peak_rss_mb`` (``VmHWM``,
the kernel's high-water mark over the whole side, drain included) is that side's alone;
``bytes_per_waiter`` is (RSS while parked - RSS before submit) / N.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Literal

from evflow import Engine, Flow, flow, task

from .common import (
    MIB,
    Figures,
    Metric,
    RunWatcher,
    Target,
    Workload,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from .floor import FloorRun, run_task
from .stores import engine_store, floor_store

__all__ = ["WORKLOAD"]

POOL = "narrow"
_gate: asyncio.Event | None = None
_holding = 0  # instances inside _hold (the pool's holders)


async def _items(n: int) -> list[int]:
    return list(range(n))


async def _hold(i: int) -> int:
    global _holding
    assert _gate is not None
    _holding += 1
    try:
        await _gate.wait()
    finally:
        _holding -= 1
    return i


async def _count(results: list[int]) -> int:
    return len(results)


items = task(name="items")(_items)
hold = task(name="hold", pool=POOL)(_hold)
count = task(name="count")(_count)


def _waiting(n: int) -> None:
    count(hold.map(items(n)))


waiting: Flow = flow(name="bench_waiting")(_waiting)


class _CountingSemaphore(asyncio.Semaphore):
    """An asyncio.Semaphore that knows how many acquirers are blocked."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.waiting = 0

    async def acquire(self) -> Literal[True]:
        if not self.locked():
            return await super().acquire()
        self.waiting += 1
        try:
            return await super().acquire()
        finally:
            self.waiting -= 1


async def _parked(slots: int, waiting: Any, within_s: float, quiet_s: float = 0.5) -> None:
    """Until the pool's holders are in and the count of waiters has held still for ``quiet_s``.

    Whatever form the waiting takes (a task per instance, or entries in a queue), parking is
    over once nothing changes any more.
    """
    deadline = time.perf_counter() + within_s
    last, since = -1, time.perf_counter()
    while True:
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"waiting workload: not parked within {within_s:.0f}s")
        current = waiting()
        if current != last:
            last, since = current, now
        elif _holding >= slots and now - since >= quiet_s:
            return
        await asyncio.sleep(0.02)


def _figures(n: int, pool: int, before: int, parked: int, park_s: float, drain_s: float) -> Figures:
    return {
        "waiting": float(n - pool),
        "rss_before_mb": before / MIB,
        "rss_parked_mb": parked / MIB,
        "peak_rss_mb": peak_rss_bytes() / MIB,
        "bytes_per_waiter": (parked - before) / n,
        "park_s": park_s,
        "drain_s": drain_s,
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    global _gate
    n, slots = p["tasks"], p["pool"]
    _gate = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        watcher = RunWatcher()
        async with Engine(engine_store(tmp), pools={POOL: slots}, grace_period_s=0) as engine:
            watcher.attach(engine)
            engine.add(waiting)
            narrow = engine.limits.pool(POOL)
            before = rss_bytes()
            reset_peak_rss()
            t0 = time.perf_counter()
            run_id = await engine.submit(waiting, n=n)
            await _parked(slots, lambda: narrow.waiting, p["timeout_s"])
            await engine.store.flush()
            park_s = time.perf_counter() - t0 - 0.5  # less the quiet period
            parked = rss_bytes()
            t1 = time.perf_counter()
            _gate.set()
            state = await watcher.finished(run_id)
            await engine.store.flush()
            drain_s = time.perf_counter() - t1
        if str(state) != "succeeded" or watcher.tasks_succeeded < n:
            raise RuntimeError(f"waiting run ended {state}, {watcher.tasks_succeeded} tasks")
    return _figures(n, slots, before, parked, park_s, drain_s)


async def run_floor(p: Mapping[str, Any]) -> Figures:
    global _gate
    n, slots = p["tasks"], p["pool"]
    _gate = asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with floor_store(tmp) as store:
            pool = _CountingSemaphore(slots)
            before = rss_bytes()
            reset_peak_rss()
            t0 = time.perf_counter()
            run = FloorRun(store, "waiting", {"n": n})
            await run.create(("items", "hold", "count"))
            run.start()
            values = await run_task(run, "items", None, _items, n)
            store.put(tasks=[(run.id, f"hold[{i}]", "pending", None, None, None) for i in range(n)])
            mapped = asyncio.gather(
                *(run_task(run, f"hold[{i}]", pool, _hold, v) for i, v in enumerate(values))
            )
            await _parked(slots, lambda: pool.waiting, p["timeout_s"])
            await store.flush()
            park_s = time.perf_counter() - t0 - 0.5  # less the quiet period
            parked = rss_bytes()
            t1 = time.perf_counter()
            _gate.set()
            results = await mapped
            total = await run_task(run, "count", None, _count, results)
            await run.finish()
            drain_s = time.perf_counter() - t1
        if total != n:
            raise RuntimeError(f"floor waiting counted {total} of {n}")
    return _figures(n, slots, before, parked, park_s, drain_s)


WORKLOAD = Workload(
    name="waiting",
    title="waiting N (mapped task under a pool of 10)",
    method=(
        "one run maps a task over N items under a pool of 10; the 10 holders block on a gate, "
        "the rest wait for slots; RSS read from /proc/self/status once all are parked, "
        "each side in its own process (peak = VmHWM over the side, drain included)"
    ),
    params={
        "full": {"tasks": 100_000, "pool": 10, "timeout_s": 600.0},
        "quick": {"tasks": 10_000, "pool": 10, "timeout_s": 120.0},
        "smoke": {"tasks": 300, "pool": 10, "timeout_s": 30.0},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("peak_rss_mb", "peak RSS", "MiB", Target("max", 1024, "< 1 GiB"), 0),
        Metric("rss_parked_mb", "RSS, all parked", "MiB", digits=0),
        Metric("bytes_per_waiter", "RSS per waiting task", "B", digits=0),
        Metric("park_s", "time to park all", "s", digits=2),
        Metric("drain_s", "time to drain", "s", digits=2),
    ),
)
