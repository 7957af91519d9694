"""One retention step on SQLite, in the writer's open transaction (see :mod:`.retention`)."""

from __future__ import annotations

import sqlite3
import time

from . import sqlite_sql as sql
from .base import PruneStep
from .chains import SYSTEM_CHAIN, system_head
from .retention import anchors_to_name, audit_cut, pruned_record

__all__ = ["prune_step"]

_RUNS = (
    "SELECT id FROM runs WHERE created_at < ? AND state IN ('succeeded', 'failed', 'cancelled') "
    "AND (ended_at IS NULL OR ended_at < ?) ORDER BY created_at LIMIT ?"
)
_LAST_PRUNED = (
    "SELECT chain, pos, hash FROM audit "
    "WHERE seq IN (SELECT max(seq) FROM audit WHERE seq <= ? GROUP BY chain)"
)
_SET_ANCHOR = (
    "INSERT INTO audit_anchors (chain, pos, hash, named_by) VALUES (?,?,?,?) "
    "ON CONFLICT(chain) DO UPDATE SET pos = excluded.pos, hash = excluded.hash, "
    "named_by = excluded.named_by"
)


def _value(conn: sqlite3.Connection, query: str, params: tuple[object, ...] = ()) -> int | None:
    row = conn.execute(query, params).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def prune_step(
    conn: sqlite3.Connection, before: float, max_runs: int, max_records: int
) -> PruneStep:
    """Remove up to ``max_runs`` runs and ``max_records`` audit records from before
    ``before``, in the transaction open on ``conn`` (the writer's: no one writes meanwhile)."""
    system = system_head(conn.execute(sql.HEAD, (SYSTEM_CHAIN,)).fetchone())
    gone = [(r[0],) for r in conn.execute(_RUNS, (before, before, max_runs))]
    for table in ("tasks", "attempts", "logs"):
        conn.executemany(f"DELETE FROM {table} WHERE run_id = ?", gone)
    conn.executemany("DELETE FROM runs WHERE id = ?", gone)
    cut, more_records = audit_cut(
        # the trail in the order written, from its start: only the old records are read
        _value(conn, "SELECT seq FROM audit WHERE time >= ? ORDER BY seq LIMIT 1", (before,)),
        _value(conn, "SELECT seq FROM audit ORDER BY seq LIMIT 1 OFFSET ?", (max_records - 1,)),
        _value(conn, "SELECT max(seq) FROM audit"),
    )
    records = 0
    last_pruned: list[tuple[str, int, str]] = []
    if cut is not None:
        last_pruned = conn.execute(_LAST_PRUNED, (cut,)).fetchall()
        records = conn.execute("DELETE FROM audit WHERE seq <= ?", (cut,)).rowcount
    if not gone and not records:
        return PruneStep(0, 0, False)
    stored = conn.execute("SELECT chain, pos, hash, named_by FROM audit_anchors").fetchall()
    named = anchors_to_name(last_pruned, stored, cut or 0)
    row = pruned_record(before, len(gone), records, named, system, time.time())
    seq = conn.execute(sql.AUDIT, row).lastrowid
    conn.executemany(_SET_ANCHOR, [(c, p, h, seq) for c, (p, h) in named.items()])
    conn.execute(sql.HEADS, (SYSTEM_CHAIN, row[1], row[8]))
    return PruneStep(len(gone), records, len(gone) == max_runs or more_records)
