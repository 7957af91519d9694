"""The OpenAPI 3.1 description of the JSON API (``GET /openapi.json``), written by hand.

Kept next to :mod:`evflow.http.api`; a test checks that every route is described here.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..states import RunState, TaskState

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in codes}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_TIME = {
    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
    "description": "ISO 8601 (UTC when no offset) or unix seconds",
}
_INT_MAX = 2**62  # the API's bound on positions and offsets (inside the stores' 64 bits)
_PRIORITY = {"type": "integer", "minimum": -_INT_MAX, "maximum": _INT_MAX}
_LIMIT = {"type": "integer", "minimum": 1}
_OFFSET = {"type": "integer", "minimum": 0, "maximum": _INT_MAX, "default": 0}


def _sse_event(name: str, data: dict[str, Any], *, with_id: bool = False) -> dict[str, Any]:
    """One Server-Sent Event named ``name`` whose data is one line of JSON shaped by ``data``.

    OpenAPI 3.1 has a ``text/event-stream`` schema describe each event: an object of its fields.
    """
    fields: dict[str, Any] = {
        "event": {"const": name},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": data,
        },
    }
    if with_id:
        fields["id"] = {"type": "string", "pattern": "^[0-9]+$"}
    return {"type": "object", "required": ["event", "data"], "properties": fields}


def _sse(*events: dict[str, Any]) -> dict[str, Any]:
    return {"schema": {"oneOf": list(events)}}


_TASK_CHANGE = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string"},
        "flow": {"type": "string"},
        "name": {"type": "string"},
        "node": {"type": "string"},
        "state": {"type": "string"},
        "attempt": {"type": "integer"},
        "started_at": {"type": ["number", "null"]},
        "ended_at": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]},
        "waiting": {"type": ["string", "null"]},
    },
}
_DROPPED = {"type": "object", "properties": {"count": {"type": "integer"}}}
_SSE = {
    "description": "Server-Sent Events, each with one line of JSON as its data",
    "content": {
        "text/event-stream": _sse(
            _sse_event("run", {"$ref": "#/components/schemas/Run"}),
            _sse_event("task", _TASK_CHANGE),
            _sse_event("dropped", _DROPPED),
        )
    },
}
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "Flow": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "description": {"type": "string"},
            "location": {"type": "string"},
            "schedule": {"type": ["string", "null"]},
            "max_active_runs": {"type": ["integer", "null"]},
            "params": {
                "type": "object",
                "properties": {
                    "required": {"type": "array", "items": {"type": "string"}},
                    "defaults": {"type": "object"},
                    "open": {"type": "boolean"},
                },
            },
            "tasks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "upstream": {"type": "array", "items": {"type": "string"}},
                        "mapped": {"type": "boolean"},
                        "pool": {"type": ["string", "null"]},
                        "retries": {"type": "integer"},
                        "trigger_rule": {"type": "string"},
                        "is_async": {"type": "boolean"},
                    },
                },
            },
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "node": {"type": "string"},
            "map_index": {"type": ["integer", "null"]},
            "state": {"type": "string"},
            "attempt": {"type": "integer"},
            "queued_at": {"type": ["number", "null"]},
            "started_at": {"type": ["number", "null"]},
            "ended_at": {"type": ["number", "null"]},
            "duration_s": {"type": ["number", "null"]},
            "waiting": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "traceback": {"type": ["string", "null"]},
            "result": {},
        },
    },
    "Run": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "flow": {"type": "string"},
            "flow_version": {"type": "string"},
            "params": {"type": "object"},
            "state": {
                "type": "string",
                "enum": ["queued", "running", "succeeded", "failed", "cancelled"],
            },
            "priority": {"type": "integer"},
            "trigger": {"type": "object"},
            "trace_id": {
                "type": ["string", "null"],
                "description": "the trace this run continues (runs started by events)",
            },
            "created_at": {"type": "number"},
            "started_at": {"type": ["number", "null"]},
            "ended_at": {"type": ["number", "null"]},
            "duration_s": {"type": ["number", "null"]},
            "waiting": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
        },
    },
    "RunDetail": {
        "allOf": [
            _ref("Run"),
            {
                "type": "object",
                "properties": {
                    "tasks": {"type": "array", "items": _ref("Task")},
                    "attempts": {"type": "array", "items": _ref("Attempt")},
                    "audit": {"type": "array", "items": _ref("AuditRecord")},
                },
            },
        ]
    },
    "Attempt": {
        "type": "object",
        "properties": {
            "task": {"type": "string"},
            "attempt": {"type": "integer"},
            "state": {"type": "string"},
            "started_at": {"type": ["number", "null"]},
            "ended_at": {"type": ["number", "null"]},
            "duration_s": {"type": ["number", "null"]},
            "error": {"type": ["string", "null"]},
        },
    },
    "LogLine": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "task": {"type": "string"},
            "attempt": {"type": "integer"},
            "time": {"type": "number"},
            "level": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "AuditRecord": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "time": {"type": "number"},
            "kind": {"type": "string"},
            "subject": {"type": "string"},
            "actor": {"type": ["string", "null"]},
            "data": {},
            "prev_hash": {"type": "string"},
            "hash": {"type": "string"},
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "seq": {"type": "integer"},
            "uid": {
                "type": "string",
                "description": "evflow's identity of the event; decisions and runs name it",
            },
            "id": {"type": "string", "description": "the sender's id, unique within its source"},
            "trace_id": {
                "type": ["string", "null"],
                "description": "the W3C trace id the event arrived with (or was given)",
            },
            "dedup_key": {"type": "string"},
            "type": {"type": "string"},
            "source": {"type": "string"},
            "subject": {"type": ["string", "null"]},
            "time": {"type": "string", "format": "date-time"},
            "data": {},
            "extensions": {"type": "object"},
            "received_at": {"type": "number"},
            "status": {"type": "string", "enum": ["pending", "processed"]},
            "decisions": {
                "type": "array",
                "items": _ref("AuditRecord"),
                "description": "audit records about this event: rule matched, not matched "
                "and why, held, duplicate, skipped",
            },
        },
    },
    "EventIn": {
        "type": "object",
        "required": ["type"],
        "description": "A CloudEvents structured event (specversion 1.0) or {type, data, ...}; "
        "other members are kept as extension attributes",
        "properties": {
            "specversion": {"type": "string", "enum": ["1.0"]},
            "id": {
                "type": ["string", "null"],
                "description": "the sender's id; a new one when absent, null or empty",
            },
            "source": {"type": "string", "minLength": 1, "default": "evflow.api"},
            "type": {"type": "string", "minLength": 1},
            "subject": {"type": ["string", "null"]},
            "time": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "RFC 3339; now when absent, null or empty",
            },
            "data": {},
            "dedupkey": {
                "type": ["string", "null"],
                "description": "repeats of a key are dropped; from the body when absent",
            },
        },
    },
    "LogEnd": {
        "type": "object",
        "description": "the data of a log stream's 'end' event",
        "properties": {
            "run_id": {"type": "string"},
            "state": {
                "type": "string",
                "description": "the run's state, 'unavailable' when the stream ended early",
            },
            "last_seq": {"type": "integer"},
        },
    },
    "DeadLetter": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "source": {"type": "string"},
            "reason": {"type": "string"},
            "payload": {"type": "string"},
            "payload_encoding": {"type": "string", "enum": ["utf-8", "base64"]},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "received_at": {"type": "number"},
        },
    },
    "PoolUsage": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "capacity": {"type": "integer"},
            "in_use": {"type": "integer"},
            "waiting": {"type": "integer"},
        },
    },
    "Sensor": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "source": {"type": "string"},
            "describe": {"type": "string"},
            "status": {"type": "string"},
        },
    },
}


def _responses() -> dict[str, Any]:
    out = {}
    for code, text in {
        400: "Bad input",
        401: "Missing or wrong API token",
        403: "Refused: no API token is configured and the client is not on loopback",
        404: "Not found",
        409: "Conflict with the run's state",
        413: "Body too large",
        422: "Refused values",
        429: "Backlog full; retry after the Retry-After header's seconds",
        503: "Engine not running; retry later",
    }.items():
        out[f"E{code}"] = _json(_ref("Error"), text)
    return out


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API."""
    run_id = _path("id", "a run id (or a unique prefix of at least 4 characters)")
    paths: dict[str, Any] = {
        "/api": {
            "get": {
                "summary": "Index of the API",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/api/flows": {
            "get": {
                "summary": "Registered flows",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"flows": {"type": "array", "items": _ref("Flow")}},
                        }
                    )
                },
            }
        },
        "/api/flows/{name}": {
            "get": {
                "summary": "One flow",
                "parameters": [_path("name", "flow name")],
                "responses": {"200": _json(_ref("Flow")), **_errors(404)},
            }
        },
        "/api/flows/{name}/runs": {
            "post": {
                "summary": "Start a run",
                "security": _SECURED,
                "parameters": [_path("name", "flow name")],
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "params": {
                                "type": "object",
                                "description": "the flow's parameters; one it does not take, "
                                "or a missing required one, is a 422",
                            },
                            "priority": {**_PRIORITY, "default": 0},
                        },
                    },
                    required=False,
                ),
                "responses": {
                    "201": _json(
                        {"type": "object", "properties": {"run_id": {"type": "string"}}},
                        "Queued",
                    ),
                    **_errors(400, 401, 403, 404, 413, 422, 503),
                },
            }
        },
        "/api/flows/{name}/backfill": {
            "post": {
                "summary": "One run per schedule slot in [start, end]",
                "security": _SECURED,
                "parameters": [_path("name", "flow name")],
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["start", "end"],
                        "properties": {
                            "start": {"type": "string", "format": "date-time"},
                            "end": {"type": "string", "format": "date-time"},
                            "max_active": {"type": ["integer", "null"], "minimum": 1},
                        },
                        "description": "a range with no schedule slot queues nothing; a flow "
                        "without a schedule is a 422",
                    }
                ),
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {
                                "run_ids": {"type": "array", "items": {"type": "string"}}
                            },
                        },
                        "Queued (slots that already have a backfill run are left out)",
                    ),
                    **_errors(400, 401, 403, 404, 413, 422, 503),
                },
            }
        },
        "/api/runs": {
            "get": {
                "summary": "Runs, newest first",
                "parameters": [
                    _query("flow", {"type": "string"}, "only runs of this flow"),
                    _query(
                        "state",
                        {
                            "type": "string",
                            "enum": ["queued", "running", "succeeded", "failed", "cancelled"],
                        },
                        "only runs in this state",
                    ),
                    _query("since", _TIME, "created at or after"),
                    _query("until", _TIME, "created before"),
                    _query("limit", {**_LIMIT, "maximum": 1000, "default": 50}, "page size"),
                    _query("offset", _OFFSET, "runs to skip"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "runs": {"type": "array", "items": _ref("Run")},
                                "total": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                        }
                    ),
                    **_errors(400),
                },
            }
        },
        "/api/runs/{id}": {
            "get": {
                "summary": "A run with its tasks, attempts and audit trail",
                "parameters": [run_id],
                "responses": {"200": _json(_ref("RunDetail")), **_errors(404)},
            }
        },
        "/api/runs/{id}/cancel": {
            "post": {
                "summary": "Cancel a run (false if it had already finished)",
                "security": _SECURED,
                "parameters": [run_id],
                "requestBody": _body(
                    {
                        "type": "object",
                        "properties": {
                            "reason": {
                                "type": "string",
                                "description": "recorded with the cancellation",
                            }
                        },
                    },
                    required=False,
                ),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "run_id": {"type": "string"},
                                "cancelled": {"type": "boolean"},
                            },
                        }
                    ),
                    **_errors(400, 401, 403, 404, 413, 422, 503),
                },
            }
        },
        "/api/runs/{id}/retry": {
            "post": {
                "summary": "Run a finished run again: from its failed tasks (default), from a "
                "task and everything downstream of it, or whole",
                "security": _SECURED,
                "parameters": [run_id],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "from_task": {
                                        "type": "string",
                                        "description": "run this task and its downstream again",
                                    },
                                    "whole": {
                                        "type": "boolean",
                                        "description": "run every task again",
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(
                        {"type": "object", "properties": {"run_id": {"type": "string"}}},
                        "Queued again",
                    ),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 503),
                },
            }
        },
        "/api/runs/{id}/logs": {
            "get": {
                "summary": "A run's log lines; with follow=1 (or Accept: text/event-stream) an "
                "SSE stream of 'log' events until the run ends, then one 'end' event",
                "description": "The stream's events, each with one line of JSON as its data: "
                "'log' a LogLine (its seq is the event id, so a client resumes with "
                "Last-Event-ID); 'error' an Error, when the stream fails after it started; "
                "'end' a LogEnd, always last.",
                "parameters": [
                    run_id,
                    _query("task", {"type": "string"}, "only this task's lines"),
                    _query("after", _OFFSET, "only lines with a larger seq"),
                    _query(
                        "follow",
                        {"type": "string", "enum": ["0", "1", "true", "false"]},
                        "stream (SSE)",
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                        "description": "with a stream: resume after this seq (empty: from 'after')",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The lines (JSON) or a stream of them (SSE)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "run_id": {"type": "string"},
                                        "logs": {"type": "array", "items": _ref("LogLine")},
                                        "last_seq": {"type": "integer"},
                                    },
                                }
                            },
                            "text/event-stream": _sse(
                                _sse_event("log", _ref("LogLine"), with_id=True),
                                _sse_event("error", _ref("Error")),
                                _sse_event("end", _ref("LogEnd")),
                            ),
                        },
                    },
                    **_errors(400, 404),
                },
            }
        },
        "/api/stream": {
            "get": {
                "summary": "Live state changes (SSE): 'run' events carry a Run, 'task' events "
                "{run_id, flow, name, node, state, attempt, started_at, ended_at, error, "
                "waiting}; 'dropped' {count} when a slow client lost events; ': ping' comments",
                "parameters": [_query("run", {"type": "string"}, "only this run's changes")],
                "responses": {"200": _SSE},
            }
        },
        "/api/events": {
            "get": {
                "summary": "Events, newest first, each with the decisions taken on it",
                "parameters": [
                    _query("source", {"type": "string"}, "only this source"),
                    _query(
                        "status",
                        {"type": "string", "enum": ["pending", "processed"]},
                        "only this status",
                    ),
                    _query("limit", {**_LIMIT, "maximum": 500, "default": 50}, "page size"),
                    _query("offset", _OFFSET, "events to skip"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"events": {"type": "array", "items": _ref("Event")}},
                        }
                    ),
                    **_errors(400),
                },
            },
            "post": {
                "summary": "Emit an event (stored before the answer)",
                "security": _SECURED,
                "requestBody": _body(_ref("EventIn")),
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "properties": {
                                "event_id": {"type": "string"},
                                "duplicate": {"type": "boolean"},
                                "url": {
                                    "type": "string",
                                    "description": "where the event's decisions and runs appear",
                                },
                            },
                        },
                        "Stored",
                    ),
                    **_errors(400, 401, 403, 413, 429, 503),
                },
            },
        },
        "/api/events/{id}": {
            "get": {
                "summary": "One event with its decisions",
                "parameters": [_path("id", "event id")],
                "responses": {"200": _json(_ref("Event")), **_errors(404)},
            }
        },
        "/api/dead-letters": {
            "get": {
                "summary": "Input that could not become an event, newest first",
                "parameters": [
                    _query("limit", {**_LIMIT, "maximum": 1000, "default": 50}, "page size"),
                    _query("offset", _OFFSET, "records to skip"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "dead_letters": {"type": "array", "items": _ref("DeadLetter")}
                            },
                        }
                    ),
                    **_errors(400),
                },
            }
        },
        "/api/pools": {
            "get": {
                "summary": "Pool slots, per-flow run gates and the event backlog",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "pools": {"type": "array", "items": _ref("PoolUsage")},
                                "flows": {"type": "array", "items": _ref("PoolUsage")},
                                "backlog": {"type": "integer"},
                            },
                        }
                    )
                },
            }
        },
        "/api/sensors": {
            "get": {
                "summary": "Sensors and their status",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"sensors": {"type": "array", "items": _ref("Sensor")}},
                        }
                    )
                },
            }
        },
        "/api/audit": {
            "get": {
                "summary": "The audit trail, oldest first from 'since'",
                "parameters": [
                    _query("since", _TIME, "records at or after"),
                    _query("subject", {"type": "string"}, "e.g. run:<id> or event:<id>"),
                    _query("limit", {**_LIMIT, "maximum": 10000, "default": 100}, "page size"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "audit": {"type": "array", "items": _ref("AuditRecord")}
                            },
                        }
                    ),
                    **_errors(400),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    paths.update(_ui_paths(run_id))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "evflow",
            "version": __version__,
            "description": "Event-driven orchestration: flows, runs, events, logs, audit. "
            "POST calls need 'Authorization: Bearer <api_token>' when a token is configured; "
            "without one they are accepted from loopback clients only.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "responses": _responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


_RUN_STATES = [str(x) for x in RunState]
_TASK_STATES = [str(x) for x in TaskState]


def _ui_paths(run_id: dict[str, Any]) -> dict[str, Any]:
    """The reads shaped for the web UI (:mod:`evflow.http.views`)."""
    flow_name = _path("name", "flow name")
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    cell = {
        "type": "object",
        "properties": {
            "state": {"type": "string"},
            "counts": counts,
            "total": {"type": "integer"},
            "attempt": {"type": "integer"},
        },
    }
    bar = {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["waiting", "running"]},
            "start": {"type": "number"},
            "end": {"type": ["number", "null"]},
            "state": {"type": "string"},
            "attempt": {"type": ["integer", "null"]},
            "reason": {"type": ["string", "null"]},
        },
    }
    runs_page = {
        "type": "object",
        "properties": {
            "runs": {"type": "array", "items": _ref("Run")},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "q": {"type": ["string", "null"]},
        },
    }
    return {
        "/api/flows/{name}/grid": {
            "get": {
                "summary": "The last runs of a flow by its tasks: one cell per task and run (a "
                "mapped task is one cell with counts by state), newest run first",
                "parameters": [
                    flow_name,
                    _query("runs", {**_LIMIT, "maximum": 100, "default": 20}, "how many runs"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "flow": {"type": "string"},
                                "tasks": {"type": "array", "items": {"type": "object"}},
                                "runs": {
                                    "type": "array",
                                    "items": {
                                        "allOf": [
                                            _ref("Run"),
                                            {
                                                "type": "object",
                                                "properties": {
                                                    "cells": {
                                                        "type": "object",
                                                        "additionalProperties": cell,
                                                    }
                                                },
                                            },
                                        ]
                                    },
                                },
                                "limit": {"type": "integer"},
                            },
                        }
                    ),
                    **_errors(400, 404),
                },
            }
        },
        "/api/flows/{name}/triggers": {
            "get": {
                "summary": "What starts a flow: its schedule with the next fire times, its rules",
                "parameters": [
                    flow_name,
                    _query("fires", {**_LIMIT, "maximum": 50, "default": 5}, "next fire times"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "flow": {"type": "string"},
                                "schedule": {"type": ["object", "null"]},
                                "rules": {"type": "array", "items": {"type": "object"}},
                            },
                        }
                    ),
                    **_errors(400, 404),
                },
            }
        },
        "/api/runs/search": {
            "get": {
                "summary": "Runs whose id, flow or params contain some text, newest first",
                "parameters": [
                    _query("q", {"type": "string", "maxLength": 200}, "text to look for"),
                    _query("flow", {"type": "string"}, "only this flow"),
                    _query("state", {"type": "string", "enum": _RUN_STATES}, "only this run state"),
                    _query("since", _TIME, "created at or after"),
                    _query("until", _TIME, "created before"),
                    _query("limit", {**_LIMIT, "maximum": 500, "default": 50}, "page size"),
                    _query("offset", {**_OFFSET, "maximum": 10_000_000}, "skip this many"),
                ],
                "responses": {"200": _json(runs_page), **_errors(400)},
            }
        },
        "/api/runs/{id}/overview": {
            "get": {
                "summary": "A run with its unmapped tasks; each mapped task as counts by state "
                "('mapped'), its instances paged by /api/runs/{id}/tasks",
                "parameters": [run_id],
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                _ref("Run"),
                                {
                                    "type": "object",
                                    "properties": {
                                        "tasks": {"type": "array", "items": _ref("Task")},
                                        "mapped": {"type": "object", "additionalProperties": cell},
                                        "attempts": {"type": "array", "items": _ref("Attempt")},
                                    },
                                },
                            ]
                        }
                    ),
                    **_errors(404),
                },
            }
        },
        "/api/runs/{id}/tasks": {
            "get": {
                "summary": "A run's tasks one page at a time, by node then map index",
                "parameters": [
                    run_id,
                    _query(
                        "node", {"type": "string"}, "only this task (a mapped task's instances)"
                    ),
                    _query(
                        "state",
                        {"type": "string", "enum": _TASK_STATES},
                        "only tasks in this state",
                    ),
                    _query("limit", {**_LIMIT, "maximum": 500, "default": 100}, "page size"),
                    _query("offset", {**_OFFSET, "maximum": 10_000_000}, "skip this many"),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "run_id": {"type": "string"},
                                "tasks": {"type": "array", "items": _ref("Task")},
                                "total": {"type": "integer"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                            },
                        }
                    ),
                    **_errors(400, 404),
                },
            }
        },
        "/api/runs/{id}/timeline": {
            "get": {
                "summary": "Where a run's time went: per task, bars of waiting (with why) and "
                "running (one per try); a mapped task is one row with counts",
                "parameters": [run_id],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "run_id": {"type": "string"},
                                "state": {"type": "string"},
                                "now": {"type": "number"},
                                "rows": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "task": {"type": "string"},
                                            "state": {"type": "string"},
                                            "mapped": {"type": "boolean"},
                                            "count": {"type": "integer"},
                                            "counts": counts,
                                            "bars": {"type": "array", "items": bar},
                                        },
                                    },
                                },
                            },
                        }
                    ),
                    **_errors(404),
                },
            }
        },
    }
