"""A run's timeline: where its time went, as bars of waiting and running per task.

Pure functions (no I/O) from a run's task records, attempt records and limit waits (the audit
trail's ``task.waiting`` entries) to rows of bars on one time axis, for the UI's Gantt chart:

* ``waiting`` from when a task was queued to its first start, and between a failed try and the
  next one (the retry delay), with why when a pool or limit held it;
* ``running`` for each try, retries as separate bars, coloured by how the try ended.

A mapped task is one row: it spans its instances' earliest queue time to their latest end, with
counts by state, so a run of 10,000 instances stays 1 row, not 10,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..frozen import record
from ..records import AttemptRecord, TaskRecord

__all__ = ["Bar", "MappedSpan", "Row", "node_state", "timeline_rows"]

# The state a group of instances shows, in order of what matters most to a reader.
_ACTIVE = ("running", "retrying", "waiting", "interrupted", "pending")
_BAD = ("failed", "upstream_failed", "cancelled")


def node_state(counts: Mapping[str, int]) -> str:
    """The one state shown for a mapped task from its instances' counts by state."""
    for st in (*_ACTIVE, *_BAD):
        if counts.get(st):
            return st
    if counts.get("succeeded"):
        return "succeeded"
    return "skipped" if counts.get("skipped") else "pending"


@dataclass(slots=True)
class Bar:
    """One span of a row: ``kind`` is ``waiting`` or ``running``; ``end`` None means still on."""

    kind: str
    start: float
    end: float | None
    state: str
    attempt: int | None = None
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "state": self.state,
            "attempt": self.attempt,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Row:
    """One task (or one mapped task with ``count`` instances) and its bars."""

    task: str
    state: str
    mapped: bool = False
    count: int = 1
    counts: dict[str, int] = field(default_factory=dict)
    bars: list[Bar] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "state": self.state,
            "mapped": self.mapped,
            "count": self.count,
            "counts": self.counts,
            "bars": [b.json() for b in self.bars],
        }


def _reason(waits: Sequence[tuple[float, str]], start: float, end: float | None) -> str | None:
    """The last limit reason recorded inside ``[start, end]``, if any."""
    found = None
    for t, reason in waits:
        if t >= start - 1e-6 and (end is None or t <= end + 1e-6):
            found = reason
    return found


def _task_bars(
    task: TaskRecord, attempts: Sequence[AttemptRecord], waits: Sequence[tuple[float, str]]
) -> list[Bar]:
    bars: list[Bar] = []
    tries = sorted(attempts, key=lambda a: a.attempt)
    # The try in progress has no attempt record yet: the task record describes it.
    if (
        task.attempt
        and task.started_at is not None
        and task.attempt not in {a.attempt for a in tries}
    ):
        tries.append(
            AttemptRecord(
                task.run_id,
                task.name,
                task.attempt,
                task.state,
                task.started_at,
                task.ended_at,
                task.error,
            )
        )
    cursor = task.queued_at
    for a in tries:
        if a.started_at is None:
            continue
        if cursor is not None and a.started_at > cursor:
            why = _reason(waits, cursor, a.started_at)
            if why is None and a.attempt > 1:
                why = "retry delay"
            bars.append(Bar("waiting", cursor, a.started_at, "waiting", a.attempt, why))
        bars.append(Bar("running", a.started_at, a.ended_at, str(a.state), a.attempt))
        cursor = a.ended_at
    if task.state in ("pending", "waiting", "retrying") and cursor is not None:
        why = task.waiting or _reason(waits, cursor, None)
        bars.append(Bar("waiting", cursor, None, "waiting", (task.attempt or 0) + 1, why))
    return bars


@record
class MappedSpan:
    """A mapped task's instances summed up: first queued, first started, last ended, how many
    are running now, and counts by state."""

    node: str
    queued_at: float | None
    started_at: float | None
    ended_at: float | None
    running: int
    counts: dict[str, int]


def _mapped_row(span: MappedSpan) -> Row:
    state = node_state(span.counts)
    row = Row(
        span.node, state, mapped=True, count=sum(span.counts.values()), counts=dict(span.counts)
    )
    if (
        span.queued_at is not None
        and span.started_at is not None
        and span.started_at > span.queued_at
    ):
        row.bars.append(Bar("waiting", span.queued_at, span.started_at, "waiting"))
    if span.started_at is not None:
        still = span.running > 0 or state in _ACTIVE
        row.bars.append(Bar("running", span.started_at, None if still else span.ended_at, state))
    elif span.queued_at is not None:
        row.bars.append(Bar("waiting", span.queued_at, None, "waiting"))
    return row


def timeline_rows(
    tasks: Iterable[TaskRecord],
    attempts: Iterable[AttemptRecord],
    waits: Iterable[tuple[str, float, str]],
    order: Sequence[str] = (),
    mapped: Iterable[MappedSpan] = (),
) -> list[Row]:
    """Rows for the run's plain tasks and its mapped tasks (``mapped``, one row each), in
    ``order`` (the flow's task order) then by first start."""
    by_task: dict[str, list[AttemptRecord]] = {}
    for a in attempts:
        by_task.setdefault(a.task, []).append(a)
    waits_of: dict[str, list[tuple[float, str]]] = {}
    for name, at, reason in waits:
        waits_of.setdefault(name, []).append((at, reason))
    spans = {m.node: m for m in mapped}
    rows: list[Row] = []
    for t in tasks:
        if t.map_index is not None or t.name in spans:
            continue  # an instance, or a mapped task's own record: its span tells its story
        bars = _task_bars(t, by_task.get(t.name, []), waits_of.get(t.name, []))
        rows.append(Row(t.name, str(t.state), counts={str(t.state): 1}, bars=bars))
    rows += [_mapped_row(m) for m in spans.values()]
    rank = {name: i for i, name in enumerate(order)}
    rows.sort(
        key=lambda r: (
            rank.get(r.task, len(rank)),
            min((b.start for b in r.bars), default=float("inf")),
        )
    )
    return rows
