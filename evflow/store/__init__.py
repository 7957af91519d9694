"""Persistence behind one interface: :class:`~evflow.store.base.Store`, its backends (SQLite,
embedded; PostgreSQL, on a server) and :func:`connect`, which picks the backend from a URL.
All SQL lives in this package."""

from __future__ import annotations

import os

from .base import Store
from .sqlite import SqliteStore
from .urls import is_postgres, mask

__all__ = ["SqliteStore", "Store", "connect", "is_postgres", "mask"]


def connect(url: str | os.PathLike[str]) -> Store:
    """The store a URL or path names: ``postgresql://user:password@host:port/db`` (needs the
    ``postgres`` extra), or a SQLite file path or ``sqlite:///`` URL.

    The store is not open yet: use it as ``async with connect(url) as store``.
    """
    if is_postgres(url):
        from .postgres import PostgresStore  # imported here: psycopg is an extra

        return PostgresStore(str(url))
    return SqliteStore(url)
