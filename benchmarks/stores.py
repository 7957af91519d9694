"""Which store the workloads run on: SQLite files in a temporary folder (the default), or a
PostgreSQL database (``python -m benchmarks --store postgresql://…``), where each side of each
workload works in a schema of its own, dropped at the end of the run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

from .floor import FloorStore

__all__ = ["backend", "drop_schemas", "engine_store", "floor_store", "on_store"]

STORE_ENV = "EVFLOW_BENCH_STORE"
PREFIX_ENV = "EVFLOW_BENCH_SCHEMA_PREFIX"


def backend() -> str:
    return "postgresql" if os.environ.get(STORE_ENV) else "sqlite"


def _schema_url() -> str:
    import psycopg

    url = os.environ[STORE_ENV]
    schema = f"{os.environ.get(PREFIX_ENV, 'bench')}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}options=" + quote(f"-csearch_path={schema}")


def engine_store(tmp: str | Path) -> str:
    """Where evflow keeps its state for one side of one workload."""
    return _schema_url() if backend() == "postgresql" else str(Path(tmp) / "evflow.db")


def floor_store(tmp: str | Path) -> FloorStore:
    """The floor's store, on the same backend as evflow's (not open yet)."""
    if backend() == "postgresql":
        from .floor_pg import PgFloorStore

        return PgFloorStore(_schema_url())
    return FloorStore(Path(tmp) / "floor.db")


def drop_schemas(url: str, prefix: str) -> None:
    """Drop the schemas one benchmark run made."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "\\_%",)
        ).fetchall()
        for (name,) in rows:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE'.encode())


@contextmanager
def on_store(url: str | None, prefix: str) -> Iterator[None]:
    """Inside: the workloads (and child processes started there) work on PostgreSQL at ``url``,
    each side in a schema named ``{prefix}_…``, dropped on the way out. ``None``: SQLite."""
    if url is None:
        yield
        return
    os.environ[STORE_ENV] = url
    os.environ[PREFIX_ENV] = prefix
    try:
        yield
    finally:
        drop_schemas(url, prefix)
