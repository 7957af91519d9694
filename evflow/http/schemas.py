"""Every JSON shape the API answers with (and the CLI prints with ``--json``), defined once.

Each shape is a :class:`~typing.TypedDict`: at run time a plain dict, serialised by orjson as
before (no extra cost on the hot paths), while mypy checks that the functions building them
(``*_shape`` and ``jsonable_*`` below) fill in exactly the declared keys with the declared
types, and :mod:`evflow.http.openapi` generates the document's schemas from the same classes
(with msgspec). A key that a shape has only sometimes is ``NotRequired``; everything else is always
there, ``null`` when it has no value.

Constraints and descriptions ride on :data:`typing.Annotated` with :class:`msgspec.Meta`.
"""

# No "from __future__ import annotations": the classes' NotRequired keys are read at run time
# (``__required_keys__``) only when their annotations are evaluated.

import base64
from typing import Annotated, Any, Literal, NotRequired, TypedDict, cast

import orjson
from msgspec import Meta

from .. import records as rec
from ..states import RunState, TaskState
from ..tracing import trace_id_of

__all__ = [
    "Attempt",
    "AuditRecord",
    "DeadLetter",
    "Error",
    "Event",
    "LogEnd",
    "LogLine",
    "Run",
    "RunDetail",
    "RunWithTasks",
    "Task",
    "jsonable_attempt",
    "jsonable_audit",
    "jsonable_dead_letter",
    "jsonable_event",
    "jsonable_log",
    "jsonable_run",
    "jsonable_task",
    "run_shape",
    "run_with_tasks",
    "task_shape",
]

INT_MAX = 2**62  # the API's bound on whole numbers, well inside the stores' 64-bit integers

RunStateName = Annotated[str, Meta(extra_json_schema={"enum": [s.value for s in RunState]})]
TaskStateName = Annotated[str, Meta(extra_json_schema={"enum": [s.value for s in TaskState]})]
EventStatus = Annotated[str, Meta(extra_json_schema={"enum": ["pending", "processed"]})]
DateTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
JsonObject = dict[str, Any]


class Error(TypedDict):
    """Every error answer: what went wrong, and the HTTP status again."""

    error: str
    status: int


# -- runs, tasks, attempts --------------------------------------------------------------------


class Task(TypedDict):
    """One task instance of a run (a mapped task has one per item, named node[i])."""

    name: str
    node: str
    map_index: int | None
    state: TaskStateName
    attempt: int
    queued_at: float | None
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    waiting: str | None
    error: str | None
    traceback: str | None
    result: Any
    result_bytes: NotRequired[
        Annotated[int, Meta(description="the size of a result too large to show (then null)")]
    ]


class Run(TypedDict):
    """One run of one flow; ``trigger`` says what started it (api, event, schedule, retry)."""

    id: str
    flow: str
    flow_version: str
    params: JsonObject
    state: RunStateName
    priority: int
    trigger: JsonObject
    trace_id: Annotated[
        str | None, Meta(description="the trace this run continues (runs started by events)")
    ]
    created_at: float
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    waiting: str | None
    error: str | None


class RunWithTasks(Run):
    """A run with every task instance."""

    tasks: list[Task]


class Attempt(TypedDict):
    """One try of a task, with how long it took."""

    task: str
    attempt: int
    state: TaskStateName
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    error: str | None
    instance: Annotated[str | None, Meta(description="in a cluster, the instance that ran it")]


class AuditRecord(TypedDict):
    """One record of the audit trail; ``hash`` chains it to the one before."""

    seq: int
    time: float
    kind: str
    subject: str
    actor: str | None
    data: Any
    prev_hash: str
    hash: str


class RunDetail(RunWithTasks):
    """A run with its tasks, every try of them, and its audit trail."""

    attempts: list[Attempt]
    audit: list[AuditRecord]


def jsonable_task(t: rec.TaskRecord) -> dict[str, Any]:
    """A task as :class:`Task` in a plain dict, for callers that add keys of their own."""
    return cast(dict[str, Any], task_shape(t))


def task_shape(t: rec.TaskRecord) -> Task:
    return {
        "name": t.name,
        "node": t.node,
        "map_index": t.map_index,
        "state": str(t.state),
        "attempt": t.attempt,
        "queued_at": t.queued_at,
        "started_at": t.started_at,
        "ended_at": t.ended_at,
        "duration_s": t.duration_s,
        "waiting": t.waiting,
        "error": t.error,
        "traceback": t.traceback,
        "result": orjson.loads(t.result) if t.result is not None else None,
    }


