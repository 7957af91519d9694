"""Retention: pruning runs that ended long ago, and the audit records from before then,
without breaking the audit trail's verification.

What goes, for a cut-off time: finished runs created and ended before it, with their tasks,
attempts and logs; and the audit trail's oldest records, in the order written, up to the last
one before the first record at or after the cut-off (so what is pruned is a prefix of every
chain). What stays: unfinished runs; events, whose dedup keys keep a redelivered old event from
starting a run again; dead letters and cursors.

A chain that lost records is *anchored*: the position and hash of its last pruned record are
kept in ``audit_anchors``, and verification takes that chain up from there. Each pruning step
appends an ``audit.pruned`` record to the system chain naming the anchors it set, and naming
again every anchor whose last naming record it pruned. So the trail's last naming of each
anchor is always there. An anchor edited by hand, to hide records deleted from the start of a
chain, no longer matches it.

A store prunes in bounded steps (:meth:`~evflow.store.base.Store.prune_step`), each one
transaction, so writers never wait long; :func:`prune` runs steps until nothing is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.lowlevel

from ..audit_kinds import AuditKind
from .base import AuditEntry, PruneStep, Store
from .chains import SYSTEM_CHAIN, chain_rows

__all__ = [
    "DAY_S",
    "PruneReport",
    "PruneStep",
    "anchors_to_name",
    "audit_cut",
    "cut_off",
    "prune",
    "pruned_anchors",
    "pruned_record",
]

DAY_S = 86_400.0
STEP_RUNS = 1_000
STEP_RECORDS = 20_000


@dataclass(slots=True)
class PruneReport:
    """What :func:`prune` removed in all: runs (with their tasks, attempts and logs) and audit
    records from before ``before`` (a unix time)."""

    before: float
    runs: int = 0
    records: int = 0
    steps: int = 0


def cut_off(keep_days: float, now: float | None = None) -> float:
    """The unix time before which data goes, keeping ``keep_days`` days."""
    if not keep_days > 0:
        raise ValueError(f"keep_days must be more than 0, not {keep_days!r}")
    return (time.time() if now is None else now) - keep_days * DAY_S


def pruned_record(
    before: float,
    runs: int,
    records: int,
    anchors: Mapping[str, tuple[int, str]],
    system: tuple[int, str],
    now: float,
) -> tuple[Any, ...]:
    """The ``audit.pruned`` row ``(chain, pos, time, kind, subject, actor, data, prev_hash,
    hash)`` continuing the system chain from its head ``system``: what a step removed and the
    anchors it names, ``{chain: (pos, hash)}``."""
    entry = AuditEntry(
        AuditKind.AUDIT_PRUNED,
        "audit",
        {
            "before": before,
            "runs": runs,
            "records": records,
            "anchors": {c: [p, h] for c, (p, h) in sorted(anchors.items())},
        },
        time=now,
    )
    (row,) = chain_rows([entry], SYSTEM_CHAIN, system[0], system[1], now)
    return row


def audit_cut(first_new: int | None, nth: int | None, last: int | None) -> tuple[int | None, bool]:
    """The sequence number up to which a step prunes the trail, and whether older records
    remain past it: ``first_new`` is the first record at or after the cut-off, ``nth`` the
    last record a step may take, ``last`` the trail's last record (None: none)."""
    old_end = first_new - 1 if first_new is not None else last
    if old_end is None:
        return None, False
    if nth is not None and nth < old_end:
        return nth, True
    return old_end, False


def anchors_to_name(
    last_pruned: Sequence[tuple[str, int, str]],
    stored: Sequence[tuple[str, int, str, int]],
    cut: int,
) -> dict[str, tuple[int, str]]:
    """The anchors a step's ``audit.pruned`` record names: each chain's last record pruned
    now (``last_pruned``: chain, pos, hash), and each ``stored`` anchor (chain, pos, hash,
    seq of the record that last named it) whose naming record is pruned now (up to ``cut``)."""
    named = {c: (int(p), str(h)) for c, p, h, by in stored if by <= cut}
    named.update({c: (int(p), str(h)) for c, p, h in last_pruned})
    return named


def pruned_anchors(data: Any) -> dict[str, tuple[int, str]]:
    """The anchors an ``audit.pruned`` record names (its data, decoded)."""
    named = data.get("anchors", {}) if isinstance(data, dict) else {}
    return {str(c): (int(v[0]), str(v[1])) for c, v in named.items()}


async def prune(
    store: Store,
    keep_days: float,
    *,
    now: float | None = None,
    step_runs: int = STEP_RUNS,
    step_records: int = STEP_RECORDS,
    progress: Callable[[PruneReport], None] | None = None,
) -> PruneReport:
    """Prune what is older than ``keep_days`` days from ``store``, a step at a time.

    ``progress`` is called after each step that removed something.
    """
    report = PruneReport(cut_off(keep_days, now))
    while True:
        step = await store.prune_step(report.before, max_runs=step_runs, max_records=step_records)
        if step.runs or step.records:
            report.runs += step.runs
            report.records += step.records
            report.steps += 1
            if progress is not None:
                progress(report)
        if not step.more:
            return report
        await anyio.lowlevel.checkpoint()  # other writers go between steps
