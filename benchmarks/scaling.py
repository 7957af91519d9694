"""scaling: how cost grows with the size of a run and with the history a store holds.

``python -m benchmarks.scaling [--sizes 10,100,1000,10000] [--history 10000,100000,1000000]
[--store postgresql://…] [--json PATH]``

**Run size.** For each size N, runs of ``make(N) → item.map → count`` (N no-op async
instances between two tasks, the flow of :mod:`benchmarks.ui_pages`), as many runs as make
about 10,000 tasks, submitted at once under ``max_tasks=100``, each size on a fresh store.
Reported: CPU per task (all threads) and tasks per second, so a flat column means the cost per
task does not grow with the run.

**History.** One store grows to each size H of past runs (finished three-task runs over the
last 60 days, each with a ``customer`` parameter, written through the store's import, as
``evflow db copy`` writes them; on PostgreSQL then vacuumed and analysed, as autovacuum would
be a minute later). At each size: the CPU per task of 2,000 new etl runs on that
store, and the API's reads as the UI makes them over loopback HTTP (median of 5): the runs
list's first page with its total, the same for one flow, a search for one parameter value, and
an old run's overview. A flat CPU column means indexes keep per-task cost independent of
history; the reads say whether the UI stays usable on a store that size.

It prints both tables and writes JSON (``benchmarks/results/scaling.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from evflow import Engine
from evflow.records import RunRecord, TaskRecord
from evflow.states import RunState, TaskState
from evflow.store import connect
from evflow.store.base import Rows

from .common import Usage, served, text_table, write_json
from .etl import etl
from .runner import machine
from .stores import backend, engine_store, on_store
from .ui_pages import wide  # make(N) → item.map → count

__all__ = ["main"]

DEFAULT_JSON = Path(__file__).parent / "results" / "scaling.json"
TASKS_PER_SIZE = 10_000
ETL_RUNS = 2_000  # 6,000 tasks: 900 were too few to tell one history size from another
IMPORT_BATCH = 5_000
READ_REPEAT = 5


# -- run size ----------------------------------------------------------------------------------


async def _by_run_size(n: int) -> dict[str, float]:
    runs = max(1, TASKS_PER_SIZE // n)
    tasks = runs * (n + 2)
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with Engine(engine_store(tmp), max_tasks=100, grace_period_s=0) as engine:
            engine.add(wide)
            with Usage() as usage:
                results = await asyncio.gather(*(engine.run(wide, n=n) for _ in range(runs)))
                await engine.store.flush()
            if not all(r.ok for r in results):
                raise RuntimeError(f"scaling: a run of {n} failed")
    return {
        "tasks_per_run": float(n + 2),
        "runs": float(runs),
        "cpu_us_per_task": usage.cpu_s / tasks * 1e6,
        "tasks_per_s": tasks / usage.wall_s,
    }


# -- history -----------------------------------------------------------------------------------


def _past_runs(start: int, count: int, now: float) -> list[RunRecord]:
    """``count`` finished three-task runs, numbered from ``start``, over the last 60 days."""
    runs = []
    for i in range(start, start + count):
        run_id = f"past-{i:08d}"
        created = now - 60 * 86_400 + (i % 5_000_000) * 1.0
        tasks = tuple(
            TaskRecord(
                run_id=run_id,
                name=name,
                node=name,
                state=TaskState.SUCCEEDED,
                attempt=1,
                queued_at=created,
                started_at=created,
                ended_at=created + 0.01,
            )
            for name in ("extract", "transform", "load")
        )
        runs.append(
            RunRecord(
                id=run_id,
                flow="bench_etl" if i % 2 else "nightly_report",
                flow_version="v1",
                params={"customer": f"c{i}"},
                state=RunState.SUCCEEDED,
                created_at=created,
                started_at=created,
                ended_at=created + 0.05,
                tasks=tasks,
            )
        )
    return runs


async def _grow(where: str, have: int, want: int) -> float:
    """Import past runs into the store at ``where`` until it holds ``want``; the seconds taken."""
    t0 = time.perf_counter()
    now = time.time()
    async with connect(where) as store:
        for start in range(have, want, IMPORT_BATCH):
            count = min(IMPORT_BATCH, want - start)
            await store.import_rows(Rows(runs=_past_runs(start, count, now)))
            print(f"    {start + count:,} past runs", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    if backend() == "postgresql":
        _vacuum(where)
    return time.perf_counter() - t0


def _vacuum(where: str) -> None:
    """What autovacuum does a minute after a bulk load: statistics for the planner, and the
    visibility map that lets counts read the indexes alone."""
    import psycopg

    with psycopg.connect(where, autocommit=True) as conn:
        for table in ("runs", "tasks"):
            conn.execute(f"VACUUM ANALYZE {table}".encode())


async def _median_get(client: httpx.AsyncClient, url: str) -> float:
    times = []
    for _ in range(READ_REPEAT):
        t0 = time.perf_counter()
        resp = await client.get(url)
        times.append(time.perf_counter() - t0)
        if resp.status_code != 200:
            raise RuntimeError(f"scaling: {url}: {resp.status_code} {resp.text[:200]}")
    return statistics.median(times) * 1000


async def _on_history(where: str, size: int) -> dict[str, float]:
    async with Engine(where, max_tasks=100, grace_period_s=0) as engine:
        engine.add(etl)
        with Usage() as usage:
            results = await asyncio.gather(*(engine.run(etl, n=i) for i in range(ETL_RUNS)))
            await engine.store.flush()
        if not all(r.ok for r in results):
            raise RuntimeError("scaling: an etl run failed")
        async with served(engine) as url:
            base = f"{url}/api"
            old = f"past-{size // 2:08d}"
            async with httpx.AsyncClient(timeout=120) as client:
                reads = {
                    "runs_page_ms": await _median_get(client, f"{base}/runs/search?limit=50"),
                    "flow_page_ms": await _median_get(
                        client, f"{base}/runs/search?flow=nightly_report&limit=50"
                    ),
                    "search_ms": await _median_get(
                        client, f"{base}/runs/search?q=c{size // 3}&limit=50"
                    ),
                    "old_run_ms": await _median_get(client, f"{base}/runs/{old}/overview"),
                }
    return {
        "past_runs": float(size),
        "cpu_us_per_task": usage.cpu_s / (ETL_RUNS * 3) * 1e6,
        "tasks_per_s": ETL_RUNS * 3 / usage.wall_s,
        **reads,
    }


async def _history(sizes: Sequence[int]) -> list[dict[str, float]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        where = engine_store(tmp)
        have = 0
        for size in sizes:
            print(f"  history: growing the store to {size:,} past runs", file=sys.stderr)
            grow_s = await _grow(where, have, size)
            have = size
            row = await _on_history(where, size)
            row["import_s"] = grow_s
            rows.append(row)
            print(f"  history {size:,}: {row}", file=sys.stderr)
    return rows


# -- report ------------------------------------------------------------------------------------


def _table(title: str, rows: list[dict[str, float]], columns: Sequence[tuple[str, str]]) -> str:
    head = [label for _, label in columns]
    body = [
        [f"{row[key]:,.0f}" if row[key] >= 100 else f"{row[key]:.1f}" for key, _ in columns]
        for row in rows
    ]
    return "\n".join([title, *text_table(head, body, right=range(len(head)))])


def _ints(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected whole numbers, e.g. 10,100") from None
    if not values or min(values) < 1 or values != sorted(values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected rising numbers of at least 1")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0]
    )
    p.add_argument("--sizes", type=_ints, default=[10, 100, 1_000, 10_000], help="tasks per run")
    p.add_argument(
        "--history",
        type=_ints,
        default=[10_000, 100_000, 1_000_000],
        help="past runs in the store (rising; the store grows from one to the next)",
    )
    p.add_argument("--store", metavar="URL", help="a postgresql:// URL (default: SQLite files)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    return p


async def _run(sizes: Sequence[int], history: Sequence[int]) -> dict[str, Any]:
    by_size = []
    for n in sizes:
        print(f"  run size {n:,}", file=sys.stderr)
        by_size.append(await _by_run_size(n))
    return {"by_run_size": by_size, "by_history": await _history(history)}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with on_store(args.store, f"scaling_{uuid.uuid4().hex[:6]}"):
        result = anyio.run(_run, args.sizes, args.history)
    result["store"] = backend()
    result["machine"] = machine()
    print(
        _table(
            f"cost per task by run size ({backend()})",
            result["by_run_size"],
            [
                ("tasks_per_run", "tasks per run"),
                ("runs", "runs"),
                ("cpu_us_per_task", "CPU per task (µs)"),
                ("tasks_per_s", "tasks/s"),
            ],
        )
    )
    print()
    print(
        _table(
            f"cost per task and API reads by history ({backend()})",
            result["by_history"],
            [
                ("past_runs", "past runs"),
                ("cpu_us_per_task", "CPU per task (µs)"),
                ("tasks_per_s", "tasks/s"),
                ("runs_page_ms", "runs page (ms)"),
                ("flow_page_ms", "one flow's runs (ms)"),
                ("search_ms", "search (ms)"),
                ("old_run_ms", "old run (ms)"),
            ],
        )
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
