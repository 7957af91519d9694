"""instructions: the CPU work per task counted, not timed, evflow against the floor.

``python -m benchmarks.instructions [--only etl] [--sizes 50,250] [--store postgresql://…]
[--json PATH]``

CPU time per task moves by 15-30 % from run to run on a shared VM, more than most single
changes to the engine. An instruction count does not: each side of each workload runs under
``valgrind --tool=cachegrind --cache-sim=no`` twice, at two sizes (runs for etl, instances for
fanout), and the difference of the two counts over the difference in tasks is the instructions
per task, without the process's start-up, imports and store opening. Repeated, the figure stays
within about 0.1 %, so an A/B of two trees shows changes of 1 % or less.

What it does not show: time spent waiting on memory. A side whose objects spread over more
memory runs fewer instructions per second, and the CPU-time ratio of ``python -m benchmarks``
is then higher than this one (PostgreSQL etl, on a slow day: 4.8x counted against 5.4x
timed). The targets stay the timed ones; this is the instrument for finding and checking a
change.

Under valgrind the engine runs about 50 times slower, so commits carry more writes each than at
full speed; both sides are slowed alike. On PostgreSQL only the client's instructions count (the
server is another process). Needs valgrind (Debian: ``apt install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evflow.service.serve import tune_gc

from . import etl, fanout
from .common import Workload, text_table, write_json
from .runner import machine
from .stores import backend, on_store

__all__ = ["main"]

DEFAULT_JSON = Path(__file__).parent / "results" / "instructions.json"
ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 3.0
#: The size parameter of each workload, and tasks per unit of it.
SIZED: dict[str, tuple[Workload, str, int]] = {
    "etl": (etl.WORKLOAD, "runs", 3),
    "fanout": (fanout.WORKLOAD, "tasks", 1),
}
DEFAULT_SIZES = {"etl": (50, 250), "fanout": (500, 2500)}
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _child(workload: str, side: str, size: int) -> None:
    """One side of one workload at one size, in this process (run under valgrind)."""
    w, key, _ = SIZED[workload]
    params = {**w.params["full"], key: size}
    tune_gc()
    fn = w.evflow if side == "evflow" else w.floor

    async def one() -> None:
        await fn(params)

    asyncio.run(one())


def _count(workload: str, side: str, size: int) -> int:
    """Instructions of one child process."""
    with tempfile.TemporaryDirectory(prefix="evflow-instr-") as tmp:
        cmd = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            f"--cachegrind-out-file={Path(tmp) / 'out'}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            f"{workload}:{side}:{size}",
        ]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{workload} {side} at size {size} failed under valgrind:\n{tail}")
    return int(found.group(1).replace(",", ""))


def _measure(workload: str, sizes: tuple[int, int]) -> dict[str, Any]:
    _, _, per_unit = SIZED[workload]
    small, large = sizes
    tasks = (large - small) * per_unit
    out: dict[str, Any] = {"workload": workload, "sizes": list(sizes), "tasks": tasks}
    for side in ("evflow", "floor"):
        counts = []
        for size in sizes:
            print(f"  {workload:8s} {side:6s} size {size:,}", file=sys.stderr, flush=True)
            counts.append(_count(workload, side, size))
        out[side] = {"instructions": counts, "per_task": (counts[1] - counts[0]) / tasks}
    out["ratio"] = out["evflow"]["per_task"] / out["floor"]["per_task"]
    out["met"] = out["ratio"] <= TARGET_RATIO
    return out


def _table(rows: Sequence[dict[str, Any]], store: str) -> str:
    head = ("workload", "evflow instr/task", "floor instr/task", "ratio", "≤ 3x floor")
    body = [
        (
            r["workload"],
            f"{r['evflow']['per_task']:,.0f}",
            f"{r['floor']['per_task']:,.0f}",
            f"{r['ratio']:.2f}x",
            "yes" if r["met"] else "NO",
        )
        for r in rows
    ]
    return "\n".join([f"instructions per task ({store})", *text_table(head, body)])


def _sizes(text: str) -> tuple[int, int]:
    try:
        small, large = (int(v.replace("_", "")) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two sizes, e.g. 50,250") from None
    if not 0 < small < large:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a smaller size, then a larger one")
    return small, large


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(SIZED),
        help="this workload only (repeatable; default: all)",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        help="the two sizes to take the difference of (default: etl 50,250; fanout 500,2500)",
    )
    p.add_argument("--store", metavar="URL", help="a postgresql:// URL (default: SQLite files)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        workload, side, size = args.child.split(":")
        _child(workload, side, int(size))
        return 0
    if shutil.which("valgrind") is None:
        print(
            "valgrind is not installed: this benchmark counts instructions under it "
            "(Debian and Ubuntu: apt install valgrind)",
            file=sys.stderr,
        )
        return 2
    try:
        with on_store(args.store, f"instr_{uuid.uuid4().hex[:6]}"):
            sizes = args.sizes
            rows = [_measure(name, sizes or DEFAULT_SIZES[name]) for name in args.only or SIZED]
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(_table(rows, backend()))
    write_json(args.json, {"store": backend(), "machine": machine(), "workloads": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
