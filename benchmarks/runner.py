"""Run the workloads, print the table, write the JSON.

``python -m benchmarks`` runs every workload: for each, the evflow side and the floor side,
each in a fresh child process by default (``--in-process`` runs them in this one), then prints
one row per figure — workload, metric, evflow, floor, ratio (evflow / floor), target, met? — and
writes every figure, the parameters and the machine to ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evflow.service.serve import tune_gc
from evflow.store import is_postgres

from . import cluster, etl, fanout, idle, latency, startup, throughput, ui_pages, waiting
from .common import PROFILES, Figures, Profile, Workload, text_table, write_json
from .stores import backend, on_store

__all__ = ["WORKLOADS", "machine", "main", "run", "select"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
SIDES = ("evflow", "floor")
PACKAGES = (
    "evflow",
    "aiosqlite",
    "anyio",
    "aiokafka",
    "uvicorn",
    "starlette",
    "httpx",
    "watchfiles",
    "orjson",
    "psycopg",
)

WORKLOADS: tuple[Workload, ...] = (
    etl.WORKLOAD,
    fanout.WORKLOAD,
    throughput.WORKLOAD,
    cluster.WORKLOAD,
    waiting.WORKLOAD,
    *latency.WORKLOADS,
    idle.WORKLOAD,
    ui_pages.WORKLOAD,
    startup.WORKLOAD,
)


def select(only: Sequence[str] | None, store: str = "sqlite") -> list[Workload]:
    """The workloads named in ``only`` (a name or a prefix: ``latency`` = all four), or all
    that run on ``store`` (``sqlite`` or ``postgresql``)."""
    if not only:
        return [w for w in WORKLOADS if store in w.stores]
    chosen = [w for w in WORKLOADS if any(w.name == o or w.name.startswith(o + ".") for o in only)]
    unknown = [
        o for o in only if not any(w.name == o or w.name.startswith(o + ".") for w in WORKLOADS)
    ]
    if unknown:
        names = ", ".join(w.name for w in WORKLOADS)
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; known: {names}")
    elsewhere = [w.name for w in chosen if store not in w.stores]
    if elsewhere:
        raise SystemExit(
            f"{', '.join(elsewhere)} run(s) on PostgreSQL only: add --store postgresql://…"
        )
    return chosen


def machine() -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    cpus = os.cpu_count()
    return {
        "source": _source(),
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu_count": cpus,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "packages": packages,
    }


def _source() -> dict[str, Any]:
    """The commit the engine was measured at, and whether its code differed from it."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "evflow")
    return {
        "commit": git("rev-parse", "HEAD"),
        "evflow_modified": None if changed is None else bool(changed),
    }


# -- running ---------------------------------------------------------------------------------


def _side_fn(workload: Workload, side: str) -> Any:
    return workload.evflow if side == "evflow" else workload.floor


def run_side(workload: Workload, side: str, profile: Profile, *, isolate: bool) -> Figures:
    """One side of one workload: in a child process (``isolate``) or here."""
    params = workload.params[profile]
    if not isolate:
        return asyncio.run(_side_fn(workload, side)(params))
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks",
            "--child",
            workload.name,
            "--side",
            side,
            "--profile",
            profile,
            "--child-out",
            str(out),
        ]
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=sys.stderr, timeout=workload.timeout_s[profile], check=False
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{workload.name}/{side} exited with status {proc.returncode}")
        figures: Figures = json.loads(out.read_text())
        return figures


def evaluate(workload: Workload, ev: Figures | None, fl: Figures | None) -> list[dict[str, Any]]:
    """The table rows of one workload."""
    rows = []
    store = backend()
    for m in workload.metrics:
        e = ev.get(m.key) if ev else None
        f = fl.get(m.key) if fl else None
        ratio = e / f if e is not None and f else None
        target = m.target.for_store(store) if m.target is not None else None
        met = target.met(e, f) if target is not None else None
        rows.append(
            {
                "key": m.key,
                "metric": f"{m.label} ({m.unit})" if m.unit else m.label,
                "unit": m.unit,
                "evflow": e,
                "floor": f,
                "ratio": ratio,
                "target": target.text if target else None,
                "met": met,
                "digits": m.digits,
            }
        )
    return rows


