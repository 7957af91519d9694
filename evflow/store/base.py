"""The :class:`Store` interface and the records it keeps.

The store is narrow on purpose: the engine writes through :meth:`Store.apply` (grouped into
transactions by the implementation) and reads through a handful of queries. All SQL lives
behind it, so another backend (PostgreSQL for several instances) is one new module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..abc import Accepted
from ..events import Event
from ..states import RunState, TaskState

__all__ = [
    "AttemptRecord",
    "AuditEntry",
    "AuditRecord",
    "Changes",
    "DeadLetterRecord",
    "EventRecord",
    "LogRecord",
    "RunRecord",
    "Store",
    "TaskRecord",
]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task instance of one run (a mapped task has one per item, named ``node[i]``)."""

    run_id: str
    name: str
    node: str
    state: TaskState
    attempt: int = 0
    map_index: int | None = None
    queued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    waiting: str | None = None
    error: str | None = None
    traceback: str | None = None
    result: bytes | None = None  # JSON

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one flow; ``trigger`` says what started it (api, event, schedule, retry)."""

    id: str
    flow: str
    flow_version: str
    params: Mapping[str, Any]
    state: RunState
    created_at: float
    priority: int = 0
    trigger: Mapping[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    waiting: str | None = None
    error: str | None = None
    tasks: tuple[TaskRecord, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    run_id: str
    task: str
    attempt: int
    state: TaskState
    started_at: float | None
    ended_at: float | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    run_id: str
    task: str
    attempt: int
    time: float
    level: str
    message: str
    seq: int = 0


@dataclass(frozen=True, slots=True)
class EventRecord:
    seq: int
    id: str
    dedup_key: str
    type: str
    source: str
    subject: str | None
    time: str
    data: Any
    extensions: Mapping[str, Any]
    received_at: float
    status: str

    def to_event(self) -> Event:
        from ..events import parse_time

        return Event(
            type=self.type,
            source=self.source,
            data=self.data,
            subject=self.subject,
            id=self.id,
            time=parse_time(self.time),
            dedup_key=self.dedup_key,
            extensions=dict(self.extensions),
        )


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    id: str
    source: str
    reason: str
    payload: bytes
    headers: Mapping[str, str]
    received_at: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An entry to append; the store gives it a sequence number and chains its hash."""

    kind: str
    subject: str
    data: Mapping[str, Any] | None = None
    actor: str | None = None
    time: float | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    time: float
    kind: str
    subject: str
    actor: str | None
    data: Any
    prev_hash: str
    hash: str


@dataclass(slots=True)
class Changes:
    """A set of writes that commit together (and in this order)."""

    runs: list[RunRecord] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    processed_events: list[str] = field(default_factory=list)
    cursors: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.runs
            or self.tasks
            or self.attempts
            or self.logs
            or self.audit
            or self.processed_events
            or self.cursors
        )


class Store(Protocol):
    """What the engine needs from persistence."""

    path: str

    # -- writes ------------------------------------------------------------------------------
    async def add_events(
        self, events: Sequence[Event], *, cursors: Mapping[str, str] | None = None
    ) -> list[Accepted]:
        """Insert events (dropping and counting repeats by dedup key) and cursor values;
        returns after commit."""
        ...

    async def add_dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        dedup_key: str | None = None,
    ) -> str: ...

    async def apply(self, changes: Changes, *, wait: bool = False) -> None:
        """Queue ``changes`` for the next grouped commit; with ``wait``, return after it."""
        ...

    def apply_nowait(self, changes: Changes) -> None:
        """Queue ``changes`` at once, from synchronous code; no backpressure, so keep it small."""
        ...

    async def flush(self) -> None:
        """Return once everything queued so far is committed."""
        ...

    # -- reads -------------------------------------------------------------------------------
    async def get_run(self, run_id: str, *, with_tasks: bool = True) -> RunRecord: ...

    async def run_exists(self, run_id: str) -> bool: ...

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]: ...

    async def count_runs(
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int: ...

    async def unfinished_runs(self) -> list[RunRecord]: ...

    async def list_attempts(self, run_id: str) -> list[AttemptRecord]: ...

    async def list_logs(
        self, run_id: str, task: str | None = None, *, after_seq: int = 0, limit: int = 10_000
    ) -> list[LogRecord]: ...

    async def list_events(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        source: str | None = None,
        status: str | None = None,
    ) -> list[EventRecord]: ...

    async def get_event(self, event_id: str) -> EventRecord: ...

    async def pending_events(self) -> list[EventRecord]: ...

    async def oldest_pending(self) -> dict[str, float]: ...

    async def count_duplicates(self, source: str | None = None) -> int: ...

    async def list_dead_letters(
        self, *, limit: int = 50, offset: int = 0
    ) -> list[DeadLetterRecord]: ...

    async def get_cursor(self, name: str) -> str | None: ...

    async def list_audit(
        self, *, since: float | None = None, subject: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]: ...


GENESIS_HASH = "0" * 64


def chain_hash(
    prev_hash: str,
    seq: int,
    time: float,
    kind: str,
    subject: str,
    actor: str | None,
    data: bytes | None,
) -> str:
    """The hash of one audit record, covering the previous record's hash.

    Editing, deleting or reordering any record breaks every hash after it.
    """
    import hashlib

    h = hashlib.sha256()
    h.update(
        f"{prev_hash}\x1f{seq}\x1f{time!r}\x1f{kind}\x1f{subject}\x1f{actor or ''}\x1f".encode()
    )
    h.update(data or b"")
    return h.hexdigest()
