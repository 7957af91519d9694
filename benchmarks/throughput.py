"""throughput: tasks per second sustained for a fixed time, persistence on.

Method: many runs of a small flow, closed loop. ``concurrency`` drivers each submit a run of
the 3-task etl flow (:mod:`benchmarks.etl`), wait for it to end, and submit the next, so
``concurrency`` runs are always in flight. After ``warmup_s`` the succeeded tasks are counted
for ``duration_s``; drivers then stop submitting and the store's backlog is flushed (the time
that takes is reported as ``drain_s``: a store that fell behind would show here).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from evflow import Engine
from evflow.cluster import ClusterOptions

from .common import Figures, Metric, RunWatcher, Target, Usage, Workload
from .etl import _extract, _load, _transform, etl
from .floor import FloorRun, run_task
from .stores import engine_store, floor_store

__all__ = ["WORKLOAD", "run_evflow"]


class _Window:
    """Counts what completes between ``open`` and ``close``."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        now = time.perf_counter()
        self.opens = now + warmup_s
        self.closes = self.opens + duration_s
        self.duration_s = duration_s

    def running(self) -> bool:
        return time.perf_counter() < self.closes

    async def measure(self, count: Any) -> tuple[int, int, Usage]:
        """Sleep through the warm-up, then sample ``count()`` (tasks, runs) over the window."""
        await asyncio.sleep(max(0.0, self.opens - time.perf_counter()))
        tasks0, runs0 = count()
        with Usage() as usage:
            await asyncio.sleep(max(0.0, self.closes - time.perf_counter()))
            tasks1, runs1 = count()
        return tasks1 - tasks0, runs1 - runs0, usage


def _figures(tasks: int, runs: int, usage: Usage, drain_s: float) -> Figures:
    return {
        **usage.figures(),
        "tasks_per_s": tasks / usage.wall_s,
        "runs_per_s": runs / usage.wall_s,
        "cpu_util": usage.cpu_s / usage.wall_s,
        "cpu_per_task_us": usage.cpu_s / max(tasks, 1) * 1e6,
        "drain_s": drain_s,
    }


async def run_evflow(p: Mapping[str, Any], *, cluster: ClusterOptions | None = None) -> Figures:
    """The closed loop on an engine (``cluster``: its options, on a PostgreSQL store)."""
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        watcher = RunWatcher()
        async with Engine(engine_store(tmp), grace_period_s=0, cluster=cluster) as engine:
            watcher.attach(engine)
            engine.add(etl)
            window = _Window(p["warmup_s"], p["duration_s"])  # the engine has started

            async def driver(k: int) -> None:
                i = 0
                while window.running():
                    run_id = await engine.submit(etl, n=k * 1_000_000 + i)
                    await watcher.finished(run_id)
                    i += 1

            drivers = [asyncio.create_task(driver(k)) for k in range(p["concurrency"])]
            tasks, runs, usage = await window.measure(
                lambda: (watcher.tasks_succeeded, watcher.runs_finished)
            )
            t0 = time.perf_counter()
            await asyncio.gather(*drivers)
            await engine.store.flush()
            drain_s = time.perf_counter() - t0
        if watcher.runs_failed:
            raise RuntimeError(f"throughput: {watcher.runs_failed} run(s) failed")
    return _figures(tasks, runs, usage, drain_s)


async def run_floor(p: Mapping[str, Any]) -> Figures:
    counts = [0, 0]  # tasks, runs
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with floor_store(tmp) as store:
            window = _Window(p["warmup_s"], p["duration_s"])

            async def one(i: int) -> None:
                run = FloorRun(store, "etl", {"n": i})
                await run.create(("extract", "transform", "load"))
                run.start()
                rows = await run_task(run, "extract", None, _extract, i)
                counts[0] += 1
                rows = await run_task(run, "transform", None, _transform, rows)
                counts[0] += 1
                await run_task(run, "load", None, _load, rows)
                counts[0] += 1
                await run.finish()
                counts[1] += 1

            async def driver(k: int) -> None:
                i = 0
                while window.running():
                    await one(k * 1_000_000 + i)
                    i += 1

            drivers = [asyncio.create_task(driver(k)) for k in range(p["concurrency"])]
            tasks, runs, usage = await window.measure(lambda: (counts[0], counts[1]))
            t0 = time.perf_counter()
            await asyncio.gather(*drivers)
            await store.flush()
            drain_s = time.perf_counter() - t0
    return _figures(tasks, runs, usage, drain_s)


WORKLOAD = Workload(
    name="throughput",
    title="throughput (closed loop of 3-task runs)",
    method=(
        "closed loop: `concurrency` drivers each submit a 3-task etl run, wait for its end, "
        "repeat; succeeded tasks counted over the window after a warm-up; persistence on"
    ),
    params={
        "full": {"duration_s": 60.0, "warmup_s": 3.0, "concurrency": 1000},
        "quick": {"duration_s": 2.0, "warmup_s": 0.5, "concurrency": 1000},
        "smoke": {"duration_s": 0.3, "warmup_s": 0.1, "concurrency": 20},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("tasks_per_s", "tasks/s sustained", "1/s", Target("min", 10_000, "≥ 10,000"), 0),
        Metric("runs_per_s", "runs/s", "1/s", digits=0),
        Metric("cpu_per_task_us", "CPU per task", "µs", Target("ratio_max", 3.0, "≤ 3x floor"), 0),
        Metric("drain_s", "store drain after", "s", digits=2),
        Metric("peak_rss_mb", "peak RSS", "MiB", digits=0),
    ),
)
