"""The sensor contract: what every sensor does with the durable intake, tested the same way for
each kind (files, webhooks, Kafka, schedules), each driven by its real source.

A sensor plugs in with one ``Harness``: how to make it, how to deliver one distinct input
named by a key, and how the same input comes again (a restart that rereads its source, or a
sender's retry). The contract:

* it reports itself listening (``task_status.started()``) and describes itself in one line;
* each distinct input becomes exactly one stored event, of the sensor's ``source``;
* the same input seen again, after a restart or a retry, is not a second event;
* input it cannot decode is kept as a dead letter, and the sensor goes on;
* cancelled, it stops cleanly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from evflow.abc import Sensor
from evflow.clock import ManualClock
from evflow.http.hooks import answer_hook
from evflow.http.server import HttpServer
from evflow.intake import StoreIntake
from evflow.schedules import Interval
from evflow.sensors import FileSensor, KafkaSensor, WebhookSensor
from evflow.sensors.schedule import ScheduleSensor
from evflow.store import Store, connect
from tests.brokers import KafkaBroker, unique_topic
from tests.observers import LIMIT_S, until
from tests.postgres import store_for

KINDS = ("file", "kafka", "schedule", "webhook")


class Harness(Protocol):
    """One sensor kind, driven by its real source."""

    def make(self) -> Sensor:
        """A new sensor (a restart makes another one on the same source)."""
        ...

    async def deliver(self, key: str) -> None:
        """One distinct input, named by ``key``."""
        ...

    async def again(self, key: str) -> None:
        """The input ``key`` once more, as its source would send it again (a retry)."""
        ...

    async def deliver_bad(self) -> None:
        """An input the sensor cannot decode."""
        ...


class FileHarness:
    def __init__(self, tmp_path: Path) -> None:
        self.inbox = tmp_path / "inbox"
        self.inbox.mkdir()

    def make(self) -> Sensor:
        return FileSensor(self.inbox, "*.csv", name="inbox", settle_s=0.05)

    async def deliver(self, key: str) -> None:
        await anyio.Path(self.inbox / f"{key}.csv").write_text(f"id\n{key}\n")

    async def again(self, key: str) -> None:
        pass  # the same file, still there when a restarted sensor looks again

    async def deliver_bad(self) -> None:
        raise AssertionError("no bad input for files")


class WebhookHarness:
    def __init__(self, client: httpx.AsyncClient, sensors: dict[str, WebhookSensor]) -> None:
        self.client = client
        self.sensors = sensors

    def make(self) -> Sensor:
        sensor = WebhookSensor("hook")
        self.sensors["hook"] = sensor
        return sensor

    async def deliver(self, key: str) -> None:
        resp = await self.client.post(
            "/hooks/hook", json={"key": key}, headers={"X-Delivery-Id": key}
        )
        assert resp.status_code == 202, resp.text

    async def again(self, key: str) -> None:
        await self.deliver(key)  # a sender's retry of the same delivery

    async def deliver_bad(self) -> None:
        resp = await self.client.post(
            "/hooks/hook", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400, resp.text


class KafkaHarness:
    def __init__(self, broker: KafkaBroker, producer: AIOKafkaProducer) -> None:
        self.broker = broker
        self.producer = producer
        self.topic = unique_topic("contract")

    def make(self) -> Sensor:
        # A fresh group each time: a restarted sensor reads the topic from the start again,
        # as after a broker that lost its committed offsets.
        return KafkaSensor(
            "orders",
            self.topic,
            bootstrap_servers=self.broker.bootstrap,
            group_id=unique_topic("group"),
            fetch_max_wait_ms=10,
            session_timeout_ms=3000,
            heartbeat_interval_ms=300,
        )

    async def deliver(self, key: str) -> None:
        await self.producer.send_and_wait(self.topic, orjson.dumps({"key": key}), partition=0)

    async def again(self, key: str) -> None:
        pass  # the record is read again by the restarted sensor

    async def deliver_bad(self) -> None:
        await self.producer.send_and_wait(self.topic, b"\xff not json", partition=0)


class ScheduleHarness:
    def __init__(self) -> None:
        self.clock = ManualClock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))  # between fire times
        self.fired: list[str] = []

    def make(self) -> Sensor:
        # Catch-up: every fire time the clock passes is an input, however fast it moves.
        return ScheduleSensor(
            "nightly", Interval(timedelta(hours=1)), clock=self.clock, misfire="catchup"
        )

    async def deliver(self, key: str) -> None:
        self.clock.advance(timedelta(hours=1))  # one more fire time: one more input

    async def again(self, key: str) -> None:
        pass  # a restarted sensor sees the same fire times again

    async def deliver_bad(self) -> None:
        raise AssertionError("no bad input for schedules")


@asynccontextmanager
async def harness_for(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    async with AsyncExitStack() as stack:
        if kind == "file":
            yield FileHarness(tmp_path)
        elif kind == "schedule":
            yield ScheduleHarness()
        elif kind == "kafka":
            broker: KafkaBroker = request.getfixturevalue("kafka_broker")
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            stack.push_async_callback(producer.stop)
            yield KafkaHarness(broker, producer)
        else:
            sensors: dict[str, WebhookSensor] = {}

            async def hook(req: Request) -> Response:
                return await answer_hook(sensors[req.path_params["name"]], req)

            app = Starlette(routes=[Route("/hooks/{name}", hook, methods=["POST"])])
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            port = await tg.start(HttpServer(access_log=False).serve, app, "127.0.0.1", 0)
            client = await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
            )
            yield WebhookHarness(client, sensors)


@asynccontextmanager
async def running(sensor: Sensor, intake: StoreIntake) -> AsyncIterator[None]:
    """``sensor.run`` in a task group; entered once it reports itself listening."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(LIMIT_S):
            await tg.start(sensor.run, intake)
        yield
        tg.cancel_scope.cancel()


