"""The Engine inside someone else's asyncio application: a Starlette app whose lifespan owns
it, served by a real uvicorn server. The engine must not take over signals or logging."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from evflow import Engine, flow, get_logger, task
from tests.observers import LIMIT_S
from tests.postgres import store_for


@task
async def fetch(n: int) -> list[int]:
    get_logger().info("fetching %d", n)
    return list(range(n))


@task
def total(values: list[int]) -> int:
    return sum(values)


@flow
def summing(n: int) -> None:
    total(fetch(n))


class Server(uvicorn.Server):
    """uvicorn, telling the test when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.up.set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_engine_in_a_starlette_lifespan(tmp_path: Path) -> None:
    handlers_before = list(logging.getLogger().handlers)
    seen: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen["sigterm_before"] = signal.getsignal(signal.SIGTERM)  # the application's own
        async with Engine(store_for(tmp_path, "app.db"), grace_period_s=1) as engine:
            engine.add(summing)
            app.state.engine = engine
            seen["sigterm_inside"] = signal.getsignal(signal.SIGTERM)
            seen["handlers_inside"] = list(logging.getLogger().handlers)
            yield

    async def run(request: Request) -> JSONResponse:
        engine: Engine = request.app.state.engine
        result = await engine.run(summing, n=int(request.query_params["n"]))
        return JSONResponse({"state": str(result.state), "total": result.result("total")})

    app = Starlette(routes=[Route("/sum", run)], lifespan=lifespan)
    port = free_port()
    server = Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_config=None)
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(LIMIT_S):
            await server.up.wait()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                answers = [await client.get("/sum", params={"n": n}) for n in (3, 10)]
            server.should_exit = True
    assert [a.json() for a in answers] == [
        {"state": "succeeded", "total": 3},
        {"state": "succeeded", "total": 45},
    ]
    # The engine installed no signal handler and no logging handler of its own.
    assert seen["sigterm_inside"] == seen["sigterm_before"]
    assert seen["handlers_inside"] == handlers_before
    assert list(logging.getLogger().handlers) == handlers_before
