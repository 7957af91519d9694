"""The embedded store: SQLite, WAL, one writer, grouped commits.

Every write goes through one writer task. Writes queued while a transaction commits are
grouped into the next one, so persistence does not cap throughput: under load one commit
carries hundreds of state changes. Each grouped transaction runs as a single call in a worker
thread (a plain ``sqlite3`` connection used by one thread at a time), not one thread round trip
per statement. Within a transaction, changes are applied per table in a fixed order (events,
cursors, dead letters, runs, tasks, attempts, logs, audit); each table has one statement, so
the order of changes to the same row is kept. Reads go through aiosqlite on a second
connection, which WAL lets run beside the writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any, Literal, TypeVar

import aiosqlite
import anyio
import orjson

from ..abc import Accepted
from ..errors import EventNotFound, RunNotFound, SchemaVersionError, StoreError
from ..events import Event
from ..records import (
    AttemptRecord,
    AuditRecord,
    DeadLetterRecord,
    EventRecord,
    LeaseRecord,
    LogRecord,
    RunRecord,
    TaskRecord,
)
from ..states import RunState, TaskState
from .base import AuditEntry, Changes, DeadLetter, Rows
from .batching import Op, WriteQueue, first_copies, gather, settle_events
from .chains import SYSTEM_CHAIN, WriterChain, append
from .schema import MIGRATIONS, SCHEMA_VERSION
from .urls import sqlite_path

__all__ = ["SqliteStore"]

T = TypeVar("T")

log = logging.getLogger("evflow.store")

_RUN_COLS = (
    "id, flow, flow_version, params, state, priority, trigger, created_at, started_at, "
    "ended_at, waiting, error"
)
_TASK_COLS = (
    "run_id, name, node, map_index, state, attempt, queued_at, started_at, ended_at, "
    "waiting, error, traceback, result"
)
_EVENT_COLS = (
    "seq, id, dedup_key, type, source, subject, time, data, extensions, received_at, status, uid"
)

_SQL_EVENT = (
    "INSERT OR IGNORE INTO events (id, dedup_key, type, source, subject, time, data, "
    "extensions, received_at, uid) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_SQL_CURSOR = (
    "INSERT INTO cursors (name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
_SQL_DEAD = (
    "INSERT OR IGNORE INTO dead_letters (id, source, reason, payload, headers, "
    "dedup_key, received_at) VALUES (?,?,?,?,?,?,?)"
)
_SQL_RUN = (
    f"INSERT INTO runs ({_RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(id) DO UPDATE SET flow_version=excluded.flow_version, params=excluded.params, "
    "state=excluded.state, priority=excluded.priority, started_at=excluded.started_at, "
    "ended_at=excluded.ended_at, waiting=excluded.waiting, error=excluded.error"
)
# Runs a rule creates: inserted only if absent, so deciding an event twice never resets a run.
_SQL_RUN_NEW = (
    f"INSERT INTO runs ({_RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING"
)
_SQL_TASK_NEW = (
    f"INSERT INTO tasks ({_TASK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(run_id, name) DO NOTHING"
)
_SQL_TASK = (
    f"INSERT INTO tasks ({_TASK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(run_id, name) DO UPDATE SET state=excluded.state, attempt=excluded.attempt, "
    "queued_at=excluded.queued_at, started_at=excluded.started_at, ended_at=excluded.ended_at, "
    "waiting=excluded.waiting, error=excluded.error, traceback=excluded.traceback, "
    "result=excluded.result"
)
_SQL_ATTEMPT = (
    "INSERT INTO attempts (run_id, task, attempt, state, started_at, ended_at, error) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(run_id, task, attempt) DO UPDATE SET "
    "state=excluded.state, started_at=excluded.started_at, ended_at=excluded.ended_at, "
    "error=excluded.error"
)
_SQL_LOG = "INSERT INTO logs (run_id, task, attempt, time, level, message) VALUES (?,?,?,?,?,?)"
_SQL_PROCESSED = "UPDATE events SET status = 'processed' WHERE uid = ?"
_SQL_AUDIT = (
    "INSERT INTO audit (chain, pos, time, kind, subject, actor, data, prev_hash, hash) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
_AUDIT_COLS = "seq, time, kind, subject, actor, data, prev_hash, hash, chain, pos"
_SQL_AUDIT_IMPORT = f"INSERT INTO audit ({_AUDIT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
_SQL_HEAD = "SELECT pos, hash FROM audit_heads WHERE chain = ?"
_SQL_HEADS = (
    "INSERT INTO audit_heads (chain, pos, hash) VALUES (?,?,?) "
    "ON CONFLICT(chain) DO UPDATE SET pos = excluded.pos, hash = excluded.hash"
)
_SQL_DUP = (
    "INSERT INTO duplicates (source, count) VALUES (?, ?) "
    "ON CONFLICT(source) DO UPDATE SET count = count + excluded.count"
)


_LEASE_COLS = "name, owner, host, pid, epoch, acquired_at, renewed_at, expires_at"
# Taken if free, expired, already ours, or forced; another holder's epoch goes up by one.
_SQL_LEASE_TAKE = (
    f"INSERT INTO leases ({_LEASE_COLS}) VALUES (?,?,?,?,1,?,?,?) ON CONFLICT(name) DO UPDATE SET "
    "epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END, "
    "acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at "
    "ELSE excluded.acquired_at END, owner = excluded.owner, host = excluded.host, "
    "pid = excluded.pid, renewed_at = excluded.renewed_at, expires_at = excluded.expires_at "
    "WHERE leases.expires_at < excluded.renewed_at OR leases.owner = excluded.owner OR ? "
    f"RETURNING {_LEASE_COLS}"
)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _loads(raw: bytes | str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _attempt_row(a: AttemptRecord) -> tuple[Any, ...]:
    return (a.run_id, a.task, a.attempt, str(a.state), a.started_at, a.ended_at, a.error)


def _log_row(lg: LogRecord) -> tuple[Any, ...]:
    return (lg.run_id, lg.task, lg.attempt, lg.time, lg.level, lg.message)


def _dead_row(dl_id: str, d: DeadLetter) -> tuple[Any, ...]:
    return (
        dl_id,
        d.source,
        d.reason,
        bytes(d.payload),
        _dumps(dict(d.headers)),
        d.dedup_key,
        time.time(),
    )


def _run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.flow,
        r.flow_version,
        _dumps(r.params),
        str(r.state),
        r.priority,
        _dumps(r.trigger),
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


def _run_from(row: Any, tasks: tuple[TaskRecord, ...] = ()) -> RunRecord:
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


def _task_from(row: Any) -> TaskRecord:
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
        result=row[12],
    )


def _event_from(row: Any) -> EventRecord:
    return EventRecord(
        seq=row[0],
        id=row[1],
        dedup_key=row[2],
        type=row[3],
        source=row[4],
        subject=row[5],
        time=row[6],
        data=_loads(row[7]),
        extensions=_loads(row[8]) or {},
        received_at=row[9],
        status=row[10],
        uid=row[11],
    )


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally as a prefix (``%`` and ``_`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _chunks(items: Sequence[Any], n: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class SqliteStore:
    """The embedded :class:`~evflow.store.base.Store`. Use as ``async with SqliteStore(path)``.

    ``synchronous="normal"`` (the default) survives any process crash — a committed write is
    never lost when the process dies; ``"full"`` also survives power loss, at a cost.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_pending: int = 50_000,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> None:
        self.path = sqlite_path(os.fspath(path))
        self.synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._write_limiter = anyio.CapacityLimiter(1)
        self._reader: aiosqlite.Connection | None = None
        self._queue = WriteQueue(repr(self.path), self._commit, max_pending=max_pending)
        self._stack: AsyncExitStack | None = None
        self._chain = WriterChain()  # this writer's audit chain
        self.commits = 0  # for metrics and benchmarks

    # -- lifespan ----------------------------------------------------------------------------
    def describe(self) -> str:
        return os.path.abspath(self.path)

    async def __aenter__(self) -> SqliteStore:
        try:
            await (await anyio.Path(self.path).absolute()).parent.mkdir(parents=True, exist_ok=True)
            self._writer = await anyio.to_thread.run_sync(
                self._open_writer, limiter=self._write_limiter
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store {self.path!r}: {exc}") from None
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._close_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            stack.push_async_callback(self._reader.close)
            await self._reader.execute("PRAGMA busy_timeout=10000")
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._queue.run)
            stack.push_async_callback(self._queue.close)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.aclose()

    async def _close_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._write_limiter)

    # The writer connection is a plain sqlite3 connection used from one worker thread at a
    # time (the write limiter admits one call): each grouped transaction is a single call,
    # instead of one thread round trip per statement.
    def _open_writer(self) -> sqlite3.Connection:
        # Two processes opening a new file at once race to switch it to WAL and to create the
        # schema; SQLite answers "locked" there without always waiting, so try again briefly.
        deadline = time.monotonic() + 10.0
        while True:
            try:
                return self._try_open_writer()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _try_open_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA temp_store=MEMORY")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"store {self.path!r} has schema version {version}, newer than this evflow "
                f"understands ({SCHEMA_VERSION}); upgrade evflow"
            )
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = self._schema_version(conn)
        for number in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have migrated while we waited for the write lock.
                if self._schema_version(conn) > number:
                    conn.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- the writer --------------------------------------------------------------------------
    async def _commit(self, batch: list[Op]) -> None:
        try:
            await anyio.to_thread.run_sync(self._write_batch, batch, limiter=self._write_limiter)
            self.commits += 1
        except Exception as exc:
            log.error("store %s: a grouped write failed and was rolled back: %s", self.path, exc)
            for op in batch:
                op.error = exc

    def _write_batch(self, batch: list[Op]) -> None:
        """One transaction for the whole batch, in the writer's thread."""
        conn = self._writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            audited = self._apply_batch(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        if audited:
            self._chain.opened = True

    def _apply_batch(self, conn: sqlite3.Connection, batch: list[Op]) -> bool:
        """Write the batch; returns whether it appended to this writer's audit chain."""
        now = time.time()
        for op in batch:
            if op.rows is not None:
                self._import(conn, op.rows)
        event_ops = [op for op in batch if op.events]
        g = gather(batch)
        cursors = g.cursors
        dead = [_dead_row(dl_id, d) for dl_id, d in g.dead]
        new_runs = [(ch, _run_row(r)) for ch, r in g.new_runs]
        new_tasks = [_task_row(t) for t in g.new_tasks]
        runs = [_run_row(r) for r in g.runs]
        tasks = [_task_row(t) for t in g.tasks]
        attempts = [_attempt_row(a) for a in g.attempts]
        logs = [_log_row(lg) for lg in g.logs]
        processed = [(e,) for e in g.processed]
        audit_entries = g.audit

        if event_ops:
            # Every event that enters is on the audit trail, in the transaction storing it.
            received = self._insert_events(conn, event_ops, now)
            audit_entries[:0] = received
        if cursors:
            conn.executemany(_SQL_CURSOR, list(cursors.items()))
        if dead:
            conn.executemany(_SQL_DEAD, dead)
        if new_runs:
            created: set[str] = set()
            for ch, row in new_runs:
                if conn.execute(_SQL_RUN_NEW, row).rowcount:
                    ch.created_runs.add(row[0])
                    created.add(row[0])
            conn.executemany(_SQL_TASK_NEW, [t for t in new_tasks if t[0] in created])
        if runs:
            conn.executemany(_SQL_RUN, runs)
        if tasks:
            conn.executemany(_SQL_TASK, tasks)
        if attempts:
            conn.executemany(_SQL_ATTEMPT, attempts)
        if logs:
            conn.executemany(_SQL_LOG, logs)
        if processed:
            conn.executemany(_SQL_PROCESSED, processed)
        if not audit_entries:
            return False
        # This writer's chain continues from its stored head (its own: no other writer touches
        # it); opening it appends to the system chain, read under the write lock.
        head = conn.execute(_SQL_HEAD, (self._chain.name,)).fetchone()
        system = None if head else conn.execute(_SQL_HEAD, (SYSTEM_CHAIN,)).fetchone()
        appended = append(audit_entries, self._chain, head, system, now)
        conn.executemany(_SQL_AUDIT, appended.rows)
        conn.executemany(_SQL_HEADS, appended.heads)
        return True

    @staticmethod
    def _import(conn: sqlite3.Connection, rows: Rows) -> None:
        conn.executemany(
            "INSERT INTO events (id, dedup_key, type, source, subject, time, data, extensions, "
            "received_at, uid, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (e.id, e.dedup_key, e.type, e.source, e.subject, e.time, _dumps(e.data),
                 _dumps(dict(e.extensions)), e.received_at, e.uid, e.status)
                for e in rows.events
            ],
        )  # fmt: skip
        conn.executemany(_SQL_RUN, [_run_row(r) for r in rows.runs])
        conn.executemany(_SQL_TASK, [_task_row(t) for r in rows.runs for t in r.tasks])
        conn.executemany(_SQL_ATTEMPT, [_attempt_row(a) for a in rows.attempts])
        conn.executemany(_SQL_LOG, [_log_row(lg) for lg in rows.logs])
        conn.executemany(
            _SQL_DEAD,
            [(d.id, d.source, d.reason, d.payload, _dumps(dict(d.headers)), None, d.received_at)
             for d in rows.dead_letters],
        )  # fmt: skip
        conn.executemany(_SQL_CURSOR, list(rows.cursors.items()))
        conn.executemany(_SQL_DUP, list(rows.duplicates.items()))
        conn.executemany(_SQL_AUDIT_IMPORT, rows.audit)
        conn.executemany(_SQL_HEADS, [(c, p, h) for c, (p, h) in rows.audit_heads.items()])

    def _insert_events(
        self, conn: sqlite3.Connection, ops: list[Op], now: float
    ) -> list[AuditEntry]:
        first = first_copies(ops)
        rows = []
        for op in ops:
            for ev in op.events:
                rows.append(
                    (
                        ev.id,
                        ev.dedup_key,
                        ev.type,
                        ev.source,
                        ev.subject,
                        ev.time.isoformat(),
                        _dumps(ev.data),
                        _dumps(dict(ev.extensions)),
                        now,
                        ev.uid,
                    )
                )
        conn.executemany(_SQL_EVENT, rows)
        stored: dict[str, str] = {}  # dedup key -> uid of the stored copy
        keys = list(first)
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT dedup_key, uid FROM events WHERE dedup_key IN ({marks})"
            for key, uid in conn.execute(sql, chunk).fetchall():
                stored[key] = uid
        received, dup_counts = settle_events(ops, first, stored, now)
        if dup_counts:
            conn.executemany(_SQL_DUP, list(dup_counts.items()))
        return received

    # -- writes ------------------------------------------------------------------------------
    async def add_events(
        self, events: Sequence[Event], *, cursors: Mapping[str, str] | None = None
    ) -> list[Accepted]:
        if not events and not cursors:
            return []
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

    def apply_nowait(self, changes: Changes) -> None:
        """Queue ``changes`` without waiting for room (for small notes from sync callbacks)."""
        self._queue.put_nowait(Op(changes=changes))

    async def flush(self) -> None:
        await self._queue.flush()

    # -- leases ------------------------------------------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, host: str, pid: int, ttl_s: float, *, force: bool = False
    ) -> tuple[bool, LeaseRecord]:
        def take(conn: sqlite3.Connection) -> tuple[bool, LeaseRecord]:
            now = time.time()
            row = conn.execute(
                _SQL_LEASE_TAKE, (name, owner, host, pid, now, now, now + ttl_s, int(force))
            ).fetchone()
            taken = row is not None
            if row is None:
                row = conn.execute(f"SELECT {_LEASE_COLS} FROM leases WHERE name = ?", (name,))
                row = row.fetchone()
            return taken, LeaseRecord(*row)

        return await self._locked(take)

    async def renew_lease(self, lease: LeaseRecord, ttl_s: float) -> LeaseRecord | None:
        def renew(conn: sqlite3.Connection) -> LeaseRecord | None:
            now = time.time()
            row = conn.execute(
                f"UPDATE leases SET renewed_at = ?, expires_at = ? WHERE name = ? AND owner = ? "
                f"AND epoch = ? RETURNING {_LEASE_COLS}",
                (now, now + ttl_s, lease.name, lease.owner, lease.epoch),
            ).fetchone()
            return None if row is None else LeaseRecord(*row)

        return await self._locked(renew)

    async def release_lease(self, lease: LeaseRecord) -> None:
        def release(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM leases WHERE name = ? AND owner = ? AND epoch = ?",
                (lease.name, lease.owner, lease.epoch),
            )

        await self._locked(release)

    async def list_leases(self) -> list[LeaseRecord]:
        rows = await self._read(f"SELECT {_LEASE_COLS} FROM leases ORDER BY name")
        return [LeaseRecord(*r) for r in rows]

    async def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a transaction of its own on the writer connection (beside the batches)."""

        def run() -> T:
            conn = self._writer
            if conn is None:
                raise StoreError(f"the store {self.path!r} is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            return result

        return await anyio.to_thread.run_sync(run, limiter=self._write_limiter)

    async def import_rows(self, rows: Rows) -> None:
        await self._queue.submit(Op(rows=rows))

    available = True  # an embedded file has no connection to lose

    @property
    def backlog(self) -> int:
        """Writes queued but not yet committed."""
        return self._queue.backlog

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._reader
        if conn is None:
            raise StoreError("the store is not open (use `async with SqliteStore(...)`)")
        return list(await conn.execute_fetchall(sql, params))

    async def get_run(self, run_id: str, *, with_tasks: bool = True) -> RunRecord:
        rows = await self._read(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            rows = (
                await self._read(
                    f"SELECT {_RUN_COLS} FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 6",
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
                f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = ? "
                "ORDER BY COALESCE(queued_at, 1e18), name",
                (rows[0][0],),
            )
            tasks = tuple(_task_from(r) for r in trows)
        return _run_from(rows[0], tasks)

    async def run_exists(self, run_id: str) -> bool:
        return bool(await self._read("SELECT 1 FROM runs WHERE id = ?", (run_id,)))

    def _run_filter(
        self,
        flow: str | None,
        state: str | None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if flow:
            where.append("flow = ?")
            params.append(flow)
        if state:
            where.append("state = ?")
            params.append(state)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("created_at < ?")
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
            f"SELECT {_RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
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
        rows = await self._read(f"SELECT COUNT(*) FROM runs{where}", params)
        return int(rows[0][0])

    async def unfinished_runs(self) -> list[RunRecord]:
        rows = await self._read(
            f"SELECT {_RUN_COLS} FROM runs WHERE state IN ('queued', 'running') "
            "ORDER BY priority DESC, created_at"
        )
        out = []
        for r in rows:
            trows = await self._read(f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = ?", (r[0],))
            out.append(_run_from(r, tuple(_task_from(t) for t in trows)))
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
        out: list[tuple[str, str, str, int, int, bool]] = []
        for chunk in _chunks(list(run_ids)):
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                "SELECT run_id, node, state, COUNT(*), MAX(attempt), map_index IS NOT NULL "
                f"FROM tasks WHERE run_id IN ({marks}) "
                "GROUP BY run_id, node, state, map_index IS NOT NULL",
                list(chunk),
            )
            out += [(r[0], r[1], r[2], int(r[3]), int(r[4]), bool(r[5])) for r in rows]
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
        inner = "SELECT name FROM tasks WHERE run_id = ?"
        params: list[Any] = [run_id]
        if node is not None:
            inner += " AND node = ?"
            params.append(node)
        if state is not None:
            inner += " AND state = ?"
            params.append(state)
        if mapped is not None:
            inner += " AND map_index IS NOT NULL" if mapped else " AND map_index IS NULL"
        inner += " ORDER BY node, COALESCE(map_index, -1), name LIMIT ? OFFSET ?"
        rows = await self._read(
            f"SELECT {_TASK_COLS} FROM tasks WHERE run_id = ? AND name IN ({inner})",
            [run_id, *params, limit, offset],
        )
        tasks = [_task_from(r) for r in rows]
        tasks.sort(key=lambda t: (t.node, -1 if t.map_index is None else t.map_index, t.name))
        return tasks

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
            "(id LIKE ? ESCAPE '\\' OR flow LIKE ? ESCAPE '\\' "
            "OR CAST(params AS TEXT) LIKE ? ESCAPE '\\')"
        )
        params += [pattern, pattern, pattern]
        rows = await self._read(
            f"SELECT {_RUN_COLS} FROM runs{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = await self._read(f"SELECT COUNT(*) FROM runs{where}", params)
        return [_run_from(r) for r in rows], int(total[0][0])

    async def task_spans(
        self, run_id: str
    ) -> list[tuple[str, float | None, float | None, float | None, int]]:
        rows = await self._read(
            "SELECT node, MIN(queued_at), MIN(started_at), MAX(ended_at), "
            "SUM(CASE WHEN started_at IS NOT NULL AND ended_at IS NULL THEN 1 ELSE 0 END) "
            "FROM tasks WHERE run_id = ? AND map_index IS NOT NULL GROUP BY node",
            (run_id,),
        )
        return [(r[0], r[1], r[2], r[3], int(r[4] or 0)) for r in rows]

    async def list_attempts_of(self, run_id: str, tasks: Sequence[str]) -> list[AttemptRecord]:
        out: list[AttemptRecord] = []
        for chunk in _chunks(list(tasks)):
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
        out: list[tuple[str, float, str, int]] = []
        for chunk in _chunks([low + t for t in tasks]):
            marks = ",".join("?" * len(chunk))
            rows = await self._read(
                "SELECT subject, time, data, seq FROM audit "
                f"WHERE subject IN ({marks}) AND kind = 'task.waiting'",
                list(chunk),
            )
            for subject, when, data, seq in rows:
                reason = (_loads(data) or {}).get("reason")
                out.append((str(subject)[len(low) :], float(when), str(reason or ""), int(seq)))
        out.sort(key=lambda r: r[3])
        return [(task, when, reason) for task, when, reason, _ in out]

    async def list_logs(
        self, run_id: str, task: str | None = None, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogRecord]:
        sql = (
            "SELECT run_id, task, attempt, time, level, message, seq FROM logs "
            "WHERE run_id = ? AND seq > ?"
        )
        params: list[Any] = [run_id, after_seq]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        rows = await self._read(sql + " ORDER BY seq LIMIT ?", [*params, limit])
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
            where.append("source = ?")
            params.append(source)
        if status:
            where.append("status = ?")
            params.append(status)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        rows = await self._read(
            f"SELECT {_EVENT_COLS} FROM events{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_event_from(r) for r in rows]

    async def get_event(self, event_id: str) -> EventRecord:
        """The event whose evflow identity (uid) is ``event_id``; failing that, the one event
        whose sender id it is (a sender's id is unique only within its source)."""
        rows = await self._read(f"SELECT {_EVENT_COLS} FROM events WHERE uid = ?", (event_id,))
        if not rows:
            rows = await self._read(
                f"SELECT {_EVENT_COLS} FROM events WHERE id = ? LIMIT 2", (event_id,)
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
        return [DeadLetterRecord(r[0], r[1], r[2], r[3], _loads(r[4]) or {}, r[5]) for r in rows]

    async def list_cursors(self) -> dict[str, str]:
        return {str(r[0]): str(r[1]) for r in await self._read("SELECT name, value FROM cursors")}

    async def get_cursor(self, name: str) -> str | None:
        rows = await self._read("SELECT value FROM cursors WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    async def list_audit(
        self, *, since: float | None = None, subject: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        sql = f"SELECT {_AUDIT_COLS} FROM audit"
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._read(sql, params)
        return [
            AuditRecord(r[0], r[1], r[2], r[3], r[4], _loads(r[5]), r[6], r[7], r[8], r[9])
            for r in rows
        ]

    async def audit_rows(self, after_seq: int = 0, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Raw audit rows (data as stored bytes) for verification."""
        return [
            tuple(r)
            for r in await self._read(
                f"SELECT {_AUDIT_COLS} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        ]

    async def audit_heads(self) -> dict[str, tuple[int, str]]:
        rows = await self._read("SELECT chain, pos, hash FROM audit_heads")
        return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}
