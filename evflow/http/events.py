"""The API's events: list and read them with the decisions taken on each, emit one, and the
dead letters (input that could not become an event)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..engine import Engine
from ..errors import EventError
from ..events import Event
from ..records import EventRecord
from ..sensors.webhook import accepted_json
from . import bodies as b
from .endpoint import ApiError, Handler, authorize, by_method, endpoint
from .inputs import as_object, int_arg, read_json
from .responses import JsonResponse
from .schemas import Event as EventShape
from .schemas import jsonable_dead_letter, jsonable_event

__all__ = ["event_routes"]

_STATUSES = ("pending", "processed")


def event_routes(engine: Engine, read: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """The routes of events and dead letters for ``engine``."""

    async def decided(e: EventRecord) -> EventShape:
        return jsonable_event(e, await engine.store.list_audit(subject=f"event:{e.uid}"))

    async def list_events(request: Request) -> Response:
        limit = int_arg(request, "limit", 50, lo=1, hi=500)
        offset = int_arg(request, "offset", 0)
        status = request.query_params.get("status")
        if status is not None and status not in _STATUSES:
            raise ApiError(400, f"status={status!r}: one of {', '.join(_STATUSES)}")
        events = await engine.store.list_events(
            limit=limit,
            offset=offset,
            source=request.query_params.get("source") or None,
            status=status,
        )
        page: b.EventsPage = {
            "events": [await decided(e) for e in events],
            "limit": limit,
            "offset": offset,
        }
        return JsonResponse(page)

    async def get_event(request: Request) -> Response:
        return JsonResponse(await decided(await engine.store.get_event(request.path_params["id"])))

    async def emit(request: Request) -> Response:
        actor = authorize(request)
        body = as_object(await read_json(request))
        try:
            event = Event.from_dict(body, default_source="evflow.api")
        except EventError as exc:
            raise ApiError(400, f"not a valid event: {exc}") from None
        accepted = await engine.emit(event, actor=actor)
        return JsonResponse(accepted_json(accepted), status_code=202)

    async def dead_letters(request: Request) -> Response:
        limit = int_arg(request, "limit", 50, lo=1, hi=1000)
        offset = int_arg(request, "offset", 0)
        records = await engine.store.list_dead_letters(limit=limit, offset=offset)
        page: b.DeadLettersPage = {
            "dead_letters": [jsonable_dead_letter(d) for d in records],
            "limit": limit,
            "offset": offset,
        }
        return JsonResponse(page)

    return [
        # one route per path, so that a 405's Allow header names every method of the path
        Route(
            "/events",
            by_method(GET=read(list_events), POST=endpoint(emit)),
            methods=["GET", "POST"],
        ),
        Route("/events/{id}", read(get_event), methods=["GET"]),
        Route("/dead-letters", read(dead_letters), methods=["GET"]),
    ]
