"""The PostgreSQL store: the same :class:`~evflow.store.base.Store`, on a database server.

Writes are grouped as in SQLite (one :class:`~evflow.store.batching.WriteQueue`, one
transaction per batch) and each table's rows go in one statement, ``INSERT … SELECT FROM
unnest(…)``: a batch of hundreds of changes is a handful of round trips, never
``executemany``. Rows written twice in one batch are folded first (the last state wins, as
applying them in order would leave). No transaction is open while user code runs: the writer
holds a connection only for the length of one commit.

When the server goes away, the writer keeps the batch and tries again with backoff; meanwhile
:attr:`PostgresStore.available` is false, so intake refuses new events with
:class:`~evflow.errors.StoreUnavailable` (webhooks answer 503, Kafka pauses, files wait) and
nothing is acknowledged that was not committed. A commit whose outcome was lost with the
connection is recognised by the audit chain's head, so it is not applied twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import orjson

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - the extra is missing
    from ..errors import StoreError

    raise StoreError("PostgreSQL support is not installed: pip install 'evflow[postgres]'") from exc

from ..abc import Accepted
from ..errors import EventNotFound, RunNotFound, SchemaVersionError, StoreError, StoreUnavailable
from ..events import Event, parse_time
from ..records import (
    AttemptRecord,
    AuditRecord,
    DeadLetterRecord,
    EventRecord,
    LogRecord,
    RunRecord,
    TaskRecord,
)
from ..states import RunState, TaskState
from .base import AuditEntry, Changes, DeadLetter, Rows, chain_hash
from .batching import Op, WriteQueue
from .postgres_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from .urls import mask, postgres_target

__all__ = ["PostgresStore"]

log = logging.getLogger("evflow.store")


def _epoch(col: str) -> str:
    return f"extract(epoch from {col})::float8"


_RUN_COLS = (
    "id, flow, flow_version, params::text, state, priority, trigger::text, "
    f"{_epoch('created_at')}, {_epoch('started_at')}, {_epoch('ended_at')}, waiting, error"
)
_TASK_COLS = (
    f"run_id, name, node, map_index, state, attempt, {_epoch('queued_at')}, "
    f"{_epoch('started_at')}, {_epoch('ended_at')}, waiting, error, traceback, result"
)
_EVENT_COLS = (
    "seq, id, dedup_key, type, source, subject, time, data::text, extensions::text, "
    f"{_epoch('received_at')}, status, uid"
)
_AUDIT_COLS = "seq, time, kind, subject, actor, data, prev_hash, hash"

_SQL_EVENTS = """
INSERT INTO events (uid, id, dedup_key, type, source, subject, time, data, extensions,
                    received_at)
SELECT u, i, k, t, s, sub, tm, d::json, x::json, to_timestamp(%s)
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
            %s::timestamptz[], %s::text[], %s::text[]) WITH ORDINALITY
     AS v(u, i, k, t, s, sub, tm, d, x, n)
ORDER BY n
ON CONFLICT DO NOTHING
"""
_SQL_CURSORS = """
INSERT INTO cursors (name, value) SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (name) DO UPDATE SET value = excluded.value
"""
_SQL_DEAD = """
INSERT INTO dead_letters (id, source, reason, payload, headers, dedup_key, received_at)
SELECT i, s, r, p, h::jsonb, k, to_timestamp(%s)
FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::text[], %s::text[])
     AS v(i, s, r, p, h, k)
ON CONFLICT DO NOTHING
"""
_RUN_SELECT = """
SELECT i, f, fv, p::jsonb, st, pr, tr::jsonb, to_timestamp(c), to_timestamp(sa),
       to_timestamp(ea), w, e
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::text[],
            %s::float8[], %s::float8[], %s::float8[], %s::text[], %s::text[]) WITH ORDINALITY
     AS v(i, f, fv, p, st, pr, tr, c, sa, ea, w, e, n)
ORDER BY n
"""
_RUN_INTO = (
    "INSERT INTO runs (id, flow, flow_version, params, state, priority, trigger, created_at, "
    "started_at, ended_at, waiting, error)"
)
# Runs a rule creates: inserted only if absent, so deciding an event twice never resets a run.
_SQL_RUNS_NEW = f"{_RUN_INTO} {_RUN_SELECT} ON CONFLICT (id) DO NOTHING RETURNING id"
_SQL_RUNS = f"""{_RUN_INTO} {_RUN_SELECT}
ON CONFLICT (id) DO UPDATE SET flow_version = excluded.flow_version, params = excluded.params,
    state = excluded.state, priority = excluded.priority, started_at = excluded.started_at,
    ended_at = excluded.ended_at, waiting = excluded.waiting, error = excluded.error
"""
_TASK_INTO = """
INSERT INTO tasks (run_id, name, node, map_index, state, attempt, queued_at, started_at,
                   ended_at, waiting, error, traceback, result)
