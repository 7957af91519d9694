"""Summarise a py-spy profile: the top frames by self and by inclusive time.

``py-spy record --format raw`` writes one collapsed stack per line (``frame;frame;... count``).
This prints each frame's share of the samples, by self time (the frame was on top) and by
inclusive time (the frame was anywhere on the stack), optionally only for stacks that pass
through a given frame — ``--through _run_once`` keeps the event-loop thread and drops idle
worker threads::

    py-spy record -r 1000 --format raw -o etl.raw -- \\
        python -m benchmarks --child etl --side evflow --profile full --child-out etl.json
    python -m benchmarks.stacks etl.raw --through _run_once
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["summarise"]

_PREFIXES = (
    (re.compile(r"\s*\(\S*/site-packages/"), " ("),
    (re.compile(r"\s*\(\S*/lib/python3\.\d+/"), " (stdlib/"),
)


def _frame(raw: str, root: str) -> str:
    name = raw.replace(root, "")
    for pattern, repl in _PREFIXES:
        name = pattern.sub(repl, name)
    return re.sub(r":\d+\)$", ")", name)


def summarise(
    lines: Iterable[str], *, through: str | None = None, root: str = ""
) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, self counts, inclusive counts) of collapsed-stack ``lines``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        raw = stack.split(";")
        if through is not None and not any(through in f for f in raw):
            continue
        n = int(count)
        frames = [_frame(f, root) for f in raw]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, own, inclusive


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stacks", description=__doc__)
    p.add_argument("profile", type=Path, help="py-spy output written with --format raw")
    p.add_argument("--through", help="only stacks passing through a frame containing this")
    p.add_argument("--top", type=int, default=25, help="rows per list (25)")
    args = p.parse_args(argv)
    root = str(Path(__file__).resolve().parent.parent) + "/"
    with args.profile.open(encoding="utf-8") as f:
        total, own, inclusive = summarise(f, through=args.through, root=root)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"-- {title}")
        for name, n in counts.most_common(args.top):
            print(f"{n / total * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
