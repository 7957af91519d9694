"""KafkaSensor against the real test broker (tansu), a real SQLite store and the real intake.

Waits are on conditions: the sensor's offset commit (the last step for a batch, after the store
committed it) is observed through its ``_commit`` seam; every wait is bounded by ``fail_after``.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import confluent_kafka
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from evflow.errors import SensorError
from evflow.intake import StoreIntake
from evflow.records import EventRecord
from evflow.sensors.kafka import KafkaSensor
from evflow.store import Store, connect
from tests.brokers import KafkaBroker, unique_topic
from tests.kafka_seams import CommitLog, CrashBeforeCommit, Offsets, WatchedSensor
from tests.postgres import store_for

pytestmark = pytest.mark.kafka

# Tansu holds every fetch for fetch_max_wait_ms and rebalances in ~session_timeout/2.
FAST: dict[str, Any] = {
    "fetch_max_wait_ms": 10,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 300,
}
START_S = 20.0  # joining a group (a rebalance) takes ~1.5 s with FAST settings
WAIT_S = 20.0


# -- helpers -------------------------------------------------------------------------------


@asynccontextmanager
async def running(sensor: KafkaSensor, intake: StoreIntake) -> AsyncIterator[None]:
    """Run ``sensor`` until the block ends; enter once it has joined its group."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(START_S):
            await tg.start(sensor.run, intake)
        yield
        tg.cancel_scope.cancel()


@asynccontextmanager
async def store_and_intake(tmp_path: Path) -> AsyncIterator[tuple[Store, StoreIntake]]:
    async with connect(store_for(tmp_path)) as store:
        yield store, StoreIntake(store)


@asynccontextmanager
async def producer(broker: KafkaBroker) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def send(
    p: AIOKafkaProducer,
    topic: str,
    value: bytes | None,
    *,
    partition: int = 0,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
    timestamp_ms: int | None = None,
) -> Offsets:
    """Produce one record; return ``{(topic, partition): offset + 1}`` (its commit target)."""
    with anyio.fail_after(WAIT_S):
        md = await p.send_and_wait(
            topic,
            value=value,
            key=key,
            partition=partition,
            headers=list(headers) if headers else None,
            timestamp_ms=timestamp_ms,
        )
    return {(md.topic, md.partition): md.offset + 1}


def merge(*targets: Offsets) -> Offsets:
    out: Offsets = {}
    for t in targets:
        for k, v in t.items():
            out[k] = max(v, out.get(k, 0))
    return out


async def events_by_offset(store: Store) -> dict[tuple[int, int], EventRecord]:
    records = await store.list_events(limit=10_000)
    return {(r.extensions["partition"], r.extensions["offset"]): r for r in records}


# -- the broker alone ----------------------------------------------------------------------


async def test_broker_produce_consume_roundtrip(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    async with producer(kafka_broker) as p:
        await send(p, kafka_topic, b"hello", partition=2, key=b"k", headers=[("h", b"v")])
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(kafka_topic) == {0, 1, 2, 3}
        tp = TopicPartition(kafka_topic, 2)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        with anyio.fail_after(WAIT_S):
            record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.value, record.key, record.partition, record.offset) == (b"hello", b"k", 2, 0)
    assert list(record.headers) == [("h", b"v")]