SELECT r, nm, nd, mi, st, a, to_timestamp(q), to_timestamp(sa), to_timestamp(ea), w, e, tb, res
FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::int[], %s::float8[],
            %s::float8[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::bytea[])
     AS v(r, nm, nd, mi, st, a, q, sa, ea, w, e, tb, res)
"""
_SQL_TASKS_NEW = f"{_TASK_INTO} ON CONFLICT (run_id, name) DO NOTHING"
_SQL_TASKS = f"""{_TASK_INTO}
ON CONFLICT (run_id, name) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,
    queued_at = excluded.queued_at, started_at = excluded.started_at,
    ended_at = excluded.ended_at, waiting = excluded.waiting, error = excluded.error,
    traceback = excluded.traceback, result = excluded.result
"""
_SQL_ATTEMPTS = """
INSERT INTO attempts (run_id, task, attempt, state, started_at, ended_at, error)
SELECT r, t, a, s, to_timestamp(sa), to_timestamp(ea), e
FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::float8[], %s::float8[],
            %s::text[]) AS v(r, t, a, s, sa, ea, e)
ON CONFLICT (run_id, task, attempt) DO UPDATE SET state = excluded.state,
    started_at = excluded.started_at, ended_at = excluded.ended_at, error = excluded.error
"""
_SQL_LOGS = """
INSERT INTO logs (run_id, task, attempt, time, level, message)
SELECT r, t, a, to_timestamp(tm), l, m
FROM unnest(%s::text[], %s::text[], %s::int[], %s::float8[], %s::text[], %s::text[])
     WITH ORDINALITY AS v(r, t, a, tm, l, m, n)
ORDER BY n
"""
_SQL_IMPORT_EVENTS = """
INSERT INTO events (uid, id, dedup_key, type, source, subject, time, data, extensions,
                    received_at, status)
SELECT u, i, k, t, s, sub, tm, d::json, x::json, to_timestamp(r), st
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
            %s::timestamptz[], %s::text[], %s::text[], %s::float8[], %s::text[])
     WITH ORDINALITY AS v(u, i, k, t, s, sub, tm, d, x, r, st, n)
ORDER BY n
"""
_SQL_PROCESSED = "UPDATE events SET status = 'processed' WHERE uid = ANY(%s::text[])"
_SQL_AUDIT = """
INSERT INTO audit (seq, time, kind, subject, actor, data, prev_hash, hash)
SELECT * FROM unnest(%s::bigint[], %s::float8[], %s::text[], %s::text[], %s::text[],
                     %s::bytea[], %s::text[], %s::text[])
"""
_SQL_DUPS = """
INSERT INTO duplicates (source, count) SELECT * FROM unnest(%s::text[], %s::bigint[])
ON CONFLICT (source) DO UPDATE SET count = duplicates.count + excluded.count
"""

# Errors after which the connection, not the batch, is at fault: keep the batch, reconnect.
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 5.0
_CLOSE_GIVE_UP_S = 10.0


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(raw: str | bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows → one list per column (the arrays ``unnest`` takes)."""
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return cols


def _run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.flow,
        r.flow_version,
        _dumps(r.params),
        str(r.state),
        r.priority,
        _dumps(r.trigger) if r.trigger else None,
        r.created_at,
        r.started_at,
        r.ended_at,
        r.waiting,
        r.error,
    )


def _task_row(t: TaskRecord) -> tuple[Any, ...]:
    return (
        t.run_id,
        t.name,
        t.node,
        t.map_index,
        str(t.state),
        t.attempt,
        t.queued_at,
        t.started_at,
        t.ended_at,
        t.waiting,
        t.error,
        t.traceback,
        t.result,
    )


def _run_from(row: Sequence[Any], tasks: tuple[TaskRecord, ...] = ()) -> RunRecord:
    return RunRecord(
        id=row[0],
        flow=row[1],
        flow_version=row[2],
        params=_loads(row[3]),
        state=RunState(row[4]),
        priority=row[5],
        trigger=_loads(row[6]) or {},
        created_at=row[7],
        started_at=row[8],
        ended_at=row[9],
        waiting=row[10],
        error=row[11],
        tasks=tasks,
    )


def _task_from(row: Sequence[Any]) -> TaskRecord:
    return TaskRecord(
        run_id=row[0],
        name=row[1],
        node=row[2],
        map_index=row[3],
        state=TaskState(row[4]),
        attempt=row[5],
        queued_at=row[6],
        started_at=row[7],
        ended_at=row[8],
        waiting=row[9],
        error=row[10],
        traceback=row[11],
        result=None if row[12] is None else bytes(row[12]),
    )


