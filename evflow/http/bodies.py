"""The bodies of the API's requests and answers, around the record shapes of :mod:`.schemas`:
pages, acknowledgements, stream events, the UI's reads and what each ``POST`` takes.

Like the record shapes these are :class:`~typing.TypedDict` classes, the one definition that
the handlers fill in (checked by mypy) and :mod:`evflow.http.openapi` documents. The UI's reads
(``*View``) are declared ``total=False``: they list what the pages use, not a promise that each
key is always there. The request bodies are checked by hand in the handlers, which answer each
kind of bad value with its own clear message; their classes document what is accepted.
"""

# No "from __future__ import annotations": the classes' NotRequired keys are read at run time
# (``__required_keys__``) only when their annotations are evaluated.

from typing import Annotated, Any, Literal, NotRequired, Required, TypedDict

from msgspec import Meta

from ..run import limits
from .schemas import (
    INT_MAX,
    Attempt,
    AuditRecord,
    DateTime,
    DeadLetter,
    Event,
    JsonObject,
    LogLine,
    Run,
    Task,
    TaskStateName,
)

__all__ = [
    "ApiIndex",
    "AuditPage",
    "BackfillRequest",
    "Bar",
    "CancelRequest",
    "Cancelled",
    "Cell",
    "ClusterView",
    "DeadLettersPage",
    "Dropped",
    "EventAccepted",
    "EventIn",
    "EventsPage",
    "Flow",
    "FlowList",
    "FlowParams",
    "FlowTask",
    "GridNode",
    "GridRun",
    "GridView",
    "Instance",
    "Lease",
    "LogPage",
    "OverviewView",
    "Place",
    "PoolUsage",
    "Pools",
    "RetryRequest",
    "RunQueued",
    "RunRequest",
    "RunsPage",
    "RunsQueued",
    "SearchView",
    "Sensor",
    "SensorList",
    "TaskChange",
    "TasksView",
    "TimelineRow",
    "TimelineView",
    "TriggersView",
    "pool_usage",
]

# -- the index and flows ----------------------------------------------------------------------


class ApiIndex(TypedDict):
    """What this API offers."""

    name: str
    version: str
    openapi: str
    endpoints: list[str]
    trace_link: Annotated[
        str | None,
        Meta(description="a link to the tracing backend; '{trace_id}' stands for a trace id"),
    ]


class FlowParams(TypedDict):
    required: list[str]
    defaults: JsonObject
    open: bool


class FlowTask(TypedDict):
    name: str
    upstream: list[str]
    mapped: bool
    pool: str | None
    retries: int
    trigger_rule: str
    is_async: bool


class Flow(TypedDict):
    """A registered flow: its parameters and its tasks in order."""

    name: str
    version: str
    description: str
    location: str
    schedule: str | None
    max_active_runs: int | None
    params: FlowParams
    tasks: list[FlowTask]


class FlowList(TypedDict):
    flows: list[Flow]


# -- runs -------------------------------------------------------------------------------------

Priority = Annotated[int, Meta(ge=-INT_MAX, le=INT_MAX, extra_json_schema={"default": 0})]


class RunRequest(TypedDict, total=False):
    """Start a run (an empty body starts one with the flow's defaults)."""

    params: Annotated[
        JsonObject,
        Meta(
            description="the flow's parameters; one it does not take, or a missing required "
            "one, is a 422"
        ),
    ]
    priority: Priority


class BackfillRequest(TypedDict):
    """A range with no schedule slot queues nothing; a flow without a schedule is a 422."""

    start: DateTime
    end: DateTime
    max_active: NotRequired[Annotated[int, Meta(ge=1)] | None]


class CancelRequest(TypedDict, total=False):
    reason: Annotated[str, Meta(description="recorded with the cancellation")]


class RetryRequest(TypedDict, total=False):
    from_task: Annotated[str, Meta(description="run this task and its downstream again")]
    whole: Annotated[bool, Meta(description="run every task again")]


class RunQueued(TypedDict):
    run_id: str


class RunsQueued(TypedDict):
    run_ids: list[str]


class Cancelled(TypedDict):
    run_id: str
    cancelled: Annotated[bool, Meta(description="false if the run had already finished")]


class RunsPage(TypedDict):
    runs: list[Run]
    total: int
    limit: int
    offset: int


class LogPage(TypedDict):
    run_id: str
    logs: list[LogLine]
    last_seq: int


# -- events -----------------------------------------------------------------------------------


_NoNul = Annotated[str, Meta(pattern=r"^[^\u0000]*$")]


class EventIn(TypedDict, total=False):
    """A CloudEvents structured event (specversion 1.0) or {type, data, ...}; other members
    are kept as extension attributes. No attribute may hold a NUL character."""

    specversion: Literal["1.0"]
    id: Annotated[
        _NoNul | None, Meta(description="the sender's id; a new one when absent, null or empty")
    ]
    source: Annotated[_NoNul, Meta(min_length=1, extra_json_schema={"default": "evflow.api"})]
    type: Required[Annotated[_NoNul, Meta(min_length=1)]]
    subject: _NoNul | None
    time: Annotated[DateTime | None, Meta(description="RFC 3339; now when absent, null or empty")]
    data: Any
    dedupkey: Annotated[
        _NoNul | None,
        Meta(description="repeats of a key are dropped; from the body when absent"),
    ]


