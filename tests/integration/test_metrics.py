"""``GET /metrics`` after a known workload: real engine, real HTTP, Prometheus text parsed back."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from evflow import Engine, Rule, flow, task
from evflow.http.app import build_app, run_app_services
from evflow.http.metrics import Metrics, monitor_loop_lag
from evflow.http.server import HttpServer
from evflow.sensors.webhook import WebhookSensor
from tests import engines
from tests.observers import LIMIT_S, until

RELEASE: dict[str, anyio.Event] = {}


@task
async def greet(name: str) -> str:
    return f"hello {name}"


@flow
def hello(name: str) -> None:
    greet(name)


@task
async def explode() -> None:
    raise ValueError("boom")


@flow
def boom() -> None:
    explode()


@task(pool="db")
async def hold_db(key: str) -> str:
    await RELEASE[key].wait()
    return key


@flow
def pooled(key: str) -> None:
    hold_db(key)


@task
async def echo(n: int) -> int:
    return n


@flow
def orders(n: int) -> None:
    echo(n)


@task
async def hog(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - blocks the event loop on purpose


@flow
def blocking(seconds: float) -> None:
    hog(seconds)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def new_engine(tmp_path: Path) -> Engine:
    engine = engines.new_engine(tmp_path, pools={"db": 2})
    for fl in (hello, boom, pooled, blocking):
        engine.add(fl)
    engine.add(
        orders,
        Rule(on="order.*", name="orders", params={"n": "{data.n}"}),
        Rule(on=WebhookSensor("shop", token="t"), name="shop", params={"n": "{data.n}"}),
        Rule(on="slow.*", name="slow", params={"n": 1}, debounce_s=3600),
    )
    return engine


@asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(engine)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(run_app_services, app)
            port = await tg.start(HttpServer(access_log=False).serve, app, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
        tg.cancel_scope.cancel()


async def scrape(client: httpx.AsyncClient) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


async def submit(client: httpx.AsyncClient, flow_name: str, **params: Any) -> str:
    resp = await client.post(f"/api/flows/{flow_name}/runs", json={"params": params})
    assert resp.status_code == 201, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


async def emit(client: httpx.AsyncClient, event: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/events", json=event)
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_counts_after_a_known_workload(tmp_path: Path) -> None:
    async with new_engine(tmp_path) as engine, serving(engine) as client:
        await until(lambda: _listening(engine))
        runs = [await submit(client, "hello", name=str(i)) for i in range(3)]
        runs.append(await submit(client, "boom"))
        await emit(client, {"id": "o1", "type": "order.created", "data": {"n": 1}})
        await emit(client, {"id": "o2", "type": "order.created", "data": {"n": 2}})
        assert (await emit(client, {"id": "o1", "type": "order.created"}))["duplicate"]
        await emit(client, {"type": "misc.unmatched"})
        await emit(client, {"type": "order.created", "data": {}})  # cannot map n: dead letter
        await emit(client, {"type": "slow.thing", "source": "held-source"})  # debounced: pending

        async def event_runs() -> list[str] | None:
            found = [
                r.id for r in await engine.store.list_runs(flow="orders") if r.trigger.get("events")
            ]
            return found if len(found) == 2 else None

        runs += await until(event_runs)
        with anyio.fail_after(LIMIT_S):
            results = [await engine.wait(r) for r in runs]
        assert sum(r.ok for r in results) == 5

        async def dead_lettered() -> bool:
            return bool(await engine.store.list_dead_letters())

        await until(dead_lettered)
        m = await scrape(client)

        runs_total = "evflow_run_transitions_total"
        assert value(m, runs_total, flow="hello", state="succeeded") == 3
        assert value(m, runs_total, flow="boom", state="failed") == 1
        assert value(m, runs_total, flow="orders", state="succeeded") == 2
        assert total(m, runs_total, state="running") == 6
        assert total(m, runs_total, state="succeeded") == 5
        tasks_total = "evflow_task_transitions_total"
        assert value(m, tasks_total, flow="hello", state="succeeded") == 3
        assert value(m, tasks_total, flow="boom", state="failed") == 1

        assert value(m, "evflow_events_accepted_total", source="evflow.api") == 4
        assert value(m, "evflow_events_duplicate_total", source="evflow.api") == 1
        assert value(m, "evflow_events_accepted_total", source="held-source") == 1
        assert value(m, "evflow_dead_letters_total", source="evflow.api") == 1

        assert value(m, "evflow_task_duration_seconds_count", flow="hello") == 3
        assert value(m, "evflow_task_duration_seconds_count", flow="boom") == 1
        assert value(m, "evflow_task_duration_seconds_count", flow="orders") == 2
        assert value(m, "evflow_task_duration_seconds_sum", flow="hello") >= 0
        assert value(m, "evflow_event_to_start_seconds_count") == 2

        assert value(m, "evflow_pool_slots", pool="db") == 2
        assert value(m, "evflow_pool_slots_in_use", pool="db") == 0
        assert value(m, "evflow_pool_waiting", pool="db") == 0
        assert value(m, "evflow_runs_active") == 0
        assert value(m, "evflow_event_backlog") == 0
        assert value(m, "evflow_store_write_backlog") >= 0
        assert value(m, "evflow_sensor_up", sensor="shop") == 1
        assert value(m, "evflow_sensor_lag_seconds", source="webhook/shop") == 0
        assert value(m, "evflow_sensor_lag_seconds", source="held-source") > 0
        assert value(m, "evflow_event_loop_lag_seconds") >= 0


async def _listening(engine: Engine) -> bool:
    return engine.sensor_status.get("shop") == "listening"


async def test_pool_gauges_while_tasks_hold_and_wait_for_slots(tmp_path: Path) -> None:
    RELEASE["db"] = anyio.Event()
    async with new_engine(tmp_path) as engine, serving(engine) as client:
        runs = [await submit(client, "pooled", key="db") for _ in range(3)]

        async def saturated() -> Samples | None:
            m = await scrape(client)
            return m if value(m, "evflow_pool_waiting", pool="db") == 1 else None

        m = await until(saturated)
        assert value(m, "evflow_pool_slots_in_use", pool="db") == 2
        assert value(m, "evflow_runs_active") == 3
        assert value(m, "evflow_task_transitions_total", flow="pooled", state="running") == 2
        RELEASE["db"].set()
        with anyio.fail_after(LIMIT_S):
            for r in runs:
                assert (await engine.wait(r)).ok
        m = await scrape(client)
        assert value(m, "evflow_pool_slots_in_use", pool="db") == 0
        assert value(m, "evflow_task_duration_seconds_count", flow="pooled") == 3


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        new_engine(tmp_path / "a") as a,
        new_engine(tmp_path / "b") as b,
        serving(a) as client_a,
        serving(b) as client_b,
    ):
        with anyio.fail_after(LIMIT_S):
            await a.run(hello, name="a")
            for name in ("b1", "b2"):
                await b.run(hello, name=name)
        runs_total = "evflow_run_transitions_total"
        assert value(await scrape(client_a), runs_total, flow="hello", state="succeeded") == 1
        assert value(await scrape(client_b), runs_total, flow="hello", state="succeeded") == 2
    names = {n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith("evflow")}
    assert names == set()


async def test_a_blocked_event_loop_is_measured_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="evflow.http.metrics")
    async with new_engine(tmp_path) as engine, serving(engine) as client:
        metrics: Metrics = Metrics(engine)
        async with anyio.create_task_group() as tg:
            await tg.start(partial(monitor_loop_lag, metrics, interval_s=0.05, warn_after_s=0.2))
            with anyio.fail_after(LIMIT_S):
                assert (await engine.run(blocking, seconds=0.4)).ok

            async def blocked_seen() -> float | None:
                return metrics.registry.get_sample_value("evflow_event_loop_blocked_total")

            blocked = await until(blocked_seen)  # the monitor wakes after the block and counts it
            tg.cancel_scope.cancel()
        assert blocked >= 1
        warnings = [r for r in caplog.records if r.name == "evflow.http.metrics"]
        assert warnings and "blocked" in warnings[0].getMessage()
        # the app's own monitor (1 s, warning at 0.5 s) is on /metrics
        m = await scrape(client)
        assert ("evflow_event_loop_blocked_total", ()) in m