def jsonable_run(run: rec.RunRecord, *, tasks: bool = True) -> dict[str, Any]:
    """A run as :class:`Run` (with ``tasks``: :class:`RunWithTasks`) in a plain dict, for
    callers that add keys of their own (the UI's reads); :func:`run_shape` and
    :func:`run_with_tasks` give the checked types."""
    return cast(dict[str, Any], run_with_tasks(run) if tasks else run_shape(run))


def run_shape(run: rec.RunRecord) -> Run:
    return {
        "id": run.id,
        "flow": run.flow,
        "flow_version": run.flow_version,
        "params": dict(run.params),
        "state": str(run.state),
        "priority": run.priority,
        "trigger": dict(run.trigger),
        "trace_id": trace_id_of(run.trigger),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_s": run.duration_s,
        "waiting": run.waiting,
        "error": run.error,
    }


def run_with_tasks(run: rec.RunRecord) -> RunWithTasks:
    out: RunWithTasks = {**run_shape(run), "tasks": [task_shape(t) for t in run.tasks]}
    return out


def jsonable_attempt(a: rec.AttemptRecord) -> Attempt:
    ended, started = a.ended_at, a.started_at
    return {
        "task": a.task,
        "attempt": a.attempt,
        "state": str(a.state),
        "started_at": started,
        "ended_at": ended,
        "duration_s": ended - started if started is not None and ended is not None else None,
        "error": a.error,
        "instance": a.instance,
    }


def jsonable_audit(a: rec.AuditRecord) -> AuditRecord:
    return {
        "seq": a.seq,
        "time": a.time,
        "kind": a.kind,
        "subject": a.subject,
        "actor": a.actor,
        "data": a.data,
        "prev_hash": a.prev_hash,
        "hash": a.hash,
    }


# -- logs -------------------------------------------------------------------------------------


class LogLine(TypedDict):
    """One line a task logged or printed; ``seq`` orders a run's lines."""

    seq: int
    task: str
    attempt: int
    time: float
    level: str
    message: str


class LogEnd(TypedDict):
    """The data of a log stream's 'end' event."""

    run_id: str
    state: Annotated[
        str, Meta(description="the run's state, 'unavailable' when the stream ended early")
    ]
    last_seq: int


def jsonable_log(r: rec.LogRecord) -> LogLine:
    return {
        "seq": r.seq,
        "task": r.task,
        "attempt": r.attempt,
        "time": r.time,
        "level": r.level,
        "message": r.message,
    }


# -- events and dead letters ------------------------------------------------------------------


class Event(TypedDict):
    """A stored event with the decisions taken on it."""

    seq: int
    uid: Annotated[str, Meta(description="evflow's identity of the event; decisions name it")]
    id: Annotated[str, Meta(description="the sender's id, unique within its source")]
    dedup_key: str
    type: str
    source: str
    subject: str | None
    time: DateTime
    data: Any
    extensions: JsonObject
    trace_id: Annotated[
        str | None, Meta(description="the W3C trace id the event arrived with (or was given)")
    ]
    received_at: float
    status: EventStatus
    decisions: Annotated[
        list[AuditRecord],
        Meta(
            description="audit records about this event: rule matched, not matched and why, "
            "held, duplicate, skipped"
        ),
    ]


class DeadLetter(TypedDict):
    """Input that could not become an event, kept with why."""

    id: str
    source: str
    reason: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"]
    headers: dict[str, str]
    received_at: float


def jsonable_event(e: rec.EventRecord, decisions: list[rec.AuditRecord]) -> Event:
    return {
        "seq": e.seq,
        "uid": e.uid,
        "id": e.id,
        "dedup_key": e.dedup_key,
        "type": e.type,
        "source": e.source,
        "subject": e.subject,
        "time": e.time,
        "data": e.data,
        "extensions": dict(e.extensions),
        "trace_id": trace_id_of(e.extensions),
        "received_at": e.received_at,
        "status": e.status,
        "decisions": [jsonable_audit(a) for a in decisions],
    }


def jsonable_dead_letter(d: rec.DeadLetterRecord) -> DeadLetter:
    raw = bytes(d.payload)
    encoding: Literal["utf-8", "base64"]
    try:
        payload, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {
        "id": d.id,
        "source": d.source,
        "reason": d.reason,
        "payload": payload,
        "payload_encoding": encoding,
        "headers": dict(d.headers),
        "received_at": d.received_at,
    }