def _event_from(row: Sequence[Any]) -> EventRecord:
    return EventRecord(
        seq=row[0],
        id=row[1],
        dedup_key=row[2],
        type=row[3],
        source=row[4],
        subject=row[5],
        time=row[6].isoformat(),
        data=_loads(row[7]),
        extensions=_loads(row[8]) or {},
        received_at=row[9],
        status=row[10],
        uid=row[11],
    )


def _audit_tuple(r: Sequence[Any]) -> tuple[Any, ...]:
    data = None if r[5] is None else bytes(r[5])
    return (r[0], r[1], r[2], r[3], r[4], data, r[6], r[7])


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally as a prefix (``%`` and ``_`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _last_by_key(rows: Iterable[tuple[Any, ...]], width: int) -> list[tuple[Any, ...]]:
    """One row per key (its first ``width`` columns), the last written, in first-seen order;
    an upsert statement may touch each row once."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        out[row[:width]] = row
    return list(out.values())


def describe_connect_error(url: str, exc: BaseException) -> str:
    """One line for a failed first connection: which server, what went wrong, what to do."""
    target = postgres_target(url)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = str(exc).lower()
    if "password authentication failed" in low or "no password supplied" in low:
        hint = "check the user and password in the store URL"
    elif "does not exist" in low and "database" in low:
        db = target.rsplit("/", 1)[-1]
        hint = f"create the database first (createdb {db}) or name an existing one"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low:
        hint = "is the server running and listening there? check the host and port"
    elif "role" in low and "does not exist" in low:
        hint = "name a user that exists on the server"
    else:
        hint = "check the store URL (postgresql://user:password@host:port/database)"
    return f"cannot open the PostgreSQL store {mask(url)} ({target}): {text}; {hint}"


def _dead_row(d: DeadLetter) -> tuple[Any, ...]:
    return (
        uuid.uuid4().hex,
        d.source,
        d.reason,
        bytes(d.payload),
        _dumps(dict(d.headers)),
        d.dedup_key,
    )


class PostgresStore:
    """The :class:`~evflow.store.base.Store` on PostgreSQL. Use as ``async with
    PostgresStore(url)``; ``url`` is a ``postgresql://user:password@host:port/db`` URL."""

    def __init__(
        self,
        url: str,
        *,
        max_pending: int = 50_000,
        pool_size: int = 10,
        statement_timeout_s: float = 30.0,
        idle_in_transaction_timeout_s: float = 60.0,
    ) -> None:
        self.url = url
        self.path = mask(url)  # what messages show; never the password
        self.pool_size = pool_size
        self.statement_timeout_s = statement_timeout_s
        self.idle_in_transaction_timeout_s = idle_in_transaction_timeout_s
        self.available = True
        self.commits = 0  # for metrics and benchmarks
        self._queue = WriteQueue(self.path, self._commit, max_pending=max_pending)
        self._pool: AsyncConnectionPool | None = None
        self._stack: AsyncExitStack | None = None
        self._retry_delay = _RETRY_MIN_S
        self._closing_since: float | None = None
        self._lost: tuple[str, set[int]] | None = None  # (expected head, ops) of a lost commit

    # -- lifespan ----------------------------------------------------------------------------
    def describe(self) -> str:
        return self.path

    async def __aenter__(self) -> PostgresStore:
        await self._migrate()
        async with AsyncExitStack() as stack:
            pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True},
                configure=self._configure,
                open=False,
                timeout=5.0,
                name="evflow",
            )
            try:
                await pool.open(wait=True, timeout=10.0)
            except Exception as exc:
                await pool.close()
                raise StoreError(describe_connect_error(self.url, exc)) from None
            stack.push_async_callback(pool.close)
            self._pool = pool
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._queue.run)
            stack.push_async_callback(self._queue.close)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.aclose()
        self._pool = None

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false), "
            "set_config('TimeZone', 'UTC', false)",
            (
                f"{int(self.statement_timeout_s * 1000)}",
                f"{int(self.idle_in_transaction_timeout_s * 1000)}",
            ),
        )

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=10
            )
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(describe_connect_error(self.url, exc)) from None
        return conn

    async def schema_version(self) -> int:
        """The number of migrations applied to the database (0: none); changes nothing."""
        async with await self._connect() as conn:
            cur = await conn.execute("SELECT to_regclass('evflow_schema') IS NOT NULL")
            row = await cur.fetchone()
            if not row or not row[0]:
                return 0
            cur = await conn.execute("SELECT max(version) FROM evflow_schema")
            row = await cur.fetchone()
            return int(row[0]) if row and row[0] is not None else 0

    async def _version(self, conn: psycopg.AsyncConnection[Any]) -> int:
        await conn.execute("CREATE TABLE IF NOT EXISTS evflow_schema (version integer NOT NULL)")
        row = await (await conn.execute("SELECT max(version) FROM evflow_schema")).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def _migrate(self) -> None:
        async with await self._connect() as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            try:
                version = await self._version(conn)
                if version > SCHEMA_VERSION:
                    raise SchemaVersionError(
                        f"store {self.path} has schema version {version}, newer than this "
                        f"evflow understands ({SCHEMA_VERSION}); upgrade evflow"
                    )
                for number in range(version, SCHEMA_VERSION):
                    async with conn.transaction():
                        await conn.execute(MIGRATIONS[number].encode())
                        await conn.execute(
                            "INSERT INTO evflow_schema (version) VALUES (%s)", (number + 1,)
                        )
                    log.info("store %s: migrated to schema version %d", self.path, number + 1)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))

    # -- the writer --------------------------------------------------------------------------
    async def _commit(self, batch: list[Op]) -> None:
        """Commit ``batch`` in one transaction.

        When the connection fails, the callers who can try again (events, dead letters)
        are told at once (:class:`~evflow.errors.StoreUnavailable`: a webhook answers 503, the
        sender retries); the engine's own changes go back to the head of the queue and are
        retried with backoff until the database answers again. A batch the server refuses is
        split, so one bad write fails alone.
        """
        if not self.available:
            await anyio.sleep(self._retry_delay)
        try:
            if self._lost is not None:
                batch = await self._drop_if_committed(batch)
            assert self._pool is not None
            async with self._pool.connection() as conn:
                head = None
                try:
                    async with conn.transaction():
                        head = await self._apply(conn, batch)
                except _CONNECTION_ERRORS:
                    if head is not None:  # the commit itself failed: it may have gone through
                        self._lost = (head, {id(op) for op in batch})
                    raise
            self.commits += 1
        except _CONNECTION_ERRORS as exc:
            self._connection_lost(batch, exc)
            return
        except psycopg.Error as exc:
            if len(batch) > 1:
                for op in batch:  # find the one at fault; the others commit
                    await self._commit([op])
            else:
                log.error("store %s: a write was refused: %s", self.path, exc)
                self._fail(batch, exc)
            return
        if not self.available:
            log.warning("store %s: the database is back", self.path)
        self.available = True
        self._retry_delay = _RETRY_MIN_S
        self._closing_since = None

    def _connection_lost(self, batch: list[Op], exc: BaseException) -> None:
        if self.available:
            log.error("store %s: lost the database (%s); reconnecting", self.path, exc)
        self.available = False
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX_S)
        unavailable = StoreUnavailable(
            f"the database of store {self.path} cannot be reached; nothing was stored"
        )
        callers = [op for op in batch if op.events or op.dead_letter or op.rows]
        self._fail(callers, unavailable)
        engine_changes = [op for op in batch if not (op.events or op.dead_letter or op.rows)]
        if self._stack is None:  # closing: try a while, then give up (and say so)
            now = time.monotonic()
            self._closing_since = self._closing_since or now
            if now - self._closing_since > _CLOSE_GIVE_UP_S:
                log.error(
                    "store %s: the database did not come back while closing; %d queued "
                    "write(s) were not committed",
                    self.path,
                    len(engine_changes),
                )
                self._fail(engine_changes, unavailable)
                return
        self._queue.requeue(engine_changes)

    async def _drop_if_committed(self, batch: list[Op]) -> list[Op]:
        """After a commit whose outcome was lost: if the chain's head is the one it would
        have written, it went through, and its requeued ops are not applied again."""
        assert self._lost is not None and self._pool is not None
        expected, ops = self._lost
        async with self._pool.connection() as conn:
            committed = await self._head(conn) == expected
        self._lost = None
        return [op for op in batch if id(op) not in ops] if committed else batch

    @staticmethod
    def _fail(batch: list[Op], exc: BaseException) -> None:
        for op in batch:
            op.error = exc

    @staticmethod
    async def _head(conn: psycopg.AsyncConnection[Any]) -> str:
        row = await (await conn.execute("SELECT hash FROM audit_head")).fetchone()
        assert row is not None
        return str(row[0])

    async def _apply(self, conn: psycopg.AsyncConnection[Any], batch: list[Op]) -> str | None:
        """Write the batch; returns the audit chain's new head, if it wrote audit records."""
        now = time.time()
        imported_head = None
        for op in batch:
            if op.rows is not None:
                imported_head = await self._import(conn, op.rows) or imported_head
        cursors: dict[str, str] = {}
        dead: list[tuple[Any, ...]] = []
        new_runs: list[tuple[Changes, tuple[Any, ...]]] = []
        new_tasks: list[tuple[Any, ...]] = []
        runs: list[tuple[Any, ...]] = []
        tasks: list[tuple[Any, ...]] = []
        attempts: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        processed: list[str] = []
        audit_entries: list[AuditEntry] = []
        event_ops = [op for op in batch if op.events]
        for op in batch:
            cursors.update(op.cursors)
            if op.dead_letter is not None:
                row = _dead_row(op.dead_letter)
                dead.append(row)
                op.result = row[0]
            ch = op.changes
            if ch is None:
                continue
            ch.created_runs.clear()  # a retried batch reports afresh
            cursors.update(ch.cursors)
            dead.extend(_dead_row(d) for d in ch.dead_letters)
            new_runs.extend((ch, _run_row(r)) for r in ch.new_runs)
            new_tasks.extend(_task_row(t) for t in ch.new_tasks)
            runs.extend(_run_row(r) for r in ch.runs)
            tasks.extend(_task_row(t) for t in ch.tasks)
            attempts.extend(
                (a.run_id, a.task, a.attempt, str(a.state), a.started_at, a.ended_at, a.error)
                for a in ch.attempts
            )
            logs.extend(
                (lg.run_id, lg.task, lg.attempt, lg.time, lg.level, lg.message) for lg in ch.logs
            )
            processed.extend(ch.processed_events)
            audit_entries.extend(ch.audit)

        # The chain's head first: writers with audit records take turns from the start, so
        # they never wait on each other's rows in the opposite order.
        locked_head: tuple[int, str] | None = None
        if audit_entries or event_ops:
            cur = await conn.execute("SELECT seq, hash FROM audit_head FOR UPDATE")
            head_row = await cur.fetchone()
            assert head_row is not None
            locked_head = (int(head_row[0]), str(head_row[1]))
        if event_ops:
            # Every event that enters is on the audit trail, in the transaction storing it.
            audit_entries[:0] = await self._insert_events(conn, event_ops, now)
        if cursors:
            await conn.execute(_SQL_CURSORS, _columns(list(cursors.items()), 2))
        if dead:
            await conn.execute(_SQL_DEAD, [now, *_columns(dead, 6)])
        if new_runs:
            rows = [row for _, row in new_runs]
            cur = await conn.execute(_SQL_RUNS_NEW, _columns(rows, 12))
            created = {r[0] for r in await cur.fetchall()}
            claimed: set[str] = set()
            for ch, row in new_runs:
                if row[0] in created and row[0] not in claimed:
                    claimed.add(row[0])
                    ch.created_runs.add(row[0])
            fresh = [t for t in new_tasks if t[0] in created]
            if fresh:
                await conn.execute(_SQL_TASKS_NEW, _columns(fresh, 13))
        if runs:
            await conn.execute(_SQL_RUNS, _columns(_last_by_key(runs, 1), 12))
        if tasks:
            await conn.execute(_SQL_TASKS, _columns(_last_by_key(tasks, 2), 13))
        if attempts:
            await conn.execute(_SQL_ATTEMPTS, _columns(_last_by_key(attempts, 3), 7))
        if logs:
            await conn.execute(_SQL_LOGS, _columns(logs, 6))
        if processed:
            await conn.execute(_SQL_PROCESSED, (processed,))
        if not audit_entries or locked_head is None:
            return imported_head
        seq, head = locked_head
        rows = []
        for entry in audit_entries:
            seq += 1
            t = entry.time if entry.time is not None else now
            data = None if entry.data is None else orjson.dumps(entry.data)
            h = chain_hash(head, seq, t, entry.kind, entry.subject, entry.actor, data)
            rows.append((seq, t, entry.kind, entry.subject, entry.actor, data, head, h))
            head = h
        await conn.execute(_SQL_AUDIT, _columns(rows, 8))
        await conn.execute("UPDATE audit_head SET seq = %s, hash = %s", (seq, head))
        return head

    @staticmethod
    async def _import(conn: psycopg.AsyncConnection[Any], rows: Rows) -> str | None:
        """Write copied rows as they are; returns the audit head they leave, if any."""
        if rows.events:
            await conn.execute(
                _SQL_IMPORT_EVENTS,
                _columns(
                    [
                        (e.uid, e.id, e.dedup_key, e.type, e.source, e.subject,
                         parse_time(e.time), _dumps(e.data), _dumps(dict(e.extensions)),
                         e.received_at, e.status)
                        for e in rows.events
                    ],
                    11,
                ),
            )  # fmt: skip
        if rows.runs:
            await conn.execute(_SQL_RUNS, _columns([_run_row(r) for r in rows.runs], 12))
            tasks = [_task_row(t) for r in rows.runs for t in r.tasks]
            if tasks:
                await conn.execute(_SQL_TASKS, _columns(tasks, 13))
        if rows.attempts:
            attempts = [
                (a.run_id, a.task, a.attempt, str(a.state), a.started_at, a.ended_at, a.error)
                for a in rows.attempts
            ]
            await conn.execute(_SQL_ATTEMPTS, _columns(attempts, 7))
        if rows.logs:
            logs = [
                (lg.run_id, lg.task, lg.attempt, lg.time, lg.level, lg.message) for lg in rows.logs
            ]
            await conn.execute(_SQL_LOGS, _columns(logs, 6))
        for d in rows.dead_letters:
            await conn.execute(
                "INSERT INTO dead_letters (id, source, reason, payload, headers, received_at) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, to_timestamp(%s)) ON CONFLICT DO NOTHING",
                (d.id, d.source, d.reason, d.payload, _dumps(dict(d.headers)), d.received_at),
            )
        if rows.cursors:
            await conn.execute(_SQL_CURSORS, _columns(list(rows.cursors.items()), 2))
        if rows.duplicates:
            await conn.execute(_SQL_DUPS, _columns(list(rows.duplicates.items()), 2))
        if not rows.audit:
            return None
        await conn.execute(_SQL_AUDIT, _columns(rows.audit, 8))
        last = rows.audit[-1]
        await conn.execute("UPDATE audit_head SET seq = %s, hash = %s", (last[0], last[7]))
        return str(last[7])

    async def _insert_events(
        self, conn: psycopg.AsyncConnection[Any], ops: list[Op], now: float
    ) -> list[AuditEntry]:
        rows = []
        first: dict[str, str] = {}  # dedup key -> uid of its first event in this batch
        for op in ops:
            for ev in op.events:
                first.setdefault(ev.dedup_key, ev.uid)
                rows.append(
                    (
                        ev.uid,
                        ev.id,
                        ev.dedup_key,
                        ev.type,
                        ev.source,
                        ev.subject,
                        ev.time,
                        _dumps(ev.data),
                        _dumps(dict(ev.extensions)),
                    )
                )
        await conn.execute(_SQL_EVENTS, [now, *_columns(rows, 9)])
        cur = await conn.execute(
            "SELECT dedup_key, uid FROM events WHERE dedup_key = ANY(%s::text[])", (list(first),)
        )
        stored: dict[str, str] = {k: u for k, u in await cur.fetchall()}
        dup_counts: dict[str, int] = {}
        claimed: set[str] = set()
        received: list[AuditEntry] = []
        for op in ops:
            results = []
            for ev in op.events:
                eid = stored[ev.dedup_key]
                fresh = eid == first[ev.dedup_key] and ev.dedup_key not in claimed
                if fresh:
                    claimed.add(ev.dedup_key)
                    received.append(
                        AuditEntry(
                            "event.received",
                            f"event:{eid}",
                            {
                                "type": ev.type,
                                "source": ev.source,
                                "id": ev.id,
                                "dedup_key": ev.dedup_key,
                            },
                            time=now,
                        )
                    )
                else:
                    dup_counts[ev.source] = dup_counts.get(ev.source, 0) + 1
                results.append(Accepted(event_id=eid, duplicate=not fresh))
            op.result = results
        if dup_counts:
            await conn.execute(_SQL_DUPS, _columns(list(dup_counts.items()), 2))
        return received

    # -- writes ------------------------------------------------------------------------------
    def _check_available(self) -> None:
        if not self.available:
            raise StoreUnavailable(
                f"the database of store {self.path} cannot be reached; evflow is reconnecting"
            )

    async def add_events(
        self, events: Sequence[Event], *, cursors: Mapping[str, str] | None = None
    ) -> list[Accepted]:
        if not events and not cursors:
            return []
        self._check_available()
        op = Op(events=list(events), cursors=dict(cursors or {}))
        result: list[Accepted] = await self._queue.submit(op, max(1, len(events)))
        return result if events else []

    async def add_dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        dedup_key: str | None = None,
    ) -> str:
        letter = DeadLetter(source, reason, bytes(payload), dict(headers or {}), dedup_key)
        result: str = await self._queue.submit(Op(dead_letter=letter))
        return result

    async def apply(self, changes: Changes, *, wait: bool = False) -> None:
        weight = len(changes.tasks) + len(changes.runs) + len(changes.logs) + 1
        op = Op(changes=changes)
        if wait:
            await self._queue.submit(op, weight)
        else:
            await self._queue.enqueue(op, weight)

    async def import_rows(self, rows: Rows) -> None:
        await self._queue.submit(Op(rows=rows))

    def apply_nowait(self, changes: Changes) -> None:
        self._queue.put_nowait(Op(changes=changes))

    async def flush(self) -> None:
        await self._queue.flush()

    @property
    def backlog(self) -> int:
        """Writes queued but not yet committed."""
        return self._queue.backlog

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"the store {self.path} is not open (use `async with`)")
        for tries_left in (1, 0):  # a read is safe to repeat on a fresh connection
            try:
                async with pool.connection() as conn:
                    cur = await conn.execute(sql.encode(), params)
                    return await cur.fetchall()
            except _CONNECTION_ERRORS as exc:
                if not tries_left:
                    raise StoreUnavailable(
                        f"the database of store {self.path} cannot be reached ({exc}); retry later"
                    ) from None
        raise AssertionError("unreachable")

    async def get_run(self, run_id: str, *, with_tasks: bool = True) -> RunRecord:
        rows = await self._read(f"SELECT {_RUN_COLS} FROM runs WHERE id = %s", (run_id,))
        if not rows:
            rows = (
                await self._read(
                    f"SELECT {_RUN_COLS} FROM runs WHERE id LIKE %s ESCAPE '\\' LIMIT 6",
                    (_like_prefix(run_id),),
                )
                if len(run_id) >= 4
                else []
            )
            if len(rows) > 1:
                more = ", …" if len(rows) > 5 else ""
                raise RunNotFound(
                    f"run id prefix {run_id!r} is ambiguous: it matches runs "
                    f"{', '.join(str(r[0]) for r in rows[:5])}{more}; give more characters"
                )
            if not rows:
                raise RunNotFound(f"no run {run_id!r} in store {self.path}")
        tasks: tuple[TaskRecord, ...] = ()
        if with_tasks:
            trows = await self._read(
                f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = %s "
                "ORDER BY queued_at NULLS LAST, name",
                (rows[0][0],),
            )
            tasks = tuple(_task_from(r) for r in trows)
        return _run_from(rows[0], tasks)

    async def run_exists(self, run_id: str) -> bool:
        return bool(await self._read("SELECT 1 FROM runs WHERE id = %s", (run_id,)))

    @staticmethod
    def _run_filter(
        flow: str | None,
        state: str | None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if flow:
            where.append("flow = %s")
            params.append(flow)
        if state:
            where.append("state = %s")
            params.append(state)
        if since is not None:
            where.append("created_at >= to_timestamp(%s)")
            params.append(since)
        if until is not None:
            where.append("created_at < to_timestamp(%s)")
            params.append(until)
        return (" WHERE " + " AND ".join(where)) if where else "", params

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
            f"SELECT {_RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [_run_from(r) for r in rows]

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
            f"SELECT {_RUN_COLS} FROM runs WHERE state IN ('queued', 'running') "
            "ORDER BY priority DESC, created_at"
        )
        if not rows:
            return []
        trows = await self._read(
            f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = ANY(%s::text[])",
            ([r[0] for r in rows],),
        )
        by_run: dict[str, list[TaskRecord]] = {}
        for t in trows:
            by_run.setdefault(t[0], []).append(_task_from(t))
        return [_run_from(r, tuple(by_run.get(r[0], ()))) for r in rows]

    async def list_attempts(self, run_id: str) -> list[AttemptRecord]:
        rows = await self._read(
            f"SELECT run_id, task, attempt, state, {_epoch('started_at')}, "
            f"{_epoch('ended_at')}, error FROM attempts "
            "WHERE run_id = %s ORDER BY started_at, task, attempt",
            (run_id,),
        )
        return [AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6]) for r in rows]

    # -- reads for the web UI's grid, timeline and large runs -------------------------------
    async def task_counts(
        self, run_ids: Sequence[str]
    ) -> list[tuple[str, str, str, int, int, bool]]:
        if not run_ids:
            return []
        rows = await self._read(
            "SELECT run_id, node, state, count(*), max(attempt), map_index IS NOT NULL "
            "FROM tasks WHERE run_id = ANY(%s::text[]) "
            "GROUP BY run_id, node, state, map_index IS NOT NULL",
            (list(run_ids),),
        )
        return [(r[0], r[1], r[2], int(r[3]), int(r[4]), bool(r[5])) for r in rows]

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
        sql = f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = %s"
        params: list[Any] = [run_id]
        if node is not None:
            sql += " AND node = %s"
            params.append(node)
        if state is not None:
            sql += " AND state = %s"
            params.append(state)
        if mapped is not None:
            sql += " AND map_index IS NOT NULL" if mapped else " AND map_index IS NULL"
        sql += " ORDER BY node, COALESCE(map_index, -1), name LIMIT %s OFFSET %s"
        rows = await self._read(sql, [*params, limit, offset])
        return [_task_from(r) for r in rows]

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
        pattern = "%" + _like_prefix(text)
        where += (" AND " if where else " WHERE ") + (
            "(id ILIKE %s OR flow ILIKE %s OR params::text ILIKE %s)"
        )
        params += [pattern, pattern, pattern]
        rows = await self._read(
            f"SELECT {_RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        total = await self._read(f"SELECT count(*) FROM runs{where}", params)
        return [_run_from(r) for r in rows], int(total[0][0])

    async def task_spans(
        self, run_id: str
    ) -> list[tuple[str, float | None, float | None, float | None, int]]:
        rows = await self._read(
            f"SELECT node, {_epoch('min(queued_at)')}, {_epoch('min(started_at)')}, "
            f"{_epoch('max(ended_at)')}, "
            "count(*) FILTER (WHERE started_at IS NOT NULL AND ended_at IS NULL) "
            "FROM tasks WHERE run_id = %s AND map_index IS NOT NULL GROUP BY node",
            (run_id,),
        )
        return [(r[0], r[1], r[2], r[3], int(r[4] or 0)) for r in rows]

    async def list_attempts_of(self, run_id: str, tasks: Sequence[str]) -> list[AttemptRecord]:
        if not tasks:
            return []
        rows = await self._read(
            f"SELECT run_id, task, attempt, state, {_epoch('started_at')}, "
            f"{_epoch('ended_at')}, error FROM attempts "
            "WHERE run_id = %s AND task = ANY(%s::text[]) ORDER BY started_at, task, attempt",
            (run_id, list(tasks)),
        )
        return [AttemptRecord(r[0], r[1], r[2], TaskState(r[3]), r[4], r[5], r[6]) for r in rows]

    async def task_waits(self, run_id: str, tasks: Sequence[str]) -> list[tuple[str, float, str]]:
        if not tasks:
            return []
        low = f"run:{run_id}/task:"
        rows = await self._read(
            "SELECT subject, time, data FROM audit WHERE subject = ANY(%s::text[]) "
            "AND kind = 'task.waiting' ORDER BY seq",
            ([low + t for t in tasks],),
        )
        out: list[tuple[str, float, str]] = []
        for subject, when, data in rows:
            raw = bytes(data) if data is not None else None
            reason = (_loads(raw) or {}).get("reason")
            out.append((str(subject)[len(low) :], float(when), str(reason or "")))
        return out

    async def list_logs(
        self, run_id: str, task: str | None = None, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogRecord]:
        sql = (
            f"SELECT run_id, task, attempt, {_epoch('time')}, level, message, seq FROM logs "
            "WHERE run_id = %s AND seq > %s"
        )
        params: list[Any] = [run_id, after_seq]
        if task is not None:
            sql += " AND task = %s"
            params.append(task)
        rows = await self._read(sql + " ORDER BY seq LIMIT %s", [*params, limit])
        return [LogRecord(*r) for r in rows]

    async def list_events(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        source: str | None = None,
        status: str | None = None,
    ) -> list[EventRecord]:
        where: list[str] = []
        params: list[Any] = []
        if source:
            where.append("source = %s")
            params.append(source)
        if status:
            where.append("status = %s")
            params.append(status)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._read(
            f"SELECT {_EVENT_COLS} FROM events{clause} ORDER BY seq DESC LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [_event_from(r) for r in rows]

    async def get_event(self, event_id: str) -> EventRecord:
        """The event whose evflow identity (uid) is ``event_id``; failing that, the one event
        whose sender id it is (a sender's id is unique only within its source)."""
        rows = await self._read(f"SELECT {_EVENT_COLS} FROM events WHERE uid = %s", (event_id,))
        if not rows:
            rows = await self._read(
                f"SELECT {_EVENT_COLS} FROM events WHERE id = %s LIMIT 2", (event_id,)
            )
            if len(rows) > 1:
                raise EventNotFound(
                    f"several events have the sender id {event_id!r} (from different sources); "
                    "name one by its evflow id (uid)"
                )
        if not rows:
            raise EventNotFound(f"no event {event_id!r} in store {self.path}")
        return _event_from(rows[0])

    async def pending_events(self) -> list[EventRecord]:
        rows = await self._read(
            f"SELECT {_EVENT_COLS} FROM events WHERE status = 'pending' ORDER BY seq"
        )
        return [_event_from(r) for r in rows]

    async def oldest_pending(self) -> dict[str, float]:
        """Per source, when its oldest undecided event was received (for sensor lag)."""
        rows = await self._read(
            f"SELECT source, {_epoch('min(received_at)')} FROM events "
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
            f"SELECT id, source, reason, payload, headers::text, {_epoch('received_at')} "
            "FROM dead_letters ORDER BY received_at DESC LIMIT %s OFFSET %s",
            (limit, offset),
        )
        return [
            DeadLetterRecord(r[0], r[1], r[2], bytes(r[3] or b""), _loads(r[4]) or {}, r[5])
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
        sql = f"SELECT {_AUDIT_COLS} FROM audit"
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("time >= %s")
            params.append(since)
        if subject is not None:
            where.append("subject = %s")
            params.append(subject)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        rows = [_audit_tuple(r) for r in await self._read(sql, params)]
        return [AuditRecord(r[0], r[1], r[2], r[3], r[4], _loads(r[5]), r[6], r[7]) for r in rows]

    async def audit_rows(self, after_seq: int = 0, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Raw audit rows (data as stored bytes) for verification."""
        rows = await self._read(
            f"SELECT {_AUDIT_COLS} FROM audit WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [_audit_tuple(r) for r in rows]