async def events_of(store: Store, sensor: Sensor) -> list[Any]:
    return [e for e in await store.list_events(limit=1000) if e.source == sensor.source]


KIND_PARAMS = [pytest.param(k, marks=pytest.mark.kafka) if k == "kafka" else k for k in KINDS]


@pytest.mark.parametrize("kind", KIND_PARAMS)
async def test_each_input_is_one_event_and_a_repeat_is_not_another(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (
        harness_for(kind, tmp_path, request) as h,
        connect(store_for(tmp_path)) as store,
    ):
        intake = StoreIntake(store)
        sensor = h.make()
        description = sensor.describe()
        assert description and "\n" not in description
        assert sensor.source
        async with running(sensor, intake):
            for key in ("a", "b", "c"):
                await h.deliver(key)

            async def three() -> bool:
                return len(await events_of(store, sensor)) == 3

            await until(three)
        first = await events_of(store, sensor)

        # The same inputs again: a restarted sensor on the same source, or a sender's retry.
        again = h.make()
        async with running(again, intake):
            for key in ("a", "b", "c"):
                await h.again(key)
            await h.deliver("d")  # and a new one, to know the restarted sensor has caught up

            async def four() -> bool:
                return len(await events_of(store, again)) >= 4

            await until(four)
            await anyio.sleep(0.2)  # a repeat arriving late would show here
        events = await events_of(store, again)
        assert len(events) == 4, [e.dedup_key for e in events]
        assert {e.uid for e in first} <= {e.uid for e in events}
        assert len({e.dedup_key for e in events}) == 4


@pytest.mark.parametrize(
    "kind", [pytest.param("kafka", marks=pytest.mark.kafka), "webhook"]
)  # files and schedules have no input to decode
async def test_input_it_cannot_decode_is_a_dead_letter_and_it_goes_on(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (
        harness_for(kind, tmp_path, request) as h,
        connect(store_for(tmp_path)) as store,
    ):
        intake = StoreIntake(store)
        sensor = h.make()
        async with running(sensor, intake):
            await h.deliver_bad()
            await h.deliver("after")

            # A webhook refuses it to the sender (400): nothing to keep. Elsewhere the bad
            # input is kept, whichever of the two is read first (Kafka partitions keep no
            # order between them).
            keeps = kind != "webhook"

            async def stored() -> bool:
                kept = not keeps or bool(await store.list_dead_letters())
                return kept and len(await events_of(store, sensor)) == 1

            await until(stored)
        letters = await store.list_dead_letters()
        assert len(letters) == keeps and all(d.reason for d in letters)


@pytest.mark.parametrize("kind", KIND_PARAMS)
async def test_cancelled_it_stops_cleanly(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (
        harness_for(kind, tmp_path, request) as h,
        connect(store_for(tmp_path)) as store,
    ):
        sensor = h.make()
        # Raising anything but the cancellation out of run() fails the task group, and so
        # this test; hanging fails it on the bound.
        with anyio.fail_after(LIMIT_S):
            async with anyio.create_task_group() as tg:
                await tg.start(sensor.run, StoreIntake(store))
                await h.deliver("a")
                tg.cancel_scope.cancel()
