"""Which schema version a store is at, read without migrating it (``evflow db status``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import anyio

from .urls import is_postgres, mask, sqlite_path

__all__ = ["SchemaStatus", "schema_status"]


@dataclass(frozen=True)
class SchemaStatus:
    backend: str  # "sqlite" or "postgresql"
    location: str  # a file path, or the URL with its password masked
    version: int  # migrations applied (0: an empty database, or no file yet)
    latest: int  # migrations this evflow knows
    exists: bool = True

    @property
    def state(self) -> str:
        if not self.exists:
            return "no store yet (created at first use)"
        if self.version > self.latest:
            return f"NEWER than this evflow understands ({self.latest}): upgrade evflow"
        if self.version < self.latest:
            return f"{self.latest - self.version} migration(s) to apply: run `evflow db upgrade`"
        return "up to date"


async def schema_status(location: str) -> SchemaStatus:
    """The schema version of the store at ``location`` (a path or URL)."""
    if is_postgres(location):
        from .postgres import PostgresStore
        from .postgres_schema import SCHEMA_VERSION as PG_LATEST

        version = await PostgresStore(location).schema_version()
        return SchemaStatus("postgresql", mask(location), version, PG_LATEST)
    from .schema import SCHEMA_VERSION

    path = await anyio.Path(sqlite_path(location)).resolve()
    if not await path.exists():
        return SchemaStatus("sqlite", str(path), 0, SCHEMA_VERSION, exists=False)

    def read() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    return SchemaStatus("sqlite", str(path), await anyio.to_thread.run_sync(read), SCHEMA_VERSION)
