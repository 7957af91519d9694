"""Plain-text rendering for the CLI: tables, run details, live progress.

No colours unless the stream is a terminal; no dependencies.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

import orjson

from ..http.schemas import Attempt, LogLine, RunWithTasks, jsonable_run, jsonable_task
from ..records import LogRecord, RunRecord, TaskRecord

__all__ = [
    "Progress",
    "RunShown",
    "dump_json",
    "fmt_duration",
    "fmt_time",
    "jsonable_run",
    "jsonable_task",
    "render_run",
    "short_id",
    "table",
]

_COLORS = {
    "succeeded": "32",
    "failed": "31",
    "upstream_failed": "31",
    "running": "34",
    "retrying": "33",
    "waiting": "33",
    "interrupted": "33",
    "queued": "90",
    "pending": "90",
    "skipped": "90",
    "cancelled": "35",
}


def color(text: str, state: str, stream: TextIO) -> str:
    code = _COLORS.get(state)
    if code is None or not stream.isatty():
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def short_id(value: str) -> str:
    """An id as a table shows it: its last 12 characters. Ids begin with the time they were
    made, so their ends tell them apart; ``evflow show`` takes such an end back."""
    return value if len(value) <= 12 else value[-12:]


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def table(
    rows: Sequence[Sequence[Any]],
    headers: Sequence[str],
    stream: TextIO = sys.stdout,
    state_col: int | None = None,
) -> None:
    """Print an aligned table; ``state_col`` is coloured by state on a terminal."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    stream.write(
        "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n"
    )
    for row in cells:
        parts = []
        for i, (c, w) in enumerate(zip(row, widths, strict=True)):
            text = c.ljust(w)
            parts.append(color(text, c, stream) if i == state_col else text)
        stream.write("  ".join(parts).rstrip() + "\n")


def _short_json(value: Any, limit: int = 80) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_run(
    run: RunRecord,
    logs: Iterable[LogRecord] = (),
    *,
    stream: TextIO = sys.stdout,
    log_lines: int = 20,
) -> None:
    """The ``evflow show`` view: header, tasks, errors and log tails."""
    w = stream.write
    w(f"run      {run.id}\n")
    w(f"flow     {run.flow} (version {run.flow_version})\n")
    w(f"state    {color(str(run.state), str(run.state), stream)}")
    w(f"  — waiting: {run.waiting}\n" if run.waiting else "\n")
    w(f"params   {_short_json(dict(run.params), 200)}\n")
    w(f"trigger  {_short_json(dict(run.trigger), 200)}\n")
    w(
        f"created  {fmt_time(run.created_at)}   started {fmt_time(run.started_at)}   "
        f"ended {fmt_time(run.ended_at)}   duration {fmt_duration(run.duration_s)}\n"
    )
    if run.error:
        w(f"error    {run.error}\n")
    w("\n")
    shown = [t for t in run.tasks if t.map_index is None]
    mapped = [t for t in run.tasks if t.map_index is not None]
    rows = []
    for t in shown:
        kids = [m for m in mapped if m.node == t.name]
        note = t.waiting or (t.error or "")
        if kids:
            counts: dict[str, int] = {}
            for k in kids:
                counts[str(k.state)] = counts.get(str(k.state), 0) + 1
            note = (
                (note + "  " if note else "")
                + f"{len(kids)} instances: "
                + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            )
        rows.append(
            [
                t.name,
                str(t.state),
                t.attempt,
                fmt_duration(t.duration_s),
                note.splitlines()[0][:100] if note else "",
            ]
        )
    table(rows, ["task", "state", "attempts", "duration", "note"], stream, state_col=1)
    by_task: dict[str, list[LogRecord]] = {}
    for rec in logs:
        by_task.setdefault(rec.task, []).append(rec)
    failed: list[TaskRecord] = [
        t for t in run.tasks if t.traceback or (t.error and str(t.state) == "failed")
    ]
    for t in failed[:5]:
        w(f"\n── {t.name}: {t.error}\n")
        if t.traceback:
            w(t.traceback.rstrip() + "\n")
    if len(failed) > 5:
        w(f"\n… and {len(failed) - 5} more failed task instances\n")
    for task_name, recs in by_task.items():
        w(f"\n── logs of {task_name} ({len(recs)} line(s), last {min(len(recs), log_lines)})\n")
        for r in recs[-log_lines:]:
            w(f"{fmt_time(r.time)} {r.level:<7} [attempt {r.attempt}] {r.message}\n")


class Progress:
    """Live per-task progress of one run.

    On a terminal the task table is redrawn in place; otherwise each state change is one line,
    which reads well in CI logs.
    """

    def __init__(self, flow: str, task_names: Sequence[str], stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.flow = flow
        self.live = stream.isatty()
        self.order = list(task_names)
        self.states: dict[str, tuple[str, int, float | None, float | None, str]] = {
            n: ("pending", 0, None, None, "") for n in task_names
        }
        self.mapped: dict[str, dict[str, str]] = {}
        self._drawn = 0
        self._last = 0.0

    def update(
        self,
        name: str,
        node: str,
        state: str,
        attempt: int,
        started: float | None,
        ended: float | None,
        note: str = "",
    ) -> None:
        if name != node:
            self.mapped.setdefault(node, {})[name] = state
            if not self.live:
                return
        else:
            self.states[name] = (state, attempt, started, ended, note)
            if not self.live:
                extra = f" (attempt {attempt})" if attempt > 1 else ""
                msg = f": {note.splitlines()[0]}" if note and state != "succeeded" else ""
                self.stream.write(f"  {name:<24} {state}{extra}{msg}\n")
                self.stream.flush()
                return
        now = time.monotonic()
        if now - self._last > 0.05 or state in ("succeeded", "failed"):
            self._last = now
            self.draw()

    def draw(self) -> None:
        if not self.live:
            return
        lines = []
        for n in self.order:
            state, attempt, started, ended, note = self.states[n]
            kids = self.mapped.get(n)
            if kids:
                done = sum(1 for s in kids.values() if s == "succeeded")
                note = f"{done}/{len(kids)} instances done"
            dur = (ended or time.time()) - started if started else None
            lines.append(
                f"  {color(f'{state:<16}', state, self.stream)} {n:<28} "
                f"{fmt_duration(dur):>8}  {('x' + str(attempt)) if attempt > 1 else ''}"
                f" {note.splitlines()[0][:60] if note else ''}".rstrip()
            )
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        for line in lines:
            self.stream.write("\x1b[2K" + line + "\n")
        self._drawn = len(lines)
        self.stream.flush()


def params_from_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs; each value is read as JSON when it parses, else as a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} is not of the form key=value")
        try:
            out[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[key] = raw
    return out


class RunShown(RunWithTasks):
    """What ``evflow show --json`` prints: the API's run with its tries and its log lines."""

    attempts: list[Attempt]
    logs: list[LogLine]


def dump_json(value: Any, stream: TextIO = sys.stdout) -> None:
    stream.write(
        orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    )


def state_counts(runs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in runs:
        out[str(r["state"])] = out.get(str(r["state"]), 0) + 1
    return out
