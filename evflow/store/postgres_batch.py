"""One batch of the PostgreSQL store, written on one connection inside its transaction: every
table's rows in one statement each, sent in pipeline mode, and the audit records appended to
the writer's own chain (:mod:`evflow.store.chains`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from ..errors import OwnershipLost
from ..events import parse_time
from . import postgres_sql as sql
from .base import AuditEntry, Rows
from .batching import Op, first_copies, gather, last_by_key, last_runs, last_tasks, settle_events
from .chains import SYSTEM_CHAIN, WriterChain, append
from .postgres_arrays import TEXT, arrays
from .postgres_instances import FENCE, NOTIFY_EVENTS, NOTIFY_RUN_ENDS, RUN_ENDS_PAYLOAD

__all__ = ["PostgresBatch"]


class PostgresBatch:
    """How :class:`~evflow.store.postgres.PostgresStore` writes a batch."""

    _chain: WriterChain
    instance_id: str | None
    path: str

    @staticmethod
    async def _head(conn: psycopg.AsyncConnection[Any], chain: str) -> tuple[int, str] | None:
        """The stored head of ``chain`` (locked until the transaction ends), if it has one."""
        return await _fetch_head(await conn.execute(sql.AUDIT_HEAD, (chain,)))

    async def _apply(self, conn: psycopg.AsyncConnection[Any], batch: list[Op]) -> str | None:
        """Write the batch; returns this writer's audit chain's new head, if it appended."""
        now = time.time()
        for op in batch:
            if op.rows is not None:
                await self._import(conn, op.rows)
        event_ops = [op for op in batch if op.events]
        g = gather(batch)
        cursors = g.cursors
        dead = [sql.dead_row(dl_id, d) for dl_id, d in g.dead]
        new_runs = [(ch, sql.run_row(r)) for ch, r in g.new_runs]
        new_tasks = [sql.task_row(t) for t in g.new_tasks]
        runs = [sql.run_row(r) for r in last_runs(g.runs)]
        tasks = [sql.task_row(t) for t in last_tasks(g.tasks)]
        attempts = [sql.attempt_row(a) for a in g.attempts]
        logs = [sql.log_row(lg) for lg in g.logs]
        processed = g.processed
        audit_entries = g.audit

        # This writer's chain's head first (its own: no other writer waits on it; opening the
        # chain also locks the system chain's head, once per writer). In pipeline mode every
        # statement goes out before any answer is read: the answers needed (the heads, which
        # events were new, which runs were created) come back together, in one round trip.
        fence_cur = None
        if self.instance_id is not None:  # cluster mode: commit only while in the cluster
            fence_cur = await conn.execute(FENCE, (self.instance_id,))
        head_cur = system_cur = None
        if audit_entries or event_ops:
            if not self._chain.opened:
                system_cur = await conn.execute(sql.AUDIT_HEAD, (SYSTEM_CHAIN,))
            head_cur = await conn.execute(sql.AUDIT_HEAD, (self._chain.name,))
        sent = await self._send_events(conn, event_ops, now) if event_ops else None
        if event_ops and self.instance_id is not None:
            # Wakes the leader, which decides on events other instances accepted (a hint,
            # delivered at commit; the leader also polls).
            await conn.execute(NOTIFY_EVENTS)
        if cursors:
            await _unnest(conn, sql.CURSORS, cursors.items())
        if dead:
            await _unnest(conn, sql.DEAD, dead, now)
        runs_cur = None
        if new_runs:
            run_rows = [row for _, row in new_runs]
            runs_cur = await conn.execute(
                sql.RUNS_AND_TASKS_NEW,
                [*arrays(run_rows, sql.RUN_SELECT), *arrays(new_tasks, sql.TASK_INTO)],
            )
        if runs:
            await _unnest(conn, sql.RUNS, runs)
            if self.instance_id is not None:
                await _notify_ends(conn, [r.id for r in g.runs if r.state.finished])
        if tasks:
            await _unnest(conn, sql.TASKS, tasks)
        if attempts:
            await _unnest(conn, sql.ATTEMPTS, last_by_key(attempts, 3))
        if logs:
            await _unnest(conn, sql.LOGS, logs)
        if processed:
            await conn.execute(sql.PROCESSED, (TEXT(processed),))

        if fence_cur is not None and await fence_cur.fetchone() is None:
            raise OwnershipLost(
                f"instance {self.instance_id} was taken over by another instance on {self.path} "
                "(it was silent past its TTL); its writes are refused"
            )
        head = None if head_cur is None else await _fetch_head(head_cur)
        system = None if system_cur is None else await _fetch_head(system_cur)
        if sent is not None:
            # Every event that enters is on the audit trail, in the transaction storing it.
            audit_entries[:0] = await self._events_received(conn, event_ops, sent, now)
        if runs_cur is not None:
            created = {r[0] for r in await runs_cur.fetchall()}
            claimed: set[str] = set()
            for ch, row in new_runs:
                if row[0] in created and row[0] not in claimed:
                    claimed.add(row[0])
                    ch.created_runs.add(row[0])
        if not audit_entries or head_cur is None:
            return None
        if head is None and system_cur is None:  # opened, yet its head is gone: start anew
            system = await self._head(conn, SYSTEM_CHAIN)
        appended = append(audit_entries, self._chain, head, system, now)
        await conn.execute(
            sql.AUDIT_APPEND,
            [
                *arrays(appended.heads, sql.AUDIT_HEADS),
                *arrays(appended.rows, sql.AUDIT),
            ],
        )
        return appended.head

    @staticmethod
    async def _import(conn: psycopg.AsyncConnection[Any], rows: Rows) -> None:
        """Write copied rows as they are."""
        if rows.events:
            await _unnest(
                conn,
                sql.IMPORT_EVENTS,
                [
                    (e.uid, e.id, e.dedup_key, e.type, e.source, e.subject,
                     parse_time(e.time), sql.dumps(e.data), sql.dumps(dict(e.extensions)),
                     e.received_at, e.status)
                    for e in rows.events
                ],
            )  # fmt: skip
        if rows.runs:
            await _unnest(conn, sql.RUNS, [sql.run_row(r) for r in rows.runs])
            tasks = [sql.task_row(t) for r in rows.runs for t in r.tasks]
            if tasks:
                await _unnest(conn, sql.TASKS, tasks)
        if rows.attempts:
            attempts = [sql.attempt_row(a) for a in rows.attempts]
            await _unnest(conn, sql.ATTEMPTS, attempts)
        if rows.logs:
            logs = [sql.log_row(lg) for lg in rows.logs]
            await _unnest(conn, sql.LOGS, logs)
        for d in rows.dead_letters:
            await conn.execute(
                "INSERT INTO dead_letters (id, source, reason, payload, headers, received_at) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, to_timestamp(%s)) ON CONFLICT DO NOTHING",
                (d.id, d.source, d.reason, d.payload, sql.dumps(dict(d.headers)), d.received_at),
            )
        if rows.cursors:
            await _unnest(conn, sql.CURSORS, rows.cursors.items())
        if rows.duplicates:
            await _unnest(conn, sql.DUPS, rows.duplicates.items())
        if rows.audit:
            await _unnest(conn, sql.AUDIT_IMPORT, rows.audit)
            await conn.execute(sql.AUDIT_SEQ_PAST)
        if rows.audit_heads:
            heads = [(c, p, h) for c, (p, h) in rows.audit_heads.items()]
            await _unnest(conn, sql.AUDIT_HEADS, heads)
        if rows.audit_anchors:
            anchors = [(c, p, h) for c, (p, h) in rows.audit_anchors.items()]
            await _unnest(conn, sql.AUDIT_ANCHORS, anchors)

    async def _send_events(
        self, conn: psycopg.AsyncConnection[Any], ops: list[Op], now: float
    ) -> tuple[psycopg.AsyncCursor[Any], dict[str, str]]:
        """Send the events' insert and the read of which copy each dedup key kept; the
        answer is read later (:meth:`_events_received`)."""
        first = first_copies(ops)
        rows = []
        for op in ops:
            for ev in op.events:
                rows.append(
                    (
                        ev.uid,
                        ev.id,
                        ev.dedup_key,
                        ev.type,
                        ev.source,
                        ev.subject,
                        ev.time,
                        sql.dumps(ev.data),
                        sql.dumps(dict(ev.extensions)),
                    )
                )
        await _unnest(conn, sql.EVENTS, rows, now)
        cur = await conn.execute(
            "SELECT dedup_key, uid FROM events WHERE dedup_key = ANY(%b::text[])",
            (TEXT(list(first)),),
        )
        return cur, first

    async def _events_received(
        self,
        conn: psycopg.AsyncConnection[Any],
        ops: list[Op],
        sent: tuple[psycopg.AsyncCursor[Any], dict[str, str]],
        now: float,
    ) -> list[AuditEntry]:
        """Each op's results (new or repeat) and the ``event.received`` records of the new."""
        cur, first = sent
        stored: dict[str, str] = {k: u for k, u in await cur.fetchall()}
        received, dup_counts = settle_events(ops, first, stored, now)
        if dup_counts:
            await _unnest(conn, sql.DUPS, dup_counts.items())
        return received


async def _unnest(
    conn: psycopg.AsyncConnection[Any], statement: str, rows: Iterable[Sequence[Any]], *first: Any
) -> psycopg.AsyncCursor[Any]:
    """Run ``statement`` over ``rows``, one array per column after the plain parameters
    ``first``."""
    return await conn.execute(statement, [*first, *arrays(rows, statement)])


async def _notify_ends(conn: psycopg.AsyncConnection[Any], run_ids: list[str]) -> None:
    """Tell the cluster, at commit, which runs ended (as few notifications as the server's
    payload limit allows)."""
    chunk: list[str] = []
    size = 0
    for run_id in run_ids:
        n = len(run_id.encode()) + 1  # and the space before the next
        if chunk and size + n > RUN_ENDS_PAYLOAD:
            await conn.execute(NOTIFY_RUN_ENDS, (" ".join(chunk),))
            chunk, size = [], 0
        chunk.append(run_id)
        size += n
    if chunk:
        await conn.execute(NOTIFY_RUN_ENDS, (" ".join(chunk),))


async def _fetch_head(cur: psycopg.AsyncCursor[Any]) -> tuple[int, str] | None:
    row = await cur.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))
