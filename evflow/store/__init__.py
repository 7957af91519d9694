"""Persistence behind one interface: :class:`~evflow.store.base.Store`, its SQLite backend, and
:func:`connect`, which picks the backend from a URL. All SQL lives in this package."""

from __future__ import annotations

import os

from .base import Store
from .sqlite import SqliteStore

__all__ = ["SqliteStore", "Store", "connect"]


def connect(url: str | os.PathLike[str]) -> Store:
    """The store a URL or path names: a SQLite file path or a ``sqlite:///`` URL.

    The store is not open yet: use it as ``async with connect(url) as store``.
    """
    return SqliteStore(url)
