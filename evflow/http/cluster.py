"""``GET /api/cluster``: the instances sharing this service's store and the leases they hold."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..cluster.status import cluster_status
from ..engine import Engine
from .api import JsonResponse, _endpoint, authorize

__all__ = ["cluster_routes"]


def cluster_routes(engine: Engine, *, open_reads: bool = True) -> list[BaseRoute]:
    """The cluster route for ``engine``, to mount at ``/api``."""

    async def cluster(request: Request) -> Response:
        if not open_reads:
            authorize(request)
        this = engine.membership.id if engine.membership is not None else None
        return JsonResponse(await cluster_status(engine.store, this))

    return [Route("/cluster", _endpoint(cluster), methods=["GET"])]
