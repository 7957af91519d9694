"""ui_pages N: the run page of a run of N mapped instances, against a three-task run.

Both sides serve the real app on a loopback port. First they read, over HTTP, what the run page
reads when it opens: the run's overview, its timeline, and the first page of a mapped task's
instances. Then headless Chromium (Debian's, as in the browser tests) opens the run page itself
and the figure is what a user waits for: from navigation until the graph, the timeline and the
task table are drawn, then from a click on the mapped task until its first page of instances
shows. The ``evflow`` side does this for a run mapping a task over N items; the ``floor`` side
for a run of three tasks (N = 1). Figures are medians over ``repeat`` openings, so the targets
say how much slower a run of N instances opens than a small one.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import httpx

from evflow import Engine, Flow, flow, task
from tests.integration.browser import chromium

from .common import Figures, Metric, Target, Workload, served
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
    """Run ``wide`` over ``n`` items, then time the page's reads and its opening in a browser,
    ``repeat`` times each."""
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with Engine(engine_store(tmp), grace_period_s=0) as engine:
            engine.add(wide)
            result = await engine.run(wide, n=n)
            if not result.ok:
                raise RuntimeError(f"ui_pages run failed: {result.error}")
            async with served(engine) as base:
                figures = await _read_api(f"{base}/api/runs/{result.run_id}", repeat)
                figures |= await _open_in_browser(base, result.run_id, repeat)
    return {"instances": float(n)} | figures


_MS = 1000.0


async def _read_api(base: str, repeat: int) -> Figures:
    """The page's reads over HTTP, one after the other, ``repeat`` times."""
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
    return {
        "reads_ms": statistics.median(totals) * _MS,
        "overview_ms": statistics.median(times["overview"]) * _MS,
        "timeline_ms": statistics.median(times["timeline"]) * _MS,
        "instances_page_ms": statistics.median(times["tasks?node=item&limit=50"]) * _MS,
        "bytes": float(sizes),
    }


# Drawn: the mapped node in its final state, the timeline's row of the last task, its table row.
_DRAWN = (
    '[data-testid="dag-node-item"][data-state="succeeded"]',
    '[data-testid="timeline-row-count"]',
    '[data-testid="task-row-count"]',
)
_INSTANCE = '[data-testid="instance-row-item[0]"]'

# In the page, from its first script on: the moment (ms since navigation began) each selector
# first matches, so the figures hold what the page did, not how often the driver looked.
_MARKER = """
window.__marks = {};
new MutationObserver(() => {
  for (const sel of SELECTORS)
    if (!(sel in window.__marks) && document.querySelector(sel))
      window.__marks[sel] = performance.now();
}).observe(document, { subtree: true, childList: true, attributes: true });
""".replace("SELECTORS", json.dumps([*_DRAWN, _INSTANCE]))


async def _open_in_browser(base: str, run_id: str, repeat: int) -> Figures:
    """Open the run page in Chromium ``repeat`` times (a full page load each, static files
    cached as for a returning user): the time from navigation until it is drawn, and from a
    click on the mapped task until its first page of instances shows."""
    opens: list[float] = []
    instances: list[float] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(60_000)
        await context.add_init_script(_MARKER)
        page = await context.new_page()
        for _ in range(repeat + 1):  # the first opening fills the cache and is not counted
            await page.goto("about:blank")
            await page.goto(f"{base}/ui/#/runs/{run_id}")
            for selector in _DRAWN:
                await page.wait_for_selector(selector, state="attached")
            clicked = await page.evaluate(
                "() => { document.querySelector('[data-testid=task-row-item]').click();"
                " return performance.now(); }"
            )
            await page.wait_for_selector(_INSTANCE, state="attached")
            marks: dict[str, float] = await page.evaluate("window.__marks")
            opens.append(max(marks[s] for s in _DRAWN) / _MS)
            instances.append((marks[_INSTANCE] - clicked) / _MS)
        await context.close()
    return {
        "open_ms": statistics.median(opens[1:]) * _MS,
        "instances_ms": statistics.median(instances[1:]) * _MS,
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    return await _open_page(p["instances"], p["repeat"])


async def run_floor(p: Mapping[str, Any]) -> Figures:
    return await _open_page(1, p["repeat"])  # make, one item, count: three tasks


_AS_QUICK = Target("ratio_max", 1.25, "≤ 1.25x a 3-task run")
# The mapped task's panel draws 50 instances where the small run has one: the goal is that it
# feels instant (well under the 100 ms a person perceives as a delay), not a ratio to one row.
_PAGE_OF_50 = Target("max", 50.0, "< 50 ms")
_READS = Target("ratio_max", 5.0, "≤ 5x a 3-task run")

WORKLOAD = Workload(
    name="ui_pages",
    title="run page of N mapped instances (floor: a 3-task run)",
    method=(
        "the run page opened in headless Chromium until its graph, timeline and table are drawn, "
        "then the mapped task clicked until its first page of instances shows; and the page's "
        "reads over loopback HTTP (overview, timeline, first page of the mapped task's "
        "instances); for a run mapping a task over N items; the floor side does the same for a "
        "three-task run; medians over repeated openings"
    ),
    params={
        "full": {"instances": 10_000, "repeat": 30},
        "quick": {"instances": 10_000, "repeat": 10},
        "smoke": {"instances": 200, "repeat": 2},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("open_ms", "page open in Chromium, until drawn", "ms", _AS_QUICK, digits=1),
        Metric("instances_ms", "mapped task clicked, until instances show", "ms", _PAGE_OF_50),
        Metric("reads_ms", "page reads over HTTP, all", "ms", _READS, digits=1),
        Metric("overview_ms", "overview", "ms", digits=1),
        Metric("timeline_ms", "timeline", "ms", digits=1),
        Metric("instances_page_ms", "instances page", "ms", digits=1),
        Metric("bytes", "bytes read", "B", digits=0),
    ),
)
