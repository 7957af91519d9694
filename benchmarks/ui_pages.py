"""ui_pages N: the run page's reads for a run of N mapped instances, against a three-task run.

Both sides serve the real app on a loopback port and read, over HTTP, what the run page reads
when it opens: the run's overview, its timeline, and the first page of a mapped task's
instances. The ``evflow`` side reads them for a run mapping a task over N items; the ``floor``
side for a run of three tasks (N = 1). The figure is the median over ``repeat`` openings, so the
target says how much slower a run of N instances opens than a small one.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from evflow import Engine, Flow, flow, task
from evflow.http.app import build_app, run_app_services
from evflow.http.server import HttpServer

from .common import Figures, Metric, Target, Workload
from .stores import engine_store

__all__ = ["WORKLOAD"]

PAGE_READS = ("overview", "timeline", "tasks?node=item&limit=50")


async def _make(n: int) -> list[int]:
    return list(range(n))


async def _item(i: int) -> int:
    return i


async def _count(items: list[int]) -> int:
    return len(items)


make = task(name="make")(_make)
item = task(name="item")(_item)
count = task(name="count")(_count)


def _wide(n: int) -> None:
    count(item.map(make(n)))


wide: Flow = flow(name="bench_ui_wide")(_wide)


async def _open_page(n: int, repeat: int) -> Figures:
    """Run ``wide`` over ``n`` items, then time the page's reads ``repeat`` times."""
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with Engine(engine_store(tmp), grace_period_s=0) as engine:
            engine.add(wide)
            result = await engine.run(wide, n=n)
            if not result.ok:
                raise RuntimeError(f"ui_pages run failed: {result.error}")
            app = build_app(engine)
            async with anyio.create_task_group() as tg:
                await tg.start(run_app_services, app)
                server = HttpServer(access_log=False, graceful_timeout_s=1)
                port = await tg.start(server.serve, app, "127.0.0.1", 0)
                base = f"http://127.0.0.1:{port}/api/runs/{result.run_id}"
                times: dict[str, list[float]] = {p: [] for p in PAGE_READS}
                totals: list[float] = []
                sizes = 0
                async with httpx.AsyncClient(timeout=60) as client:
                    for _ in range(repeat):
                        t_all = time.perf_counter()
                        for path in PAGE_READS:
                            t0 = time.perf_counter()
                            resp = await client.get(f"{base}/{path}")
                            times[path].append(time.perf_counter() - t0)
                            if resp.status_code != 200:
                                raise RuntimeError(f"{path}: {resp.status_code} {resp.text}")
                            sizes = sizes + len(resp.content) if not totals else sizes
                        totals.append(time.perf_counter() - t_all)
                tg.cancel_scope.cancel()
    ms = 1000.0
    return {
        "instances": float(n),
        "open_ms": statistics.median(totals) * ms,
        "overview_ms": statistics.median(times["overview"]) * ms,
        "timeline_ms": statistics.median(times["timeline"]) * ms,
        "instances_page_ms": statistics.median(times["tasks?node=item&limit=50"]) * ms,
        "bytes": float(sizes),
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    return await _open_page(p["instances"], p["repeat"])


async def run_floor(p: Mapping[str, Any]) -> Figures:
    return await _open_page(1, p["repeat"])  # make, one item, count: three tasks


_AS_QUICK = Target("ratio_max", 5.0, "≤ 5x a 3-task run")

WORKLOAD = Workload(
    name="ui_pages",
    title="run page of N mapped instances (floor: a 3-task run)",
    method=(
        "the run page's reads over loopback HTTP (overview, timeline, first page of the mapped "
        "task's instances) for a run mapping a task over N items; the floor side reads the same "
        "for a three-task run; medians over repeated openings"
    ),
    params={
        "full": {"instances": 10_000, "repeat": 30},
        "quick": {"instances": 10_000, "repeat": 10},
        "smoke": {"instances": 200, "repeat": 3},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("open_ms", "page reads, all", "ms", _AS_QUICK, digits=1),
        Metric("overview_ms", "overview", "ms", digits=1),
        Metric("timeline_ms", "timeline", "ms", digits=1),
        Metric("instances_page_ms", "instances page", "ms", digits=1),
        Metric("bytes", "bytes read", "B", digits=0),
    ),
)
