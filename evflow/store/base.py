"""The :class:`Store` interface and the records it keeps.

The store is narrow on purpose: the engine writes through :meth:`Store.apply` (grouped into
transactions by the implementation) and reads through a handful of queries. All SQL lives
behind it, so another backend (PostgreSQL for several instances) is one new module.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Protocol, Self

from ..abc import Accepted
from ..audit_kinds import AuditKind
from ..events import Event
from ..frozen import record
from ..records import (
    AttemptRecord,
    AuditRecord,
    DeadLetterRecord,
    EventRecord,
    LeaseRecord,
    LogRecord,
    RunRecord,
    TaskRecord,
)

__all__ = [
    "AuditEntry",
    "Changes",
    "DeadLetter",
    "PruneStep",
    "Rows",
    "Store",
]


@record
class AuditEntry:
    """An entry to append; the store gives it a sequence number and chains its hash."""

    kind: AuditKind
    subject: str
    data: Mapping[str, Any] | None = None
    actor: str | None = None
    time: float | None = None


@record
class DeadLetter:
    """Input that could not become an event or a run, kept with the reason; a repeated
    ``dedup_key`` is stored once."""

    source: str
    reason: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    dedup_key: str | None = None


@dataclass(slots=True)
class Changes:
    """A set of writes that commit together (and in this order).

    ``new_runs`` and ``new_tasks`` are inserted only where no row with that key exists (runs a
    rule creates under a deterministic id); once committed, ``created_runs`` holds the ids of
    those actually inserted, and only those may be started. ``runs`` and ``tasks`` are written
    as given. What is not given is an empty tuple (or no mapping), shared: a set of changes is
    built for every state change of every task, and most name one or two kinds of record.
    """

    new_runs: Sequence[RunRecord] = ()
    new_tasks: Sequence[TaskRecord] = ()
    runs: Sequence[RunRecord] = ()
    tasks: Sequence[TaskRecord] = ()
    attempts: Sequence[AttemptRecord] = ()
    logs: Sequence[LogRecord] = ()
    audit: Sequence[AuditEntry] = ()
    dead_letters: Sequence[DeadLetter] = ()
    processed_events: Sequence[str] = ()
    cursors: Mapping[str, str] | None = None
    created_runs: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.new_runs
            or self.runs
            or self.tasks
            or self.attempts
            or self.logs
            or self.audit
            or self.dead_letters
            or self.processed_events
            or self.cursors
        )


@dataclass(slots=True)
class Rows:
    """Records written as they are, for copying a store: events keep their identity, status
    and arrival time, audit rows their sequence numbers, chains and hashes (as
    :meth:`Store.audit_rows` reads them), the chains' heads theirs (``{chain: (pos, hash)}``,
    as :meth:`Store.audit_heads` reads them)."""

    events: list[EventRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)  # with their tasks
    attempts: list[AttemptRecord] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    cursors: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    audit_heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    audit_anchors: dict[str, tuple[int, str]] = field(default_factory=dict)


@record
class PruneStep:
    """What one retention step removed (runs, audit records), and whether older data remains
    (``more``: step again). See :mod:`evflow.store.retention`."""

    runs: int
    records: int
    more: bool


class Store(Protocol):
    """What the engine needs from persistence. Used as an async context manager: entering
    opens (and migrates) it, leaving commits what is queued and closes it."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def describe(self) -> str:
        """Where the data lives, for people (a file path; a URL with its password masked)."""
        ...

    @property
    def available(self) -> bool:
        """False while the store's database cannot be reached (it reconnects by itself)."""
        ...

    @property
    def backlog(self) -> int:
        """Writes queued and not yet committed (a gauge for metrics)."""
        ...

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

    def apply(self, changes: Changes, *, wait: bool = False) -> Coroutine[Any, Any, None]:
        """Queue ``changes`` for the next grouped commit; with ``wait``, return after it.

        (A coroutine, not a coroutine function: a store hands back its queue's own, so the
        hot path has one frame less.)"""
        ...

    def apply_nowait(self, changes: Changes) -> None:
        """Queue ``changes`` at once, from synchronous code; no backpressure, so keep it small."""
        ...

    def flush(self) -> Coroutine[Any, Any, None]:
        """Return once everything queued so far is committed (a coroutine, as ``apply``)."""
        ...

    # -- leases ------------------------------------------------------------------------------
    async def acquire_lease(
        self, name: str, owner: str, host: str, pid: int, ttl_s: float, *, force: bool = False
    ) -> tuple[bool, LeaseRecord]:
        """Take the lease ``name`` for ``owner`` if it is free, expired, already ``owner``'s,
        or ``force``; returns (taken, the lease as it now stands). Taking it from another
        holder raises its epoch."""
        ...

    async def renew_lease(self, lease: LeaseRecord, ttl_s: float) -> LeaseRecord | None:
        """Extend ``lease``; None if it is no longer held at that epoch (it was lost)."""
        ...

    async def release_lease(self, lease: LeaseRecord) -> None:
        """Give ``lease`` back at once (if still held at that epoch)."""
        ...

    async def list_leases(self) -> list[LeaseRecord]: ...

    async def import_rows(self, rows: Rows) -> None:
        """Write ``rows`` as they are, in one transaction (``evflow db copy``, into an empty
        store): audit rows keep their chains, positions and hashes."""
        ...

    async def prune_step(self, before: float, *, max_runs: int, max_records: int) -> PruneStep:
        """One transaction of retention (:mod:`evflow.store.retention`): remove up to
        ``max_runs`` finished runs created and ended before ``before`` (a unix time), with
        their tasks, attempts and logs, and up to ``max_records`` of the oldest audit records
        written before it; anchor the chains that lost records and name the anchors in an
        ``audit.pruned`` record of the system chain."""
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

    # -- reads for the web UI (grid, timeline, runs of any size) ------------------------------
    async def task_counts(
        self, run_ids: Sequence[str]
    ) -> list[tuple[str, str, str, int, int, bool]]:
        """Tasks of ``run_ids`` grouped: ``(run_id, node, state, count, highest attempt,
        mapped)``; ``mapped`` rows count a mapped task's instances, the others its own record
        (or a plain task)."""
        ...

    async def list_tasks(
        self,
        run_id: str,
        *,
        node: str | None = None,
        state: str | None = None,
        mapped: bool | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """One page of a run's tasks, ordered by node then map index; ``mapped`` keeps only
        mapped instances (True) or only unmapped tasks (False)."""
        ...

    async def count_tasks(
        self,
        run_id: str,
        *,
        node: str | None = None,
        state: str | None = None,
        mapped: bool | None = None,
    ) -> int:
        """How many tasks :meth:`list_tasks` pages through for the same filters, counted on
        the narrow index (a page of a mapped task says "of 10,000" without reading them)."""
        ...

    async def search_runs(
        self,
        text: str,
        *,
        flow: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[RunRecord], int]:
        """Runs whose id, flow or params text contains ``text`` (newest first), and how many
        match in all."""
        ...

    async def mapped_summary(
        self, run_id: str
    ) -> list[tuple[str, str, int, int, float | None, float | None, float | None, int]]:
        """The instances of a run's mapped tasks summed up in one pass, per node and state:
        ``(node, state, count, highest attempt, first queued_at, first started_at, last
        ended_at, how many have started and not ended)``, read from the narrow index, never
        the instances' rows (the run page's timeline of a large mapped run)."""
        ...

    async def list_attempts_of(self, run_id: str, tasks: Sequence[str]) -> list[AttemptRecord]:
        """The attempts of the named tasks of a run only (a run's plain tasks, without the
        instances of its mapped tasks), in start order."""
        ...

    async def task_waits(self, run_id: str, tasks: Sequence[str]) -> list[tuple[str, float, str]]:
        """Why the named tasks of a run waited for a limit: ``(task, time, reason)`` from the
        audit trail's ``task.waiting`` entries, oldest first."""
        ...

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

    async def count_events(self, source: str | None = None) -> int: ...

    async def count_duplicates(self, source: str | None = None) -> int: ...

    async def list_dead_letters(
        self, *, limit: int = 50, offset: int = 0
    ) -> list[DeadLetterRecord]: ...

    async def get_cursor(self, name: str) -> str | None: ...

    async def list_cursors(self) -> dict[str, str]: ...

    async def duplicate_counts(self) -> dict[str, int]: ...

    async def audit_rows(self, after_seq: int = 0, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Audit rows as stored, in the order written, for verification: ``(seq, time, kind,
        subject, actor, data bytes, prev_hash, hash, chain, pos)``; ``seq`` orders the whole
        trail, ``pos`` is the record's place in its chain (see :mod:`evflow.store.chains`)."""
        ...

    async def audit_heads(self) -> dict[str, tuple[int, str]]:
        """Each audit chain's head as stored: ``{chain: (pos, hash)}``."""
        ...

    async def audit_anchors(self) -> dict[str, tuple[int, str]]:
        """Where each pruned audit chain takes up: its last pruned record's ``{chain: (pos,
        hash)}`` (see :mod:`evflow.store.retention`)."""
        ...

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
    *,
    time_text: str | None = None,
) -> str:
    """The hash of one audit record, covering the previous record's hash in its chain (``seq``
    is the record's position there).

    Editing, deleting or reordering any record breaks every hash after it. ``time_text`` is
    ``repr(time)``, when the caller has it already: a batch's records mostly share one time,
    and formatting a float costs as much as hashing the record.
    """
    t = repr(time) if time_text is None else time_text
    h = sha256(f"{prev_hash}\x1f{seq}\x1f{t}\x1f{kind}\x1f{subject}\x1f{actor or ''}\x1f".encode())
    if data:
        h.update(data)
    return h.hexdigest()
