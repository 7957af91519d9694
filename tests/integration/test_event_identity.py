"""Two events with the same CloudEvents ``id`` from two sources are two events, each with its
own run: CloudEvents identifies an event by ``source`` plus ``id``, and evflow keys decisions,
runs and the audit trail on an identity of its own (``uid``).

Through ``engine.emit``, the webhook (structured and binary mode) and Kafka (binary headers).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from evflow import Engine, Event, Rule, RunState, flow, task
from evflow.sensors import KafkaSensor
from evflow.sensors.webhook import sign
from tests.brokers import KafkaBroker, unique_topic
from tests.integration.test_sensors_engine import FAST, producer
from tests.integration.test_webhook import SECRET, events_of, new_engine, running, serving
from tests.observers import RunLog, until


@task
def echo(n: int) -> int:
    return n


@flow
def handle_order(n: int) -> None:
    echo(n)


async def runs_per_event(engine: Engine, uids: list[str]) -> dict[str, list[str]]:
    """For each event, the ids of the runs whose trigger names it."""
    runs = await engine.store.list_runs(limit=100)
    return {uid: [r.id for r in runs if uid in r.trigger.get("events", ())] for uid in uids}


async def decisions(engine: Engine, uid: str) -> list[str]:
    return [a.kind for a in await engine.store.list_audit(subject=f"event:{uid}")]


async def test_emitted_events_sharing_an_id_across_sources_each_start_a_run(
    engine: Engine,
) -> None:
    runs = RunLog()
    async with engine:
        runs.attach(engine)
        engine.add(handle_order, Rule("order.created", params={"n": "{data.n}"}))
        eu = await engine.emit(Event("order.created", source="shop/eu", id="o-1", data={"n": 1}))
        us = await engine.emit(Event("order.created", source="shop/us", id="o-1", data={"n": 2}))
        assert not eu.duplicate and not us.duplicate
        assert eu.event_id != us.event_id
        finished = await runs.wait_for(2)
        assert sorted(r.params["n"] for r in finished) == [1, 2]
        by_event = await runs_per_event(engine, [eu.event_id, us.event_id])
        assert all(len(ids) == 1 for ids in by_event.values()), by_event
        for uid in (eu.event_id, us.event_id):
            kinds = await decisions(engine, uid)
            assert "rule.matched" in kinds and "rule.duplicate" not in kinds
            assert (await engine.store.get_event(uid)).id == "o-1"


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_webhook_cloudevents_sharing_an_id_across_sources_each_start_a_run(
    tmp_path: Path, mode: str
) -> None:
    engine = new_engine(tmp_path)
    runs = RunLog().attach(engine)
    async with running(engine), serving(engine) as client:
        answers = []
        for n, origin in enumerate(["https://shop.example/eu", "https://shop.example/us"]):
            if mode == "structured":
                body = orjson.dumps(
                    {
                        "specversion": "1.0",
                        "type": "order.created",
                        "source": origin,
                        "id": "ce-1",
                        "data": {"n": n},
                    }
                )
                headers = {"Content-Type": "application/cloudevents+json"}
            else:
                body = orjson.dumps({"n": n})
                headers = {
                    "Content-Type": "application/json",
                    "ce-specversion": "1.0",
                    "ce-type": "order.created",
                    "ce-source": origin,
                    "ce-id": "ce-1",
                }
            resp = await client.post(
                "/hooks/orders", content=body, headers={**headers, **sign(SECRET, body)}
            )
            assert resp.status_code == 202, resp.text
            answers.append(resp.json())
        assert [a["duplicate"] for a in answers] == [False, False]
        uids = [a["event_id"] for a in answers]
        assert len(set(uids)) == 2
        finished = await runs.wait_for(2)
        assert sorted(r.params["n"] for r in finished) == [0, 1]
        assert all(r.state is RunState.SUCCEEDED for r in finished)
        stored = await events_of(engine)
        assert sorted(e.extensions["origin"] for e in stored) == [
            "https://shop.example/eu",
            "https://shop.example/us",
        ]
        assert {e.id for e in stored} == {"ce-1"}
        by_event = await runs_per_event(engine, uids)
        assert all(len(ids) == 1 for ids in by_event.values()), by_event


@pytest.mark.kafka
async def test_kafka_cloudevents_sharing_an_id_across_sources_each_start_a_run(
    kafka_broker: KafkaBroker, kafka_topic: str, engine: Engine
) -> None:
    sensor = KafkaSensor(
        "orders",
        kafka_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=unique_topic("group"),
        **FAST,
    )
    runs = RunLog()
    async with engine:
        runs.attach(engine)
        engine.add(handle_order, Rule(on=sensor, params={"n": "{data.n}"}))
        await until(lambda: _listening(engine))
        async with producer(kafka_broker) as p:
            for n, origin in enumerate(["shop/eu", "shop/us"]):
                headers = [
                    ("ce_specversion", b"1.0"),
                    ("ce_type", b"order.created"),
                    ("ce_source", origin.encode()),
                    ("ce_id", b"ce-1"),
                    ("content-type", b"application/json"),
                ]
                await p.send_and_wait(
                    kafka_topic, value=orjson.dumps({"n": n}), partition=0, headers=headers
                )
        finished = await runs.wait_for(2)
        assert sorted(r.params["n"] for r in finished) == [0, 1]
        events = await engine.store.list_events(source=sensor.source)
        assert {e.id for e in events} == {"ce-1"} and len({e.uid for e in events}) == 2
        by_event = await runs_per_event(engine, [e.uid for e in events])
        assert all(len(ids) == 1 for ids in by_event.values()), by_event


async def _listening(engine: Engine) -> bool:
    return engine.sensor_status.get("orders") == "listening"
