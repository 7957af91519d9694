"""The JSON API over real HTTP: a real Engine on SQLite, uvicorn on a loopback port, httpx."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson
import pytest
from starlette.routing import Route

from evflow import Engine, Interval, Rule, flow, get_logger, task
from evflow.http.api import ENDPOINTS, MAX_BODY_BYTES, api_routes
from evflow.http.app import build_app, run_app_services
from evflow.http.live import LiveHub
from evflow.http.server import HttpServer
from evflow.sensors.webhook import WebhookSensor
from evflow.service.config import Config, HttpConfig
from tests import engines
from tests.observers import LIMIT_S, until

TOKEN = "s3cret-api-token"
TOKEN_ACTOR = f"token:{hashlib.sha256(TOKEN.encode()).hexdigest()[:8]}@127.0.0.1"
LOCAL_ACTOR = "anonymous@127.0.0.1"

RELEASE: dict[str, anyio.Event] = {}
CONCURRENCY = {"now": 0, "max": 0}


# -- flows ------------------------------------------------------------------------------------
@task
async def greet(name: str) -> str:
    get_logger().info("hello %s", name)
    return f"hello {name}"


@flow
def hello(name: str, punctuation: str = "!") -> None:
    greet(name)


@task
async def hold(key: str) -> str:
    await RELEASE[key].wait()
    return key


@flow
def held(key: str) -> None:
    hold(key)


@task(pool="db")
async def hold_db(key: str) -> str:
    await RELEASE[key].wait()
    return key


@flow
def pooled(key: str) -> None:
    hold_db(key)


@task
async def prepare() -> str:
    return "ready"


@task
def fragile(ready: str, flag: str) -> str:
    marker = Path(flag)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError("the first attempt fails on purpose")
    return f"{ready}!"


@flow
def flaky(flag: str) -> None:
    fragile(prepare(), flag)


@task
async def first(key: str) -> str:
    log = get_logger()
    log.info("first line")
    await RELEASE[key].wait()
    log.warning("second line")
    return key


@task
async def second(prev: str) -> str:
    get_logger().info("from the second task")
    return prev


@flow
def chatty(key: str) -> None:
    second(first(key))


@task
async def slot(scheduled_time: str) -> str:
    CONCURRENCY["now"] += 1
    CONCURRENCY["max"] = max(CONCURRENCY["max"], CONCURRENCY["now"])
    try:
        await RELEASE["nightly"].wait()
    finally:
        CONCURRENCY["now"] -= 1
    return scheduled_time


@flow(schedule=Interval(3600))
def nightly(scheduled_time: str) -> None:
    slot(scheduled_time)


@task
async def echo(n: int) -> int:
    return n


@flow
def orders(n: int) -> None:
    echo(n)


# -- helpers ----------------------------------------------------------------------------------
def new_engine(tmp_path: Path, **options: Any) -> Engine:
    engine = engines.new_engine(tmp_path, pools={"db": 1}, **options)
    for fl in (hello, held, pooled, flaky, chatty, orders):
        engine.add(fl)
    engine.add(nightly, schedule=False)
    engine.add_rule(orders, Rule(on="order.*", name="orders", params={"n": "{data.n}"}))
    return engine


@asynccontextmanager
async def serving(
    engine: Engine,
    *,
    token: str | None = None,
    open_reads: bool = True,
    ping_s: float = 15.0,
    trusted_proxies: tuple[str, ...] = (),
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the service app for ``engine`` on an ephemeral loopback port."""
    http = HttpConfig(api_token=token, open_reads=open_reads, trusted_proxies=trusted_proxies)
    app = build_app(engine, Config(http=http))
    app.state.live_hub.ping_interval_s = ping_s
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(run_app_services, app)
            port = await tg.start(HttpServer(access_log=False).serve, app, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
        tg.cancel_scope.cancel()


@asynccontextmanager
async def service(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    serve_opts = {
        k: options.pop(k)
        for k in ("token", "open_reads", "ping_s", "trusted_proxies")
        if k in options
    }
    async with new_engine(tmp_path, **options) as engine, serving(engine, **serve_opts) as client:
        yield engine, client


def assert_error(resp: httpx.Response, status: int, mentions: str = "") -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert mentions.lower() in body["error"].lower(), body["error"]
    return body


async def trigger(client: httpx.AsyncClient, flow_name: str, /, **params: Any) -> str:
    resp = await client.post(f"/api/flows/{flow_name}/runs", json={"params": params})
    assert resp.status_code == 201, resp.text
    run_id: str = resp.json()["run_id"]
    assert resp.headers["location"] == f"/api/runs/{run_id}"
    return run_id


async def finished(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Poll the API until the run has finished; its detail."""

    async def probe() -> dict[str, Any] | None:
        run: dict[str, Any] = (await client.get(f"/api/runs/{run_id}")).json()
        return run if run["state"] in ("succeeded", "failed", "cancelled") else None

    return await until(probe)


async def task_running(client: httpx.AsyncClient, run_id: str, name: str) -> None:
    async def probe() -> bool:
        run = (await client.get(f"/api/runs/{run_id}")).json()
        return any(t["name"] == name and t["state"] == "running" for t in run["tasks"])

    await until(probe)


async def sse_events(resp: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """Parse a Server-Sent Events body: ``(event, data)``; comments as ``("comment", text)``."""
    event, data = "message", list[str]()
    async for line in resp.aiter_lines():
        if line == "":
            if data:
                yield event, orjson.loads("\n".join(data))
            event, data = "message", list[str]()
        elif line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


async def audit_of(client: httpx.AsyncClient, subject: str) -> list[dict[str, Any]]:
    resp = await client.get("/api/audit", params={"subject": subject})
    assert resp.status_code == 200, resp.text
    records: list[dict[str, Any]] = resp.json()["audit"]
    return records


# -- index, OpenAPI, flows --------------------------------------------------------------------
async def test_index_and_openapi_describe_every_route(tmp_path: Path) -> None:
    async with service(tmp_path) as (engine, client):
        index = (await client.get("/api")).json()
        assert index["openapi"] == "/openapi.json"
        assert set(index["endpoints"]) == set(ENDPOINTS)
        doc = (await client.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.1")
        described = {
            f"{method.upper()} {path}" for path, ops in doc["paths"].items() for method in ops
        }
        assert described == set(ENDPOINTS)
        for route in api_routes(engine):
            assert isinstance(route, Route)
            for method in route.methods or ():
                if method != "HEAD":
                    path = "/api" if route.path == "/" else f"/api{route.path}"
                    assert f"{method} {path}" in described
        for name, schema in doc["components"]["schemas"].items():
            assert schema, name
        resp = await client.delete("/api/runs")
        assert_error(resp, 405, "DELETE")


async def test_flows_list_detail_and_unknown(tmp_path: Path) -> None:
    async with service(tmp_path) as (_, client):
        flows = (await client.get("/api/flows")).json()["flows"]
        by_name = {f["name"]: f for f in flows}
        assert {"hello", "held", "flaky", "nightly", "orders"} <= set(by_name)
        assert by_name["hello"]["params"]["required"] == ["name"]
        assert by_name["hello"]["params"]["defaults"] == {"punctuation": "!"}
        assert [t["name"] for t in by_name["flaky"]["tasks"]] == ["prepare", "fragile"]
        one = (await client.get("/api/flows/nightly")).json()
        assert one["name"] == "nightly" and one["schedule"]
        assert_error(await client.get("/api/flows/nope"), 404, "nope")


# -- runs -------------------------------------------------------------------------------------
async def test_trigger_a_run_that_succeeds_and_read_it_back(tmp_path: Path) -> None:
    async with service(tmp_path) as (_, client):
        before = datetime.now(UTC).timestamp() - 1
        run_id = await trigger(client, "hello", name="ada")
        run = await finished(client, run_id)
        assert run["state"] == "succeeded", run
        assert run["params"] == {"name": "ada", "punctuation": "!"}
        assert run["trigger"] == {"kind": "api", "actor": LOCAL_ACTOR}
        assert [(t["name"], t["state"], t["result"]) for t in run["tasks"]] == [
            ("greet", "succeeded", "hello ada")
        ]
        assert [(a["task"], a["attempt"], a["state"]) for a in run["attempts"]] == [
            ("greet", 1, "succeeded")
        ]
        kinds = [a["kind"] for a in run["audit"]]
        assert kinds[0] == "run.queued" and "run.succeeded" in kinds
        assert run["audit"][0]["actor"] == LOCAL_ACTOR
        # a unique prefix finds the run too (the CLI shows short ids)
        assert (await client.get(f"/api/runs/{run_id[-12:]}")).json()["id"] == run_id

        RELEASE["never"] = anyio.Event()
        other = await trigger(client, "held", key="never")
        await task_running(client, other, "hold")

        listing = (await client.get("/api/runs")).json()
        assert listing["total"] == 2 and listing["limit"] == 50 and listing["offset"] == 0
        assert [r["id"] for r in listing["runs"]] == [other, run_id]
        assert "tasks" not in listing["runs"][0]
        page = (await client.get("/api/runs", params={"limit": 1, "offset": 1})).json()
        assert [r["id"] for r in page["runs"]] == [run_id] and page["total"] == 2
        by_flow = (await client.get("/api/runs", params={"flow": "hello"})).json()
        assert [r["id"] for r in by_flow["runs"]] == [run_id] and by_flow["total"] == 1
        by_state = (await client.get("/api/runs", params={"state": "running"})).json()
        assert [r["id"] for r in by_state["runs"]] == [other]
        iso = datetime.fromtimestamp(before, UTC).isoformat().replace("+00:00", "Z")
        for since in (str(before), iso):
            window = (await client.get("/api/runs", params={"since": since})).json()
            assert window["total"] == 2
        empty = (await client.get("/api/runs", params={"until": str(before)})).json()
        assert empty == {"runs": [], "total": 0, "limit": 50, "offset": 0}

        assert_error(await client.get("/api/runs", params={"state": "odd"}), 400, "odd")
        assert_error(await client.get("/api/runs", params={"since": "yesterday"}), 400, "since")
        assert_error(await client.get("/api/runs", params={"until": "nan"}), 400, "until")
        assert_error(await client.get("/api/runs", params={"limit": "0"}), 400, "limit")
        assert_error(await client.get("/api/runs", params={"limit": "x"}), 400, "limit")
        assert_error(await client.get("/api/runs", params={"offset": "-1"}), 400, "offset")
        RELEASE["never"].set()
        assert (await finished(client, other))["state"] == "succeeded"


async def test_trigger_errors(tmp_path: Path) -> None:
    async with service(tmp_path) as (engine, client):
        assert_error(await client.post("/api/flows/nope/runs", json={}), 404, "nope")
        assert_error(await client.post("/api/flows/hello/runs", json={}), 422, "'name'")
        resp = await client.post("/api/flows/hello/runs", json={"params": {"name": "x", "y": 1}})
        assert_error(resp, 422, "no parameter 'y'")
        resp = await client.post("/api/flows/hello/runs", json={"params": ["x"]})
        assert_error(resp, 422, "params")
        resp = await client.post(
            "/api/flows/hello/runs", json={"params": {"name": "x"}, "priority": "high"}
        )
        assert_error(resp, 422, "priority")
        resp = await client.post(
            "/api/flows/hello/runs", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        assert_error(resp, 400, "not valid JSON")
        assert_error(await client.post("/api/flows/hello/runs", json=[1]), 400, "JSON object")
        # No body is "no parameters"; a body of whitespace is a mistake, not an empty body.
        resp = await client.post(
            "/api/flows/hello/runs", content=b" \n", headers={"Content-Type": "application/json"}
        )
        assert_error(resp, 400, "only whitespace")
        assert await engine.store.count_runs() == 0


async def test_unknown_run_is_a_json_404_everywhere(tmp_path: Path) -> None:
    async with service(tmp_path) as (_, client):
        assert_error(await client.get("/api/runs/nosuchrun"), 404, "nosuchrun")
        assert_error(await client.get("/api/runs/nosuchrun/logs"), 404, "nosuchrun")
        assert_error(await client.post("/api/runs/nosuchrun/cancel"), 404, "nosuchrun")
        assert_error(await client.post("/api/runs/nosuchrun/retry"), 404, "nosuchrun")
        assert_error(await client.get("/api/events/nosuchevent"), 404, "nosuchevent")
        assert_error(await client.get("/api/nothing-here"), 404)


# -- authority ----------------------------------------------------------------------------------
async def test_token_is_required_for_state_changes_when_configured(tmp_path: Path) -> None:
    async with service(tmp_path, token=TOKEN) as (engine, client):
        body = {"params": {"name": "x"}}
        resp = await client.post("/api/flows/hello/runs", json=body)
        assert_error(resp, 401, "Authorization: Bearer")
        assert resp.headers["www-authenticate"] == "Bearer"
        for header in ("Bearer wrong-token", f"Basic {TOKEN}", TOKEN):
            resp = await client.post(
                "/api/flows/hello/runs", json=body, headers={"Authorization": header}
            )
            assert_error(resp, 401, "not valid")
        for path in ("/api/events", "/api/runs/x/cancel", "/api/runs/x/retry"):
            assert_error(await client.post(path, json={"type": "t"}), 401)
        assert_error(await client.post("/api/flows/nightly/backfill", json={}), 401)
        assert await engine.store.count_runs() == 0
        # reads stay open
        assert (await client.get("/api/runs")).json()["total"] == 0

        auth = {"Authorization": f"Bearer {TOKEN}"}
        resp = await client.post("/api/flows/hello/runs", json=body, headers=auth)
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["run_id"]
        audit = await audit_of(client, f"run:{run_id}")
        assert audit[0]["kind"] == "run.queued" and audit[0]["actor"] == TOKEN_ACTOR
        assert TOKEN not in resp.text and TOKEN not in orjson.dumps(audit).decode()


async def test_without_a_token_only_loopback_clients_may_change_state(tmp_path: Path) -> None:
    async with service(tmp_path, trusted_proxies=("127.0.0.1",)) as (engine, client):
        # the test client is a trusted proxy on loopback forwarding for a remote client
        remote = {"X-Forwarded-For": "203.0.113.9"}
        resp = await client.post(
            "/api/flows/hello/runs", json={"params": {"name": "x"}}, headers=remote
        )
        body = assert_error(resp, 403, "api_token")
        assert "203.0.113.9" in body["error"]
        assert_error(await client.post("/api/events", json={"type": "t"}, headers=remote), 403)
        assert await engine.store.count_runs() == 0
        assert (await client.get("/api/runs", headers=remote)).status_code == 200
        run_id = await trigger(client, "hello", name="local")
        assert (await finished(client, run_id))["state"] == "succeeded"


async def test_closed_reads_need_the_token_too(tmp_path: Path) -> None:
    async with service(tmp_path, token=TOKEN, open_reads=False) as (_, client):
        assert_error(await client.get("/api/runs"), 401)
        assert_error(await client.get("/api/stream"), 401)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/runs", headers=auth)).status_code == 200
        assert (await client.get("/api")).status_code == 200


# -- cancel, retry, backfill --------------------------------------------------------------------
async def test_cancel_a_blocked_run(tmp_path: Path) -> None:
    RELEASE["blocked"] = anyio.Event()
    async with service(tmp_path) as (_, client):
        run_id = await trigger(client, "held", key="blocked")
        await task_running(client, run_id, "hold")
        resp = await client.post(f"/api/runs/{run_id}/cancel", json={"reason": "no longer needed"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"run_id": run_id, "cancelled": True}
        run = await finished(client, run_id)
        assert run["state"] == "cancelled" and run["error"] == "no longer needed"
        assert [(t["name"], t["state"]) for t in run["tasks"]] == [("hold", "cancelled")]
        again = await client.post(f"/api/runs/{run_id}/cancel")
        assert again.json() == {"run_id": run_id, "cancelled": False}
        requested = [a for a in run["audit"] if a["kind"] == "run.cancel_requested"]
        assert [a["actor"] for a in requested] == [LOCAL_ACTOR]
        resp = await client.post(f"/api/runs/{run_id}/cancel", content=b"[")
        assert_error(resp, 400, "JSON")


async def test_retry_a_failed_run_from_its_failed_task(tmp_path: Path) -> None:
    RELEASE["busy"] = anyio.Event()
    async with service(tmp_path) as (_, client):
        run_id = await trigger(client, "flaky", flag=str(tmp_path / "flag"))
        run = await finished(client, run_id)
        assert run["state"] == "failed"
        states = {t["name"]: (t["state"], t["attempt"]) for t in run["tasks"]}
        assert states == {"prepare": ("succeeded", 1), "fragile": ("failed", 1)}

        resp = await client.post(f"/api/runs/{run_id}/retry")
        assert resp.status_code == 201, resp.text
        assert resp.json() == {"run_id": run_id}
        run = await finished(client, run_id)
        assert run["state"] == "succeeded", run
        states = {t["name"]: (t["state"], t["attempt"]) for t in run["tasks"]}
        assert states == {"prepare": ("succeeded", 1), "fragile": ("succeeded", 2)}
        tasks = {t["name"]: t for t in run["tasks"]}
        assert tasks["fragile"]["result"] == "ready!"
        assert [(a["task"], a["attempt"], a["state"]) for a in run["attempts"]] == [
            ("prepare", 1, "succeeded"),
            ("fragile", 1, "failed"),
            ("fragile", 2, "succeeded"),
        ]
        retried = [a for a in run["audit"] if a["kind"] == "run.retried"]
        assert [(a["actor"], a["data"]["tasks"]) for a in retried] == [(LOCAL_ACTOR, ["fragile"])]

        # a succeeded run, and a running one, cannot be retried
        assert_error(await client.post(f"/api/runs/{run_id}/retry"), 409, "succeeded")
        busy = await trigger(client, "held", key="busy")
        await task_running(client, busy, "hold")
        assert_error(await client.post(f"/api/runs/{busy}/retry"), 409, "running")
        RELEASE["busy"].set()
        assert (await finished(client, busy))["state"] == "succeeded"


async def test_backfill_one_run_per_slot_under_the_cap(tmp_path: Path) -> None:
    RELEASE["nightly"] = anyio.Event()
    CONCURRENCY.update(now=0, max=0)
    body = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T04:00:00Z", "max_active": 2}
    async with service(tmp_path) as (_, client):
        resp = await client.post("/api/flows/nightly/backfill", json=body)
        assert resp.status_code == 201, resp.text
        run_ids = resp.json()["run_ids"]
        assert len(run_ids) == 5

        async def capped() -> dict[str, Any] | None:
            gates = (await client.get("/api/pools")).json()["flows"]
            group = [g for g in gates if g["name"].startswith("backfill:")]
            if group and group[0]["in_use"] == 2 and CONCURRENCY["now"] == 2:
                return dict(group[0])
            return None

        gate = await until(capped)
        assert gate["capacity"] == 2 and gate["waiting"] == 3
        RELEASE["nightly"].set()

        async def all_done() -> bool:
            page = await client.get("/api/runs", params={"flow": "nightly", "state": "succeeded"})
            return bool(page.json()["total"] == 5)

        await until(all_done)
        assert CONCURRENCY["max"] == 2
        slots = sorted(
            [
                (await client.get(f"/api/runs/{r}")).json()["params"]["scheduled_time"]
                for r in run_ids
            ]
        )
        assert slots == [f"2026-01-01T0{h}:00:00+00:00" for h in range(5)]
        queued = await audit_of(client, f"run:{run_ids[0]}")
        assert queued[0]["kind"] == "run.queued" and queued[0]["actor"] == LOCAL_ACTOR

        again = await client.post("/api/flows/nightly/backfill", json=body)
        assert again.status_code == 201 and again.json() == {"run_ids": []}

        backfill = "/api/flows/nightly/backfill"
        assert_error(await client.post(backfill, json={"end": body["end"]}), 400, "start")
        assert_error(await client.post(backfill, json={**body, "end": "soon"}), 400, "end")
        assert_error(await client.post(backfill, json={**body, "max_active": 0}), 400, "max_active")
        reversed_range = {"start": body["end"], "end": body["start"]}
        assert_error(await client.post(backfill, json=reversed_range), 422, "before its start")
        assert_error(await client.post("/api/flows/hello/backfill", json=body), 422, "schedule")
        assert_error(await client.post("/api/flows/nope/backfill", json=body), 404, "nope")
        assert_error(await client.post(backfill), 400, "empty")


# -- logs ---------------------------------------------------------------------------------------
async def test_logs_as_json_and_followed_as_sse(tmp_path: Path) -> None:
    RELEASE["chatty"] = anyio.Event()
    async with service(tmp_path) as (_, client):
        run_id = await trigger(client, "chatty", key="chatty")
        await task_running(client, run_id, "first")
        seen: list[tuple[str, Any]] = []
        async with client.stream("GET", f"/api/runs/{run_id}/logs?follow=1") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            with anyio.fail_after(LIMIT_S):
                RELEASE["chatty"].set()
                async for event, data in sse_events(resp):
                    seen.append((event, data))
                    if event == "end":
                        break
        logs = [d for e, d in seen if e == "log"]
        assert [(d["task"], d["level"], d["message"]) for d in logs] == [
            ("first", "INFO", "first line"),
            ("first", "WARNING", "second line"),
            ("second", "INFO", "from the second task"),
        ]
        assert seen[-1] == (
            "end",
            {"run_id": run_id, "state": "succeeded", "last_seq": logs[-1]["seq"]},
        )

        body = (await client.get(f"/api/runs/{run_id}/logs")).json()
        assert body["logs"] == logs and body["last_seq"] == logs[-1]["seq"]
        assert set(body["logs"][0]) == {"seq", "task", "attempt", "time", "level", "message"}
        only = (await client.get(f"/api/runs/{run_id}/logs", params={"task": "second"})).json()
        assert [d["message"] for d in only["logs"]] == ["from the second task"]
        after = (
            await client.get(f"/api/runs/{run_id}/logs", params={"after": logs[0]["seq"]})
        ).json()
        assert after["logs"] == logs[1:]
        none = (
            await client.get(f"/api/runs/{run_id}/logs", params={"after": logs[-1]["seq"]})
        ).json()
        assert none == {"run_id": run_id, "logs": [], "last_seq": logs[-1]["seq"]}
        assert_error(await client.get(f"/api/runs/{run_id}/logs", params={"after": "x"}), 400)

        # a finished run streams what it has, then ends; Last-Event-ID resumes after a seq
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(logs[0]["seq"])}
        async with client.stream("GET", f"/api/runs/{run_id}/logs", headers=headers) as resp:
            with anyio.fail_after(LIMIT_S):
                replay = [(e, d) async for e, d in sse_events(resp)]
        assert [d for e, d in replay if e == "log"] == logs[1:]
        assert replay[-1][0] == "end"


# -- the live stream ----------------------------------------------------------------------------
async def test_stream_sends_run_and_task_state_changes(tmp_path: Path) -> None:
    async with service(tmp_path, ping_s=0.05) as (_, client):
        runs: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []
        pinged = False
        async with client.stream("GET", "/api/stream") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            with anyio.fail_after(LIMIT_S):
                run_id = ""
                async for event, data in sse_events(resp):
                    if event == "comment" and data == "connected":
                        run_id = await trigger(client, "hello", name="stream")
                    elif event == "comment" and data == "ping":
                        pinged = True
                    elif event == "run" and data["id"] == run_id:
                        runs.append(data)
                    elif event == "task" and data["run_id"] == run_id:
                        tasks.append(data)
                    if pinged and runs and runs[-1]["state"] == "succeeded":
                        break
        assert [r["state"] for r in runs] == ["running", "succeeded"]
        assert runs[0]["flow"] == "hello" and "tasks" not in runs[0]
        assert [t["state"] for t in tasks] == ["running", "succeeded"]
        keys = ["run_id", "name", "node", "state", "attempt"]
        keys += ["started_at", "ended_at", "error", "waiting"]
        assert set(tasks[0]) >= set(keys)
        assert tasks[-1]["name"] == "greet" and tasks[-1]["attempt"] == 1


async def test_stream_can_follow_one_run(tmp_path: Path) -> None:
    RELEASE["one"] = anyio.Event()
    async with service(tmp_path) as (_, client), client.stream("GET", "/api/stream") as every:
        assert every.status_code == 200
        other = await trigger(client, "hello", name="other")
        await finished(client, other)
        mine = await trigger(client, "held", key="one")
        await task_running(client, mine, "hold")
        seen: list[tuple[str, str]] = []
        async with client.stream("GET", "/api/stream", params={"run": mine}) as resp:
            with anyio.fail_after(LIMIT_S):
                async for event, data in sse_events(resp):
                    if event == "comment":
                        RELEASE["one"].set()
                    else:
                        run = data.get("run_id", data.get("id"))
                        seen.append((event, run))
                        if event == "run" and data["state"] == "succeeded":
                            break
        assert seen and all(run == mine for _, run in seen)


# -- events and dead letters ------------------------------------------------------------------
async def test_events_with_their_decisions(tmp_path: Path) -> None:
    async with service(tmp_path) as (engine, client):
        resp = await client.post(
            "/api/events",
            json={
                "specversion": "1.0",
                "id": "ce-1",
                "source": "shop",
                "type": "order.created",
                "data": {"n": 7},
            },
        )
        assert resp.status_code == 202, resp.text
        assert resp.json()["duplicate"] is False
        first = resp.json()["event_id"]  # evflow's identity of the event, not the sender's id
        assert first != "ce-1"
        again = await client.post(
            "/api/events", json={"id": "ce-1", "source": "shop", "type": "order.created"}
        )
        assert again.status_code == 202
        assert again.json() == {"event_id": first, "duplicate": True, "url": f"/api/events/{first}"}
        assert (await client.get(again.json()["url"])).json()["uid"] == first
        plain = await client.post("/api/events", json={"type": "misc.thing", "data": {"x": 1}})
        assert plain.status_code == 202
        plain_id = plain.json()["event_id"]

        async def decided(event_id: str) -> dict[str, Any] | None:
            ev: dict[str, Any] = (await client.get(f"/api/events/{event_id}")).json()
            kinds = {d["kind"] for d in ev["decisions"]}
            return (
                ev
                if ev["status"] == "processed" and kinds & {"rule.matched", "rule.not_matched"}
                else None
            )

        matched = await until(lambda: decided(first))
        assert matched["type"] == "order.created" and matched["data"] == {"n": 7}
        assert (matched["uid"], matched["id"], matched["source"]) == (first, "ce-1", "shop")
        decision = next(d for d in matched["decisions"] if d["kind"] == "rule.matched")
        assert decision["data"]["rule"] == "orders"
        run = await finished(client, decision["data"]["run_id"])
        assert run["state"] == "succeeded" and run["params"] == {"n": 7}
        assert run["trigger"]["events"] == [first]
        emitted = [d for d in matched["decisions"] if d["kind"] == "event.emitted"]
        assert [(d["actor"], d["data"]["duplicate"]) for d in emitted] == [
            (LOCAL_ACTOR, False),
            (LOCAL_ACTOR, True),
        ]

        unmatched = await until(lambda: decided(plain_id))
        assert unmatched["source"] == "evflow.api"
        reason = next(d for d in unmatched["decisions"] if d["kind"] == "rule.not_matched")
        assert "orders" in reason["data"]["reason"]

        listing = (await client.get("/api/events")).json()
        assert [e["uid"] for e in listing["events"]] == [plain_id, first]
        assert all("decisions" in e for e in listing["events"])
        shop = (await client.get("/api/events", params={"source": "shop", "limit": 5})).json()
        assert [e["id"] for e in shop["events"]] == ["ce-1"]
        assert (await client.get("/api/events", params={"offset": 1})).json()["events"][0][
            "id"
        ] == "ce-1"
        assert_error(await client.get("/api/events", params={"status": "odd"}), 400, "status")
        assert_error(await client.get("/api/events", params={"limit": "501"}), 400, "limit")

        assert_error(await client.post("/api/events", json={"data": 1}), 400, "type")
        assert_error(await client.post("/api/events", json=["x"]), 400, "JSON object")
        assert_error(await client.post("/api/events", content=b"{"), 400, "JSON")
        assert_error(
            await client.post("/api/events", json={"type": "t", "time": "noon"}), 400, "time"
        )
        assert_error(await client.post("/api/events", content=b"x" * (MAX_BODY_BYTES + 1)), 413)
        assert len(await engine.store.list_events()) == 2


async def test_dead_letters_show_why(tmp_path: Path) -> None:
    async with service(tmp_path) as (engine, client):
        resp = await client.post("/api/events", json={"type": "order.created", "data": {}})
        event_id = resp.json()["event_id"]

        async def letters() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = (await client.get("/api/dead-letters")).json()[
                "dead_letters"
            ]
            return found

        (letter,) = await until(letters)
        assert letter["source"] == "evflow.api"
        assert "n" in letter["reason"]
        assert letter["payload_encoding"] == "utf-8"
        event = (await client.get(f"/api/events/{event_id}")).json()
        assert orjson.loads(letter["payload"])["id"] == event["id"]
        decisions = event["decisions"]
        assert "rule.not_mapped" in {d["kind"] for d in decisions}

        await engine.intake.dead_letter(source="raw", reason="not JSON", payload=b"\xff\x00bin")
        both = (await client.get("/api/dead-letters", params={"limit": 10})).json()["dead_letters"]
        raw = next(d for d in both if d["source"] == "raw")
        assert raw["payload_encoding"] == "base64" and raw["payload"] == "/wBiaW4="
        page = (await client.get("/api/dead-letters", params={"limit": 1, "offset": 1})).json()
        assert len(page["dead_letters"]) == 1
        assert_error(await client.get("/api/dead-letters", params={"limit": "-3"}), 400)


async def test_a_full_backlog_answers_429(tmp_path: Path) -> None:
    async with service(tmp_path, max_backlog=0) as (_, client):
        resp = await client.post("/api/events", json={"type": "order.created", "data": {"n": 1}})
        assert_error(resp, 429, "retry after")
        assert int(resp.headers["retry-after"]) >= 1


# -- pools, sensors, audit ----------------------------------------------------------------------
async def test_pools_show_slots_in_use_and_waiting(tmp_path: Path) -> None:
    RELEASE["pool"] = anyio.Event()
    async with service(tmp_path) as (_, client):
        idle = (await client.get("/api/pools")).json()
        assert idle == {
            "pools": [
                {"name": "db", "capacity": 1, "in_use": 0, "waiting": 0, "scope": "instance"}
            ],
            "flows": [],
            "backlog": 0,
        }
        runs = [await trigger(client, "pooled", key="pool") for _ in range(2)]

        async def busy() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get("/api/pools")).json()
            return body if body["pools"][0]["waiting"] == 1 else None

        body = await until(busy)
        assert body["pools"] == [
            {"name": "db", "capacity": 1, "in_use": 1, "waiting": 1, "scope": "instance"}
        ]
        RELEASE["pool"].set()
        for run_id in runs:
            assert (await finished(client, run_id))["state"] == "succeeded"


async def test_sensors_are_listed_with_their_status(tmp_path: Path) -> None:
    engine = new_engine(tmp_path)
    engine.add_rule(orders, Rule(on=WebhookSensor("shop", token="t"), params={"n": "{data.n}"}))
    async with engine, serving(engine) as client:
        await until(lambda: _listening(engine))
        sensors = (await client.get("/api/sensors")).json()["sensors"]
        assert sensors == [
            {
                "name": "shop",
                "source": "webhook/shop",
                "describe": engine.sensors["shop"].describe(),
                "status": "listening",
            }
        ]


async def _listening(engine: Engine) -> bool:
    return engine.sensor_status.get("shop") == "listening"


async def test_audit_shows_every_api_action_with_its_actor(tmp_path: Path) -> None:
    RELEASE["audit"] = anyio.Event()
    async with service(tmp_path, token=TOKEN) as (_, client):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        since = datetime.now(UTC).timestamp() - 1
        resp = await client.post(
            "/api/flows/held/runs", json={"params": {"key": "audit"}}, headers=auth
        )
        run_id = resp.json()["run_id"]
        await task_running(client, run_id, "hold")
        await client.post(f"/api/runs/{run_id}/cancel", headers=auth)
        await finished(client, run_id)
        RELEASE["audit"].set()
        await client.post(f"/api/runs/{run_id}/retry", headers=auth)
        await finished(client, run_id)
        backfill = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
        RELEASE["nightly"] = anyio.Event()
        RELEASE["nightly"].set()
        await client.post("/api/flows/nightly/backfill", json=backfill, headers=auth)
        emitted = await client.post("/api/events", json={"type": "misc"}, headers=auth)
        event_id = emitted.json()["event_id"]

        async def trail() -> list[dict[str, Any]] | None:
            resp = await client.get("/api/audit", params={"since": str(since), "limit": 1000})
            records: list[dict[str, Any]] = resp.json()["audit"]
            return records if any(r["kind"] == "event.emitted" for r in records) else None

        records = await until(trail)
        by_actor = [(r["kind"], r["subject"]) for r in records if r["actor"] == TOKEN_ACTOR]
        assert ("run.queued", f"run:{run_id}") in by_actor
        assert ("run.cancel_requested", f"run:{run_id}") in by_actor
        assert ("run.retried", f"run:{run_id}") in by_actor
        assert ("event.emitted", f"event:{event_id}") in by_actor
        assert sum(1 for kind, _ in by_actor if kind == "run.queued") == 2  # trigger, backfill
        assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
        limited = (await client.get("/api/audit", params={"limit": 2})).json()
        assert len(limited["audit"]) == 2 and limited["limit"] == 2
        iso = datetime.now(UTC).isoformat()
        assert (await client.get("/api/audit", params={"since": iso})).status_code == 200
        assert_error(await client.get("/api/audit", params={"since": "later"}), 400, "since")
        assert_error(await client.get("/api/audit", params={"limit": "0"}), 400, "limit")


@pytest.mark.parametrize("path", ["/api/runs", "/api/flows", "/api/pools"])
async def test_reads_answer_503_when_the_engine_is_stopped(tmp_path: Path, path: str) -> None:
    engine = new_engine(tmp_path)
    async with serving(engine) as client:
        resp = await client.get(path)
        if path == "/api/flows":
            assert resp.status_code == 200  # flows are known without a running engine
        elif path == "/api/pools":
            assert resp.json()["pools"][0]["name"] == "db"
        else:
            assert_error(resp, 503, "not running")
            assert resp.headers["retry-after"]


async def test_stopping_the_app_services_ends_open_streams(tmp_path: Path) -> None:
    RELEASE["stuck"] = anyio.Event()
    async with new_engine(tmp_path) as engine, anyio.create_task_group() as tg:
        app = build_app(engine)
        services = anyio.CancelScope()

        async def run_services(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with services:
                await run_app_services(app, task_status=task_status)

        with anyio.fail_after(10):
            await tg.start(run_services)
            port = await tg.start(HttpServer(access_log=False).serve, app, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            run_id = await trigger(client, "held", key="stuck")
            await task_running(client, run_id, "hold")
            async with (
                client.stream("GET", "/api/stream") as live,
                client.stream("GET", f"/api/runs/{run_id}/logs?follow=1") as logs,
            ):
                live_events = sse_events(live)
                with anyio.fail_after(LIMIT_S):
                    assert await anext(live_events) == ("comment", "connected")
                    services.cancel()
                    rest = [e async for e in live_events]
                    followed = [e async for e in sse_events(logs)]
            assert all(kind == "comment" for kind, _ in rest)
            assert followed[-1] == ("end", {"run_id": run_id, "state": "running", "last_seq": 0})
            # the API still answers; new streams end at once
            async with client.stream("GET", "/api/stream") as late:
                with anyio.fail_after(LIMIT_S):
                    assert [e async for e in sse_events(late)] == [("comment", "connected")]
        RELEASE["stuck"].set()
        with anyio.fail_after(LIMIT_S):
            assert (await engine.wait(run_id)).ok
        tg.cancel_scope.cancel()


async def test_a_slow_stream_client_loses_events_not_memory(tmp_path: Path) -> None:
    hub = LiveHub(buffer=2)
    body = hub.stream(None)
    assert await anext(body) == b"retry: 2000\n: connected\n\n"
    assert hub.connections == 1
    async with new_engine(tmp_path) as engine:
        hub.attach(engine)
        with anyio.fail_after(LIMIT_S):
            await engine.run(hello, name="slow")  # 2 run and 2 task changes: 2 are dropped
        chunks = [await anext(body) for _ in range(3)]
    assert chunks[0] == b'event: dropped\ndata: {"count":2}\n\n'
    assert chunks[1].startswith(b"event: run\n") and b'"state":"running"' in chunks[1]
    assert chunks[2].startswith(b"event: task\n") and b'"state":"running"' in chunks[2]
    await body.aclose()
    assert hub.connections == 0


async def test_retry_whole_or_from_a_task_through_the_api(tmp_path: Path) -> None:
    async with service(tmp_path) as (_engine, client):
        run_id = await trigger(client, "hello", name="ada")
        assert (await finished(client, run_id))["state"] == "succeeded"
        url = f"/api/runs/{run_id}/retry"
        assert_error(await client.post(url, json={}), 409, "nothing to retry")
        assert_error(await client.post(url, json={"from_task": 5}), 400, "from_task")
        assert_error(await client.post(url, json={"whole": "yes"}), 400, "whole")
        assert_error(await client.post(url, json={"from_task": "nope"}), 409, "'nope'")
        resp = await client.post(url, json={"whole": True})
        assert resp.status_code == 201, resp.text
        run = await finished(client, run_id)
        assert run["state"] == "succeeded"
        assert [t["attempt"] for t in run["tasks"]] == [2]
        resp = await client.post(url, json={"from_task": "greet"})
        assert resp.status_code == 201, resp.text
        assert [t["attempt"] for t in (await finished(client, run_id))["tasks"]] == [3]
