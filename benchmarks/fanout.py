"""fan-out N: one run whose mapped task has N no-op async instances under a pool, then a join.

``items(n)`` returns ``range(n)`` as a list, ``work.map(items)`` makes one instance per item,
each taking one slot of a pool of ``pool`` slots, and ``join`` counts the results. The clock
runs from submit to the run's end, everything committed.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from typing import Any

import orjson

from evflow import Engine, Flow, flow, task

from .common import Figures, Metric, RunWatcher, Target, Usage, Workload
from .floor import FloorRun, run_task
from .stores import engine_store, floor_store

__all__ = ["WORKLOAD"]

POOL = "fanout"


async def _items(n: int) -> list[int]:
    return list(range(n))


async def _work(i: int) -> int:
    await asyncio.sleep(0)  # an async task yields at least once
    return i


async def _join(results: list[int]) -> int:
    return len(results)


items = task(name="items")(_items)
work = task(name="work", pool=POOL)(_work)
join = task(name="join")(_join)


def _fanout(n: int) -> None:
    join(work.map(items(n)))


fanout: Flow = flow(name="bench_fanout")(_fanout)


def _figures(usage: Usage, n: int, commits: int) -> Figures:
    return {
        **usage.figures(),
        "tasks": float(n),
        "tasks_per_s": n / usage.wall_s,
        "wall_per_task_us": usage.wall_s / n * 1e6,
        "cpu_per_task_us": usage.cpu_s / n * 1e6,
        "commits": float(commits),
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    n: int = p["tasks"]
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        watcher = RunWatcher()
        async with Engine(engine_store(tmp), pools={POOL: p["pool"]}, grace_period_s=0) as engine:
            watcher.attach(engine)
            engine.add(fanout)
            with Usage() as usage:
                run_id = await engine.submit(fanout, n=n)
                state = await watcher.finished(run_id)
                await engine.store.flush()
            commits = getattr(engine.store, "commits", 0)
            result = (await engine.store.get_run(run_id)).tasks
        joined = next(t for t in result if t.name == "join")
        if str(state) != "succeeded" or orjson.loads(joined.result or b"null") != n:
            raise RuntimeError(f"fan-out run {run_id} ended {state}; join = {joined.result!r}")
    return _figures(usage, n, commits)


async def run_floor(p: Mapping[str, Any]) -> Figures:
    n: int = p["tasks"]
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with floor_store(tmp) as store:
            pool = asyncio.Semaphore(p["pool"])
            with Usage() as usage:
                run = FloorRun(store, "fanout", {"n": n})
                await run.create(("items", "work", "join"))
                run.start()
                values = await run_task(run, "items", None, _items, n)
                store.put(
                    tasks=[(run.id, f"work[{i}]", "pending", None, None, None) for i in range(n)]
                )
                results = await asyncio.gather(
                    *(run_task(run, f"work[{i}]", pool, _work, v) for i, v in enumerate(values))
                )
                store.put(tasks=[(run.id, "work", "succeeded", None, None, orjson.dumps(results))])
                total = await run_task(run, "join", None, _join, results)
                await run.finish()
            commits = store.commits
        if total != n:
            raise RuntimeError(f"floor fan-out joined {total} of {n}")
    return _figures(usage, n, commits)


_OVERHEAD = Target("ratio_max", 3.0, "≤ 3x floor")

WORKLOAD = Workload(
    name="fanout",
    title="fan-out N (mapped task, pool of 100)",
    method=(
        "one run: items(n) → work.map(items) (N async no-op instances, pool of 100 slots) "
        "→ join; clock from submit to the committed end of the run"
    ),
    params={
        "full": {"tasks": 10_000, "pool": 100},
        "quick": {"tasks": 2_000, "pool": 100},
        "smoke": {"tasks": 200, "pool": 10},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("wall_s", "wall time", "s", _OVERHEAD, digits=2),
        Metric("tasks_per_s", "tasks/s", "1/s", digits=0),
        Metric("cpu_per_task_us", "CPU per task", "µs", _OVERHEAD, digits=0),
        Metric("peak_rss_mb", "peak RSS", "MiB", digits=0),
    ),
)
