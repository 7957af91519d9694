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
        assert (await client.get(f"/api/runs/{run_id[:8]}")).json()["id"] == run_id
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
