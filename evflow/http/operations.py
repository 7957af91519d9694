"""Every operation of the HTTP API, compactly: what :mod:`.openapi` documents and ``GET /api``
lists. Parameters that several operations share (a run id, paging, times) are written once."""

from __future__ import annotations

from typing import Any

from ..states import RunState, TaskState
from . import bodies as b
from . import schemas as s
from .openapi import Op, Param, SseEvent

__all__ = ["ENDPOINTS", "OPERATIONS"]

_INT_MAX = s.INT_MAX
_TIME = {
    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
    "description": "ISO 8601 (UTC when no offset) or unix seconds",
}


def _text(name: str, description: str, **schema: Any) -> Param:
    return Param(name, {"type": "string", **schema}, description)


def _limit(hi: int, default: int, name: str = "limit", what: str = "page size") -> Param:
    schema = {"type": "integer", "minimum": 1, "maximum": hi, "default": default}
    return Param(name, schema, what)


def _offset(what: str, hi: int = _INT_MAX) -> Param:
    return Param("offset", {"type": "integer", "minimum": 0, "maximum": hi, "default": 0}, what)


def _states(name: str, states: type[RunState] | type[TaskState], what: str) -> Param:
    return _text(name, what, enum=[str(x) for x in states])


RUN_ID = Param(
    "id",
    {"type": "string"},
    "a run id, or a unique beginning or end of one (4 characters at least)",
    "path",
)
FLOW_NAME = Param("name", {"type": "string"}, "flow name", "path")
SINCE = Param("since", _TIME, "created at or after")
UNTIL = Param("until", _TIME, "created before")
RUN_STATE = _states("state", RunState, "only runs in this state")

# Refusals every POST can answer: bad or too large a body, no authority, engine not running.
_POSTED = (400, 401, 403, 413, 503)