def run(
    workloads: Sequence[Workload], profile: Profile, *, isolate: bool = True, log: Any = None
) -> list[dict[str, Any]]:
    """Run both sides of each workload; one result dict per workload (errors included)."""
    results = []
    for w in workloads:
        figures: dict[str, Figures | None] = {}
        errors: dict[str, str] = {}
        load: dict[str, float] = {}
        for side in SIDES:
            load[side] = os.getloadavg()[0]
            t0 = time.perf_counter()
            try:
                figures[side] = run_side(w, side, profile, isolate=isolate)
            except Exception as exc:
                figures[side] = None
                errors[side] = f"{type(exc).__name__}: {exc}"
                if log is not None:
                    traceback.print_exc(file=log)
            if log is not None:
                status = "failed" if side in errors else "done"
                print(
                    f"  {w.name:<16} {side:<7} {status} in {time.perf_counter() - t0:.1f}s",
                    file=log,
                    flush=True,
                )
        results.append(
            {
                "name": w.name,
                "title": w.title,
                "method": w.method,
                "params": dict(w.params[profile]),
                "evflow": figures["evflow"],
                "floor": figures["floor"],
                "errors": errors,
                "load_average_1m_before": load,
                "rows": evaluate(w, figures["evflow"], figures["floor"]),
            }
        )
    return results


# -- output ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a fixed-width text table."""
    head = ("workload", "metric", "evflow", "floor", "ratio", "target", "met?")
    lines: list[tuple[str, ...]] = []
    for r in results:
        for row in r["rows"]:
            met = {True: "yes", False: "NO", None: ""}[row["met"]]
            lines.append(
                (
                    r["name"],
                    row["metric"],
                    _num(row["evflow"], row["digits"]),
                    _num(row["floor"], row["digits"]),
                    "—" if row["ratio"] is None else f"{row['ratio']:.2f}x",
                    row["target"] or "",
                    met,
                )
            )
        for side, err in r["errors"].items():
            lines.append((r["name"], f"{side} FAILED", err[:60], "", "", "", "NO"))
    return "\n".join(text_table(head, lines, right={2, 3, 4}))


def _command(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "benchmarks", *argv])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="evflow benchmarks: each workload against a bare-asyncio floor.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes and short windows")
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this workload (repeatable; a prefix such as 'latency' selects a group): "
        + ", ".join(w.name for w in WORKLOADS),
    )
    p.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the results ({DEFAULT_JSON.relative_to(ROOT)})",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run both sides in this process (faster to start; RSS and CPU less clean)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="run both sides on PostgreSQL (postgresql://user@host/db; each side works in a "
        "schema of its own, dropped afterwards) instead of SQLite files",
    )
    p.add_argument("--profile", choices=PROFILES, help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p


def _child(args: argparse.Namespace) -> int:
    (workload,) = [w for w in WORKLOADS if w.name == args.child]
    # Both sides run with the collector settings `evflow serve` uses.
    tune_gc()
    figures = asyncio.run(_side_fn(workload, args.side)(workload.params[args.profile]))
    args.child_out.write_text(json.dumps(figures))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args)
    profile: Profile = args.profile or ("quick" if args.quick else "full")
    workloads = select(args.only, "postgresql" if args.store else "sqlite")
    if args.store and not is_postgres(args.store):
        raise SystemExit("--store takes a postgresql:// URL (SQLite is the default)")
    with on_store(args.store, f"bench_{os.getpid()}"):  # the children inherit it
        return _run_all(args, argv, profile, workloads)


def _run_all(
    args: argparse.Namespace, argv: list[str], profile: Profile, workloads: list[Workload]
) -> int:
    info = machine()
    info["store"] = backend()
    started = datetime.now(UTC)
    print(
        f"evflow benchmarks ({profile}) on {info['cpu_count']}-core {info['system']}, "
        f"Python {info['python']}, evflow {info['packages']['evflow']}, store {info['store']}",
        file=sys.stderr,
        flush=True,
    )
    results = run(workloads, profile, isolate=not args.in_process, log=sys.stderr)
    print(table(results))
    doc = {
        "command": _command(argv),
        "profile": profile,
        "isolated": not args.in_process,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "workloads": results,
    }
    write_json(args.json, doc)
    failed = any(r["errors"] for r in results)
    return 1 if failed else 0
