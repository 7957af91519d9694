"""soak: ``evflow serve`` under a steady mixed load; RSS, file descriptors and CPU over time.

``python -m benchmarks.soak [--duration-s 600] [--rate 50] [--samples 12] [--json PATH]``

A real ``evflow serve`` on a project written into a temporary folder gets, at a steady ``rate``
of inputs per second: signed-less webhooks (one in 25 re-sent with the same delivery id, a
duplicate), events emitted through the API, and CSV files renamed into its watched folder (the
flow removes each file it has handled, as an ETL moves it away). Every input starts a run of a
two-task flow. ``samples`` times over the run it reads the process's RSS, open file descriptors,
threads and CPU (``/proc/<pid>``), and what has been sent and has finished.

The bound checked in the same run: RSS growth from the end of the warm-up (a fifth of the
duration, at least 5 s) to the end of the load stays within ``--max-rss-growth-mib``, and
nothing is lost (every accepted input has its succeeded run once the load stops). It prints a
table and writes JSON (``benchmarks/results/soak.json``); exit status 1 when a bound is missed.
The default is the ten-minute soak recorded in ``benchmarks/RESULTS.md``; ``--duration-s 60``
is a quick check (the test suite runs it for a few seconds).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from .common import write_json
from .runner import machine

__all__ = ["Sample", "Soak", "main", "run_soak"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "soak.json"
_READY = "stop with Ctrl-C or SIGTERM"
_TICK = os.sysconf("SC_CLK_TCK")
_MIB = 1024 * 1024
_DRAIN_S = 120.0

FLOW = '''
"""Two tasks per input; a file input's file is removed once handled."""

import os

import anyio

from evflow import flow, task


@task
async def parse(key: str) -> str:
    await anyio.sleep(0.005)
    return key.upper()


@task
def finish(parsed: str, path: str) -> int:
    if path:
        os.remove(path)
    return len(parsed)


@flow
def work(key: str, path: str = "") -> None:
    finish(parse(key), path)
