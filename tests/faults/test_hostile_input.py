"""Hostile input against a served engine: every case gets a JSON 4xx naming what is wrong, the
service stays up, nothing is stored changed, and the audit trail still verifies."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from evflow import audit
from tests.integration.test_api import assert_error, finished, service, trigger
from tests.integration.test_webhook import new_engine, running, serving, signed

HUGE = str(10**30)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        (f"/api/runs?offset={HUGE}", "offset"),
        (f"/api/runs?limit={HUGE}", "limit"),
        (f"/api/events?offset={HUGE}", "offset"),
        (f"/api/dead-letters?offset={HUGE}", "offset"),
        ("/api/runs?offset=-1", "offset"),
        ("/api/runs?offset=1e3", "offset"),
    ],
)
async def test_out_of_range_numbers_are_a_400_naming_the_parameter(
    tmp_path: Path, path: str, param: str
) -> None:
    async with service(tmp_path) as (_engine, client):
        assert_error(await client.get(path), 400, param)
        assert (await client.get("/healthz")).status_code == 200


async def test_log_positions_out_of_range_are_refused_before_a_stream_starts(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as (engine, client):
        run_id = await trigger(client, "hello", name="ada")
        await finished(client, run_id)
        logs = f"/api/runs/{run_id}/logs"
        assert_error(await client.get(f"{logs}?after={HUGE}"), 400, "after")
        assert_error(await client.get(f"{logs}?after={HUGE}&follow=1"), 400, "after")
        resp = await client.get(f"{logs}?follow=1", headers={"Last-Event-ID": HUGE})
        assert_error(resp, 400, "Last-Event-ID")
        resp = await client.get(f"{logs}?follow=1", headers={"Last-Event-ID": "abc"})
        assert_error(resp, 400, "Last-Event-ID")
        ok = await client.get(f"{logs}?follow=1", headers={"Last-Event-ID": "0"})
        assert ok.status_code == 200 and b"event: end" in ok.content
        assert (await audit.verify(engine.store)).ok


async def test_a_run_id_prefix_is_matched_literally_not_as_a_pattern(tmp_path: Path) -> None:
    async with service(tmp_path) as (_engine, client):
        run_id = await trigger(client, "hello", name="ada")
        await finished(client, run_id)
        assert (await client.get(f"/api/runs/{run_id[-8:]}")).json()["id"] == run_id
        for pattern in ("%25" + run_id[1:6], "____" + run_id[4:8], "%25%25%25%25"):
            assert_error(await client.get(f"/api/runs/{pattern}"), 404, "no run")
            resp = await client.post(f"/api/runs/{pattern}/cancel", json={})
            assert resp.status_code == 404, resp.text


async def test_an_integer_beyond_64_bits_is_refused_not_stored_as_a_float(
    tmp_path: Path,
) -> None:
    async with service(tmp_path) as (engine, client):
        body = b'{"type": "order.created", "data": {"n": 1.5, "big": ' + HUGE.encode() + b"}}"
        resp = await client.post(
            "/api/events", content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(resp, 400, "data.big")
        assert await engine.store.list_events() == []
        fine = b'{"type": "order.created", "data": {"n": 1.5, "max": 18446744073709551615}}'
        resp = await client.post(
            "/api/events", content=fine, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 202, resp.text
        (event,) = await engine.store.list_events()
        assert event.data == {"n": 1.5, "max": 18446744073709551615}
    engine = new_engine(tmp_path / "hooks")
    async with running(engine), serving(engine) as hooks:
        body = b'{"n": 2.5, "id": ' + HUGE.encode() + b"}"
        assert_error(await hooks.post("/hooks/orders", content=body, headers=signed(body)), 400)
        assert await engine.store.list_events() == []


async def test_a_cloudevent_of_an_unknown_specversion_is_refused(tmp_path: Path) -> None:
    ce = {"specversion": "0.1", "type": "order.created", "source": "shop", "id": "x-1"}
    async with service(tmp_path) as (engine, client):
        assert_error(await client.post("/api/events", json=ce), 400, "specversion")
    engine = new_engine(tmp_path / "hooks")
    async with running(engine), serving(engine) as hooks:
        body = orjson.dumps(ce)
        headers = {**signed(body), "Content-Type": "application/cloudevents+json"}
        assert_error(await hooks.post("/hooks/orders", content=body, headers=headers), 400, "0.1")
        assert await engine.store.list_events() == []


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/runs?since=", "since"),
        ("/api/runs?until=", "until"),
        ("/api/runs?limit=", "limit"),
        ("/api/runs?state=", "state"),
        ("/api/events?offset=", "offset"),
        ("/api/events?status=", "status"),
        ("/api/audit?since=", "since"),
        ("/api/dead-letters?limit=", "limit"),
    ],
)
async def test_an_empty_typed_query_parameter_is_a_400_not_the_default(
    tmp_path: Path, path: str, param: str
) -> None:
    async with service(tmp_path) as (_engine, client):
        assert_error(await client.get(path), 400, param)
        assert (await client.get(path.partition("?")[0])).status_code == 200


async def test_bodies_the_document_refuses_are_refused(tmp_path: Path) -> None:
    async with service(tmp_path) as (engine, client):
        run_id = await trigger(client, "hello", name="ada")
        await finished(client, run_id)
        cancel = f"/api/runs/{run_id}/cancel"
        assert_error(await client.post(cancel, content=b"null"), 400, "object")
        assert_error(await client.post(cancel, json={"reason": None}), 422, "reason")
        assert (await client.post(cancel)).status_code == 200  # no body at all is fine
        assert_error(await client.post(f"/api/runs/{run_id}/retry", json={"whole": None}), 400)
        runs = "/api/flows/hello/runs"
        assert_error(await client.post(runs, json={"params": None}), 422, "params")
        assert_error(await client.post(runs, json={"priority": 2**63}), 422, "priority")
        resp = await client.post(runs, json={"params": {"name": "bo"}, "priority": 3.0})
        assert resp.status_code == 201, resp.text
        for bad in ({"type": ""}, {"type": "x", "specversion": None}, {"type": "x", "id": 0}):
            assert_error(await client.post("/api/events", json=bad), 400)
        logs = f"/api/runs/{run_id}/logs"
        assert_error(await client.get(f"{logs}?follow=yes-please"), 400, "follow")
        assert (await client.get(f"{logs}?follow=false")).json()["run_id"] == run_id
        assert len(await engine.store.list_runs()) == 2


async def test_the_document_says_what_the_server_refuses_and_allows(tmp_path: Path) -> None:
    async with service(tmp_path) as (_engine, client):
        doc = (await client.get("/openapi.json")).json()
        event_in = doc["components"]["schemas"]["EventIn"]["properties"]
        assert event_in["type"]["minLength"] == 1
        assert event_in["specversion"]["enum"] == ["1.0"]
        resp = await client.request("OPTIONS", "/api/events")
        assert_error(resp, 405, "OPTIONS")
        documented = {method.upper() for method in doc["paths"]["/api/events"]}
        assert documented == {"GET", "POST"}
        assert documented <= set(resp.headers["allow"].split(", "))
        # the log stream's events: data is JSON, the schema of each event says so
        stream = doc["paths"]["/api/runs/{id}/logs"]["get"]["responses"]["200"]["content"]
        events = stream["text/event-stream"]["schema"]["oneOf"]
        names = {e["properties"]["event"]["const"] for e in events}
        assert names == {"log", "error", "end"}
        assert all(
            e["properties"]["data"]["contentMediaType"] == "application/json" for e in events
        )
