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
from collections.abc import Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - the extra is missing
    from ..errors import StoreError

    raise StoreError("PostgreSQL support is not installed: pip install 'evflow[postgres]'") from exc

from ..abc import Accepted
from ..errors import OwnershipLost, SchemaVersionError, StoreError, StoreUnavailable
from ..events import Event
from ..records import (
    LeaseRecord,
)
from . import postgres_sql as sql
from .base import Changes, DeadLetter, PruneStep, Rows
from .batching import Op, WriteQueue
from .chains import WriterChain
from .postgres_arrays import register as register_arrays
from .postgres_batch import PostgresBatch
from .postgres_instances import PostgresInstances, PostgresRunOwnership
from .postgres_reads import CONNECTION_ERRORS, PostgresReads
from .postgres_retention import prune_step
from .postgres_schema import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from .urls import mask, split_prepare_threshold

__all__ = ["PostgresStore"]

log = logging.getLogger("evflow.store")

_CONNECTION_ERRORS = CONNECTION_ERRORS
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 5.0
_CLOSE_GIVE_UP_S = 10.0


class PostgresStore(PostgresInstances, PostgresRunOwnership, PostgresBatch, PostgresReads):
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
        self.path = mask(url)  # what messages show; never the password
        self.url, self.prepare_threshold, problem = split_prepare_threshold(url)
        if problem is not None:
            raise StoreError(f"store {self.path}: {problem}")
        self.pool_size = pool_size
        self.statement_timeout_s = statement_timeout_s
        self.idle_in_transaction_timeout_s = idle_in_transaction_timeout_s
        self.available = True
        self.commits = 0  # for metrics and benchmarks
        self.fenced = False  # cluster mode: this instance was taken over; nothing commits
        self._queue = WriteQueue(self.path, self._commit, max_pending=max_pending)
        self._pool: AsyncConnectionPool | None = None
        self._stack: AsyncExitStack | None = None
        self._retry_delay = _RETRY_MIN_S
        self._away = anyio.Event()  # set while the database cannot be reached
        self._closing_since: float | None = None
        self._lost: tuple[str, set[int]] | None = None  # (expected head, ops) of a lost commit
        self._chain = WriterChain()  # this writer's audit chain

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
                kwargs={"autocommit": True, "prepare_threshold": self.prepare_threshold},
                configure=self._configure,
                open=False,
                timeout=5.0,
                name="evflow",
            )
            try:
                await pool.open(wait=True, timeout=10.0)
            except Exception as exc:
                await pool.close()
                raise StoreError(sql.describe_connect_error(self.url, exc)) from None
            stack.push_async_callback(pool.close)
            self._pool = pool
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(self._queue.run)
            tg.start_soon(self._watch_while_away)
            stack.callback(tg.cancel_scope.cancel)  # the watcher, once the writer has closed
            stack.push_async_callback(self._queue.close)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        await stack.aclose()
        self._pool = None

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        register_arrays(conn.adapters)
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
                self.url,
                autocommit=True,
                connect_timeout=10,
                prepare_threshold=self.prepare_threshold,
            )
        except (psycopg.Error, ValueError) as exc:
            raise StoreError(sql.describe_connect_error(self.url, exc)) from None
        register_arrays(conn.adapters)
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
                    # Pipeline mode: statements go out without waiting for each answer, so a
                    # batch costs a round trip or two, not one per statement.
                    async with conn.pipeline(), conn.transaction():
                        head = await self._apply(conn, batch)
                except _CONNECTION_ERRORS:
                    if head is not None:  # the commit itself failed: it may have gone through
                        self._lost = (head, {id(op) for op in batch})
                    raise
            if head is not None:
                self._chain.opened = True
            self.commits += 1
        except _CONNECTION_ERRORS as exc:
            self._connection_lost(batch, exc)
            return
        except OwnershipLost as exc:
            if not self.fenced:
                log.error("store %s: %s", self.path, exc)
            self.fenced = True
            self._fail(batch, exc)
            return
        except StoreError as exc:  # the trail was altered by hand under this writer
            log.error("store %s: a write was refused: %s", self.path, exc)
            self._fail(batch, exc)
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
            self._back()
        self._closing_since = None

    async def _watch_while_away(self) -> None:
        """While the database is away and nothing is queued to find out, ask it now and then,
        so intake opens again when it is back (intake refuses events meanwhile, so there may
        be no write to try)."""
        while True:
            await self._away.wait()
            await anyio.sleep(self._retry_delay)
            if self.available or self._pool is None:
                continue
            try:
                async with self._pool.connection() as conn:
                    await conn.execute("SELECT 1")
            except _CONNECTION_ERRORS:
                self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX_S)
                continue
            log.warning("store %s: the database is back", self.path)
            self._back()

    def _back(self) -> None:
        self.available = True
        self._away = anyio.Event()
        self._retry_delay = _RETRY_MIN_S

    def _connection_lost(self, batch: list[Op], exc: BaseException) -> None:
        if self.available:
            log.error("store %s: lost the database (%s); reconnecting", self.path, exc)
        self.available = False
        self._away.set()
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
        """After a commit whose outcome was lost: if this writer's chain's head is the one it
        would have written, it went through, and its requeued ops are not applied again."""
        assert self._lost is not None and self._pool is not None
        expected, ops = self._lost
        async with self._pool.connection() as conn:
            head = await self._head(conn, self._chain.name)
        committed = head is not None and head[1] == expected
        self._lost = None
        if committed:
            self._chain.opened = True
        return [op for op in batch if id(op) not in ops] if committed else batch

    @staticmethod
    def _fail(batch: list[Op], exc: BaseException) -> None:
        for op in batch:
            op.error = exc

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

    def apply(self, changes: Changes, *, wait: bool = False) -> Coroutine[Any, Any, None]:
        return self._queue.apply(changes, wait)

    # -- leases ------------------------------------------------------------------------------
    # Times come from the database's clock, so instances whose clocks disagree agree on them.
    async def acquire_lease(
        self, name: str, owner: str, host: str, pid: int, ttl_s: float, *, force: bool = False
    ) -> tuple[bool, LeaseRecord]:
        rows = await self._write_read(sql.LEASE_TAKE, (name, owner, host, pid, ttl_s, force))
        if rows:
            return True, LeaseRecord(*rows[0])
        rows = await self._read(f"SELECT {sql.LEASE_COLS} FROM leases WHERE name = %s", (name,))
        return False, LeaseRecord(*rows[0])

    async def renew_lease(self, lease: LeaseRecord, ttl_s: float) -> LeaseRecord | None:
        rows = await self._write_read(
            "UPDATE leases SET renewed_at = now(), expires_at = now() + make_interval(secs => %s) "
            f"WHERE name = %s AND owner = %s AND epoch = %s RETURNING {sql.LEASE_COLS}",
            (ttl_s, lease.name, lease.owner, lease.epoch),
        )
        return LeaseRecord(*rows[0]) if rows else None

    async def release_lease(self, lease: LeaseRecord) -> None:
        await self._write_read(
            "DELETE FROM leases WHERE name = %s AND owner = %s AND epoch = %s RETURNING name",
            (lease.name, lease.owner, lease.epoch),
        )

    async def list_leases(self) -> list[LeaseRecord]:
        rows = await self._read(f"SELECT {sql.LEASE_COLS} FROM leases ORDER BY name")
        return [LeaseRecord(*r) for r in rows]

    async def _write_read(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """One statement in a transaction of its own (autocommit), beside the batches."""
        try:
            return await self._statement(sql, params)
        except _CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from None

    async def import_rows(self, rows: Rows) -> None:
        await self._queue.submit(Op(rows=rows))

    async def prune_step(self, before: float, *, max_runs: int, max_records: int) -> PruneStep:
        pool = self._pool
        if pool is None:
            raise StoreError(f"the store {self.path} is not open (use `async with`)")
        try:
            # A step, once begun, commits or rolls back before the caller goes on.
            with anyio.fail_after(2 * self.statement_timeout_s + 5.0, shield=True):
                async with pool.connection() as conn, conn.transaction():
                    return await prune_step(conn, before, max_runs, max_records)
        except _CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from None

    def apply_nowait(self, changes: Changes) -> None:
        self._queue.put_nowait(Op(changes=changes))

    def flush(self) -> Coroutine[Any, Any, None]:
        return self._queue.flush()

    @property
    def backlog(self) -> int:
        """Writes queued but not yet committed."""
        return self._queue.backlog
