"""The bare-asyncio floor: the same work as evflow with the same persistence, nothing more.

What the floor keeps from evflow, so the ratio measures the engine and not the disk:

* SQLite through aiosqlite, WAL, ``synchronous=NORMAL``, one writer connection;
* one row per state change: a run's ``queued`` / ``running`` / final row, each task's
  ``pending`` / ``running`` / ``succeeded`` row (results JSON-encoded with orjson), an event row
  per event (unique dedup key);
* grouped commits: every write is queued; one writer task drains the queue into one
  transaction per batch, applying each table's rows with one ``executemany`` in a fixed order
  (events, runs, tasks); a caller that needs durability (run creation, event intake, run end)
  waits for its batch's commit, the others do not;
* an :class:`asyncio.Semaphore` for the global limit / pool;
* the same ids: time-ordered (UUID version 7), as evflow makes them.

What it leaves out is exactly what evflow adds on top: the audit chain, attempt rows, rules,
DAG bookkeeping, observers, cancellation scopes, retries, and so on.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import orjson

__all__ = ["FloorReactor", "FloorRun", "FloorStore", "run_task"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    data BLOB,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    params BLOB NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL,
    ended_at REAL,
    result BLOB,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
"""

_SQL_EVENT = (
    "INSERT OR IGNORE INTO events (id, dedup_key, type, source, data, received_at) "
    "VALUES (?,?,?,?,?,?)"
)
_SQL_RUN = (
    "INSERT INTO runs (id, flow, params, state, created_at, started_at, ended_at) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
    "started_at=excluded.started_at, ended_at=excluded.ended_at"
)
_SQL_TASK = (
    "INSERT INTO tasks (run_id, name, state, started_at, ended_at, result) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT(run_id, name) DO UPDATE SET state=excluded.state, "
    "started_at=excluded.started_at, ended_at=excluded.ended_at, result=excluded.result"
)

Row = tuple[Any, ...]