'''

SENSORS = """
from evflow import Rule
from evflow.sensors import FileSensor, WebhookSensor

Rule(on=WebhookSensor("orders"), flow="work", params={"key": "{data.key}"})
Rule(on="soak.emitted", flow="work", params={"key": "{data.key}"})
Rule(
    on=FileSensor("inbox", pattern="*.csv", settle_s=0.2),
    flow="work",
    params={"key": "{data.path}", "path": "{data.abs_path}"},
)
"""


@dataclass(slots=True)
class Sample:
    """One reading of the service process and of the load, ``t_s`` seconds into the load."""

    t_s: float
    sent: int
    accepted: int
    runs_succeeded: int
    rss_mib: float
    fds: int
    threads: int
    cpu_pct: float


@dataclass(slots=True)
class Soak:
    """The load's counters, shared by the senders and the sampler."""

    sent: int = 0
    accepted: int = 0  # inputs that must each start one run (duplicates left out)
    duplicates: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


# -- the service process ----------------------------------------------------------------------


def _write_project(root: Path) -> None:
    files = {
        "evflow.toml": '[store]\npath = "var/evflow.db"\n\n[engine]\ngrace_period_s = 5\n',
        "flows/__init__.py": "",
        "flows/work.py": FLOW,
        "sensors/inputs.py": SENSORS,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (root / "inbox").mkdir()


def _status(pid: int) -> tuple[float, int]:
    """RSS (MiB) and threads of ``pid``."""
    rss, threads = 0.0, 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the load ---------------------------------------------------------------------------------


async def _send(client: httpx.AsyncClient, inbox: Path, n: int, soak: Soak) -> None:
    """Input ``n``: 7 in 10 webhooks, 2 API events, 1 file; every 25th webhook is sent twice."""
    kind = n % 10
    if kind == 9:
        name = f"in-{n:07d}.csv"
        part = inbox / f"{name}.part"
        await anyio.Path(part).write_text(f"id,n\n{n},{n}\n")
        await anyio.Path(part).rename(inbox / name)
        soak.sent += 1
        soak.accepted += 1
        return
    if kind in (7, 8):
        body = {"type": "soak.emitted", "source": "soak", "data": {"key": f"e-{n}"}}
        path, headers = "/api/events", {}
    else:
        body = {"key": f"w-{n}"}
        path, headers = "/hooks/orders", {"X-Delivery-Id": f"d-{n}"}
    content = orjson.dumps(body)
    headers["Content-Type"] = "application/json"
    tries = 2 if kind == 0 and n % 25 == 0 else 1
    for i in range(tries):
        soak.sent += 1
        resp = await client.post(path, content=content, headers=headers)
        if resp.status_code != 202:
            soak.refused[str(resp.status_code)] = soak.refused.get(str(resp.status_code), 0) + 1
            return
        if resp.json().get("duplicate"):
            soak.duplicates += 1
        elif i == 0:
            soak.accepted += 1


async def _load(
    client: httpx.AsyncClient, inbox: Path, soak: Soak, rate: float, until: float
) -> None:
    """Send at ``rate`` per second until ``until`` (anyio time): input ``n`` is due at
    ``start + n / rate``; a late one is sent at once, so the average rate holds."""
    start = anyio.current_time()
    limiter = anyio.CapacityLimiter(32)
    async with anyio.create_task_group() as tg:
        n = 0
        while True:
            due = start + n / rate
            if due >= until:
                break
            await anyio.sleep(max(0.0, due - anyio.current_time()))

            async def one(n: int = n) -> None:
                async with limiter:
                    await _send(client, inbox, n, soak)

            tg.start_soon(one)
            n += 1


async def _succeeded(client: httpx.AsyncClient) -> int:
    resp = await client.get("/api/runs", params={"state": "succeeded", "limit": 1})
    return int(resp.json()["total"])


async def _sample_loop(
    client: httpx.AsyncClient, pid: int, soak: Soak, every_s: float, t0: float, until: float
) -> None:
    ticks, clock = _cpu_ticks(pid), time.perf_counter()
    while True:
        await anyio.sleep(min(every_s, max(0.0, until - anyio.current_time())))
        now_ticks, now = _cpu_ticks(pid), time.perf_counter()
        rss, threads = _status(pid)
        soak.samples.append(
            Sample(
                t_s=round(anyio.current_time() - t0, 2),
                sent=soak.sent,
                accepted=soak.accepted,
                runs_succeeded=await _succeeded(client),
                rss_mib=round(rss, 1),
                fds=_fds(pid),
                threads=threads,
                cpu_pct=round((now_ticks - ticks) / _TICK / (now - clock) * 100, 1),
            )
        )
        ticks, clock = now_ticks, now
        if anyio.current_time() >= until - 0.01:
            return


async def run_soak(duration_s: float, rate: float, samples: int) -> dict[str, Any]:
    """Run the soak; its parameters, samples and summary (see the module)."""
    soak = Soak()
    with tempfile.TemporaryDirectory(prefix="evflow-soak-") as tmp:
        project = Path(tmp) / "project"
        _write_project(project)
        evflow = Path(sys.executable).with_name("evflow")
        cmd = [str(evflow), "serve", str(project), "--port", "0", "--log-format", "json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVFLOW_")}
        with (Path(tmp) / "stderr.log").open("wb") as err:
            process = await anyio.open_process(
                cmd, cwd=project, env=env, stdin=subprocess.DEVNULL, stderr=err
            )
        try:
            out = ""
            assert process.stdout is not None
            with anyio.fail_after(60):
                while _READY not in out:
                    out += (await process.stdout.receive()).decode()
            found = re.search(r"http://127\.0\.0\.1:\d+", out)
            if found is None:
                raise RuntimeError(f"evflow serve printed no address:\n{out}")
            async with httpx.AsyncClient(base_url=found.group(0), timeout=30) as client:
                t0 = anyio.current_time()
                until = t0 + duration_s
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_load, client, project / "inbox", soak, rate, until)
                    tg.start_soon(
                        _sample_loop, client, process.pid, soak, duration_s / samples, t0, until
                    )
                drain_start = anyio.current_time()
                done = await _succeeded(client)
                with anyio.move_on_after(_DRAIN_S):
                    while done < soak.accepted:
                        await anyio.sleep(0.25)
                        done = await _succeeded(client)
                drain_s = anyio.current_time() - drain_start
                total = int((await client.get("/api/runs", params={"limit": 1})).json()["total"])
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with anyio.move_on_after(30):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
            await process.aclose()
    return _report(soak, duration_s, rate, samples, done, total, drain_s)


def _report(
    soak: Soak,
    duration_s: float,
    rate: float,
    samples: int,
    succeeded: int,
    total_runs: int,
    drain_s: float,
) -> dict[str, Any]:
    warmup_s = max(5.0, duration_s / 5)
    after = [s for s in soak.samples if s.t_s >= warmup_s] or soak.samples[-1:]
    base, last = after[0], soak.samples[-1]
    slope = _slope([(s.t_s, s.rss_mib) for s in after]) * 60
    return {
        "params": {"duration_s": duration_s, "rate": rate, "samples": samples},
        "samples": [asdict(s) for s in soak.samples],
        "summary": {
            "sent": soak.sent,
            "accepted": soak.accepted,
            "duplicates": soak.duplicates,
            "refused": soak.refused,
            "runs": total_runs,
            "runs_succeeded": succeeded,
            "lost": soak.accepted - succeeded,
            "doubled": max(0, total_runs - soak.accepted),
            "drain_s": round(drain_s, 2),
            "warmup_s": warmup_s,
            "rss_after_warmup_mib": base.rss_mib,
            "rss_end_mib": last.rss_mib,
            "rss_peak_mib": max(s.rss_mib for s in soak.samples),
            "rss_growth_mib": round(last.rss_mib - base.rss_mib, 1),
            "rss_slope_mib_per_min": round(slope, 2),
            "fds_after_warmup": base.fds,
            "fds_end": last.fds,
            "cpu_pct_mean": round(sum(s.cpu_pct for s in after) / len(after), 1),
        },
    }


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``points`` (0 with fewer than two)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if math.isclose(den, 0) else sum((x - mx) * (y - my) for x, y in points) / den


def table(result: dict[str, Any]) -> str:
    """The samples as a fixed-width table, then the summary lines."""
    head = ("t (s)", "sent", "accepted", "runs done", "RSS (MiB)", "fds", "threads", "CPU %")
    rows = [
        (
            f"{s['t_s']:.0f}",
            f"{s['sent']:,}",
            f"{s['accepted']:,}",
            f"{s['runs_succeeded']:,}",
            f"{s['rss_mib']:.1f}",
            str(s["fds"]),
            str(s["threads"]),
            f"{s['cpu_pct']:.1f}",
        )
        for s in result["samples"]
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(widths[i]) for i, c in enumerate(r)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s = result["summary"]
    lines += [
        "",
        f"inputs sent {s['sent']:,}, accepted {s['accepted']:,}, duplicates {s['duplicates']:,}"
        f", refused {s['refused'] or 0}; runs {s['runs']:,}, succeeded {s['runs_succeeded']:,}"
        f" (drained {s['drain_s']} s after the load): lost {s['lost']}, doubled {s['doubled']}",
        f"RSS after warm-up ({s['warmup_s']:.0f} s) {s['rss_after_warmup_mib']} MiB, at the end "
        f"{s['rss_end_mib']} MiB (growth {s['rss_growth_mib']} MiB, slope "
        f"{s['rss_slope_mib_per_min']} MiB/min, peak {s['rss_peak_mib']} MiB); fds "
        f"{s['fds_after_warmup']} → {s['fds_end']}; CPU {s['cpu_pct_mean']} % of a core",
    ]
    return "\n".join(lines)


def check(result: dict[str, Any], max_growth_mib: float) -> list[str]:
    """The bounds missed, as sentences (none: the soak passed)."""
    s = result["summary"]
    missed = []
    if s["rss_growth_mib"] > max_growth_mib:
        missed.append(f"RSS grew {s['rss_growth_mib']} MiB, more than {max_growth_mib} MiB")
    if s["lost"] or s["doubled"]:
        missed.append(f"{s['lost']} inputs without a succeeded run, {s['doubled']} runs too many")
    if s["refused"]:
        missed.append(f"inputs refused: {s['refused']}")
    return missed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--duration-s", type=float, default=600.0, help="load time in seconds (default 600)"
    )
    p.add_argument("--rate", type=float, default=50.0, help="inputs per second (default 50)")
    p.add_argument("--samples", type=int, default=12, help="readings over the run (default 12)")
    p.add_argument(
        "--max-rss-growth-mib",
        type=float,
        default=16.0,
        help="RSS growth allowed after the warm-up (default 16)",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.duration_s <= 0 or args.rate <= 0 or args.samples < 2:
        print("soak: --duration-s and --rate must be > 0, --samples at least 2", file=sys.stderr)
        return 2
    result = anyio.run(run_soak, args.duration_s, args.rate, args.samples)
    result["params"]["max_rss_growth_mib"] = args.max_rss_growth_mib
    result["machine"] = machine()
    missed = check(result, args.max_rss_growth_mib)
    result["missed"] = missed
    print(table(result))
    for line in missed:
        print(f"MISSED: {line}")
    sys.stdout.flush()
    write_json(args.json, result)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
