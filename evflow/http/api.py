"""The JSON API, mounted at ``/api``: flows, runs, logs, events, pools, sensors, audit.

:func:`api_routes` returns the routes; every answer is JSON, errors included
(``{"error": ..., "status": N}``). Two answers stream Server-Sent Events instead: a run's logs
with ``?follow=1`` and ``/api/stream``, the live feed of run and task state changes.

Reads are open (the server binds to loopback by default; ``open_reads=False`` puts them behind
the same check as writes). State-changing calls (``POST``) need ``Authorization: Bearer
<api_token>`` when a token is configured; without one they are accepted from loopback clients
only. Each of them is written to the audit trail with its actor: ``token:<sha256[:8]>@<ip>`` or
``anonymous@<ip>``.

The live feed comes from a :class:`LiveHub`, an engine observer that fans state changes out to
one bounded memory stream per connection: a client that does not keep up loses events (and is
told how many) instead of making memory grow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..cli.display import jsonable_run
from ..engine import Engine
from ..errors import (
    EngineNotRunning,
    EventError,
    EvflowError,
    FlowNotFound,
    RunNotFound,
    StoreError,
)
from ..events import Event, parse_json
from ..records import AttemptRecord, AuditRecord, EventRecord, LogRecord
from ..sensors.webhook import accepted_json
from ..states import RunState
from ..tracing import trace_id_of
from .errors import error_for, error_response
from .live import LiveHub, sse
from .responses import OrjsonResponse

__all__ = ["ApiError", "LiveHub", "api_routes", "sse"]

log = logging.getLogger("evflow.http")

MAX_BODY_BYTES = 1 << 20
LOG_POLL_S = 0.25
_UNAVAILABLE_RETRY_S = 5
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Handler = Callable[[Request], Awaitable[Response]]


class ApiError(Exception):
    """An answer other than success, with its status and a message for the caller."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class JsonResponse(OrjsonResponse):
    """JSON via orjson; values it cannot encode (user-defined defaults) become strings."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_NON_STR_KEYS)


# -- request helpers --------------------------------------------------------------------------


def _client_ip(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def authorize(request: Request) -> str:
    """The actor of a call that needs authority; raises 401/403 :class:`ApiError` if none."""
    token: str | None = getattr(request.app.state, "api_token", None)
    ip = _client_ip(request)
    if token:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(
                401,
                "this call needs 'Authorization: Bearer <token>' with the service's "
                "[http] api_token",
                {"WWW-Authenticate": "Bearer"},
            )
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401, "the API token is not valid for this service", {"WWW-Authenticate": "Bearer"}
            )
        return f"token:{hashlib.sha256(token.encode()).hexdigest()[:8]}@{ip}"
    if not _is_loopback(ip):
        raise ApiError(
            403,
            f"state-changing calls from {ip} are refused because no API token is configured; "
            "set [http] api_token in evflow.toml (or EVFLOW_HTTP_API_TOKEN) and send it as "
            "'Authorization: Bearer <token>'",
        )
    return f"anonymous@{ip}"


class _NoBody:
    """The marker of an empty request body (unlike a body of JSON ``null``)."""


NO_BODY = _NoBody()


async def _read_json(request: Request, *, required: bool = True) -> Any:
    """The request body as JSON (:data:`NO_BODY` for an empty body when not ``required``)."""
    length = request.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before sending the whole body") from None
    body = b"".join(chunks)
    if not body.strip():
        if required:
            raise ApiError(400, "the body is empty; send a JSON object")
        return NO_BODY
    try:
        return parse_json(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except EventError as exc:
        raise ApiError(400, str(exc)) from None


def _object(body: Any) -> dict[str, Any]:
    """The body as a JSON object: an empty body is ``{}``, anything else not an object a 400."""
    if body is NO_BODY:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}")
    return body


_INT_MAX = 2**62  # well inside the stores' 64-bit integers


def _int_arg(request: Request, name: str, default: int, *, lo: int = 0, hi: int = _INT_MAX) -> int:
    raw = _present(request, name)
    return _bounded_int(raw, f"query parameter {name}", default, lo, hi)


def _present(request: Request, name: str) -> str | None:
    """Query parameter ``name``, None when absent; given but empty is a 400 (``limit=``)."""
    raw = request.query_params.get(name)
    if raw is not None and raw.strip() == "":
        raise ApiError(400, f"query parameter {name} is empty; give a value or leave it out")
    return raw


def _whole(
    body: Mapping[str, Any], key: str, default: int | None, *, status: int = 422
) -> int | None:
    """``body[key]`` as a whole number (``26.0`` counts, as in JSON Schema), ``default`` when
    absent; anything else an error with ``status``."""
    if key not in body:
        return default
    value = body[key]
    if isinstance(value, float) and value.is_integer() and abs(value) <= _INT_MAX:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(status, f"'{key}' must be a whole number, not {value!r}")
    return value


def _optional_str(body: Mapping[str, Any], key: str, *, status: int = 422) -> str | None:
    """``body[key]`` when it is a string, None when absent; anything else (null too) an
    error with ``status``."""
    if key not in body:
        return None
    value = body[key]
    if not isinstance(value, str):
        raise ApiError(status, f"'{key}' must be a string, not {value!r}")
    return value


def _bounded_int(raw: str | None, what: str, default: int, lo: int, hi: int) -> int:
    """``raw`` as a whole number in ``[lo, hi]`` (``default`` when absent or empty), else a 400
    naming ``what``."""
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if len(text) > 20:  # longer than any number in range: refuse before converting
        raise ApiError(400, f"{what}={text[:24]!r}… must be a whole number between {lo} and {hi}")
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{what}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{what}={value} must be between {lo} and {hi}")
    return value


def parse_when(raw: str, name: str) -> float:
    """Unix seconds from unix seconds or an ISO 8601 time (UTC when it has no offset)."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ApiError(400, f"{name}={raw!r} is not a finite number of seconds")
        return value
    try:
        return _iso(text).timestamp()
    except ValueError:
        raise ApiError(
            400,
            f"{name}={raw!r} is neither an ISO 8601 time (e.g. 2026-01-31T12:00:00Z) "
            "nor unix seconds",
        ) from None