def new_id() -> str:
    """The ids evflow makes (time-ordered UUIDs, version 7), so that both sides insert the same
    keys into their indexes: at the right-hand edge, not at random places. Written here rather
    than imported from ``evflow.events``: the floor's process loads nothing of evflow's."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class FloorStore:
    """aiosqlite with one writer task and grouped commits. ``async with FloorStore(path)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.commits = 0
        self._conn: aiosqlite.Connection | None = None
        self._events: list[Row] = []
        self._runs: list[Row] = []
        self._tasks: list[Row] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FloorStore:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        for pragma in (
            "PRAGMA busy_timeout=10000",
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA temp_store=MEMORY",
        ):
            await conn.execute(pragma)
        await conn.executescript(_SCHEMA)
        self._conn = conn
        self._writer = asyncio.create_task(self._write_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.flush()
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._conn is not None:
            await self._conn.close()

    # -- writes ------------------------------------------------------------------------------
    def put(
        self, *, events: Sequence[Row] = (), runs: Sequence[Row] = (), tasks: Sequence[Row] = ()
    ) -> None:
        """Queue rows for the next grouped commit; returns at once."""
        self._events.extend(events)
        self._runs.extend(runs)
        self._tasks.extend(tasks)
        self._wake.set()

    async def commit(
        self, *, events: Sequence[Row] = (), runs: Sequence[Row] = (), tasks: Sequence[Row] = ()
    ) -> None:
        """Queue rows and return once the transaction carrying them has committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.put(events=events, runs=runs, tasks=tasks)
        await fut

    async def flush(self) -> None:
        if self._events or self._runs or self._tasks or self._waiters:
            await self.commit()

    async def _write(self, events: list[Row], runs: list[Row], tasks: list[Row]) -> None:
        """One grouped transaction: each table's rows in one statement, in a fixed order."""
        conn = self._conn
        assert conn is not None
        await conn.execute("BEGIN IMMEDIATE")
        if events:
            await conn.executemany(_SQL_EVENT, events)
        if runs:
            await conn.executemany(_SQL_RUN, runs)
        if tasks:
            await conn.executemany(_SQL_TASK, tasks)
        await conn.execute("COMMIT")

    async def _write_loop(self) -> None:
        while True:
            if not (self._events or self._runs or self._tasks or self._waiters):
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            events, self._events = self._events, []
            runs, self._runs = self._runs, []
            tasks, self._tasks = self._tasks, []
            waiters, self._waiters = self._waiters, []
            await self._write(events, runs, tasks)
            self.commits += 1
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    # -- rows --------------------------------------------------------------------------------
    @staticmethod
    def event_row(type_: str, source: str, data: Any, dedup_key: str | None = None) -> Row:
        eid = new_id()
        return (eid, dedup_key or f"{source}/{eid}", type_, source, orjson.dumps(data), time.time())


class FloorRun:
    """One run's rows: created queued with its tasks pending, then running, then finished."""

    __slots__ = ("created_at", "flow", "id", "params", "started_at", "store")

    def __init__(self, store: FloorStore, flow: str, params: Any) -> None:
        self.store = store
        self.id = new_id()
        self.flow = flow
        self.params = orjson.dumps(params)
        self.created_at = time.time()
        self.started_at: float | None = None

    def _row(self, state: str, ended_at: float | None = None) -> Row:
        return (self.id, self.flow, self.params, state, self.created_at, self.started_at, ended_at)

    async def create(self, task_names: Sequence[str]) -> None:
        """The queued run and its pending tasks, committed before the run may start."""
        await self.store.commit(
            runs=[self._row("queued")],
            tasks=[(self.id, n, "pending", None, None, None) for n in task_names],
        )

    def start(self) -> None:
        self.started_at = time.time()
        self.store.put(runs=[self._row("running")])

    async def finish(self, state: str = "succeeded") -> None:
        await self.store.commit(runs=[self._row(state, time.time())])


async def run_task(
    run: FloorRun,
    name: str,
    limit: asyncio.Semaphore | None,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
) -> Any:
    """One task instance: take a slot, record running, call, record the JSON result."""
    store = run.store
    if limit is not None:
        await limit.acquire()
    try:
        started = time.time()
        store.put(tasks=[(run.id, name, "running", started, None, None)])
        value = await fn(*args)
        result = orjson.dumps(value)
        store.put(tasks=[(run.id, name, "succeeded", started, time.time(), result)])
    finally:
        if limit is not None:
            limit.release()
    return orjson.loads(result)


Chain = Sequence[tuple[str, Callable[[Any], Awaitable[Any]]]]


class FloorReactor:
    """Events in, runs out: the floor of evflow's intake → rules → run path.

    :meth:`emit` commits the event row (durable before it is acknowledged) and hands the event
    to a rule task, which creates one run per event (run and task rows committed before the run
    starts) and drives it: a chain of tasks, each under ``limit``, the first one called with
    ``data[key]``.
    """

    def __init__(
        self,
        store: FloorStore,
        chain: Chain,
        *,
        key: str = "key",
        limit: asyncio.Semaphore | None = None,
    ) -> None:
        self.store = store
        self.chain = chain
        self.key = key
        self.limit = limit
        self._inbox: list[Mapping[str, Any]] = []
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FloorReactor:
        self._loop = asyncio.create_task(self._rule_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        if self._runs:
            await asyncio.gather(*self._runs, return_exceptions=True)
        await self.store.flush()

    async def emit(
        self, type_: str, source: str, data: Mapping[str, Any], dedup_key: str | None = None
    ) -> str:
        """Record one event durably and queue it for the rule task; its id."""
        row = FloorStore.event_row(type_, source, data, dedup_key)
        await self.store.commit(events=[row])
        self._inbox.append(data)
        self._wake.set()
        return str(row[0])

    async def emit_many(
        self, events: Sequence[tuple[str, str, Mapping[str, Any], str | None]]
    ) -> None:
        """Record several events in one commit, then queue them."""
        rows = [FloorStore.event_row(t, s, d, k) for t, s, d, k in events]
        await self.store.commit(events=rows)
        self._inbox.extend(d for _, _, d, _ in events)
        self._wake.set()

    async def _rule_loop(self) -> None:
        names = [name for name, _ in self.chain]
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._inbox = self._inbox, []
            if not batch:
                continue
            runs = [(FloorRun(self.store, "react", dict(d)), d) for d in batch]
            await asyncio.gather(*(run.create(names) for run, _ in runs))
            for run, data in runs:
                t = asyncio.create_task(self._drive(run, data.get(self.key)))
                self._runs.add(t)
                t.add_done_callback(self._runs.discard)

    async def _drive(self, run: FloorRun, value: Any) -> None:
        run.start()
        for name, fn in self.chain:
            value = await run_task(run, name, self.limit, fn, value)
        await run.finish()