class EventAccepted(TypedDict):
    event_id: str
    duplicate: bool
    url: Annotated[str, Meta(description="where the event's decisions and runs appear")]


class EventsPage(TypedDict):
    events: list[Event]
    limit: int
    offset: int


class DeadLettersPage(TypedDict):
    dead_letters: list[DeadLetter]
    limit: int
    offset: int


class AuditPage(TypedDict):
    audit: list[AuditRecord]
    limit: int


# -- pools and sensors ------------------------------------------------------------------------


class PoolUsage(TypedDict):
    name: str
    capacity: int
    in_use: int  # on this instance
    waiting: int
    scope: str  # "instance", or "cluster": the capacity is shared across the cluster


def pool_usage(p: limits.PoolUsage) -> PoolUsage:
    return {
        "name": p.name,
        "capacity": p.capacity,
        "in_use": p.in_use,
        "waiting": p.waiting,
        "scope": p.scope,
    }


class Pools(TypedDict):
    """Pool slots, the per-flow run gates, and the event backlog."""

    pools: list[PoolUsage]
    flows: list[PoolUsage]
    backlog: int


class Sensor(TypedDict):
    name: str
    source: str
    describe: str
    status: str


class SensorList(TypedDict):
    sensors: list[Sensor]


# -- the cluster (built by evflow.cluster.status) --------------------------------------------


class Instance(TypedDict):
    """One ``evflow serve`` registered on the store, as its heartbeats show it."""

    id: str
    state: Annotated[str, Meta(extra_json_schema={"enum": ["alive", "stopped", "dead"]})]
    host: str
    pid: int
    version: str
    http: Annotated[str | None, Meta(description="the instance's HTTP address, if it serves")]
    started_at: float
    heartbeat_at: float
    heartbeat_age_s: float
    ttl_s: float
    stopped_at: float | None
    taken_over_by: Annotated[
        str | None, Meta(description="the instance that took its runs over, once it died")
    ]
    runs: Annotated[int, Meta(description="unfinished runs it drives")]


class Lease(TypedDict):
    """Who holds a named lease until when; ``epoch`` goes up each time it changes hands."""

    name: str
    owner: str
    host: str
    pid: int
    epoch: int
    acquired_at: float
    renewed_at: float
    expires_at: float


class Place(TypedDict):
    """One place of a limit counted across the cluster, held by a live instance."""

    name: Annotated[str, Meta(description="pool:<name> or max_active_runs:<flow>")]
    place: int
    instance: str
    holder: Annotated[str, Meta(description="the run, or run/task, holding it")]


class ClusterView(TypedDict):
    """The instances sharing this service's store and the leases they hold; ``mode`` is
    'single' on a store where instances do not register (SQLite)."""

    mode: Literal["cluster", "single"]
    store: str
    this: Annotated[str | None, Meta(description="the answering instance's id")]
    alive: int
    unclaimed_runs: Annotated[int, Meta(description="runs handed back, not claimed yet")]
    instances: list[Instance]
    leases: list[Lease]
    places: Annotated[
        list[Place],
        Meta(description="places held across the cluster (max_active_runs, cluster pools)"),
    ]


# -- the live feed ----------------------------------------------------------------------------


class TaskChange(TypedDict):
    """The data of a live feed's 'task' event."""

    run_id: str
    flow: str
    name: str
    node: str
    state: TaskStateName
    attempt: int
    started_at: float | None
    ended_at: float | None
    error: str | None
    waiting: str | None


class Dropped(TypedDict):
    """The data of a live feed's 'dropped' event: how many events a slow client lost."""

    count: int


# -- the UI's reads (evflow.http.views) -------------------------------------------------------


class Cell(TypedDict, total=False):
    """A task in one run: counts by state (a mapped task's instances), and the state shown."""

    state: str
    counts: dict[str, int]
    total: int
    attempt: int
    mapped: bool


class GridRun(Run, total=False):
    cells: dict[str, Cell]


class GridNode(TypedDict, total=False):
    name: str
    mapped: bool
    upstream: list[str]


class GridView(TypedDict, total=False):
    flow: str
    tasks: list[GridNode]
    runs: list[GridRun]
    limit: int


class TriggersView(TypedDict, total=False):
    flow: str
    schedule: JsonObject | None
    rules: list[JsonObject]


class SearchView(RunsPage, total=False):
    q: str | None


class OverviewView(Run, total=False):
    tasks: list[Task]
    mapped: dict[str, Cell]
    attempts: list[Attempt]


class TasksView(TypedDict, total=False):
    run_id: str
    tasks: list[Task]
    total: int
    limit: int
    offset: int


class Bar(TypedDict, total=False):
    kind: Literal["waiting", "running"]
    start: float
    end: float | None
    state: str
    attempt: int | None
    reason: str | None


class TimelineRow(TypedDict, total=False):
    task: str
    state: str
    mapped: bool
    count: int
    counts: dict[str, int]
    bars: list[Bar]


class TimelineView(TypedDict, total=False):
    run_id: str
    state: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    now: float
    rows: list[TimelineRow]
