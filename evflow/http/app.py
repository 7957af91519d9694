"""The whole HTTP app of a service: webhooks, health, ``/api``, ``/openapi.json``, ``/metrics``
and the web UI.

Usage, inside the task group that also runs the server::

    app = build_app(engine, config)
    await tg.start(run_app_services, app)      # loop-lag monitor; closes streams at shutdown
    port = await tg.start(HttpServer().serve, app, host, port)

:func:`run_app_services` is the app's lifespan (the server runs uvicorn with its own lifespan
off): it measures event-loop lag for ``/metrics`` and, when cancelled, ends every open
Server-Sent Events stream so that the server's graceful shutdown does not wait on them. The app
works without it, minus the loop-lag gauge and that prompt end of streams.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ..engine import Engine
from ..service.config import Config
from .api import JsonResponse, api_index, api_routes
from .cluster import cluster_routes
from .live import LiveHub
from .metrics import Metrics, metrics_route, monitor_loop_lag
from .openapi import openapi_document
from .proxies import TrustedProxies
from .server import create_app
from .ui import ui_routes
from .views import view_routes

__all__ = ["build_app", "run_app_services"]


def build_app(engine: Engine, config: Config | None = None) -> Starlette:
    """The service's Starlette app for ``engine``, configured by ``config.http``."""
    cfg = config or Config()
    http = cfg.http
    hub = LiveHub().attach(engine)
    metrics = Metrics(engine).attach()
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JsonResponse(document)

    app = create_app(
        engine,
        api_token=http.api_token or None,
        extra_routes=[
            Route("/api", api_index, methods=["GET"]),
            Mount(
                "/api",
                routes=[
                    *view_routes(engine, open_reads=http.open_reads),
                    *cluster_routes(engine, open_reads=http.open_reads),
                    *api_routes(engine, hub=hub, open_reads=http.open_reads),
                ],
            ),
            Route("/openapi.json", openapi, methods=["GET"]),
            metrics_route(metrics),
            *ui_routes(engine),
        ],
    )
    if http.trusted_proxies:
        app.add_middleware(TrustedProxies, trusted=http.trusted_proxies)
    app.state.live_hub = hub
    app.state.metrics = metrics
    app.state.trace_link = cfg.tracing.link
    return app


async def run_app_services(
    app: Starlette, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run the app's background work until cancelled (see the module docstring)."""
    hub: LiveHub = app.state.live_hub
    metrics: Metrics = app.state.metrics
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(monitor_loop_lag, metrics)
            task_status.started()
            await anyio.sleep_forever()
    finally:
        hub.close()
