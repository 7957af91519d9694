"""WebhookSensor and the HTTP server: real uvicorn on a loopback port, a real Engine on SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from evflow import Engine, Rule, RunResult, RunState, flow, task
from evflow.errors import SensorError
from evflow.http.server import HttpServer, create_app
from evflow.records import EventRecord, RunRecord
from evflow.sensors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSensor, sign
from evflow.signals import RunStateChanged
from tests.postgres import store_for

SECRET = "orders-secret"
TOKEN = "partner-token"
MAX_BODY = 4096
JSON = {"Content-Type": "application/json"}


@task
async def echo(n: int) -> int:
    return n


@flow
def handle_order(n: int) -> None:
    echo(n)


class RunWatcher:
    """A run-signal subscriber that remembers finished runs, by the events that started them."""

    def __init__(self) -> None:
        self.by_event: dict[str, str] = {}
        self.succeeded: set[str] = set()
        self._changed = anyio.Event()

    def run_state(self, run: RunRecord) -> None:
        if not run.state.finished:
            return
        for event_id in run.trigger.get("events", ()):
            self.by_event[event_id] = run.id
        if run.state is RunState.SUCCEEDED:
            self.succeeded.add(run.id)
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


def new_engine(tmp_path: Path, **options: Any) -> Engine:
    """An engine on a fresh SQLite file with two hooks: ``orders`` (HMAC), ``partners`` (token)."""
    engine = Engine(store_for(tmp_path), **options)
    engine.add(
        handle_order,
        Rule(
            on=WebhookSensor("orders", secret=SECRET, max_body_bytes=MAX_BODY),
            params={"n": "{data.n}"},
        ),
        Rule(on=WebhookSensor("partners", token=TOKEN), params={"n": "{data.n}"}),
    )
    _watchers[engine] = w = RunWatcher()
    engine.signals.subscribe(RunStateChanged, lambda s: w.run_state(s.run))
    return engine


_watchers: weakref.WeakKeyDictionary[Engine, RunWatcher] = weakref.WeakKeyDictionary()


def watcher(engine: Engine) -> RunWatcher:
    return _watchers[engine]


@asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[Engine]:
    """Run ``engine``; the block starts once its webhook sensors accept requests."""
    async with engine:
        with anyio.fail_after(10):
            for sensor in engine.sensors.values():
                assert isinstance(sensor, WebhookSensor)
                await sensor.wait_listening()
        yield engine


def client_for(base_url: str, connections: int = 10) -> httpx.AsyncClient:
    # Idle connections expire on the client before uvicorn's 5 s keep-alive timeout closes
    # them, so a request never races the server's close on a reused connection.
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=1
    )
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30)


@asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``engine``'s app on an ephemeral port; yield a client bound to it."""
    async with anyio.create_task_group() as tg:
        server = HttpServer(access_log=False)
        with anyio.fail_after(10):
            port = await tg.start(server.serve, create_app(engine), "127.0.0.1", 0)
        async with client_for(f"http://127.0.0.1:{port}") as client:
            yield client
        tg.cancel_scope.cancel()


