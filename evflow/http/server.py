"""The HTTP server: webhook endpoints and health probes, with room for the API, UI and metrics.

:func:`create_app` builds the Starlette app:

* ``POST /hooks/{name}`` — handed to the engine's :class:`~evflow.sensors.webhook.WebhookSensor`
  of that name (404 if there is none);
* ``GET /healthz`` — 200 while the process serves HTTP;
* ``GET /readyz`` — 200 while the engine runs and its store is open and reachable (with each
  sensor's status and the ones not listening yet), else 503.

Further parts (``/api``, ``/ui``, ``/metrics``) are passed as ``extra_routes``, typically
``Mount("/api", routes=[...])``; they find the engine and the API token on ``request.app.state``
(``engine``, ``api_token``). Every answer of these routes, errors included, is JSON
(``{"error": ..., "status": N}`` for errors).

:class:`HttpServer` runs an app with uvicorn inside the caller's task group, binding to
127.0.0.1 unless told otherwise. It never touches logging configuration or signal handlers.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Generator, Sequence

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from ..engine import Engine
from ..errors import EngineNotRunning
from ..sensors.webhook import WebhookSensor
from .errors import UNAVAILABLE_RETRY_S, error_response
from .hooks import answer_hook
from .responses import OrjsonResponse

__all__ = ["HttpServer", "OrjsonResponse", "create_app", "error_response"]

log = logging.getLogger("evflow.http")


def create_app(
    engine: Engine,
    *,
    api_token: str | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The Starlette app for ``engine``: webhooks, ``/healthz``, ``/readyz`` and ``extra_routes``.

    ``api_token`` is kept on ``app.state.api_token`` for mounted routes whose state-changing
    calls require it.
    """

    async def hook(request: Request) -> Response:
        name = request.path_params["name"]
        sensor = engine.sensors.get(name)
        if not isinstance(sensor, WebhookSensor):
            hooks = sorted(n for n, s in engine.sensors.items() if isinstance(s, WebhookSensor))
            return error_response(
                404,
                f"no webhook named {name!r}; known webhooks: {', '.join(hooks) or '(none)'}",
            )
        if not engine.running:
            return error_response(
                503,
                "the engine is not running or is shutting down; retry later",
                headers={"Retry-After": str(UNAVAILABLE_RETRY_S)},
            )
        return await answer_hook(sensor, request)

    async def healthz(request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problem = _not_ready(engine)
        if problem is not None:
            return error_response(503, problem, headers={"Retry-After": str(UNAVAILABLE_RETRY_S)})
        # Ready to take work once the store is open; each sensor says whether it listens yet
        # (a slow one never holds the others, or the webhooks, up).
        sensors = dict(engine.sensor_status)
        return OrjsonResponse(
            {
                "status": "ready",
                "sensors": sensors,
                "waiting_for": sorted(n for n, st in sensors.items() if st != "listening"),
            }
        )

    routes: list[BaseRoute] = [
        Mount("/hooks", routes=[Route("/{name}", hook, methods=["POST"])]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.engine = engine
    app.state.api_token = api_token
    return app


def _not_ready(engine: Engine) -> str | None:
    """Why ``engine`` cannot take work, or None if it can."""
    if not engine.running:
        return "the engine is not running or is shutting down"
    try:
        store = engine.store
    except EngineNotRunning:
        return "the engine's store is not open"
    if not store.available:
        return "the store's database cannot be reached; evflow is reconnecting"
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = (
            f"no route for {request.method} {request.url.path}; webhooks are POST /hooks/<name>"
        )
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal server error; see the server log")


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, minus its signal handlers (the embedding application owns signals).

    ``ready`` is set when start-up is over, whether it succeeded (``started``) or not.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


class HttpServer:
    """Runs an ASGI app with uvicorn as a task of the caller's task group.

    ``port = await tg.start(HttpServer().serve, app, "127.0.0.1", 0)`` returns once the server
    listens, with the port it is bound to; cancelling the task group stops it: no new
    connections, in-flight requests get ``graceful_timeout_s`` to finish.
    """

    def __init__(self, *, access_log: bool = True, graceful_timeout_s: int = 10) -> None:
        self.access_log = access_log
        self.graceful_timeout_s = graceful_timeout_s
        self.port: int | None = None
        self._server: _Uvicorn | None = None

    def stop(self) -> None:
        """Ask a running :meth:`serve` to shut down and return."""
        if self._server is not None:
            self._server.should_exit = True

    async def serve(
        self,
        app: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``app`` on ``host:port`` (0: any free port) until cancelled or stopped."""
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            lifespan="off",
            access_log=self.access_log,
            timeout_graceful_shutdown=self.graceful_timeout_s,
            # uvicorn would believe X-Forwarded-For from 127.0.0.1 and from FORWARDED_ALLOW_IPS;
            # evflow decides which proxies it trusts ([http] trusted_proxies, http/proxies.py)
            proxy_headers=False,
        )
        server = _Uvicorn(config)
        # Bind here rather than in uvicorn, which calls sys.exit() when it cannot bind.
        sock = await _listen(host, port)
        done = anyio.Event()

        async def run() -> None:
            try:
                # Shielded: uvicorn only shuts down cleanly by itself, after should_exit is set.
                with anyio.CancelScope(shield=True):
                    await server.serve(sockets=[sock])
            finally:
                sock.close()
                server.ready.set()
                done.set()

        self._server = server
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                try:
                    await server.ready.wait()
                    if server.started:
                        bound = server.servers[0].sockets[0].getsockname()[1]
                        self.port = int(bound)
                        log.info("serving HTTP on %s", _url(host, self.port))
                        task_status.started(self.port)
                    await done.wait()
                finally:
                    server.should_exit = True
        finally:
            self._server = None
            self.port = None


async def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; raises OSError naming the address."""
    try:
        infos = await anyio.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        # The protocol must be IPPROTO_TCP (not 0) for asyncio to set TCP_NODELAY on the
        # accepted connections; without it, small responses wait for delayed ACKs.
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(2048)
        except BaseException:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