OPERATIONS: list[Op] = [
    Op("GET", "/api", "Index of the API", b.ApiIndex),
    # -- flows ---------------------------------------------------------------------------------
    Op("GET", "/api/flows", "Registered flows", b.FlowList),
    Op("GET", "/api/flows/{name}", "One flow", b.Flow, params=[FLOW_NAME], errors=[404]),
    Op(
        "POST",
        "/api/flows/{name}/runs",
        "Start a run",
        b.RunQueued,
        status=201,
        answer_text="Queued",
        params=[FLOW_NAME],
        body=b.RunRequest,
        body_required=False,
        errors=[*_POSTED, 404, 422],
        secured=True,
    ),
    Op(
        "POST",
        "/api/flows/{name}/backfill",
        "One run per schedule slot in [start, end]",
        b.RunsQueued,
        status=201,
        answer_text="Queued (slots that already have a backfill run are left out)",
        params=[FLOW_NAME],
        body=b.BackfillRequest,
        errors=[*_POSTED, 404, 422],
        secured=True,
    ),
    # -- runs ----------------------------------------------------------------------------------
    Op(
        "GET",
        "/api/runs",
        "Runs, newest first",
        b.RunsPage,
        params=[
            _text("flow", "only runs of this flow"),
            RUN_STATE,
            SINCE,
            UNTIL,
            _limit(1000, 50),
            _offset("runs to skip"),
        ],
        errors=[400],
    ),
    Op(
        "GET",
        "/api/runs/{id}",
        "A run with its tasks, attempts and audit trail",
        s.RunDetail,
        params=[RUN_ID],
        errors=[404],
    ),
    Op(
        "POST",
        "/api/runs/{id}/cancel",
        "Cancel a run (false if it had already finished)",
        b.Cancelled,
        params=[RUN_ID],
        body=b.CancelRequest,
        body_required=False,
        errors=[*_POSTED, 404, 422],
        secured=True,
    ),
    Op(
        "POST",
        "/api/runs/{id}/retry",
        "Run a finished run again: from its failed tasks (default), from a task and "
        "everything downstream of it, or whole",
        b.RunQueued,
        status=201,
        answer_text="Queued again",
        params=[RUN_ID],
        body=b.RetryRequest,
        body_required=False,
        errors=[*_POSTED, 404, 409, 422],
        secured=True,
    ),
    Op(
        "GET",
        "/api/runs/{id}/logs",
        "A run's log lines; with follow=1 (or Accept: text/event-stream) an SSE stream of "
        "'log' events until the run ends, then one 'end' event",
        b.LogPage,
        answer_text="The lines (JSON) or a stream of them (SSE)",
        description="The stream's events, each with one line of JSON as its data: 'log' a "
        "LogLine (its seq is the event id, so a client resumes with Last-Event-ID); 'error' an "
        "Error, when the stream fails after it started; 'end' a LogEnd, always last.",
        params=[
            RUN_ID,
            _text("task", "only this task's lines"),
            Param(
                "after",
                {"type": "integer", "minimum": 0, "maximum": _INT_MAX, "default": 0},
                "only lines with a larger seq",
            ),
            _text("follow", "stream (SSE)", enum=["0", "1", "true", "false"]),
            Param(
                "Last-Event-ID",
                {"type": "string", "pattern": "^[0-9]{0,18}$"},
                "with a stream: resume after this seq (empty: from 'after')",
                "header",
            ),
        ],
        stream=[
            SseEvent("log", s.LogLine, with_id=True),
            SseEvent("error", s.Error),
            SseEvent("end", s.LogEnd),
        ],
        errors=[400, 404],
    ),
    # -- reads for the web UI (evflow.http.views) -----------------------------------------------
    Op(
        "GET",
        "/api/flows/{name}/grid",
        "The last runs of a flow by its tasks: one cell per task and run (a mapped task is "
        "one cell with counts by state), newest run first",
        b.GridView,
        params=[FLOW_NAME, _limit(100, 20, "runs", "how many runs")],
        errors=[400, 404],
    ),
    Op(
        "GET",
        "/api/flows/{name}/triggers",
        "What starts a flow: its schedule with the next fire times, its rules",
        b.TriggersView,
        params=[FLOW_NAME, _limit(50, 5, "fires", "next fire times")],
        errors=[400, 404],
    ),
    Op(
        "GET",
        "/api/runs/search",
        "Runs whose id, flow or params contain some text, newest first",
        b.SearchView,
        params=[
            _text("q", "text to look for", maxLength=200),
            _text("flow", "only this flow"),
            _states("state", RunState, "only this run state"),
            SINCE,
            UNTIL,
            _limit(500, 50),
            _offset("skip this many", 10_000_000),
        ],
        errors=[400],
    ),
    Op(
        "GET",
        "/api/runs/{id}/overview",
        "A run with its unmapped tasks; each mapped task as counts by state ('mapped'), its "
        "instances paged by /api/runs/{id}/tasks",
        b.OverviewView,
        params=[RUN_ID],
        errors=[404],
    ),
    Op(
        "GET",
        "/api/runs/{id}/tasks",
        "A run's tasks one page at a time, by node then map index",
        b.TasksView,
        params=[
            RUN_ID,
            _text("node", "only this task (a mapped task's instances)"),
            _states("state", TaskState, "only tasks in this state"),
            _limit(500, 100),
            _offset("skip this many", 10_000_000),
        ],
        errors=[400, 404],
    ),
    Op(
        "GET",
        "/api/runs/{id}/timeline",
        "Where a run's time went: per task, bars of waiting (with why) and running (one per "
        "try); a mapped task is one row with counts",
        b.TimelineView,
        params=[RUN_ID],
        errors=[404],
    ),
    # -- the live feed, events -----------------------------------------------------------------
    Op(
        "GET",
        "/api/stream",
        "Live state changes (SSE): 'run' events carry a Run, 'task' events a TaskChange; "
        "'dropped' {count} when a slow client lost events; ': ping' comments",
        answer_text="Server-Sent Events, each with one line of JSON as its data",
        params=[_text("run", "only this run's changes")],
        stream=[
            SseEvent("run", s.Run),
            SseEvent("task", b.TaskChange),
            SseEvent("dropped", b.Dropped),
        ],
    ),
    Op(
        "GET",
        "/api/events",
        "Events, newest first, each with the decisions taken on it",
        b.EventsPage,
        params=[
            _text("source", "only this source"),
            _text("status", "only this status", enum=["pending", "processed"]),
            _limit(500, 50),
            _offset("events to skip"),
        ],
        errors=[400],
    ),
    Op(
        "POST",
        "/api/events",
        "Emit an event (stored before the answer)",
        b.EventAccepted,
        status=202,
        answer_text="Stored",
        body=b.EventIn,
        errors=[*_POSTED, 429],
        secured=True,
    ),
    Op(
        "GET",
        "/api/events/{id}",
        "One event with its decisions",
        s.Event,
        params=[Param("id", {"type": "string"}, "event id", "path")],
        errors=[404],
    ),
    Op(
        "GET",
        "/api/dead-letters",
        "Input that could not become an event, newest first",
        b.DeadLettersPage,
        params=[_limit(1000, 50), _offset("records to skip")],
        errors=[400],
    ),
    # -- resources, sensors, audit -------------------------------------------------------------
    Op("GET", "/api/pools", "Pool slots, per-flow run gates and the event backlog", b.Pools),
    Op("GET", "/api/sensors", "Sensors and their status", b.SensorList),
    Op(
        "GET",
        "/api/cluster",
        "The instances sharing this service's store and the leases they hold",
        b.ClusterView,
    ),
    Op(
        "GET",
        "/api/audit",
        "The audit trail, oldest first from 'since'",
        b.AuditPage,
        params=[
            Param("since", _TIME, "records at or after"),
            _text("subject", "e.g. run:<id> or event:<id>"),
            _limit(10_000, 100),
        ],
        errors=[400],
    ),
    Op("GET", "/openapi.json", "This document", dict[str, Any]),
    Op(
        "GET",
        "/metrics",
        "Prometheus metrics",
        str,
        answer_text="Prometheus text format",
        media="text/plain",
    ),
]

ENDPOINTS = [op.endpoint for op in OPERATIONS]
