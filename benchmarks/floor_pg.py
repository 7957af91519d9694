"""The PostgreSQL floor: :class:`~benchmarks.floor.FloorStore`'s work on PostgreSQL.

Plain asyncio and psycopg, with what evflow's PostgreSQL store keeps: one connection for
writes, grouped commits (one writer task drains every queued row into one transaction per
batch), each table's rows in one ``INSERT … SELECT FROM unnest(…)`` statement over one
binary array per column (psycopg's own list dumping) with rows written twice in a batch folded
first, ``ON CONFLICT DO NOTHING`` for event dedup keys,
``jsonb`` for parameters and results, ``timestamptz`` for instants, and the server's default
durability (``synchronous_commit`` on). The same rows as the SQLite floor: events, runs and
tasks, one row per state change.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import psycopg

from .floor import FloorStore, Row

__all__ = ["PgFloorStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq bigserial PRIMARY KEY,
    id text NOT NULL,
    dedup_key text NOT NULL UNIQUE,
    type text NOT NULL,
    source text NOT NULL,
    data jsonb,
    received_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id text PRIMARY KEY,
    flow text NOT NULL,
    params jsonb NOT NULL,
    state text NOT NULL,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    ended_at timestamptz
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id text NOT NULL,
    name text NOT NULL,
    state text NOT NULL,
    started_at timestamptz,
    ended_at timestamptz,
    result jsonb,
    PRIMARY KEY (run_id, name)
);
"""

_SQL_EVENTS = """
INSERT INTO events (id, dedup_key, type, source, data, received_at)
SELECT i, k, t, s, d::jsonb, to_timestamp(r)
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::float8[])
     AS v(i, k, t, s, d, r)
ON CONFLICT DO NOTHING
"""
_SQL_RUNS = """
INSERT INTO runs (id, flow, params, state, created_at, started_at, ended_at)
SELECT i, f, p::jsonb, s, to_timestamp(c), to_timestamp(sa), to_timestamp(e)
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[],
            %b::float8[]) AS v(i, f, p, s, c, sa, e)
ON CONFLICT (id) DO UPDATE SET state = excluded.state, started_at = excluded.started_at,
    ended_at = excluded.ended_at
"""
_SQL_TASKS = """
INSERT INTO tasks (run_id, name, state, started_at, ended_at, result)
SELECT r, n, s, to_timestamp(sa), to_timestamp(e), res::jsonb
FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::float8[], %b::text[])
     AS v(r, n, s, sa, e, res)
ON CONFLICT (run_id, name) DO UPDATE SET state = excluded.state,
    started_at = excluded.started_at, ended_at = excluded.ended_at, result = excluded.result
"""


def _columns(rows: list[Row], width: int, json: int) -> list[list[Any]]:
    """Rows → one list per column, transposed in C; the JSON column ``json`` (bytes from
    orjson) as text, for its ``::jsonb`` cast."""
    if not rows:
        return [[] for _ in range(width)]
    cols = [list(col) for col in zip(*rows, strict=True)]
    cols[json] = [None if v is None else v.decode() for v in cols[json]]
    return cols


def _last(rows: list[Row], key: int) -> list[Row]:
    out: dict[Any, Row] = {}
    for row in rows:
        out[row[:key]] = row
    return list(out.values())


class PgFloorStore(FloorStore):
    """:class:`FloorStore` on PostgreSQL: ``async with PgFloorStore(url)``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url
        self._pg: psycopg.AsyncConnection[Any] | None = None

    async def __aenter__(self) -> PgFloorStore:
        self._pg = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await self._pg.execute(_SCHEMA.encode())
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
        if self._pg is not None:
            await self._pg.close()

    async def _write(self, events: list[Row], runs: list[Row], tasks: list[Row]) -> None:
        conn = self._pg
        assert conn is not None
        async with conn.transaction():
            if events:
                await conn.execute(_SQL_EVENTS, _columns(events, 6, 4))
            if runs:
                await conn.execute(_SQL_RUNS, _columns(_last(runs, 1), 7, 2))
            if tasks:
                await conn.execute(_SQL_TASKS, _columns(_last(tasks, 2), 6, 5))
