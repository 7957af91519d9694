"""The JSON API, mounted at ``/api``: flows, runs, logs, events, pools, sensors, audit.

:func:`api_routes` returns the routes, gathered from one module per concept (:mod:`.runs`,
:mod:`.logs`, :mod:`.events`); every answer is JSON shaped by :mod:`.schemas` and
:mod:`.bodies`, errors included (``{"error": ..., "status": N}``), and described by the
generated OpenAPI document (:mod:`.openapi`, from :mod:`.operations`). Two answers stream
Server-Sent Events instead: a run's logs with ``?follow=1`` and ``/api/stream``, the live feed
of run and task state changes.

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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..engine import Engine
from . import bodies as b
from .endpoint import ApiError, Handler, authorize, endpoint, reader
from .endpoint import stream as sse_stream
from .events import event_routes
from .inputs import MAX_BODY_BYTES, int_arg, parse_when, time_arg
from .live import LiveHub, sse
from .logs import LOG_POLL_S, log_routes
from .operations import ENDPOINTS
from .responses import JsonResponse
from .runs import run_routes
from .schemas import jsonable_attempt, jsonable_audit

__all__ = [
    "ENDPOINTS",
    "LOG_POLL_S",
    "MAX_BODY_BYTES",
    "ApiError",
    "Handler",
    "JsonResponse",
    "LiveHub",
    "api_index",
    "api_routes",
    "authorize",
    "jsonable_attempt",
    "jsonable_audit",
    "parse_when",
    "sse",
]

# The names the UI's reads (evflow.http.views) and the cluster route import from here.
_endpoint = endpoint
_int_arg = int_arg
_time_arg = time_arg


async def api_index(request: Request) -> Response:
    """``GET /api``: what this API offers."""
    index: b.ApiIndex = {
        "name": "evflow",
        "version": __version__,
        "openapi": "/openapi.json",
        "endpoints": ENDPOINTS,
        # a link to the user's tracing backend: "{trace_id}" is replaced (see [tracing])
        "trace_link": getattr(request.app.state, "trace_link", None),
    }
    return JsonResponse(index)


def api_routes(
    engine: Engine, *, hub: LiveHub | None = None, open_reads: bool = True
) -> list[BaseRoute]:
    """The API's routes for ``engine``, to mount at ``/api``.

    ``hub`` feeds ``/api/stream`` (a new one observing ``engine`` if not given; pass the app's
    own so that shutdown can close its streams).
    """
    live = hub if hub is not None else LiveHub().attach(engine)
    read = reader(open_reads)

    async def stream(request: Request) -> Response:
        return sse_stream(live.stream(request.query_params.get("run") or None))

    async def pools(request: Request) -> Response:
        answer: b.Pools = {
            "pools": [b.pool_usage(p) for p in engine.limits.snapshot()],
            "flows": [b.pool_usage(p) for p in engine.gate.snapshot()],
            "backlog": engine.backlog,
        }
        return JsonResponse(answer)

    async def sensors(request: Request) -> Response:
        return JsonResponse({"sensors": engine.describe_sensors()})

    async def audit(request: Request) -> Response:
        since = time_arg(request, "since")
        limit = int_arg(request, "limit", 100, lo=1, hi=10_000)
        subject = request.query_params.get("subject") or None
        records = await engine.store.list_audit(since=since, subject=subject, limit=limit)
        page: b.AuditPage = {"audit": [jsonable_audit(a) for a in records], "limit": limit}
        return JsonResponse(page)

    return [
        Route("/", endpoint(api_index), methods=["GET"]),
        *run_routes(engine, read),
        *log_routes(engine, live, read),
        Route("/stream", read(stream), methods=["GET"]),
        *event_routes(engine, read),
        Route("/pools", read(pools), methods=["GET"]),
        Route("/sensors", read(sensors), methods=["GET"]),
        Route("/audit", read(audit), methods=["GET"]),
    ]
