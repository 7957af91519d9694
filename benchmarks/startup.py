"""startup: a whole process that imports the engine and runs one one-task flow to its end.

evflow: a fresh Python process does ``import evflow``, then ``async with Engine(store)`` on a
fresh store, adds a one-task flow, ``await engine.run(flow)`` and exits. Floor: a fresh process
imports asyncio and the floor's store, creates the same run and task rows for a one-task run,
runs the task, commits and exits.

The parent times each process from spawn to exit (the median of ``repeats``); the child reports
how long its imports took (``perf_counter`` around them) and the rest of its work. Both sides
run with a bytecode cache of their own, warmed by one untimed process, so the figures are what
an installed package costs rather than compiling the sources on every start.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .common import Figures, Metric, Target, Workload
from .stores import backend, engine_store, floor_store

__all__ = ["WORKLOAD", "one_task_run"]

ROOT = Path(__file__).resolve().parent.parent

_ONE_TASK_RUN = """\
import time
t0 = time.perf_counter()
import evflow
t1 = time.perf_counter()
import asyncio, json, sys

@evflow.task(name="one")
async def one() -> int:
    return 1

@evflow.flow(name="startup", schedule=SCHEDULE)
def startup() -> None:
    one()

async def main() -> None:
    async with evflow.Engine(sys.argv[1], grace_period_s=0) as engine:
        engine.add(startup)
        result = await engine.run(startup)
        assert result.state is evflow.RunState.SUCCEEDED, result.state

asyncio.run(main())
t2 = time.perf_counter()
REPORT
"""


def one_task_run(report: str, schedule: str = "None") -> str:
    """A program that imports evflow and runs a one-task flow (with ``schedule``, Python source)
    to its end on the store named by ``argv[1]``, then runs ``report`` (``t0``, ``t1`` and
    ``t2`` are the times before and after the import and after the run)."""
    return _ONE_TASK_RUN.replace("SCHEDULE", schedule).replace("REPORT", report)


# Each child prints {"import_ms": …, "run_ms": …} on its last line; argv[1] is its store.
_EVFLOW_CHILD = one_task_run(
    'print(json.dumps({"import_ms": (t1 - t0) * 1e3, "run_ms": (t2 - t1) * 1e3}))'
)

_FLOOR_CHILD = """\
import time
t0 = time.perf_counter()
import asyncio
from benchmarks.floor import FloorRun, run_task
from {module} import {store}
t1 = time.perf_counter()
import json, sys

async def one() -> int:
    return 1

async def main() -> None:
    async with {store}(sys.argv[1]) as store:
        run = FloorRun(store, "startup", {{}})
        await run.create(("one",))
        run.start()
        await run_task(run, "one", None, one)
        await run.finish()

asyncio.run(main())
t2 = time.perf_counter()
print(json.dumps({{"import_ms": (t1 - t0) * 1e3, "run_ms": (t2 - t1) * 1e3}}))
"""


def _spawn(code: str, where: str, env: Mapping[str, str]) -> tuple[float, Figures]:
    """One child process: its wall time from spawn to exit (ms) and the figures it printed."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, where],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    wall_ms = (time.perf_counter() - t0) * 1e3
    if done.returncode != 0:
        raise RuntimeError(f"startup child exited with status {done.returncode}: {done.stderr}")
    figures: Figures = json.loads(done.stdout.splitlines()[-1])
    return wall_ms, figures


def _measure(code: str, store_for: Callable[[Path], str], repeats: int) -> Figures:
    """Spawn one untimed process to warm the bytecode cache, then ``repeats`` timed ones, one
    after the other (the side waits on them: nothing else runs in its loop)."""
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        samples: list[tuple[float, Figures]] = []
        for i in range(repeats + 1):
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            sample = _spawn(code, store_for(folder), env)
            if i:
                samples.append(sample)
    return {
        "process_ms": statistics.median(wall for wall, _ in samples),
        "import_ms": statistics.median(f["import_ms"] for _, f in samples),
        "run_ms": statistics.median(f["run_ms"] for _, f in samples),
        "samples": float(len(samples)),
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    return _measure(_EVFLOW_CHILD, engine_store, p["repeats"])


async def run_floor(p: Mapping[str, Any]) -> Figures:
    if backend() == "postgresql":
        code = _FLOOR_CHILD.format(module="benchmarks.floor_pg", store="PgFloorStore")
    else:
        code = _FLOOR_CHILD.format(module="benchmarks.floor", store="FloorStore")

    def where(folder: Path) -> str:
        return floor_store(folder).path  # a SQLite file, or a URL to a fresh schema

    return _measure(code, where, p["repeats"])


WORKLOAD = Workload(
    name="startup",
    title="startup (import and a first one-task run)",
    method=(
        "a fresh process imports the engine and runs a one-task flow to its end on a fresh "
        "store; wall time from spawn to exit, median of `repeats` processes"
    ),
    params={
        "full": {"repeats": 7},
        "quick": {"repeats": 3},
        "smoke": {"repeats": 1},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("process_ms", "process wall time", "ms", Target("ratio_max", 2.0, "≤ 2x floor")),
        Metric("import_ms", "imports", "ms"),
        Metric("run_ms", "first run, after the imports", "ms"),
    ),
)
