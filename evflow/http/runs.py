"""The API's flows and runs: list and read them, start a run or a backfill, cancel, retry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..engine import Engine
from ..errors import EngineNotRunning, EvflowError, FlowNotFound, RunNotFound
from ..states import RunState
from . import bodies as b
from .endpoint import ApiError, Handler, authorize, endpoint
from .inputs import as_object, int_arg, iso, optional_str, read_json, time_arg, whole
from .responses import JsonResponse
from .schemas import INT_MAX, RunDetail, jsonable_attempt, jsonable_audit, run_shape, run_with_tasks

__all__ = ["run_routes"]

_RUN_STATES = {s.value for s in RunState}


def _queued(run_id: str) -> Response:
    answer: b.RunQueued = {"run_id": run_id}
    return JsonResponse(answer, status_code=201, headers={"Location": f"/api/runs/{run_id}"})


def run_routes(engine: Engine, read: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """The routes of flows and runs for ``engine``; ``read`` makes a read handler an endpoint."""

    async def list_flows(request: Request) -> Response:
        return JsonResponse({"flows": [f.describe() for f in engine.flows.values()]})

    async def get_flow(request: Request) -> Response:
        return JsonResponse(engine.flow(request.path_params["name"]).describe())

    async def trigger(request: Request) -> Response:
        actor = authorize(request)
        fl = engine.flow(request.path_params["name"])
        body = as_object(await read_json(request, required=False))
        params = body.get("params", {})
        if not isinstance(params, dict):
            raise ApiError(422, f"'params' must be a JSON object, not {type(params).__name__}")
        priority = whole(body, "priority", 0) or 0
        if abs(priority) > INT_MAX:
            raise ApiError(422, f"'priority' must be between {-INT_MAX} and {INT_MAX}")
        run_id = await engine.submit_run(
            fl, params, priority=priority, trigger={"kind": "api", "actor": actor}, actor=actor
        )
        return _queued(run_id)

    async def backfill(request: Request) -> Response:
        actor = authorize(request)
        fl = engine.flow(request.path_params["name"])
        body = as_object(await read_json(request))
        bounds: list[datetime] = []
        for key in ("start", "end"):
            raw = body.get(key)
            if not isinstance(raw, str) or not raw.strip():
                raise ApiError(400, f"'{key}' is required: an ISO 8601 time")
            try:
                bounds.append(iso(raw.strip()))
            except ValueError:
                raise ApiError(400, f"'{key}'={raw!r} is not an ISO 8601 time") from None
        max_active = None
        if body.get("max_active") is not None:
            max_active = whole(body, "max_active", None, status=400)
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
        answer: b.RunsQueued = {"run_ids": run_ids}
        return JsonResponse(answer, status_code=201)

    async def list_runs(request: Request) -> Response:
        q = request.query_params
        flow = q.get("flow") or None
        state = q.get("state")
        if state is not None and state not in _RUN_STATES:
            raise ApiError(
                400,
                f"state={state!r} is not a run state; one of: "
                + ", ".join(s.value for s in RunState),
            )
        since, until = time_arg(request, "since"), time_arg(request, "until")
        limit = int_arg(request, "limit", 50, lo=1, hi=1000)
        offset = int_arg(request, "offset", 0)
        store = engine.store
        runs = await store.list_runs(
            flow=flow, state=state, since=since, until=until, limit=limit, offset=offset
        )
        total = await store.count_runs(flow=flow, state=state, since=since, until=until)
        page: b.RunsPage = {
            "runs": [run_shape(r) for r in runs],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
        return JsonResponse(page)

    async def get_run(request: Request) -> Response:
        store = engine.store
        run = await store.get_run(request.path_params["id"])
        attempts = await store.list_attempts(run.id)
        audit = await store.list_audit(subject=f"run:{run.id}")
        detail: RunDetail = {
            **run_with_tasks(run),
            "attempts": [jsonable_attempt(a) for a in attempts],
            "audit": [jsonable_audit(a) for a in audit],
        }
        return JsonResponse(detail)

    async def cancel(request: Request) -> Response:
        actor = authorize(request)
        body = as_object(await read_json(request, required=False))
        reason = optional_str(body, "reason") or f"cancelled by {actor}"
        run = await engine.store.get_run(request.path_params["id"], with_tasks=False)
        answer: b.Cancelled = {
            "run_id": run.id,
            "cancelled": await engine.cancel(run.id, reason=reason, actor=actor),
        }
        return JsonResponse(answer)

    async def retry(request: Request) -> Response:
        actor = authorize(request)
        body = as_object(await read_json(request, required=False))
        from_task = optional_str(body, "from_task", status=400)
        whole_run = body.get("whole", False)
        if not isinstance(whole_run, bool):
            raise ApiError(400, f"'whole' must be true or false, not {whole_run!r}")
        run = await engine.store.get_run(request.path_params["id"], with_tasks=False)
        try:
            run_id = await engine.retry(run.id, from_task=from_task, whole=whole_run, actor=actor)
        except (RunNotFound, EngineNotRunning):
            raise
        except EvflowError as exc:
            raise ApiError(409, str(exc)) from None
        return _queued(run_id)

    return [
        Route("/flows", read(list_flows), methods=["GET"]),
        Route("/flows/{name}", read(get_flow), methods=["GET"]),
        Route("/flows/{name}/runs", endpoint(trigger), methods=["POST"]),
        Route("/flows/{name}/backfill", endpoint(backfill), methods=["POST"]),
        Route("/runs", read(list_runs), methods=["GET"]),
        Route("/runs/{id}", read(get_run), methods=["GET"]),
        Route("/runs/{id}/cancel", endpoint(cancel), methods=["POST"]),
        Route("/runs/{id}/retry", endpoint(retry), methods=["POST"]),
    ]
