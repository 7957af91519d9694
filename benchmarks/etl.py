"""etl x N: the 3-task extract → transform → load flow run N times, all submitted at once.

Tasks are async and do next to nothing, so every second of CPU is overhead: submitting a run
(committed before it starts), walking its DAG, taking slots under the global limit
(``max_tasks``), recording each state change, and the grouped commits behind it. Submission is
concurrent (``asyncio.gather`` of N ``engine.submit`` calls); the clock stops when the last run
has finished and the store has committed everything.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from typing import Any

from evflow import Engine, Flow, flow, task

from .common import Figures, Metric, RunWatcher, Target, Usage, Workload
from .floor import FloorRun, run_task
from .stores import engine_store, floor_store

__all__ = ["WORKLOAD"]


async def _extract(n: int) -> list[int]:
    await asyncio.sleep(0)  # an async task yields at least once
    return [n, n + 1, n + 2]


async def _transform(rows: list[int]) -> list[int]:
    await asyncio.sleep(0)
    return [r * 2 for r in rows]


async def _load(rows: list[int]) -> int:
    await asyncio.sleep(0)
    return sum(rows)


extract = task(name="extract")(_extract)
transform = task(name="transform")(_transform)
load = task(name="load")(_load)


def _etl(n: int = 0) -> None:
    load(transform(extract(n)))


etl: Flow = flow(name="bench_etl")(_etl)


def _figures(usage: Usage, runs: int, commits: int) -> Figures:
    tasks = runs * 3
    return {
        **usage.figures(),
        "runs": float(runs),
        "tasks": float(tasks),
        "runs_per_s": runs / usage.wall_s,
        "wall_per_task_us": usage.wall_s / tasks * 1e6,
        "cpu_per_run_ms": usage.cpu_s / runs * 1e3,
        "cpu_per_task_us": usage.cpu_s / tasks * 1e6,
        "commits": float(commits),
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    runs: int = p["runs"]
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        watcher = RunWatcher()
        async with Engine(engine_store(tmp), max_tasks=p["max_tasks"], grace_period_s=0) as engine:
            watcher.attach(engine)
            engine.add(etl)
            with Usage() as usage:
                await asyncio.gather(*(engine.submit(etl, n=i) for i in range(runs)))
                await watcher.all_finished(runs)
                await engine.store.flush()
            commits = getattr(engine.store, "commits", 0)
        if watcher.runs_failed or watcher.tasks_succeeded != 3 * runs:
            raise RuntimeError(
                f"etl: {watcher.runs_failed} run(s) failed, "
                f"{watcher.tasks_succeeded} of {3 * runs} tasks succeeded"
            )
    return _figures(usage, runs, commits)


async def run_floor(p: Mapping[str, Any]) -> Figures:
    runs: int = p["runs"]
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with floor_store(tmp) as store:
            limit = asyncio.Semaphore(p["max_tasks"])

            async def one(i: int) -> int:
                run = FloorRun(store, "etl", {"n": i})
                await run.create(("extract", "transform", "load"))
                run.start()
                rows = await run_task(run, "extract", limit, _extract, i)
                rows = await run_task(run, "transform", limit, _transform, rows)
                total: int = await run_task(run, "load", limit, _load, rows)
                await run.finish()
                return total

            with Usage() as usage:
                await asyncio.gather(*(one(i) for i in range(runs)))
                await store.flush()
            commits = store.commits
    return _figures(usage, runs, commits)


_OVERHEAD = Target("ratio_max", 3.0, "≤ 3x floor")

WORKLOAD = Workload(
    name="etl",
    title="etl x N (3-task flow)",
    method=(
        "N runs of extract → transform → load (async, next to no work), submitted "
        "concurrently under max_tasks; clock stops after the last run ends and is committed"
    ),
    params={
        "full": {"runs": 1000, "max_tasks": 100},
        "quick": {"runs": 200, "max_tasks": 100},
        "smoke": {"runs": 20, "max_tasks": 10},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("wall_s", "wall time", "s", digits=2),
        Metric("cpu_per_run_ms", "CPU per run", "ms", _OVERHEAD, digits=2),
        Metric("cpu_per_task_us", "CPU per task", "µs", _OVERHEAD, digits=0),
        Metric("wall_per_task_us", "wall per task", "µs", _OVERHEAD, digits=0),
        Metric("peak_rss_mb", "peak RSS", "MiB", digits=0),
    ),
)