async def test_broker_topic_fixture_is_unique(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    other = await kafka_broker.create_topic(unique_topic(), 2)
    assert other != kafka_topic
    assert kafka_broker.bootstrap.startswith("127.0.0.1:")


# -- configuration (no broker) -------------------------------------------------------------


async def test_run_without_bootstrap_raises_sensor_error(tmp_path: Path) -> None:
    sensor = KafkaSensor("orders", "orders")
    async with store_and_intake(tmp_path) as (_, intake):
        with anyio.fail_after(WAIT_S), pytest.raises(SensorError, match="no bootstrap servers"):
            await sensor.run(intake, task_status=anyio.TASK_STATUS_IGNORED)
    assert sensor.source == "kafka/orders"
    assert "orders" in sensor.describe()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(SensorError, match="exactly one"):
        KafkaSensor("x")
    with pytest.raises(SensorError, match="exactly one"):
        KafkaSensor("x", "t", pattern="t.*")
    with pytest.raises(SensorError, match="unknown security"):
        KafkaSensor("x", "t", security={"sasl_password": "oops"})
    assert KafkaSensor("x", "a, b").topics == ("a", "b")


async def test_unreachable_broker_raises_sensor_error(tmp_path: Path) -> None:
    broker = KafkaBroker().start()
    address = broker.bootstrap
    broker.stop()  # nothing listens there any more
    sensor = KafkaSensor("gone", "t", bootstrap_servers=address, **FAST)
    async with store_and_intake(tmp_path) as (_, intake):
        with anyio.fail_after(WAIT_S), pytest.raises(SensorError, match="cannot start"):
            await sensor.run(intake, task_status=anyio.TASK_STATUS_IGNORED)


# -- records become events -----------------------------------------------------------------


async def test_records_become_stored_events(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    log = CommitLog()
    sensor = WatchedSensor(
        "orders", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, log=log, **FAST
    )
    ts = 1_700_000_000_123
    structured = {
        "specversion": "1.0",
        "type": "order.created",
        "source": "shop/eu",
        "id": "ce-1",
        "subject": "order-7",
        "time": "2024-05-01T10:00:00Z",
        "data": {"n": 7},
        "tenant": "acme",
    }
    async with store_and_intake(tmp_path) as (store, intake), producer(kafka_broker) as p:
        async with running(sensor, intake):
            t1 = await send(
                p,
                kafka_topic,
                orjson.dumps({"amount": 3, "type": "not a cloudevent"}),
                partition=0,
                key=b"cust-1",
                headers=[("trace", b"abc")],
                timestamp_ms=ts,
            )
            t2 = await send(p, kafka_topic, orjson.dumps(structured), partition=1, key=b"k2")
            t3 = await send(
                p,
                kafka_topic,
                b'{"sku": "x"}',
                partition=2,
                headers=[
                    ("ce_specversion", b"1.0"),
                    ("ce_type", b"stock.changed"),
                    ("ce_source", b"warehouse"),
                    ("ce_id", b"b-1"),
                    ("ce_subject", b"sku-x"),
                    ("ce_time", b"2024-05-02T00:00:00+00:00"),
                    ("ce_region", b"north"),
                    ("content-type", b"application/json"),
                ],
            )
            t4 = await send(p, kafka_topic, None, partition=3, key=b"gone")  # tombstone
            with anyio.fail_after(WAIT_S):
                await log.wait_for(merge(t1, t2, t3, t4))
        events = await events_by_offset(store)
        assert await store.count_duplicates() == 0
        assert await store.list_dead_letters() == []

    assert len(events) == 4
    plain = events[(0, 0)]
    assert plain.type == f"kafka.{kafka_topic}"
    assert plain.source == "kafka/orders"
    assert plain.data == {"amount": 3, "type": "not a cloudevent"}
    assert plain.subject == "cust-1"
    assert plain.dedup_key == f"kafka:{kafka_topic}/0/0"
    assert datetime.fromisoformat(plain.time) == datetime.fromtimestamp(ts / 1000, UTC)
    ext = plain.extensions
    assert ext["topic"] == kafka_topic
    assert (ext["partition"], ext["offset"], ext["timestamp"]) == (0, 0, ts)
    assert ext["key"] == "cust-1"
    assert ext["headers"] == {"trace": "abc"}

    ce = events[(1, 0)]
    assert (ce.type, ce.id, ce.subject, ce.data) == ("order.created", "ce-1", "order-7", {"n": 7})
    assert ce.source == "kafka/orders"
    assert ce.extensions["origin"] == "shop/eu"
    assert ce.extensions["tenant"] == "acme"
    assert ce.dedup_key == f"kafka:{kafka_topic}/1/0"
    assert datetime.fromisoformat(ce.time) == datetime(2024, 5, 1, 10, tzinfo=UTC)

    binary = events[(2, 0)]
    assert (binary.type, binary.id, binary.subject) == ("stock.changed", "b-1", "sku-x")
    assert binary.data == {"sku": "x"}
    assert binary.extensions["origin"] == "warehouse"
    assert binary.extensions["region"] == "north"
    assert datetime.fromisoformat(binary.time) == datetime(2024, 5, 2, tzinfo=UTC)

    tombstone = events[(3, 0)]
    assert tombstone.data is None
    assert tombstone.subject == "gone"


async def test_raw_format_and_event_type(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    log = CommitLog()
    sensor = WatchedSensor(
        "raw",
        kafka_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        format="raw",
        event_type="blob.arrived",
        log=log,
        **FAST,
    )
    binary = b"\xff\x00\xfe"
    async with store_and_intake(tmp_path) as (store, intake), producer(kafka_broker) as p:
        async with running(sensor, intake):
            t1 = await send(p, kafka_topic, b"not json at all", partition=0)
            t2 = await send(p, kafka_topic, binary, partition=0)
            with anyio.fail_after(WAIT_S):
                await log.wait_for(merge(t1, t2))
        events = await events_by_offset(store)
    assert {e.type for e in events.values()} == {"blob.arrived"}
    assert events[(0, 0)].data == "not json at all"
    assert events[(0, 1)].data == {"value_b64": base64.b64encode(binary).decode()}


async def test_poison_message_is_dead_lettered_and_consumption_goes_on(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    log = CommitLog()
    dlq = await kafka_broker.create_topic(unique_topic("dlq"), 1)
    sensor = WatchedSensor(
        "orders",
        kafka_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        dlq_topic=dlq,
        log=log,
        **FAST,
    )
    async with store_and_intake(tmp_path) as (store, intake), producer(kafka_broker) as p:
        async with running(sensor, intake):
            await send(p, kafka_topic, b"{not json", partition=1, headers=[("trace", b"t-9")])
            target = await send(p, kafka_topic, b'{"ok": true}', partition=1)
            with anyio.fail_after(WAIT_S):
                await log.wait_for(target)
        events = await events_by_offset(store)
        dead = await store.list_dead_letters()

    assert list(events) == [(1, 1)]
    assert events[(1, 1)].data == {"ok": True}
    assert len(dead) == 1
    letter = dead[0]
    assert letter.source == "kafka/orders"
    assert letter.payload == b"{not json"
    assert letter.headers == {"trace": "t-9"}
    assert f"topic {kafka_topic} partition 1 offset 0" in letter.reason
    assert "not valid JSON" in letter.reason

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tp = TopicPartition(dlq, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        with anyio.fail_after(WAIT_S):
            record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == b"{not json"
    headers = dict(record.headers)
    assert headers["trace"] == b"t-9"
    assert b"not valid JSON" in headers["evflow-dlq-reason"]


# -- at least once, never doubled ----------------------------------------------------------


async def test_offsets_are_committed_only_after_store_and_repeats_are_dropped(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    group = unique_topic("group")
    common: dict[str, Any] = {
        "bootstrap_servers": kafka_broker.bootstrap,
        "group_id": group,
        **FAST,
    }
    async with store_and_intake(tmp_path) as (store, intake), producer(kafka_broker) as p:
        # 1. stored, then stopped dead before the offset commit
        crashing = CrashBeforeCommit("orders", kafka_topic, **common)
        async with running(crashing, intake):
            await send(p, kafka_topic, b'{"n": 1}', partition=0)
            with anyio.fail_after(WAIT_S):
                await crashing.stored_not_committed.wait()
        assert len(await store.list_events()) == 1

        # 2. the next member of the group is handed offset 0 again (never committed to the
        # broker), but the store's cursor, committed with the event, says it is stored: skipped
        log = CommitLog()
        again = WatchedSensor("orders", kafka_topic, log=log, **common)
        async with running(again, intake):
            target = await send(p, kafka_topic, b'{"n": 2}', partition=0)
            with anyio.fail_after(WAIT_S):
                await log.wait_for(target)
        events = await events_by_offset(store)
        assert sorted(events) == [(0, 0), (0, 1)]
        assert await store.count_duplicates() == 0
        assert await store.get_cursor(f"kafka:{group}:{kafka_topic}:0") == "2"

        # 3. what was committed is not read again
        log = CommitLog()
        third = WatchedSensor("orders", kafka_topic, log=log, **common)
        async with running(third, intake):
            target = await send(p, kafka_topic, b'{"n": 3}', partition=0)
            with anyio.fail_after(WAIT_S):
                await log.wait_for(target)
        assert len(await store.list_events()) == 3
        assert await store.count_duplicates() == 0

        # 4. the broker forgets the group's committed offsets (rewound to 0 here): the next
        # member skips to the store's cursor instead of replaying the partition
        rewind = AIOKafkaConsumer(
            bootstrap_servers=kafka_broker.bootstrap, group_id=group, enable_auto_commit=False
        )
        await rewind.start()
        try:
            rewind.assign([TopicPartition(kafka_topic, 0)])
            await rewind.commit({TopicPartition(kafka_topic, 0): 0})
        finally:
            await rewind.stop()
        log = CommitLog()
        fourth = WatchedSensor("orders", kafka_topic, log=log, **common)
        async with running(fourth, intake):
            target = await send(p, kafka_topic, b'{"n": 4}', partition=0)
            with anyio.fail_after(WAIT_S):
                await log.wait_for(target)
        assert sorted(await events_by_offset(store)) == [(0, 0), (0, 1), (0, 2), (0, 3)]
        assert await store.count_duplicates() == 0  # nothing was read twice


async def test_two_sensors_in_one_group_store_every_message_once(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    group = unique_topic("group")
    log = CommitLog()
    first = WatchedSensor(
        "a", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, group_id=group, log=log, **FAST
    )
    second = WatchedSensor(
        "b", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, group_id=group, log=log, **FAST
    )
    n = 200
    async with store_and_intake(tmp_path) as (store, intake), producer(kafka_broker) as p:
        async with running(first, intake):
            async with running(second, intake):
                targets: Offsets = {}
                for i in range(n):
                    targets = merge(
                        targets, await send(p, kafka_topic, orjson.dumps({"i": i}), partition=i % 4)
                    )
                with anyio.fail_after(WAIT_S):
                    await log.wait_for(targets)
            per_source = {
                s: len(await store.list_events(limit=10_000, source=s))
                for s in ("kafka/a", "kafka/b")
            }
            assert per_source["kafka/a"] > 0, per_source
            assert per_source["kafka/b"] > 0, per_source

            # the survivor takes the other half over and goes on
            more: Offsets = {}
            for i in range(n, n + 40):
                more = merge(
                    more, await send(p, kafka_topic, orjson.dumps({"i": i}), partition=i % 4)
                )
            with anyio.fail_after(WAIT_S):
                await log.wait_for(more)
        records = await store.list_events(limit=10_000)

    values = sorted(r.data["i"] for r in records)
    assert values == list(range(n + 40))  # every message, each stored exactly once
    assert len({r.dedup_key for r in records}) == n + 40


async def test_saturated_intake_pauses_then_resumes_without_loss(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    log = CommitLog()
    sensor = WatchedSensor(
        "orders", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, log=log, **FAST
    )
    full = True
    refused = anyio.Event()

    def backlog() -> int:
        if full:
            refused.set()
            return 10
        return 0

    async with connect(store_for(tmp_path)) as store, producer(kafka_broker) as p:
        intake = StoreIntake(store, max_backlog=10, backlog=backlog)
        async with running(sensor, intake):
            targets: Offsets = {}
            for i in range(50):
                targets = merge(
                    targets, await send(p, kafka_topic, orjson.dumps({"i": i}), partition=i % 4)
                )
            with anyio.fail_after(WAIT_S):
                await refused.wait()
            assert await store.list_events() == []
            assert log.committed == {}
            full = False
            intake.capacity_changed()
            with anyio.fail_after(WAIT_S):
                await log.wait_for(targets)
        records = await store.list_events(limit=1000)
        assert await store.count_duplicates() == 0
    assert sorted(r.data["i"] for r in records) == list(range(50))


async def test_accepts_messages_from_confluent_kafka(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    log = CommitLog()
    sensor = WatchedSensor(
        "orders", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, log=log, **FAST
    )
    delivered: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append(msg)

    rdk = confluent_kafka.Producer({"bootstrap.servers": kafka_broker.bootstrap})
    rdk.produce(
        kafka_topic,
        value=orjson.dumps({"from": "librdkafka"}),
        key=b"c-1",
        partition=3,
        headers=[("origin-client", b"confluent")],
        on_delivery=on_delivery,
    )
    with anyio.fail_after(WAIT_S):
        left = await anyio.to_thread.run_sync(rdk.flush, WAIT_S)
    assert left == 0
    assert len(delivered) == 1
    target = {(kafka_topic, delivered[0].partition()): delivered[0].offset() + 1}

    async with store_and_intake(tmp_path) as (store, intake):
        async with running(sensor, intake):
            with anyio.fail_after(WAIT_S):
                await log.wait_for(target)
        (event,) = await store.list_events()
    assert event.data == {"from": "librdkafka"}
    assert event.subject == "c-1"
    assert event.extensions["headers"] == {"origin-client": "confluent"}
    assert event.dedup_key == f"kafka:{kafka_topic}/3/0"


async def test_pattern_subscription_reads_every_matching_topic(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    prefix = unique_topic("pat")
    await kafka_broker.create_topics({f"{prefix}-a": 1, f"{prefix}-b": 2, f"other-{prefix}": 1})
    log = CommitLog()
    sensor = WatchedSensor(
        "pat",
        pattern=f"^{prefix}-.*",
        bootstrap_servers=kafka_broker.bootstrap,
        log=log,
        **FAST,
    )
    assert f"/^{prefix}-.*/" in sensor.describe()
    async with store_and_intake(tmp_path) as (store, intake), producer(kafka_broker) as p:
        async with running(sensor, intake):
            t1 = await send(p, f"{prefix}-a", b"1", partition=0)
            t2 = await send(p, f"{prefix}-b", b"2", partition=1)
            await send(p, f"other-{prefix}", b"3", partition=0)
            with anyio.fail_after(WAIT_S):
                await log.wait_for(merge(t1, t2))
        records = await store.list_events()
    assert sorted((r.type, r.data) for r in records) == [
        (f"kafka.{prefix}-a", 1),
        (f"kafka.{prefix}-b", 2),
    ]
