"""The SQLite store's reads: every query the engine, the API and the CLI make, on the reader
connection (aiosqlite), which WAL lets run beside the writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from ..errors import StoreError
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
from . import sqlite_sql as sql
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

__all__ = ["SqliteReads"]

# A run's tasks are indexed in two parts (schema migration 7): their own records
# (tasks_plain) and the instances of mapped tasks (tasks_mapped). A read of both reads each part
# on its index, as SQLite uses a partial index only for a query that names its condition.
_PARTS: dict[bool | None, tuple[str, ...]] = {
    False: (PLAIN,),
    True: (MAPPED,),
    None: (PLAIN, MAPPED),
}


class SqliteReads:
    """The reads of :class:`~evflow.store.sqlite.SqliteStore`."""

    path: str
    _reader: aiosqlite.Connection | None

    async def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._reader
        if conn is None:
            raise StoreError("the store is not open (use `async with SqliteStore(...)`)")
        return list(await conn.execute_fetchall(query, params))

    async def get_run(self, run_id: str, *, with_tasks: bool = True) -> RunRecord:
        rows = await self._read(f"SELECT {sql.RUN_COLS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            rows = (
                await self._read(
                    f"SELECT {sql.RUN_COLS} FROM runs "
                    "WHERE id LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\' LIMIT 6",
                    like_short_id(run_id),
                )
                if len(run_id) >= 4
                else []
            )
            rows = [one_run(run_id, rows, self.path)]
        tasks: tuple[TaskRecord, ...] = ()
        if with_tasks:
            trows = await self._read(
                f"SELECT {sql.TASK_COLS} FROM tasks WHERE run_id = ? "
                "ORDER BY COALESCE(queued_at, 1e18), name",
                (rows[0][0],),
            )
            tasks = tuple(sql.task_from(r) for r in trows)
        return sql.run_from(rows[0], tasks)

    async def run_exists(self, run_id: str) -> bool:
        return bool(await self._read("SELECT 1 FROM runs WHERE id = ?", (run_id,)))

    @staticmethod
    def _run_filter(
        flow: str | None,
        state: str | None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[str, list[Any]]:
        return run_filter(flow, state, since, until, mark="?")

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
            f"SELECT {sql.RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
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
        rows = await self._read(f"SELECT COUNT(*) FROM runs{where}", params)
        return int(rows[0][0])

    async def unfinished_runs(self) -> list[RunRecord]:
        rows = await self._read(
            f"SELECT {sql.RUN_COLS} FROM runs WHERE state IN ('queued', 'running') "
            "ORDER BY priority DESC, created_at"
        )
        out = []
        for r in rows:
            trows = await self._read(f"SELECT {sql.TASK_COLS} FROM tasks WHERE run_id = ?", (r[0],))
            out.append(sql.run_from(r, tuple(sql.task_from(t) for t in trows)))
        return out

    async def list_attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = await self._read(
            "SELECT run_id, task, attempt, state, started_at, ended_at, error FROM attempts "
            "WHERE run_id = ? ORDER BY started_at, task, attempt",
            (run_id,),
        )
        return [AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6]) for r in rows]

    # -- reads for the web UI's grid, timeline and large runs -------------------------------
    async def task_counts(
        self, run_ids: Sequence[str]
    ) -> list[tuple[str, str, str, int, int, bool]]:
        # The tasks' own records (tasks_plain) and the instances of mapped tasks
        # (tasks_mapped, grouped in its order) are counted apart, each on its own index.
        out: list[tuple[str, str, str, int, int, bool]] = []
        for chunk in sql.chunks(list(run_ids)):
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                "SELECT run_id, node, state, COUNT(*), MAX(attempt), 0, NULL FROM tasks "
                f"WHERE run_id IN ({marks}) AND map_index IS NULL GROUP BY run_id, node, state "
                "UNION ALL "
                "SELECT run_id, node, state, 0, NULL, COUNT(*), MAX(attempt) FROM tasks "
                f"WHERE run_id IN ({marks}) AND map_index IS NOT NULL "
                "GROUP BY run_id, node, state",
                [*chunk, *chunk],
            )
            out += split_counts(rows)
        return out

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
        # The page is chosen on the narrow key columns first, so a large run's sort does not
        # carry every row's result and traceback.
        where, params = task_filter(run_id, node, state, mark="?")
        parts = _PARTS[mapped]
        if len(parts) == 1:
            inner = f"SELECT name FROM tasks WHERE {where}{parts[0]}"
            # Instances sort by map_index alone (never NULL there).
            order = "map_index, name" if mapped else "COALESCE(map_index, -1), name"
        else:
            inner = "SELECT name FROM (" + " UNION ALL ".join(
                f"SELECT name, node, map_index FROM tasks WHERE {where}{part}" for part in parts
            )
            inner += ")"
            params = params * len(parts)
            order = "COALESCE(map_index, -1), name"
        inner += f" ORDER BY node, {order} LIMIT ? OFFSET ?"
        rows = await self._read(
            f"SELECT {sql.TASK_COLS} FROM tasks WHERE run_id = ? AND name IN ({inner})",
            [run_id, *params, limit, offset],
        )
        tasks = [sql.task_from(r) for r in rows]
        tasks.sort(key=lambda t: (t.node, -1 if t.map_index is None else t.map_index, t.name))
        return tasks

    async def count_tasks(
        self,
        run_id: str,
        *,
        node: str | None = None,
        state: str | None = None,
        mapped: bool | None = None,
    ) -> int:
        where, params = task_filter(run_id, node, state, mark="?")
        parts = _PARTS[mapped]
        query = "SELECT " + " + ".join(
            f"(SELECT COUNT(*) FROM tasks WHERE {where}{part})" for part in parts
        )
        rows = await self._read(query, params * len(parts))
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
            "(id LIKE ? ESCAPE '\\' OR flow LIKE ? ESCAPE '\\' "
            "OR CAST(params AS TEXT) LIKE ? ESCAPE '\\')"
        )
        params += [pattern, pattern, pattern]
        rows = await self._read(
            f"SELECT {sql.RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = total_from_page(len(rows), limit, offset)
        if total is None:  # a second pass over the runs, only when the page does not end them
            total = int((await self._read(f"SELECT COUNT(*) FROM runs{where}", params))[0][0])
        return [sql.run_from(r) for r in rows], total

    async def mapped_summary(
        self, run_id: str
    ) -> list[tuple[str, str, int, int, float | None, float | None, float | None, int]]:
        # Grouped in the order of the tasks_mapped index, so no sort is needed.
        rows = await self._read(
            "SELECT node, state, COUNT(*), MAX(attempt), MIN(queued_at), MIN(started_at), "
            "MAX(ended_at), SUM(started_at IS NOT NULL AND ended_at IS NULL) "
            "FROM tasks WHERE run_id = ? AND map_index IS NOT NULL GROUP BY node, state",
            (run_id,),
        )
        return [(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], r[6], int(r[7] or 0)) for r in rows]

    async def list_attempts_of(self, run_id: str, tasks: Sequence[str]) -> list[AttemptRecord]:
        out: list[AttemptRecord] = []
        for chunk in sql.chunks(list(tasks)):
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                "SELECT run_id, task, attempt, state, started_at, ended_at, error FROM attempts "
                f"WHERE run_id = ? AND task IN ({marks})",
                [run_id, *chunk],
            )
            out += [
                AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6]) for r in rows
            ]
        out.sort(key=lambda a: (a.started_at or 0.0, a.task, a.attempt))
        return out

    async def task_waits(self, run_id: str, tasks: Sequence[str]) -> list[tuple[str, float, str]]:
        low = f"run:{run_id}/task:"
        rows: list[Any] = []
        for chunk in sql.chunks([low + t for t in tasks]):
            marks = ",".join("?" * len(chunk))
            rows += await self._read(
                "SELECT seq, subject, time, data FROM audit "
                f"WHERE subject IN ({marks}) AND kind = 'task.waiting'",
                list(chunk),
            )
        rows.sort(key=lambda r: int(r[0]))
        return waits_of(low, [r[1:] for r in rows])

    async def list_logs(
        self, run_id: str, task: str | None = None, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogRecord]:
        query = (
            "SELECT run_id, task, attempt, time, level, message, seq FROM logs "
            "WHERE run_id = ? AND seq > ?"
        )
        params: list[Any] = [run_id, after_seq]
        if task is not None:
            query += " AND task = ?"
            params.append(task)
        rows = await self._read(query + " ORDER BY seq LIMIT ?", [*params, limit])
        return [LogRecord(*r) for r in rows]

    async def list_events(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        source: str | None = None,
        status: str | None = None,
    ) -> list[EventRecord]:
        clause, params = event_filter(source, status, mark="?")
        rows = await self._read(
            f"SELECT {sql.EVENT_COLS} FROM events{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [sql.event_from(r) for r in rows]

    async def get_event(self, event_id: str) -> EventRecord:
        """The event whose evflow identity (uid) is ``event_id``; failing that, the one event
        whose sender id it is (a sender's id is unique only within its source)."""
        rows = await self._read(f"SELECT {sql.EVENT_COLS} FROM events WHERE uid = ?", (event_id,))
        if not rows:
            rows = await self._read(
                f"SELECT {sql.EVENT_COLS} FROM events WHERE id = ? LIMIT 2", (event_id,)
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
            "SELECT source, MIN(received_at) FROM events WHERE status = 'pending' GROUP BY source"
        )
        return {str(r[0]): float(r[1]) for r in rows}

    async def count_events(self, source: str | None = None) -> int:
        if source is None:
            rows = await self._read("SELECT COUNT(*) FROM events")
        else:
            rows = await self._read("SELECT COUNT(*) FROM events WHERE source = ?", (source,))
        return int(rows[0][0])

    async def count_duplicates(self, source: str | None = None) -> int:
        if source is None:
            rows = await self._read("SELECT COALESCE(SUM(count), 0) FROM duplicates")
        else:
            rows = await self._read(
                "SELECT COALESCE(SUM(count), 0) FROM duplicates WHERE source = ?", (source,)
            )
        return int(rows[0][0])

    async def duplicate_counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in await self._read("SELECT source, count FROM duplicates")}

    async def list_dead_letters(
        self, *, limit: int = 50, offset: int = 0
    ) -> list[DeadLetterRecord]:
        rows = await self._read(
            "SELECT id, source, reason, payload, headers, received_at FROM dead_letters "
            "ORDER BY received_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [DeadLetterRecord(r[0], r[1], r[2], r[3], sql.loads(r[4]) or {}, r[5]) for r in rows]

    async def list_cursors(self) -> dict[str, str]:
        return {str(r[0]): str(r[1]) for r in await self._read("SELECT name, value FROM cursors")}

    async def get_cursor(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM cursors WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def list_audit(
        self, *, since: float | None = None, subject: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        query, params = audit_query(sql.AUDIT_COLS, since, subject, limit, mark="?")
        return [audit_record(r) for r in await self._read(query, params)]

    async def audit_rows(self, after_seq: int = 0, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Raw audit rows (data as stored bytes) for verification."""
        return [
            tuple(r)
            for r in await self._read(
                f"SELECT {sql.AUDIT_COLS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        ]

    async def audit_heads(self) -> dict[str, tuple[int, str]]:
        rows = await self._read("SELECT chain, pos, hash FROM audit_heads")
        return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}

    async def audit_anchors(self) -> dict[str, tuple[int, str]]:
        rows = await self._read("SELECT chain, pos, hash FROM audit_anchors")
        return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
