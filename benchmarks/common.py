"""What every workload shares: sizes, measurements, the metric and target model, engine helpers.

A workload measures two *sides* — ``evflow`` and ``floor`` (bare asyncio doing the same work with
the same persistence, see :mod:`benchmarks.floor`) — each an ``async`` function taking the size
profile's parameters and returning a flat ``{figure: number}`` dict. The runner runs each side in
a fresh child process by default, so CPU time and peak RSS of one side never include the other.
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from evflow import Engine, RunState, TaskState
from evflow.signals import RunStateChanged, TaskStateChanged

__all__ = [
    "MIB",
    "PROFILES",
    "Figures",
    "Metric",
    "Profile",
    "RunWatcher",
    "Side",
    "Target",
    "Usage",
    "Workload",
    "percentiles",
    "rss_bytes",
]

Profile = Literal["full", "quick", "smoke"]
PROFILES: tuple[Profile, ...] = ("full", "quick", "smoke")

Figures = dict[str, float]
Side = Callable[[Mapping[str, Any]], Awaitable[Figures]]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for one figure.

    ``kind``: ``"ratio_max"`` (evflow/floor at most ``value``), ``"max"`` (evflow at most
    ``value``) or ``"min"`` (evflow at least ``value``).
    """

    kind: Literal["ratio_max", "max", "min"]
    value: float
    text: str
    on_postgres: Target | None = None  # where PostgreSQL's goal differs

    def for_store(self, store: str) -> Target:
        """The goal on ``store`` ("sqlite" or "postgresql")."""
        return self.on_postgres if store == "postgresql" and self.on_postgres else self

    def met(self, evflow: float | None, floor: float | None) -> bool | None:
        if evflow is None:
            return None
        if self.kind == "ratio_max":
            if not floor:
                return None
            return evflow / floor <= self.value
        if self.kind == "max":
            return evflow <= self.value
        return evflow >= self.value


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the results table: a figure both sides report (``floor`` may lack it)."""

    key: str
    label: str
    unit: str
    target: Target | None = None
    digits: int = 1


@dataclass(frozen=True, slots=True)
class Workload:
    """A named workload: its two sides, parameters per profile and the rows it reports."""

    name: str
    title: str
    method: str
    params: Mapping[Profile, Mapping[str, Any]]
    evflow: Side
    floor: Side
    metrics: tuple[Metric, ...]
    timeout_s: Mapping[Profile, float] = field(
        default_factory=lambda: {"full": 900.0, "quick": 180.0, "smoke": 60.0}
    )
    stores: tuple[str, ...] = ("sqlite", "postgresql")  # the backends it runs on


# -- measurement -----------------------------------------------------------------------------


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write a benchmark's results, and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    print(f"results written to {path}", file=sys.stderr)


def text_table(
    head: Sequence[str], body: Iterable[Sequence[str]], *, right: Container[int] = ()
) -> list[str]:
    """The lines of a fixed-width text table: the head, a rule, then the body; the columns
    numbered in ``right`` are right-aligned."""
    rows = [list(head), *(list(r) for r in body)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(rows[0]), "  ".join("-" * w for w in widths), *(line(r) for r in rows[1:])]


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def rss_bytes() -> int:
    """The current resident set size of this process."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """The peak resident set size since start (or since :func:`reset_peak_rss`)."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs``); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass(slots=True)
class Usage:
    """Wall time, CPU seconds (all threads: getrusage) and peak RSS over a ``with`` block."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_before: int = 0
    peak_rss: int = 0
    _t0: float = 0.0
    _c0: float = 0.0

    def __enter__(self) -> Usage:
        self.rss_before = rss_bytes()
        reset_peak_rss()
        self._c0 = _cpu_s()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = _cpu_s() - self._c0
        self.peak_rss = peak_rss_bytes()

    def figures(self) -> Figures:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "rss_before_mb": self.rss_before / MIB,
            "peak_rss_mb": self.peak_rss / MIB,
        }


def percentiles(samples_ms: Sequence[float], prefix: str = "") -> Figures:
    """p50/p95/p99/max/mean (ms) of ``samples_ms``, keys prefixed with ``prefix``."""
    if not samples_ms:
        raise ValueError("no latency samples")
    ordered = sorted(samples_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []

    def pct(p: int) -> float:
        return cuts[p - 1] if cuts else ordered[0]

    return {
        f"{prefix}p50_ms": pct(50),
        f"{prefix}p95_ms": pct(95),
        f"{prefix}p99_ms": pct(99),
        f"{prefix}max_ms": ordered[-1],
        f"{prefix}mean_ms": statistics.fmean(ordered),
        f"{prefix}samples": float(len(ordered)),
    }


# -- engine helpers --------------------------------------------------------------------------


class RunWatcher:
    """An engine observer: counts succeeded tasks and resolves a future per finished run.

    It uses only the engine's public observer protocol, so it adds no private hooks to the
    measured path (each call is a dict lookup and a counter).
    """

    def __init__(self) -> None:
        self.tasks_succeeded = 0
        self.runs_finished = 0
        self.runs_failed = 0
        self._futures: dict[str, asyncio.Future[RunState]] = {}
        self._done: dict[str, RunState] = {}
        self._all: asyncio.Future[None] | None = None
        self._expected = 0

    def attach(self, engine: Engine) -> RunWatcher:
        engine.signals.subscribe(TaskStateChanged, self.task_state)
        engine.signals.subscribe(RunStateChanged, self.run_state)
        return self

    def task_state(self, signal: TaskStateChanged) -> None:
        if signal.task.state is TaskState.SUCCEEDED:
            self.tasks_succeeded += 1

    def run_state(self, signal: RunStateChanged) -> None:
        run = signal.run
        if not run.state.finished:
            return
        self.runs_finished += 1
        if run.state is not RunState.SUCCEEDED:
            self.runs_failed += 1
        fut = self._futures.pop(run.id, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(run.state)
        else:
            self._done[run.id] = run.state
        if self._all is not None and self.runs_finished >= self._expected and not self._all.done():
            self._all.set_result(None)

    async def finished(self, run_id: str) -> RunState:
        """Wait until run ``run_id`` has finished; its final state."""
        state = self._done.pop(run_id, None)
        if state is not None:
            return state
        fut: asyncio.Future[RunState] = asyncio.get_running_loop().create_future()
        self._futures[run_id] = fut
        return await fut

    async def all_finished(self, count: int) -> None:
        """Wait until ``count`` runs (in total) have finished."""
        if self.runs_finished >= count:
            return
        self._expected = count
        self._all = asyncio.get_running_loop().create_future()
        await self._all


@asynccontextmanager
async def served(engine: Engine) -> AsyncIterator[str]:
    """The service's app for ``engine`` on an ephemeral loopback port; yields its base URL."""
    from evflow.http.app import build_app, run_app_services
    from evflow.http.server import HttpServer

    app = build_app(engine)
    async with anyio.create_task_group() as tg:
        await tg.start(run_app_services, app)
        server = HttpServer(access_log=False, graceful_timeout_s=1)
        port = await tg.start(server.serve, app, "127.0.0.1", 0)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()
