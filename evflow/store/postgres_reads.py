"""The PostgreSQL store's reads: every query the engine, the API and the CLI make, through
the pool, each on a connection of its own (autocommit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - the extra is missing
    from ..errors import StoreError

    raise StoreError("PostgreSQL support is not installed: pip install 'evflow[postgres]'") from exc

from ..errors import StoreError, StoreUnavailable
from ..records import (
    AttemptRecord,
    AuditRecord,
    DeadLetterRecord,
    EventRecord,
    LogRecord,
    RunRecord,
    TaskRecord,
)
from ..states import TaskState
from . import postgres_sql as sql
from .queries import (
    MAPPED,
    PLAIN,
    audit_query,
    audit_record,
    event_filter,
    like_prefix,
    like_short_id,
    one_event,
    one_run,
    run_filter,
    split_counts,
    task_filter,
    total_from_page,
    waits_of,
)

__all__ = ["PostgresReads"]

CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def _timestamp(mark: str) -> str:
    return f"to_timestamp({mark})"


class PostgresReads:
    """The reads of :class:`~evflow.store.postgres.PostgresStore`."""

    path: str
    _pool: AsyncConnectionPool | None
    statement_timeout_s: float

    async def _statement(self, query: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """One statement on a connection of the pool (autocommit): its rows.

        Once sent it runs to its end, and the connection goes back to the pool, even if the
        caller is cancelled meanwhile: psycopg, cancelled mid-statement, cancels it on the
        server, and when that is cancelled too (anyio cancels every await in a cancelled scope)
        it discards the connection. Bounded past the server's ``statement_timeout``, should the
        server stop answering.
        """
        pool = self._pool
        if pool is None:
            raise StoreError(f"the store {self.path} is not open (use `async with`)")
        with anyio.fail_after(self.statement_timeout_s + 5.0, shield=True):
            async with pool.connection() as conn:
                cur = await conn.execute(query.encode(), params)
                return await cur.fetchall()

    def _unreachable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(
            f"the database of store {self.path} cannot be reached ({exc}); retry later"
        )

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        for tries_left in (1, 0):  # a read is safe to repeat on a fresh connection
            try:
                return await self._statement(query, params)
            except CONNECTION_ERRORS as exc:
                if not tries_left:
                    raise self._unreachable(exc) from None
        raise AssertionError("unreachable")

    async def get_run(self, run_id: str, *, with_tasks: bool = True) -> RunRecord:
        rows = await self._read(f"SELECT {sql.RUN_COLS} FROM runs WHERE id = %s", (run_id,))
        if not rows:
            rows = (
                await self._read(
                    f"SELECT {sql.RUN_COLS} FROM runs "
                    "WHERE id LIKE %s ESCAPE '\\' OR id LIKE %s ESCAPE '\\' LIMIT 6",
                    like_short_id(run_id),
                )
                if len(run_id) >= 4
                else []
            )
            rows = [one_run(run_id, rows, self.path)]
        tasks: tuple[TaskRecord, ...] = ()
        if with_tasks:
            trows = await self._read(
                f"SELECT {sql.TASK_COLS} FROM tasks WHERE run_id = %s "
                "ORDER BY queued_at NULLS LAST, name",
                (rows[0][0],),
            )
            tasks = tuple(sql.task_from(r) for r in trows)
        return sql.run_from(rows[0], tasks)

    async def run_exists(self, run_id: str) -> bool:
        return bool(await self._read("SELECT 1 FROM runs WHERE id = %s", (run_id,)))

    @staticmethod
    def _run_filter(
        flow: str | None,
        state: str | None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[str, list[Any]]:
        return run_filter(flow, state, since, until, mark="%s", instant=_timestamp)

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        where, params = self._run_filter(flow, state, since, until)
        rows = await self._read(
            f"SELECT {sql.RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id "
            "LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [sql.run_from(r) for r in rows]

    async def count_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        where, params = self._run_filter(flow, state, since, until)
        rows = await self._read(f"SELECT count(*) FROM runs{where}", params)
        return int(rows[0][0])

    async def unfinished_runs(self) -> list[RunRecord]:
        rows = await self._read(
            f"SELECT {sql.RUN_COLS} FROM runs WHERE state IN ('queued', 'running') "
            "ORDER BY priority DESC, created_at"
        )
        if not rows:
            return []
        trows = await self._read(
            f"SELECT {sql.TASK_COLS} FROM tasks WHERE run_id = ANY(%b::text[])",
            ([r[0] for r in rows],),
        )
        by_run: dict[str, list[TaskRecord]] = {}
        for t in trows:
            by_run.setdefault(t[0], []).append(sql.task_from(t))
        return [sql.run_from(r, tuple(by_run.get(r[0], ()))) for r in rows]

    async def list_attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = await self._read(
            f"SELECT run_id, task, attempt, state, {sql.epoch('started_at')}, "
            f"{sql.epoch('ended_at')}, error, instance FROM attempts "
            "WHERE run_id = %s ORDER BY started_at, task, attempt",
            (run_id,),
        )
        return [
            AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6], r[7]) for r in rows
        ]

    async def task_counts(
        self, run_ids: Sequence[str]
    ) -> list[tuple[str, str, str, int, int, bool]]:
        if not run_ids:
            return []
        # One group per node and state, counting a mapped task's instances and its own record
        # apart (the GROUP BY follows the tasks_by_node index).
        rows = await self._read(
            "SELECT run_id, node, state, count(*) - count(map_index), "
            "max(attempt) FILTER (WHERE map_index IS NULL), count(map_index), "
            "max(attempt) FILTER (WHERE map_index IS NOT NULL) "
            "FROM tasks WHERE run_id = ANY(%s::text[]) GROUP BY run_id, node, state",
            (list(run_ids),),
        )
        return split_counts(rows)

    async def list_tasks(
        self,
        run_id: str,
        *,
        node: str | None = None,
        state: str | None = None,
        mapped: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[TaskRecord]:
        # The page is chosen on the table's own columns first, so the conversions of
        # TASK_COLS run on its rows only, not on every row of a large run.
        where, params = task_filter(run_id, node, state, mark="%s")
        query = f"SELECT * FROM tasks WHERE {where}{_part(mapped)}"
        order = "node, map_index, name" if mapped else "node, COALESCE(map_index, -1), name"
        query += f" ORDER BY {order} LIMIT %s OFFSET %s"
        rows = await self._read(
            f"SELECT {sql.TASK_COLS} FROM ({query}) AS page ORDER BY {order}",
            [*params, limit, offset],
        )
        return [sql.task_from(r) for r in rows]

    async def count_tasks(
        self,
        run_id: str,
        *,
        node: str | None = None,
        state: str | None = None,
        mapped: bool | None = None,
    ) -> int:
        where, params = task_filter(run_id, node, state, mark="%s")
        rows = await self._read(f"SELECT COUNT(*) FROM tasks WHERE {where}{_part(mapped)}", params)
        return int(rows[0][0])

    async def search_runs(
        self,
        text: str,
        *,
        flow: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[RunRecord], int]:
        where, params = self._run_filter(flow, state, since, until)
        pattern = "%" + like_prefix(text)
        where += (" AND " if where else " WHERE ") + (
            "(id ILIKE %s OR flow ILIKE %s OR params::text ILIKE %s)"
        )
        params += [pattern, pattern, pattern]
        rows = await self._read(
            f"SELECT {sql.RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id "
            "LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        total = total_from_page(len(rows), limit, offset)
        if total is None:  # a second pass over the runs, only when the page does not end them
            total = int((await self._read(f"SELECT count(*) FROM runs{where}", params))[0][0])
        return [sql.run_from(r) for r in rows], total

    async def mapped_summary(
        self, run_id: str
    ) -> list[tuple[str, str, int, int, float | None, float | None, float | None, int]]:
        rows = await self._read(
            f"SELECT node, state, count(*), max(attempt), {sql.epoch('min(queued_at)')}, "
            f"{sql.epoch('min(started_at)')}, {sql.epoch('max(ended_at)')}, "
            "count(*) FILTER (WHERE started_at IS NOT NULL AND ended_at IS NULL) "
            "FROM tasks WHERE run_id = %s AND map_index IS NOT NULL GROUP BY node, state",
            (run_id,),
        )
        return [(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], r[6], int(r[7] or 0)) for r in rows]

    async def list_attempts_of(self, run_id: str, tasks: Sequence[str]) -> list[AttemptRecord]:
        if not tasks:
            return []
        rows = await self._read(
            f"SELECT run_id, task, attempt, state, {sql.epoch('started_at')}, "
            f"{sql.epoch('ended_at')}, error, instance FROM attempts "
            "WHERE run_id = %s AND task = ANY(%s::text[]) ORDER BY started_at, task, attempt",
            (run_id, list(tasks)),
        )
        return [
            AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6], r[7]) for r in rows
        ]

    async def task_waits(self, run_id: str, tasks: Sequence[str]) -> list[tuple[str, float, str]]:
        if not tasks:
            return []
        low = f"run:{run_id}/task:"
        rows = await self._read(
            "SELECT subject, time, data FROM audit WHERE subject = ANY(%s::text[]) "
            "AND kind = 'task.waiting' ORDER BY seq",
            ([low + t for t in tasks],),
        )
        return waits_of(low, rows)

    async def list_logs(
        self, run_id: str, task: str | None = None, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogRecord]:
        query = (
            f"SELECT run_id, task, attempt, {sql.epoch('time')}, level, message, seq FROM logs "
            "WHERE run_id = %s AND seq > %s"
        )
        params: list[Any] = [run_id, after_seq]
        if task is not None:
            query += " AND task = %s"
            params.append(task)
        rows = await self._read(query + " ORDER BY seq LIMIT %s", [*params, limit])
        return [LogRecord(*r) for r in rows]

    async def list_events(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        source: str | None = None,
        status: str | None = None,
    ) -> list[EventRecord]:
        clause, params = event_filter(source, status, mark="%s")
        rows = await self._read(
            f"SELECT {sql.EVENT_COLS} FROM events{clause} ORDER BY seq DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [sql.event_from(r) for r in rows]

    async def get_event(self, event_id: str) -> EventRecord:
        """The event whose evflow identity (uid) is ``event_id``; failing that, the one event
        whose sender id it is (a sender's id is unique only within its source)."""
        rows = await self._read(f"SELECT {sql.EVENT_COLS} FROM events WHERE uid = %s", (event_id,))
        if not rows:
            rows = await self._read(
                f"SELECT {sql.EVENT_COLS} FROM events WHERE id = %s LIMIT 2", (event_id,)
            )
            rows = [one_event(event_id, rows, self.path)]
        return sql.event_from(rows[0])

    async def pending_events(self) -> list[EventRecord]:
        rows = await self._read(
            f"SELECT {sql.EVENT_COLS} FROM events WHERE status = 'pending' ORDER BY seq"
        )
        return [sql.event_from(r) for r in rows]

    async def oldest_pending(self) -> dict[str, float]:
        """Per source, when its oldest undecided event was received (for sensor lag)."""
        rows = await self._read(
            f"SELECT source, {sql.epoch('min(received_at)')} FROM events "
            "WHERE status = 'pending' GROUP BY source"
        )
        return {str(r[0]): float(r[1]) for r in rows}

    async def count_events(self, source: str | None = None) -> int:
        if source is None:
            rows = await self._read("SELECT count(*) FROM events")
        else:
            rows = await self._read("SELECT count(*) FROM events WHERE source = %s", (source,))
        return int(rows[0][0])

    async def count_duplicates(self, source: str | None = None) -> int:
        if source is None:
            rows = await self._read("SELECT COALESCE(sum(count), 0) FROM duplicates")
        else:
            rows = await self._read(
                "SELECT COALESCE(sum(count), 0) FROM duplicates WHERE source = %s", (source,)
            )
        return int(rows[0][0])

    async def duplicate_counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in await self._read("SELECT source, count FROM duplicates")}

    async def list_dead_letters(
        self, *, limit: int = 50, offset: int = 0
    ) -> list[DeadLetterRecord]:
        rows = await self._read(
            f"SELECT id, source, reason, payload, headers::text, {sql.epoch('received_at')} "
            "FROM dead_letters ORDER BY received_at DESC LIMIT %s OFFSET %s",
            (limit, offset),
        )
        return [
            DeadLetterRecord(r[0], r[1], r[2], bytes(r[3] or b""), sql.loads(r[4]) or {}, r[5])
            for r in rows
        ]

    async def list_cursors(self) -> dict[str, str]:
        return {str(r[0]): str(r[1]) for r in await self._read("SELECT name, value FROM cursors")}

    async def get_cursor(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM cursors WHERE name = %s", (name,))
        return str(rows[0][0]) if rows else None

    async def list_audit(
        self, *, since: float | None = None, subject: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        query, params = audit_query(sql.AUDIT_COLS, since, subject, limit, mark="%s")
        return [audit_record(sql.audit_tuple(r)) for r in await self._read(query, params)]

    async def audit_rows(self, after_seq: int = 0, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Raw audit rows (data as stored bytes) for verification."""
        rows = await self._read(
            f"SELECT {sql.AUDIT_COLS} FROM audit WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [sql.audit_tuple(r) for r in rows]

    async def audit_heads(self) -> dict[str, tuple[int, str]]:
        rows = await self._read("SELECT chain, pos, hash FROM audit_heads")
        return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}

    async def audit_anchors(self) -> dict[str, tuple[int, str]]:
        rows = await self._read("SELECT chain, pos, hash FROM audit_anchors")
        return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}


def _part(mapped: bool | None) -> str:
    """The condition on a task's being a mapped instance (None: either)."""
    return "" if mapped is None else MAPPED if mapped else PLAIN


def _attempt(r: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6], r[7])
