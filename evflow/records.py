"""The typed, frozen records evflow keeps: runs, tasks, attempts, logs, events, dead letters and
the audit trail. The store returns them, signals carry them, the API and CLI render them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field, fields
from typing import Any, TypeVar

from .events import Event
from .frozen import record, slot_function
from .states import RunState, TaskState

__all__ = [
    "AttemptRecord",
    "AuditRecord",
    "DeadLetterRecord",
    "EventRecord",
    "LogRecord",
    "RunRecord",
    "TaskRecord",
    "evolve",
    "evolver",
]


@record
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


@record
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


@record
class AttemptRecord:
    run_id: str
    task: str
    attempt: int
    state: TaskState
    started_at: float | None
    ended_at: float | None
    error: str | None = None
    instance: str | None = None  # in a cluster: the instance that ran this try


@record
class LogRecord:
    run_id: str
    task: str
    attempt: int
    time: float
    level: str
    message: str
    seq: int = 0


@record
class EventRecord:
    """A stored event. ``uid`` is evflow's identity of it (decisions, runs and the audit trail
    are keyed on it); ``id`` and ``source`` are the sender's, unique only as a pair."""

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
    uid: str

    def to_event(self) -> Event:
        from .events import parse_time

        return Event(
            type=self.type,
            source=self.source,
            data=self.data,
            subject=self.subject,
            id=self.id,
            time=parse_time(self.time),
            dedup_key=self.dedup_key,
            extensions=dict(self.extensions),
            uid=self.uid,
        )


@record
class DeadLetterRecord:
    id: str
    source: str
    reason: str
    payload: bytes
    headers: Mapping[str, str]
    received_at: float


@record
class AuditRecord:
    """One record of the audit trail: ``seq`` orders the whole trail, ``pos`` is the record's
    place in its ``chain`` (the hash chain it belongs to)."""

    seq: int
    time: float
    kind: str
    subject: str
    actor: str | None
    data: Any
    prev_hash: str
    hash: str
    chain: str = ""
    pos: int = 0


@record
class LeaseRecord:
    """Who holds a named lease (``engine``: the instance that runs a store's work), until when.

    ``epoch`` goes up each time the lease changes hands: a fencing token, so a holder that lost
    it (stalled past ``expires_at``) can tell. Times are the store's clock (the database's, for
    a server), in epoch seconds.
    """

    name: str
    owner: str
    host: str
    pid: int
    epoch: int
    acquired_at: float
    renewed_at: float
    expires_at: float


@record
class InstanceRecord:
    """One ``evflow serve`` registered on a shared store (cluster mode, PostgreSQL).

    ``heartbeat_at`` and ``now`` are the database's clock, in epoch seconds; the instance counts
    as dead once its last heartbeat is older than its own ``ttl_s``, or once it stopped.
    """

    id: str
    host: str
    pid: int
    version: str
    http: str | None
    started_at: float
    heartbeat_at: float
    ttl_s: float
    stopped_at: float | None
    now: float
    taken_over_by: str | None = None

    @property
    def alive(self) -> bool:
        return self.stopped_at is None and self.now - self.heartbeat_at <= self.ttl_s

    @property
    def state(self) -> str:
        """``alive``; ``stopped`` (a clean stop); ``dead`` (no heartbeat within its TTL, or
        its process exited; ``taken_over_by`` names the instance that took its runs)."""
        if self.taken_over_by is not None:
            return "dead"
        if self.stopped_at is not None:
            return "stopped"
        return "alive" if self.alive else "dead"


R = TypeVar("R", TaskRecord, RunRecord)

_KEEP: Any = object()  # a field not given to an evolver: the record's own value is kept
_EVOLVERS: dict[type, Callable[..., Any]] = {}


def evolver(cls: type[R]) -> Callable[..., R]:
    """``cls``'s own ``evolve``: a function ``(record, **changes) -> record`` compiled once per
    class, each field a keyword argument that defaults to the record's value. The copy's slots
    are set through their descriptors, with no ``__init__`` call and no list of values in
    between: about half the time of a generic copy, on every state change of every task."""
    made = _EVOLVERS.get(cls)
    if made is None:
        names: list[str] = [f.name for f in fields(cls)]
        made = _EVOLVERS[cls] = slot_function(
            cls,
            "evolve",
            ["_of", "*", *(f"{n}=_KEEP" for n in names)],
            "_copy",
            {n: f"_of.{n} if {n} is _KEEP else {n}" for n in names},
            {"_KEEP": _KEEP, "_new": object.__new__, "_cls": cls},
            before="_copy = _new(_cls)",
            after="return _copy",
        )
    return made


def evolve(record: R, **changes: Any) -> R:
    """``record`` with ``changes`` applied, like ``dataclasses.replace`` but several times
    faster: the engine makes one on every state change of every run and task."""
    try:
        return evolver(type(record))(record, **changes)
    except TypeError:
        names = {f.name for f in fields(record)}
        unknown = [name for name in changes if name not in names]
        if unknown:
            raise TypeError(f"{type(record).__qualname__} has no field {unknown[0]!r}") from None
        raise