def _iso(text: str) -> datetime:
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _time_arg(request: Request, name: str) -> float | None:
    raw = _present(request, name)
    return None if raw is None else parse_when(raw, name)


_FOLLOW = {"1": True, "true": True, "0": False, "false": False}


def _wants_stream(request: Request) -> bool:
    raw = _present(request, "follow")
    if raw is not None:
        follow = _FOLLOW.get(raw.strip().lower())
        if follow is None:
            raise ApiError(400, f"follow={raw!r}: use follow=1 to stream, follow=0 not to")
        if follow:
            return True
    return "text/event-stream" in request.headers.get("accept", "")


def _stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=_SSE_HEADERS)


def _endpoint(fn: Handler) -> Handler:
    """Wrap a handler so that every failure becomes a JSON error with the right status."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, headers=exc.headers)
        except EvflowError as exc:
            answer = error_for(exc)
            if answer is None:
                raise
            return answer

    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    return endpoint


# -- JSON shapes ------------------------------------------------------------------------------


def jsonable_attempt(a: AttemptRecord) -> dict[str, Any]:
    """One try of a task, with how long it took."""
    ended, started = a.ended_at, a.started_at
    return {
        "task": a.task,
        "attempt": a.attempt,
        "state": str(a.state),
        "started_at": started,
        "ended_at": ended,
        "duration_s": ended - started if started is not None and ended is not None else None,
        "error": a.error,
    }


def jsonable_audit(a: AuditRecord) -> dict[str, Any]:
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


def _jsonable_log(r: LogRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "task": r.task,
        "attempt": r.attempt,
        "time": r.time,
        "level": r.level,
        "message": r.message,
    }


def _jsonable_event(e: EventRecord, decisions: list[AuditRecord]) -> dict[str, Any]:
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


def _payload(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


# -- the routes -------------------------------------------------------------------------------

ENDPOINTS = [
    "GET /api",
    "GET /api/flows",
    "GET /api/flows/{name}",
    "POST /api/flows/{name}/runs",
    "POST /api/flows/{name}/backfill",
    "GET /api/runs",
    "GET /api/runs/{id}",
    "POST /api/runs/{id}/cancel",
    "POST /api/runs/{id}/retry",
    "GET /api/runs/{id}/logs",
    # reads for the web UI (evflow.http.views)
    "GET /api/flows/{name}/grid",
    "GET /api/flows/{name}/triggers",
    "GET /api/runs/search",
    "GET /api/runs/{id}/overview",
    "GET /api/runs/{id}/tasks",
    "GET /api/runs/{id}/timeline",
    "GET /api/stream",
    "GET /api/events",
    "GET /api/events/{id}",
    "POST /api/events",
    "GET /api/dead-letters",
    "GET /api/pools",
    "GET /api/sensors",
    "GET /api/audit",
    "GET /openapi.json",
    "GET /metrics",
]


async def api_index(request: Request) -> Response:
    """``GET /api``: what this API offers."""
    return JsonResponse(
        {
            "name": "evflow",
            "version": __version__,
            "openapi": "/openapi.json",
            "endpoints": ENDPOINTS,
            # a link to the user's tracing backend: "{trace_id}" is replaced (see [tracing])
            "trace_link": getattr(request.app.state, "trace_link", None),
        }
    )


def api_routes(
    engine: Engine, *, hub: LiveHub | None = None, open_reads: bool = True
) -> list[BaseRoute]:
    """The API's routes for ``engine``, to mount at ``/api``.

    ``hub`` feeds ``/api/stream`` (a new one observing ``engine`` if not given; pass the app's
    own so that shutdown can close its streams).
    """
    live = hub if hub is not None else LiveHub().attach(engine)

    def read(fn: Handler) -> Handler:
        if open_reads:
            return _endpoint(fn)

        async def guarded(request: Request) -> Response:
            authorize(request)
            return await fn(request)

        guarded.__name__ = fn.__name__
        return _endpoint(guarded)

    # -- flows ---------------------------------------------------------------------------------
    async def list_flows(request: Request) -> Response:
        return JsonResponse({"flows": [f.describe() for f in engine.flows.values()]})

    async def get_flow(request: Request) -> Response:
        return JsonResponse(engine.flow(request.path_params["name"]).describe())

    async def trigger(request: Request) -> Response:
        actor = authorize(request)
        fl = engine.flow(request.path_params["name"])
        body = _object(await _read_json(request, required=False))
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise ApiError(422, f"'params' must be a JSON object, not {type(params).__name__}")
        priority = _whole(body, "priority", 0) or 0
        if abs(priority) > _INT_MAX:
            raise ApiError(422, f"'priority' must be between {-_INT_MAX} and {_INT_MAX}")
        run_id = await engine.submit_run(
            fl, params, priority=priority, trigger={"kind": "api", "actor": actor}, actor=actor
        )
        return JsonResponse(
            {"run_id": run_id}, status_code=201, headers={"Location": f"/api/runs/{run_id}"}
        )

    async def backfill(request: Request) -> Response:
        actor = authorize(request)
        fl = engine.flow(request.path_params["name"])
        body = _object(await _read_json(request))
        bounds: list[datetime] = []
        for key in ("start", "end"):
            raw = body.get(key)
            if not isinstance(raw, str) or not raw.strip():
                raise ApiError(400, f"'{key}' is required: an ISO 8601 time")
            try:
                bounds.append(_iso(raw.strip()))
            except ValueError:
                raise ApiError(400, f"'{key}'={raw!r} is not an ISO 8601 time") from None
        max_active = None
        if body.get("max_active") is not None:
            max_active = _whole(body, "max_active", None, status=400)
        if max_active is not None and max_active < 1:
            raise ApiError(400, f"'max_active' must be a whole number >= 1, not {max_active!r}")
        try:
            run_ids = await engine.backfill(
                fl, bounds[0], bounds[1], max_active=max_active, actor=actor
            )
        except (FlowNotFound, EngineNotRunning):
            raise
        except EvflowError as exc:
            raise ApiError(422, str(exc)) from None
        return JsonResponse({"run_ids": run_ids}, status_code=201)

    # -- runs ----------------------------------------------------------------------------------
    async def list_runs(request: Request) -> Response:
        q = request.query_params
        flow = q.get("flow") or None
        state = q.get("state")
        if state is not None and state not in {s.value for s in RunState}:
            raise ApiError(
                400,
                f"state={state!r} is not a run state; one of: "
                + ", ".join(s.value for s in RunState),
            )
        since, until = _time_arg(request, "since"), _time_arg(request, "until")
        limit = _int_arg(request, "limit", 50, lo=1, hi=1000)
        offset = _int_arg(request, "offset", 0)
        store = engine.store
        runs = await store.list_runs(
            flow=flow, state=state, since=since, until=until, limit=limit, offset=offset
        )
        total = await store.count_runs(flow=flow, state=state, since=since, until=until)
        return JsonResponse(
            {
                "runs": [jsonable_run(r, tasks=False) for r in runs],
                "total": total,
                "limit": limit,
                "offset": offset,
            }
        )

    async def get_run(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"])
        out = jsonable_run(run)
        out["attempts"] = [jsonable_attempt(a) for a in await store.list_attempts(run.id)]
        out["audit"] = [jsonable_audit(a) for a in await store.list_audit(subject=f"run:{run.id}")]
        return JsonResponse(out)

    async def cancel(request: Request) -> Response:
        actor = authorize(request)
        body = _object(await _read_json(request, required=False))
        reason = _optional_str(body, "reason") or f"cancelled by {actor}"
        run = await engine.store.get_run(request.path_params["id"], with_tasks=False)
        cancelled = await engine.cancel(run.id, reason=reason, actor=actor)
        return JsonResponse({"run_id": run.id, "cancelled": cancelled})

    async def retry(request: Request) -> Response:
        actor = authorize(request)
        body = _object(await _read_json(request, required=False))
        from_task = _optional_str(body, "from_task", status=400)
        whole = body.get("whole", False)
        if not isinstance(whole, bool):
            raise ApiError(400, f"'whole' must be true or false, not {whole!r}")
        run = await engine.store.get_run(request.path_params["id"], with_tasks=False)
        try:
            run_id = await engine.retry(run.id, from_task=from_task, whole=whole, actor=actor)
        except (RunNotFound, EngineNotRunning):
            raise
        except EvflowError as exc:
            raise ApiError(409, str(exc)) from None
        return JsonResponse(
            {"run_id": run_id}, status_code=201, headers={"Location": f"/api/runs/{run_id}"}
        )

    async def logs(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"], with_tasks=False)
        task = request.query_params.get("task") or None
        after = _int_arg(request, "after", 0)
        resume_after = _bounded_int(
            request.headers.get("last-event-id"), "header Last-Event-ID", 0, 0, _INT_MAX
        )
        if _wants_stream(request):
            after = max(after, resume_after)
            return _stream(_follow_logs(engine, live, run.id, task, after))
        lines = await store.list_logs(run.id, task, after_seq=after)
        return JsonResponse(
            {
                "run_id": run.id,
                "logs": [_jsonable_log(r) for r in lines],
                "last_seq": lines[-1].seq if lines else after,
            }
        )

    async def stream(request: Request) -> Response:
        return _stream(live.stream(request.query_params.get("run") or None))

    # -- events --------------------------------------------------------------------------------
    async def list_events(request: Request) -> Response:
        limit = _int_arg(request, "limit", 50, lo=1, hi=500)
        offset = _int_arg(request, "offset", 0)
        status = request.query_params.get("status")
        if status is not None and status not in ("pending", "processed"):
            raise ApiError(400, f"status={status!r}: one of pending, processed")
        store = engine.store
        events = await store.list_events(
            limit=limit,
            offset=offset,
            source=request.query_params.get("source") or None,
            status=status,
        )
        out = [_jsonable_event(e, await store.list_audit(subject=f"event:{e.uid}")) for e in events]
        return JsonResponse({"events": out, "limit": limit, "offset": offset})

    async def get_event(request: Request) -> Response:
        store = engine.store
        e = await store.get_event(request.path_params["id"])
        return JsonResponse(_jsonable_event(e, await store.list_audit(subject=f"event:{e.uid}")))

    async def emit(request: Request) -> Response:
        actor = authorize(request)
        body = _object(await _read_json(request))
        try:
            event = Event.from_dict(body, default_source="evflow.api")
        except EventError as exc:
            raise ApiError(400, f"not a valid event: {exc}") from None
        accepted = await engine.emit(event, actor=actor)
        return JsonResponse(accepted_json(accepted), status_code=202)

    async def dead_letters(request: Request) -> Response:
        limit = _int_arg(request, "limit", 50, lo=1, hi=1000)
        offset = _int_arg(request, "offset", 0)
        out = []
        for d in await engine.store.list_dead_letters(limit=limit, offset=offset):
            payload, encoding = _payload(bytes(d.payload))
            out.append(
                {
                    "id": d.id,
                    "source": d.source,
                    "reason": d.reason,
                    "payload": payload,
                    "payload_encoding": encoding,
                    "headers": dict(d.headers),
                    "received_at": d.received_at,
                }
            )
        return JsonResponse({"dead_letters": out, "limit": limit, "offset": offset})

    # -- resources, sensors, audit -------------------------------------------------------------
    async def pools(request: Request) -> Response:
        return JsonResponse(
            {
                "pools": [asdict(p) for p in engine.limits.snapshot()],
                "flows": [asdict(p) for p in engine.gate.snapshot()],
                "backlog": engine.backlog,
            }
        )

    async def sensors(request: Request) -> Response:
        return JsonResponse({"sensors": engine.describe_sensors()})

    async def audit(request: Request) -> Response:
        since = _time_arg(request, "since")
        limit = _int_arg(request, "limit", 100, lo=1, hi=10_000)
        subject = request.query_params.get("subject") or None
        records = await engine.store.list_audit(since=since, subject=subject, limit=limit)
        return JsonResponse({"audit": [jsonable_audit(a) for a in records], "limit": limit})

    return [
        Route("/", _endpoint(api_index), methods=["GET"]),
        Route("/flows", read(list_flows), methods=["GET"]),
        Route("/flows/{name}", read(get_flow), methods=["GET"]),
        Route("/flows/{name}/runs", _endpoint(trigger), methods=["POST"]),
        Route("/flows/{name}/backfill", _endpoint(backfill), methods=["POST"]),
        Route("/runs", read(list_runs), methods=["GET"]),
        Route("/runs/{id}", read(get_run), methods=["GET"]),
        Route("/runs/{id}/cancel", _endpoint(cancel), methods=["POST"]),
        Route("/runs/{id}/retry", _endpoint(retry), methods=["POST"]),
        Route("/runs/{id}/logs", read(logs), methods=["GET"]),
        Route("/stream", read(stream), methods=["GET"]),
        # one route per path, so that a 405's Allow header names every method of the path
        Route(
            "/events",
            _by_method(GET=read(list_events), POST=_endpoint(emit)),
            methods=["GET", "POST"],
        ),
        Route("/events/{id}", read(get_event), methods=["GET"]),
        Route("/dead-letters", read(dead_letters), methods=["GET"]),
        Route("/pools", read(pools), methods=["GET"]),
        Route("/sensors", read(sensors), methods=["GET"]),
        Route("/audit", read(audit), methods=["GET"]),
    ]


def _by_method(**handlers: Handler) -> Handler:
    """One endpoint for a path served by several methods (``GET=..., POST=...``); the route's
    ``methods`` answers any other with 405 and an ``Allow`` header naming them all."""

    async def endpoint(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return endpoint


async def _follow_logs(
    engine: Engine, hub: LiveHub, run_id: str, task: str | None, after: int
) -> AsyncIterator[bytes]:
    """SSE: a run's log lines as they are written (``event: log``), then ``event: end``."""
    page = 1000
    state = "unknown"
    try:
        while True:
            run = await engine.store.get_run(run_id, with_tasks=False)
            # The run's final state is committed after its last log lines: drain after reading it.
            while True:
                lines = await engine.store.list_logs(run_id, task, after_seq=after, limit=page)
                for rec in lines:
                    yield sse("log", _jsonable_log(rec), event_id=rec.seq)
                    after = rec.seq
                if len(lines) < page:
                    break
            state = str(run.state)
            if run.state.finished:
                break
            with anyio.move_on_after(LOG_POLL_S):
                await hub.closing.wait()
            if hub.closing.is_set():
                break
    except (EngineNotRunning, StoreError, RunNotFound):
        state = "unavailable"
    except Exception as exc:  # the response has started: end the stream cleanly, say why
        log.exception("the log stream of run %s failed", run_id)
        yield sse("error", {"error": f"{type(exc).__name__}: {exc}", "status": 500})
        state = "unavailable"
    yield sse("end", {"run_id": run_id, "state": state, "last_seq": after})
