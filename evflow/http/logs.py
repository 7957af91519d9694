"""A run's log lines: read as one JSON page, or followed as Server-Sent Events to the run's end.

A stream sends each line as a ``log`` event whose id is its ``seq`` (a client that reconnects
with ``Last-Event-ID`` resumes after it), an ``error`` event if it fails after it started, and
always ends with one ``end`` event saying the run's state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..engine import Engine
from ..errors import EngineNotRunning, RunNotFound, StoreError
from .bodies import LogPage
from .endpoint import Handler, stream
from .inputs import bounded_int, int_arg, wants_stream
from .live import LiveHub, sse
from .responses import JsonResponse
from .schemas import INT_MAX, Error, LogEnd, jsonable_log

__all__ = ["LOG_POLL_S", "follow_logs", "log_routes"]

log = logging.getLogger("evflow.http")

LOG_POLL_S = 0.25
_PAGE = 1000


def log_routes(engine: Engine, hub: LiveHub, read: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """``GET /runs/{id}/logs`` for ``engine``; ``hub`` ends its streams at shutdown."""

    async def logs(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"], with_tasks=False)
        task = request.query_params.get("task") or None
        after = int_arg(request, "after", 0)
        resume_after = bounded_int(
            request.headers.get("last-event-id"), "header Last-Event-ID", 0, 0, INT_MAX
        )
        if wants_stream(request):
            return stream(follow_logs(engine, hub, run.id, task, max(after, resume_after)))
        lines = await store.list_logs(run.id, task, after_seq=after)
        page: LogPage = {
            "run_id": run.id,
            "logs": [jsonable_log(r) for r in lines],
            "last_seq": lines[-1].seq if lines else after,
        }
        return JsonResponse(page)

    return [Route("/runs/{id}/logs", read(logs), methods=["GET"])]


async def follow_logs(
    engine: Engine, hub: LiveHub, run_id: str, task: str | None, after: int
) -> AsyncIterator[bytes]:
    """SSE: a run's log lines as they are written (``event: log``), then ``event: end``."""
    state = "unknown"
    try:
        while True:
            run = await engine.store.get_run(run_id, with_tasks=False)
            # The run's final state is committed after its last log lines: drain after reading it.
            while True:
                lines = await engine.store.list_logs(run_id, task, after_seq=after, limit=_PAGE)
                for rec in lines:
                    yield sse("log", jsonable_log(rec), event_id=rec.seq)
                    after = rec.seq
                if len(lines) < _PAGE:
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
        error: Error = {"error": f"{type(exc).__name__}: {exc}", "status": 500}
        yield sse("error", error)
        state = "unavailable"
    end: LogEnd = {"run_id": run_id, "state": state, "last_seq": after}
    yield sse("end", end)
