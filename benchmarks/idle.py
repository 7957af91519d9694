"""idle: CPU used by a serving process over a quiet period.

evflow: ``evflow serve --port 0`` on the example deployment (the repository's ``flows/``,
``sensors/`` and ``evflow.toml``), its store moved to a temporary file with
``EVFLOW_STORE_PATH``. Floor: a bare asyncio process holding the same kinds of listeners — a
SQLite store open, uvicorn serving a bare ASGI app on a loopback port, and ``watchfiles``
watching the same ``inbox/`` folder.

Each process is started, given ``warmup_s`` after it reports that it is serving, then its
``utime + stime`` (``/proc/<pid>/stat``, all threads) is read before and after ``duration_s``
of nothing happening. CPU is reported as % of one core; wake-ups are the context switches of
all its threads (``/proc/<pid>/task/*/status``) per second.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import Figures, Metric, Target, Workload
from .stores import backend, engine_store, floor_store

__all__ = ["WORKLOAD"]

ROOT = Path(__file__).resolve().parent.parent
_READY = "stop with Ctrl-C"
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def _switches(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _measure(cmd: list[str], env: Mapping[str, str], p: Mapping[str, Any]) -> Figures:
    """Start ``cmd``, wait until it serves, then sample its CPU; blocking (run in a thread)."""
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        out_path = Path(tmp) / "stdout.txt"
        with open(out_path, "wb") as out, open(Path(tmp) / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={
                    **os.environ,
                    **{k: v.replace("{tmp}", tmp) for k, v in env.items()},
                    "EVFLOW_BENCH_TMP": tmp,
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            try:
                deadline = time.monotonic() + p["start_timeout_s"]
                while _READY not in out_path.read_text(errors="replace"):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        errors = (Path(tmp) / "stderr.txt").read_text(errors="replace")
                        raise RuntimeError(
                            f"{cmd[0]} did not start (exit {proc.returncode}): {errors[-2000:]}"
                        )
                    time.sleep(0.05)
                time.sleep(p["warmup_s"])
                c0, w0, t0 = _cpu_ticks(proc.pid), _switches(proc.pid), time.perf_counter()
                time.sleep(p["duration_s"])
                c1, w1, t1 = _cpu_ticks(proc.pid), _switches(proc.pid), time.perf_counter()
                threads = _threads(proc.pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    elapsed = t1 - t0
    cpu_s = (c1 - c0) / _TICK
    return {
        "duration_s": elapsed,
        "cpu_s": cpu_s,
        "cpu_pct": cpu_s / elapsed * 100,
        "wakeups_per_s": (w1 - w0) / elapsed,
        "threads": float(threads),
    }


async def run_evflow(p: Mapping[str, Any]) -> Figures:
    evflow = Path(sys.executable).with_name("evflow")
    cmd = [str(evflow), "serve", "--port", "0"]
    if backend() == "postgresql":
        store = {"EVFLOW_STORE_URL": engine_store("")}
    else:
        store = {"EVFLOW_STORE_PATH": "{tmp}/evflow.db"}
    return await asyncio.to_thread(_measure, cmd, store, p)


async def run_floor(p: Mapping[str, Any]) -> Figures:
    cmd = [sys.executable, "-c", "from benchmarks.idle import floor_process; floor_process()"]
    return await asyncio.to_thread(_measure, cmd, {}, p)


def floor_process() -> None:
    """The floor's idle process: store open, HTTP listening, inbox watched; until SIGTERM."""
    import anyio
    from watchfiles import awatch

    from evflow.http.server import HttpServer

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        tmp = os.environ["EVFLOW_BENCH_TMP"]
        async with floor_store(tmp), anyio.create_task_group() as tg:
            await tg.start(HttpServer(access_log=False).serve, app, "127.0.0.1", 0)
            stop = anyio.Event()

            async def watch() -> None:
                async for _ in awatch(ROOT / "inbox", debounce=400, step=50, stop_event=stop):
                    pass

            tg.start_soon(watch)
            print(_READY, flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            stop.set()
            tg.cancel_scope.cancel()

    anyio.run(main)


WORKLOAD = Workload(
    name="idle",
    title="idle `evflow serve`",
    method=(
        "`evflow serve --port 0` on the example deployment, store in a temp file; "
        "utime+stime from /proc/<pid>/stat over the quiet period, as % of one core"
    ),
    params={
        "full": {"duration_s": 30.0, "warmup_s": 3.0, "start_timeout_s": 60.0},
        "quick": {"duration_s": 3.0, "warmup_s": 1.0, "start_timeout_s": 60.0},
        "smoke": {"duration_s": 0.5, "warmup_s": 0.2, "start_timeout_s": 60.0},
    },
    evflow=run_evflow,
    floor=run_floor,
    metrics=(
        Metric("cpu_pct", "CPU, % of one core", "%", Target("max", 1.0, "< 1 %"), 2),
        Metric("wakeups_per_s", "context switches/s", "1/s", digits=0),
        Metric("threads", "threads", "", digits=0),
    ),
)