def signed(
    body: bytes, *, timestamp: int | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """JSON content type, the HMAC headers for ``body`` and ``extra``."""
    return {**JSON, **sign(SECRET, body, timestamp), **(extra or {})}


async def post_order(
    client: httpx.AsyncClient, payload: Any, delivery: str | None = None
) -> httpx.Response:
    body = orjson.dumps(payload)
    extra = {"X-Delivery-Id": delivery} if delivery is not None else {}
    return await client.post("/hooks/orders", content=body, headers=signed(body, extra=extra))


def assert_error(resp: httpx.Response, status: int, mentions: str = "") -> dict[str, Any]:
    """``resp`` is a JSON error with ``status`` whose message mentions ``mentions``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert mentions.lower() in body["error"].lower()
    return body


async def run_of(engine: Engine, event_id: str) -> RunResult:
    """The finished run that ``event_id`` started."""
    seen = watcher(engine)
    with anyio.fail_after(20):
        while event_id not in seen.by_event:
            await seen.changed()
        return await engine.wait(seen.by_event[event_id])


async def events_of(engine: Engine, hook: str = "orders") -> list[EventRecord]:
    return list(await engine.store.list_events(limit=10_000, source=f"webhook/{hook}"))


# -- the happy path ---------------------------------------------------------------------------


async def test_signed_json_is_stored_and_starts_a_run(tmp_path: Path) -> None:
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        resp = await post_order(client, {"n": 7}, delivery="d-1")
        assert resp.status_code == 202, resp.text
        answer = resp.json()
        assert answer["duplicate"] is False
        (ev,) = await events_of(engine)
        assert ev.uid == answer["event_id"]
        assert (ev.type, ev.source, ev.data) == ("webhook.orders", "webhook/orders", {"n": 7})
        assert ev.dedup_key == "webhook:orders:d-1"
        assert ev.extensions["delivery"] == "d-1"
        result = await run_of(engine, answer["event_id"])
        assert result.ok
        assert result.params == {"n": 7}
        assert result.result("echo") == 7


async def test_bearer_token_hook(tmp_path: Path) -> None:
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        auth = {**JSON, "Authorization": f"Bearer {TOKEN}"}
        resp = await client.post("/hooks/partners", content=b'{"n": 2}', headers=auth)
        assert resp.status_code == 202, resp.text
        result = await run_of(engine, resp.json()["event_id"])
        assert result.result("echo") == 2


async def test_replayed_delivery_makes_one_event_and_one_run(tmp_path: Path) -> None:
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        first = await post_order(client, {"n": 1}, delivery="same")
        await run_of(engine, first.json()["event_id"])
        again = await post_order(client, {"n": 1}, delivery="same")
        assert again.status_code == 202
        uid = first.json()["event_id"]
        assert again.json() == {"event_id": uid, "duplicate": True, "url": f"/api/events/{uid}"}
        # Without a delivery id, the body's hash is the dedup key.
        plain = [await post_order(client, {"n": 9}) for _ in range(2)]
        assert [r.json()["duplicate"] for r in plain] == [False, True]
        assert plain[0].json()["event_id"] == plain[1].json()["event_id"]
        await run_of(engine, plain[0].json()["event_id"])
        assert len(await events_of(engine)) == 2
        assert await engine.store.count_duplicates("webhook/orders") == 2
        assert await engine.store.count_runs(flow="handle_order") == 2


# -- CloudEvents ------------------------------------------------------------------------------


async def test_cloudevents_structured_mode(tmp_path: Path) -> None:
    cloudevent = {
        "specversion": "1.0",
        "type": "order.created",
        "source": "shop/eu",
        "id": "ce-1",
        "subject": "order/1",
        "time": "2024-05-01T12:00:00Z",
        "tenant": "acme",
        "datacontenttype": "application/json",
        "data": {"n": 3},
    }
    body = orjson.dumps(cloudevent)
    headers = {**signed(body), "Content-Type": "application/cloudevents+json; charset=utf-8"}
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        resp = await client.post("/hooks/orders", content=body, headers=headers)
        assert resp.status_code == 202, resp.text
        (ev,) = await events_of(engine)
        assert (ev.type, ev.source, ev.subject) == ("order.created", "webhook/orders", "order/1")
        assert ev.id == "ce-1"
        assert ev.uid == resp.json()["event_id"]
        assert ev.time.startswith("2024-05-01T12:00:00")
        assert ev.extensions["origin"] == "shop/eu"
        assert ev.extensions["tenant"] == "acme"
        assert ev.dedup_key == "webhook:orders:shop/eu/ce-1"
        assert (await run_of(engine, ev.uid)).result("echo") == 3

        again = await client.post(
            "/hooks/orders", content=body, headers={**headers, **sign(SECRET, body)}
        )
        assert again.json() == {
            "event_id": ev.uid,
            "duplicate": True,
            "url": f"/api/events/{ev.uid}",
        }

        bad = orjson.dumps([cloudevent])
        resp = await client.post(
            "/hooks/orders", content=bad, headers={**headers, **sign(SECRET, bad)}
        )
        assert_error(resp, 400, "JSON object")
        untyped = orjson.dumps({"specversion": "1.0", "id": "x", "data": {"n": 1}})
        resp = await client.post(
            "/hooks/orders", content=untyped, headers={**headers, **sign(SECRET, untyped)}
        )
        assert_error(resp, 400, "type")


async def test_cloudevents_binary_mode(tmp_path: Path) -> None:
    body = b'{"n": 5}'
    ce = {
        "ce-specversion": "1.0",
        "ce-type": "order.paid",
        "ce-source": "https://shop.example/eu",
        "ce-id": "pay-42",
        "ce-subject": "order%2F42",
        "ce-time": "2024-05-01T12:30:00+00:00",
        "ce-tenant": "acme",
    }
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        resp = await client.post("/hooks/orders", content=body, headers={**signed(body), **ce})
        assert resp.status_code == 202, resp.text
        (ev,) = await events_of(engine)
        assert (ev.type, ev.id, ev.subject) == ("order.paid", "pay-42", "order/42")
        assert ev.data == {"n": 5}
        assert ev.time.startswith("2024-05-01T12:30:00")
        assert ev.extensions["origin"] == "https://shop.example/eu"
        assert ev.extensions["tenant"] == "acme"
        assert ev.dedup_key == "webhook:orders:https://shop.example/eu/pay-42"
        assert (await run_of(engine, ev.uid)).result("echo") == 5

        no_id = {k: v for k, v in ce.items() if k != "ce-id"}
        resp = await client.post("/hooks/orders", content=body, headers={**signed(body), **no_id})
        assert_error(resp, 400, "ce-id")
        bad_time = {**ce, "ce-id": "pay-43", "ce-time": "yesterday"}
        resp = await client.post(
            "/hooks/orders", content=body, headers={**signed(body), **bad_time}
        )
        assert_error(resp, 400, "time")
        text = {**signed(body), **ce, "Content-Type": "text/plain"}
        resp = await client.post("/hooks/orders", content=body, headers=text)
        assert_error(resp, 415, "JSON")


# -- errors -----------------------------------------------------------------------------------


async def test_malformed_json_is_400(tmp_path: Path) -> None:
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        for body in (b'{"n": ', b"", b"\xff\xfe"):
            resp = await client.post("/hooks/orders", content=body, headers=signed(body))
            assert_error(resp, 400)
        assert await events_of(engine) == []


async def test_authentication_failures_are_401(tmp_path: Path) -> None:
    body = b'{"n": 1}'
    good = signed(body)
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:

        async def hook(headers: Mapping[str, str], name: str = "orders") -> httpx.Response:
            return await client.post(f"/hooks/{name}", content=body, headers=headers)

        assert_error(await hook(JSON), 401, TIMESTAMP_HEADER)
        tampered = {**good, SIGNATURE_HEADER: good[SIGNATURE_HEADER][:-4] + "0000"}
        assert_error(await hook(tampered), 401, "does not match")
        other_body = {**JSON, **sign(SECRET, b'{"n": 2}', int(good[TIMESTAMP_HEADER]))}
        assert_error(await hook(other_body), 401, "does not match")
        wrong_secret = {**JSON, **sign("not-the-secret", body)}
        assert_error(await hook(wrong_secret), 401, "does not match")
        assert_error(await hook(signed(body, timestamp=int(time.time()) - 3600)), 401, "old")
        assert_error(await hook(signed(body, timestamp=int(time.time()) + 3600)), 401, "future")
        assert_error(await hook({**good, TIMESTAMP_HEADER: "soon"}), 401, "whole seconds")
        no_scheme = {**good, SIGNATURE_HEADER: good[SIGNATURE_HEADER].removeprefix("sha256=")}
        assert_error(await hook(no_scheme), 401, "sha256=")

        resp = await hook({**JSON, "Authorization": "Bearer nope"}, "partners")
        assert_error(resp, 401, "not valid")
        assert resp.headers["www-authenticate"] == "Bearer"
        assert_error(await hook(JSON, "partners"), 401, "Authorization")
        assert_error(await hook({**JSON, "Authorization": f"Basic {TOKEN}"}, "partners"), 401)
        # A signature is no credential for a token-only hook.
        assert_error(await hook(good, "partners"), 401)
        assert await events_of(engine) == [] and await events_of(engine, "partners") == []


async def test_unknown_hook_and_route_are_json_404(tmp_path: Path) -> None:
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        assert_error(await client.post("/hooks/nope", content=b"{}", headers=JSON), 404, "nope")
        assert_error(await client.get("/elsewhere"), 404)
        resp = await client.get("/hooks/orders")
        assert_error(resp, 405)
        assert "POST" in resp.headers["allow"]


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    big = orjson.dumps({"n": 1, "pad": "x" * MAX_BODY})

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        resp = await client.post("/hooks/orders", content=big, headers=signed(big))
        assert_error(resp, 413, str(MAX_BODY))
        # Chunked transfer: no Content-Length, the limit holds while reading.
        resp = await client.post("/hooks/orders", content=chunks(), headers=signed(big))
        assert "content-length" not in resp.request.headers
        assert_error(resp, 413, str(MAX_BODY))
        fits = orjson.dumps({"n": 1, "pad": "x" * (MAX_BODY - 100)})
        resp = await client.post("/hooks/orders", content=fits, headers=signed(fits))
        assert resp.status_code == 202, resp.text


async def test_wrong_content_type_is_415(tmp_path: Path) -> None:
    body = b'{"n": 1}'
    async with running(new_engine(tmp_path)) as engine, serving(engine) as client:
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            headers = {**signed(body), "Content-Type": ctype}
            resp = await client.post("/hooks/orders", content=body, headers=headers)
            assert_error(resp, 415, ctype)
        headers = {**signed(body), "Content-Type": "application/cloudevents-batch+json"}
        resp = await client.post("/hooks/orders", content=b"[]", headers=headers)
        assert_error(resp, 401)  # authentication comes first: this signature is for `body`
        headers = {**signed(b"[]"), "Content-Type": "application/cloudevents-batch+json"}
        resp = await client.post("/hooks/orders", content=b"[]", headers=headers)
        assert_error(resp, 415, "batch")
        assert await events_of(engine) == []


async def test_saturated_engine_is_429_with_retry_after(tmp_path: Path) -> None:
    # max_backlog=0: the intake counts itself saturated whatever the backlog (0 >= 0).
    async with running(new_engine(tmp_path, max_backlog=0)) as engine, serving(engine) as client:
        assert engine.intake.saturated
        resp = await post_order(client, {"n": 1}, delivery="busy")
        assert_error(resp, 429, "retry")
        assert int(resp.headers["retry-after"]) >= 1
        assert await events_of(engine) == []


async def test_engine_not_running_is_503_with_retry_after(tmp_path: Path) -> None:
    engine = new_engine(tmp_path)
    async with serving(engine) as client:
        resp = await post_order(client, {"n": 1})
        assert_error(resp, 503, "not running")
        assert int(resp.headers["retry-after"]) >= 1
        assert_error(await client.get("/readyz"), 503)
        assert (await client.get("/healthz")).json() == {"status": "ok"}

        async with running(engine):
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "ready"
            resp = await post_order(client, {"n": 1}, delivery="while-up")
            assert resp.status_code == 202
            await run_of(engine, resp.json()["event_id"])

        resp = await post_order(client, {"n": 2})
        assert_error(resp, 503, "not running")
        assert "retry-after" in resp.headers
        assert_error(await client.get("/readyz"), 503)


# -- a burst ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_burst_of_1000_requests_loses_and_doubles_nothing(tmp_path: Path) -> None:
    total, chunk = 1000, 250
    # Ten clients of ten connections: 100 connections in all. (One pool of 100 works too, but
    # httpcore's pool bookkeeping grows with the square of its queue and makes the test slow.)
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(running(new_engine(tmp_path)))
        base = (await stack.enter_async_context(serving(engine))).base_url
        clients = [await stack.enter_async_context(client_for(str(base))) for _ in range(10)]

        async def burst() -> list[httpx.Response]:
            answers: list[httpx.Response] = []
            with anyio.fail_after(60):
                for start in range(0, total, chunk):
                    answers += await asyncio.gather(
                        *(
                            post_order(clients[i % len(clients)], {"n": i}, delivery=f"b-{i}")
                            for i in range(start, start + chunk)
                        )
                    )
            return answers

        answers = await burst()
        assert [r.status_code for r in answers] == [202] * total
        assert not any(r.json()["duplicate"] for r in answers)
        event_ids = {r.json()["event_id"] for r in answers}
        assert len(event_ids) == total

        seen = watcher(engine)
        with anyio.fail_after(60):
            while len(seen.succeeded) < total:
                await seen.changed()
        assert set(seen.by_event) == event_ids
        events = await events_of(engine)
        assert {e.uid for e in events} == event_ids
        assert sorted(e.data["n"] for e in events) == list(range(total))
        runs = await engine.store.list_runs(flow="handle_order", limit=10 * total)
        assert len(runs) == total
        assert {r.state for r in runs} == {RunState.SUCCEEDED}
        assert sorted(r.params["n"] for r in runs) == list(range(total))

        # The senders retry the whole burst: every answer is a duplicate, nothing new runs.
        replies = await burst()
        assert all(r.status_code == 202 and r.json()["duplicate"] for r in replies)
        assert {r.json()["event_id"] for r in replies} == event_ids
        assert await engine.store.count_duplicates("webhook/orders") == total
        assert await engine.store.count_runs(flow="handle_order") == total
        assert len(await events_of(engine)) == total


# -- the parts on their own -------------------------------------------------------------------


def test_sign_follows_the_documented_scheme() -> None:
    body = b'{"a": 1}'
    headers = sign(SECRET, body, 1_700_000_000)
    digest = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert headers == {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"sha256={digest}"}


def test_describe_and_validation() -> None:
    assert WebhookSensor("a", secret="s").describe() == "POST /hooks/a (hmac)"
    assert WebhookSensor("a", token="t").describe() == "POST /hooks/a (bearer token)"
    assert "or bearer" in WebhookSensor("a", secret="s", token="t").describe()
    hook = WebhookSensor("a")
    assert not hook.authenticated
    assert "OPEN" in hook.describe()
    assert hook.source == "webhook/a"
    for bad in ("", "a/b", "../x"):
        with pytest.raises(SensorError):
            WebhookSensor(bad)
    with pytest.raises(SensorError, match="secret"):
        WebhookSensor("a", secret="")
    with pytest.raises(SensorError, match="max_body_bytes"):
        WebhookSensor("a", max_body_bytes=0)


async def test_http_server_stops_when_cancelled(tmp_path: Path) -> None:
    engine = new_engine(tmp_path)
    server = HttpServer(access_log=False)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            port = await tg.start(server.serve, create_app(engine), "127.0.0.1", 0)
        assert server.port == port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/healthz")).status_code == 200
        tg.cancel_scope.cancel()
    assert server.port is None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/healthz")
