"""Persistence: the :class:`Store` interface and its SQLite implementation."""

from .base import (
    AttemptRecord,
    AuditRecord,
    DeadLetterRecord,
    EventRecord,
    LogRecord,
    RunRecord,
    Store,
    TaskRecord,
)
from .sqlite import SqliteStore, open_store

__all__ = [
    "AttemptRecord",
    "AuditRecord",
    "DeadLetterRecord",
    "EventRecord",
    "LogRecord",
    "RunRecord",
    "SqliteStore",
    "Store",
    "TaskRecord",
    "open_store",
]
