"""One retention step on PostgreSQL, in the caller's transaction (see :mod:`.retention`)."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from . import postgres_sql as sql
from .base import PruneStep
from .chains import SYSTEM_CHAIN, system_head
from .retention import anchors_to_name, audit_cut, pruned_record

__all__ = ["prune_step"]

_FINISHED = "('succeeded', 'failed', 'cancelled')"

# A run retried meanwhile is queued again: the delete checks the state once more on the row
# as it is now, and keeps it.
_RUNS = f"""
WITH gone AS (
    DELETE FROM runs WHERE id IN (
        SELECT id FROM runs
        WHERE created_at < to_timestamp(%(before)s) AND state IN {_FINISHED}
          AND (ended_at IS NULL OR ended_at < to_timestamp(%(before)s))
        ORDER BY created_at LIMIT %(max_runs)s
    ) AND state IN {_FINISHED}
    RETURNING id
), tasks_gone AS (
    DELETE FROM tasks WHERE run_id IN (SELECT id FROM gone)
), attempts_gone AS (
    DELETE FROM attempts WHERE run_id IN (SELECT id FROM gone)
), logs_gone AS (
    DELETE FROM logs WHERE run_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone
"""
_CUT = """
SELECT (SELECT min(seq) FROM audit WHERE time >= %(before)s),
       (SELECT seq FROM audit ORDER BY seq OFFSET %(skip)s LIMIT 1),
       (SELECT max(seq) FROM audit)
"""
_LAST_PRUNED = (
    "SELECT chain, pos, hash FROM audit "
    "WHERE seq IN (SELECT max(seq) FROM audit WHERE seq <= %s GROUP BY chain)"
)
_ANCHORS = "SELECT chain, pos, hash, named_by FROM audit_anchors FOR UPDATE"
_RECORD = (
    "INSERT INTO audit (chain, pos, time, kind, subject, actor, data, prev_hash, hash) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING seq"
)
_SET_ANCHORS = """
INSERT INTO audit_anchors (chain, pos, hash, named_by)
SELECT c, p, h, %s FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS v(c, p, h)
ON CONFLICT (chain) DO UPDATE
SET pos = excluded.pos, hash = excluded.hash, named_by = excluded.named_by
"""


async def _one(conn: psycopg.AsyncConnection[Any], query: str, params: Any) -> Any:
    row = await (await conn.execute(query, params)).fetchone()
    assert row is not None
    return row


async def prune_step(
    conn: psycopg.AsyncConnection[Any], before: float, max_runs: int, max_records: int
) -> PruneStep:
    """Remove up to ``max_runs`` runs and ``max_records`` audit records from before
    ``before``, in the transaction open on ``conn``."""
    # The system chain's head, locked first: one step at a time, and no chain opens meanwhile.
    system = system_head(await (await conn.execute(sql.AUDIT_HEAD, (SYSTEM_CHAIN,))).fetchone())
    (runs,) = await _one(conn, _RUNS, {"before": before, "max_runs": max_runs})
    first_new, nth, last = await _one(conn, _CUT, {"before": before, "skip": max_records - 1})
    cut, more_records = audit_cut(first_new, nth, last)
    records = 0
    last_pruned: list[Any] = []
    if cut is not None:
        last_pruned = await (await conn.execute(_LAST_PRUNED, (cut,))).fetchall()
        records = (await conn.execute("DELETE FROM audit WHERE seq <= %s", (cut,))).rowcount
    if not runs and not records:
        return PruneStep(0, 0, False)
    stored = await (await conn.execute(_ANCHORS)).fetchall()
    named = anchors_to_name(last_pruned, stored, cut or 0)
    row = pruned_record(before, runs, records, named, system, time.time())
    (seq,) = await _one(conn, _RECORD, row)
    chains = sorted(named)
    await conn.execute(
        _SET_ANCHORS,
        (seq, chains, [named[c][0] for c in chains], [named[c][1] for c in chains]),
    )
    await conn.execute(
        "UPDATE audit_heads SET pos = %s, hash = %s WHERE chain = %s",
        (row[1], row[8], SYSTEM_CHAIN),
    )
    return PruneStep(runs, records, runs == max_runs or more_records)
