"""The embedded store: SQLite, WAL, one writer, grouped commits; its lifespan, migrations,
writer and leases (its reads are :mod:`evflow.store.sqlite_reads`, its SQL
:mod:`evflow.store.sqlite_sql`).

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
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Any, Literal, TypeVar

import aiosqlite
import anyio

from ..abc import Accepted
from ..errors import SchemaVersionError, StoreError
from ..events import Event
from ..records import LeaseRecord
from . import sqlite_sql as sql
from .base import AuditEntry, Changes, DeadLetter, PruneStep, Rows
from .batching import Op, WriteQueue, first_copies, gather, last_runs, last_tasks, settle_events
from .chains import SYSTEM_CHAIN, WriterChain, append
from .schema import MIGRATIONS, SCHEMA_VERSION
from .sqlite_reads import SqliteReads
from .sqlite_retention import prune_step
from .urls import mask, sqlite_path

__all__ = ["SqliteStore"]

T = TypeVar("T")

# The writer's page cache. A run's rows sit on pages of their own (its id is random), and each
# commit that records a change of the run rewrites its pages of tasks, attempts and the audit
# index: with many runs in flight those pages should still be in memory, not read back from
# the file at each change (SQLite's default cache is 2 MiB, a few hundred runs' pages).
WRITER_CACHE_KIB = 32_768
# Pages the WAL grows by before the writer copies it into the database file. A checkpoint
# copies each page once however many commits rewrote it, and syncs both files: at SQLite's
# default (1,000 pages) a busy writer checkpoints after nearly every commit, copying the same
# pages again each time. Commits are as durable either way (``synchronous`` decides that).
WAL_CHECKPOINT_PAGES = 10_000

log = logging.getLogger("evflow.store")


class SqliteStore(SqliteReads):
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
        if self.path.lower().startswith(("postgresql:", "postgres:")):
            # A PostgreSQL URL passed through a file path (which folds its "//"): refuse it,
            # instead of creating a folder named after the server.
            raise StoreError(
                f"{mask(self.path)} is a PostgreSQL URL, not a SQLite file: pass it as a "
                "string (postgresql://user@host:port/db), not as a path"
            )
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
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
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
        dead = [sql.dead_row(dl_id, d) for dl_id, d in g.dead]
        new_runs = [(ch, sql.run_row(r)) for ch, r in g.new_runs]
        new_tasks = [sql.task_row(t) for t in g.new_tasks]
        runs = [sql.run_row(r) for r in last_runs(g.runs)]
        tasks = [sql.task_row(t) for t in last_tasks(g.tasks)]
        attempts = [sql.attempt_row(a) for a in g.attempts]
        logs = [sql.log_row(lg) for lg in g.logs]
        processed = [(e,) for e in g.processed]
        audit_entries = g.audit

        if event_ops:
            # Every event that enters is on the audit trail, in the transaction storing it.
            received = self._insert_events(conn, event_ops, now)
            audit_entries[:0] = received
        if cursors:
            conn.executemany(sql.CURSOR, list(cursors.items()))
        if dead:
            conn.executemany(sql.DEAD, dead)
        if new_runs:
            created: set[str] = set()
            for ch, row in new_runs:
                if conn.execute(sql.RUN_NEW, row).rowcount:
                    ch.created_runs.add(row[0])
                    created.add(row[0])
            conn.executemany(sql.TASK_NEW, [t for t in new_tasks if t[0] in created])
        if runs:
            conn.executemany(sql.RUN, runs)
        if tasks:
            conn.executemany(sql.TASK, tasks)
        if attempts:
            conn.executemany(sql.ATTEMPT, attempts)
        if logs:
            conn.executemany(sql.LOG, logs)
        if processed:
            conn.executemany(sql.PROCESSED, processed)
        if not audit_entries:
            return False
        # This writer's chain continues from its stored head (its own: no other writer touches
        # it); opening it appends to the system chain, read under the write lock.
        head = conn.execute(sql.HEAD, (self._chain.name,)).fetchone()
        system = None if head else conn.execute(sql.HEAD, (SYSTEM_CHAIN,)).fetchone()
        appended = append(audit_entries, self._chain, head, system, now)
        conn.executemany(sql.AUDIT, appended.rows)
        conn.executemany(sql.HEADS, appended.heads)
        return True

    @staticmethod
    def _import(conn: sqlite3.Connection, rows: Rows) -> None:
        conn.executemany(
            "INSERT INTO events (id, dedup_key, type, source, subject, time, data, extensions, "
            "received_at, uid, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (e.id, e.dedup_key, e.type, e.source, e.subject, e.time, sql.dumps(e.data),
                 sql.dumps(dict(e.extensions)), e.received_at, e.uid, e.status)
                for e in rows.events
            ],
        )  # fmt: skip
        conn.executemany(sql.RUN, [sql.run_row(r) for r in rows.runs])
        conn.executemany(sql.TASK, [sql.task_row(t) for r in rows.runs for t in r.tasks])
        conn.executemany(sql.ATTEMPT, [sql.attempt_row(a) for a in rows.attempts])
        conn.executemany(sql.LOG, [sql.log_row(lg) for lg in rows.logs])
        conn.executemany(
            sql.DEAD,
            [(d.id, d.source, d.reason, d.payload, sql.dumps(dict(d.headers)), None, d.received_at)
             for d in rows.dead_letters],
        )  # fmt: skip
        conn.executemany(sql.CURSOR, list(rows.cursors.items()))
        conn.executemany(sql.DUP, list(rows.duplicates.items()))
        conn.executemany(sql.AUDIT_IMPORT, rows.audit)
        conn.executemany(sql.HEADS, [(c, p, h) for c, (p, h) in rows.audit_heads.items()])
        conn.executemany(sql.ANCHOR_IMPORT, [(c, p, h) for c, (p, h) in rows.audit_anchors.items()])

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
                        sql.dumps(ev.data),
                        sql.dumps(dict(ev.extensions)),
                        now,
                        ev.uid,
                    )
                )
        conn.executemany(sql.EVENT, rows)
        stored: dict[str, str] = {}  # dedup key -> uid of the stored copy
        keys = list(first)
        for chunk in sql.chunks(keys):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT dedup_key, uid FROM events WHERE dedup_key IN ({marks})"
            for key, uid in conn.execute(query, chunk).fetchall():
                stored[key] = uid
        received, dup_counts = settle_events(ops, first, stored, now)
        if dup_counts:
            conn.executemany(sql.DUP, list(dup_counts.items()))
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

    def apply(self, changes: Changes, *, wait: bool = False) -> Coroutine[Any, Any, None]:
        return self._queue.apply(changes, wait)

    def apply_nowait(self, changes: Changes) -> None:
        """Queue ``changes`` without waiting for room (for small notes from sync callbacks)."""
        self._queue.put_nowait(Op(changes=changes))

    def flush(self) -> Coroutine[Any, Any, None]:
        return self._queue.flush()

    # -- leases ------------------------------------------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, host: str, pid: int, ttl_s: float, *, force: bool = False
    ) -> tuple[bool, LeaseRecord]:
        def take(conn: sqlite3.Connection) -> tuple[bool, LeaseRecord]:
            now = time.time()
            row = conn.execute(
                sql.LEASE_TAKE, (name, owner, host, pid, now, now, now + ttl_s, int(force))
            ).fetchone()
            taken = row is not None
            if row is None:
                row = conn.execute(f"SELECT {sql.LEASE_COLS} FROM leases WHERE name = ?", (name,))
                row = row.fetchone()
            return taken, LeaseRecord(*row)

        return await self._locked(take)

    async def renew_lease(self, lease: LeaseRecord, ttl_s: float) -> LeaseRecord | None:
        def renew(conn: sqlite3.Connection) -> LeaseRecord | None:
            now = time.time()
            row = conn.execute(
                f"UPDATE leases SET renewed_at = ?, expires_at = ? WHERE name = ? AND owner = ? "
                f"AND epoch = ? RETURNING {sql.LEASE_COLS}",
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
        rows = await self._read(f"SELECT {sql.LEASE_COLS} FROM leases ORDER BY name")
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

    async def prune_step(self, before: float, *, max_runs: int, max_records: int) -> PruneStep:
        return await self._locked(lambda conn: prune_step(conn, before, max_runs, max_records))

    available = True  # an embedded file has no connection to lose

    @property
    def backlog(self) -> int:
        """Writes queued but not yet committed."""
        return self._queue.backlog
