"""Sensors through a running Engine: real files and a real Kafka broker become runs.

The sensor-level behaviour (settling, patterns, decoding, offsets) is covered in
test_file_sensor.py and test_kafka_sensor.py; here the question is what reaches the flows:
exactly one run per file or message, across restarts, crashes and a shared consumer group.
Webhooks through the engine are covered in test_webhook.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from evflow import Engine, Rule, RunState, flow, task
from evflow.records import RunRecord
from evflow.sensors import FileSensor, KafkaSensor
from evflow.signals import RunStateChanged
from evflow.store import Store, connect
from tests.brokers import KafkaBroker, unique_topic
from tests.engines import listening
from tests.kafka_seams import CommitLog, CrashBeforeCommit, Offsets, WatchedSensor
from tests.observers import LIMIT_S, RunLog, until
from tests.postgres import backend, store_for

SETTLE = 0.2
# Tansu holds every fetch for fetch_max_wait_ms and rebalances in about session_timeout / 2.
FAST: dict[str, Any] = {
    "fetch_max_wait_ms": 10,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 300,
}


class Tagged:
    """The observer of one engine among several feeding the same :class:`RunLog`."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.finished: list[RunRecord] = []

    def run_state(self, run: RunRecord) -> None:
        if run.state.finished:
            self.finished.append(run)
        self.log.run_state(run)

    def attach(self, engine: Engine) -> Tagged:
        engine.signals.subscribe(RunStateChanged, lambda s: self.run_state(s.run))
        return self


@asynccontextmanager
async def engine_with(
    store: str | os.PathLike[str] | Store,
    fl: Any,
    rule: Rule,
    runs: RunLog | Tagged,
    *,
    resume: bool = True,
) -> AsyncIterator[Engine]:
    """A running engine with ``fl`` and ``rule``; entered once its sensors are listening."""
    engine = Engine(store, grace_period_s=5, resume=resume)
    runs.attach(engine)
    engine.add(fl, rule)
    async with listening(engine):
        yield engine


# -- files ----------------------------------------------------------------------------------------


def ingest_flow(inbox: Path) -> Any:
    @task
    def read(path: str) -> dict[str, Any]:
        text = (inbox / path).read_text()
        return {"path": path, "lines": text.splitlines()}

    @flow
    def ingest(path: str) -> None:
        read(path)

    return ingest


def file_rule(inbox: Path) -> Rule:
    """A fresh sensor on ``inbox`` (a restarted process builds a new one) and its rule."""
    sensor = FileSensor(inbox, "*.csv", name="inbox", settle_s=SETTLE)
    return Rule(on=sensor, params={"path": "{data.path}"}, name="ingest-csv")


_barriers = count()


async def barrier(inbox: Path, runs: RunLog) -> None:
    """Write a fresh file and wait for its run: what was written before has been seen."""
    name = f"zz-barrier-{next(_barriers)}.csv"
    (inbox / name).write_text("barrier\n")
    await runs.wait_until(lambda rs: any(r.params["path"] == name for r in rs))


def paths(runs: list[RunRecord]) -> list[str]:
    return sorted(r.params["path"] for r in runs if "zz-barrier" not in r.params["path"])


async def test_a_csv_written_slowly_in_chunks_makes_exactly_one_run(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    runs = RunLog()
    rows = [f"{i},item-{i},{i * 10}" for i in range(60)]
    async with engine_with(store_for(tmp_path), ingest_flow(inbox), file_rule(inbox), runs):
        with (inbox / "orders.csv").open("w") as fh:
            fh.write("id,name,amount\n")
            for start in range(0, len(rows), 10):
                fh.write("".join(row + "\n" for row in rows[start : start + 10]))
                fh.flush()
                os.fsync(fh.fileno())
                await anyio.sleep(SETTLE / 3)  # a writer pausing for less than settle_s
        (run,) = await runs.wait_for(1)
        await barrier(inbox, runs)

    assert run.state is RunState.SUCCEEDED
    assert run.params == {"path": "orders.csv"}
    assert paths(runs.finished) == ["orders.csv"]
    async with connect(store_for(tmp_path)) as store:
        (task_record,) = (await store.get_run(run.id)).tasks
        assert task_record.result is not None
        assert orjson.loads(task_record.result)["lines"] == ["id,name,amount", *rows]


async def test_files_dropped_while_down_run_once_each_at_the_next_start(tmp_path: Path) -> None:
    db = store_for(tmp_path)
    inbox = tmp_path / "inbox"
    fl = ingest_flow(inbox)
    runs = RunLog()
    async with engine_with(db, fl, file_rule(inbox), runs):
        (inbox / "a.csv").write_text("a\n")
        await runs.wait_for(1)

    (inbox / "b.csv").write_text("b\n")  # while nothing runs
    (inbox / "c.csv").write_text("c\n")
    async with engine_with(db, fl, file_rule(inbox), runs) as engine:
        await runs.wait_until(lambda rs: {"b.csv", "c.csv"} <= set(paths(rs)))
        # the start-up scan saw a.csv again: dropped as a repeat, not run
        await until(lambda: _at_least(engine.store.count_duplicates(), 1))

    (inbox / "d.csv").write_text("d\n")
    async with engine_with(db, fl, file_rule(inbox), runs) as engine:
        await runs.wait_until(lambda rs: "d.csv" in paths(rs))
        await until(lambda: _at_least(engine.store.count_duplicates(), 1 + 3))
        assert await engine.store.count_runs() == 4
        assert await engine.store.count_duplicates(source="file/inbox") == 4

    assert paths(runs.finished) == ["a.csv", "b.csv", "c.csv", "d.csv"]
    assert all(r.state is RunState.SUCCEEDED for r in runs.finished)


async def _at_least(value: Awaitable[int], n: int) -> bool:
    return await value >= n


async def test_a_symlink_out_of_the_root_starts_no_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="evflow.sensors.file")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret\n")
    (inbox / "early.csv").symlink_to(outside / "secret.csv")  # there before the start
    runs = RunLog()
    async with engine_with(store_for(tmp_path), ingest_flow(inbox), file_rule(inbox), runs):
        (inbox / "late.csv").symlink_to(outside / "secret.csv")  # made while it runs
        await barrier(inbox, runs)

    assert paths(runs.finished) == []
    async with connect(store_for(tmp_path)) as store:
        events = await store.list_events(limit=100)
    assert all("zz-barrier" in e.data["path"] for e in events)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    for name in ("early.csv", "late.csv"):
        assert any(name in m and "outside the watched folder" in m for m in refused), refused


# -- Kafka ----------------------------------------------------------------------------------------


def order_flow() -> Any:
    @task
    def handle(order: dict[str, Any]) -> int:
        number: int = order["i"]
        return number

    @flow
    def orders(order: dict[str, Any]) -> None:
        handle(order)

    return orders


def order_rule(sensor: KafkaSensor) -> Rule:
    return Rule(on=sensor, params={"order": "{data}"}, name="order-per-message")


@asynccontextmanager
async def producer(broker: KafkaBroker) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def send(p: AIOKafkaProducer, topic: str, value: bytes, partition: int) -> Offsets:
    """Produce one record; return ``{(topic, partition): offset + 1}`` (its commit target)."""
    with anyio.fail_after(LIMIT_S):
        md = await p.send_and_wait(topic, value=value, partition=partition)
    return {(md.topic, md.partition): md.offset + 1}


def numbers(runs: list[RunRecord]) -> list[int]:
    return sorted(r.params["order"]["i"] for r in runs)


@pytest.mark.kafka
async def test_each_message_runs_once_and_a_poison_message_is_dead_lettered(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    sensor = KafkaSensor(
        "orders",
        kafka_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=unique_topic("group"),
        **FAST,
    )
    runs = RunLog()
    async with (
        engine_with(store_for(tmp_path), order_flow(), order_rule(sensor), runs) as engine,
        producer(kafka_broker) as p,
    ):
        for i in range(20):
            await send(p, kafka_topic, orjson.dumps({"i": i}), partition=i % 4)
        await send(p, kafka_topic, b"{not json", partition=1)
        await send(p, kafka_topic, orjson.dumps({"i": 20}), partition=1)  # after the poison

        finished = await runs.wait_for(21)
        assert numbers(finished) == list(range(21))
        assert all(r.state is RunState.SUCCEEDED for r in finished)
        letters = await until(engine.store.list_dead_letters)
        assert len(letters) == 1
        assert letters[0].payload == b"{not json"
        assert f"topic {kafka_topic} partition 1 offset 5" in letters[0].reason
        assert "not valid JSON" in letters[0].reason
        assert await engine.store.count_runs() == 21


@pytest.mark.kafka
async def test_a_message_stored_but_not_committed_is_redelivered_and_runs_once(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    db = store_for(tmp_path)
    common: dict[str, Any] = {
        "bootstrap_servers": kafka_broker.bootstrap,
        "group_id": unique_topic("group"),
        **FAST,
    }
    runs = RunLog()
    fl = order_flow()
    async with producer(kafka_broker) as p:
        # 1. the event is stored and its run started; the process stops before the commit
        crashing = CrashBeforeCommit("orders", kafka_topic, **common)
        async with engine_with(db, fl, order_rule(crashing), runs):
            await send(p, kafka_topic, orjson.dumps({"i": 1}), partition=2)
            with anyio.fail_after(LIMIT_S):
                await crashing.stored_not_committed.wait()
            await runs.wait_for(1)

        # 2. the next start is handed the uncommitted message again; the store's cursor,
        # committed with the event, says it is stored: skipped, no second run
        log = CommitLog()
        again = WatchedSensor("orders", kafka_topic, log=log, **common)
        async with engine_with(db, fl, order_rule(again), runs) as engine:
            target = await send(p, kafka_topic, orjson.dumps({"i": 2}), partition=2)
            await log.wait_for(target)  # offset 1 committed
            await runs.wait_for(2)
            assert len(await engine.store.list_events()) == 2
            assert await engine.store.count_runs() == 2

    assert numbers(runs.finished) == [1, 2]


@pytest.mark.kafka
async def test_two_engines_in_one_group_run_every_message_exactly_once(
    kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path
) -> None:
    """Two evflow consumers in one group split the partitions. They share one store: that is
    what lets either of them recognise a message the other has already stored."""
    group = unique_topic("group")
    fl = order_flow()
    runs = RunLog()
    first, second = Tagged(runs), Tagged(runs)

    def consumer() -> KafkaSensor:
        return KafkaSensor(
            "orders", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, group_id=group, **FAST
        )

    n = 40
    async with connect(store_for(tmp_path)) as store:
        async with (
            engine_with(store, fl, order_rule(consumer()), first) as one,
            # entered once its consumer has been given its partitions: the group is split. Only
            # one engine per store resumes what a dead process left (and holds the store's
            # lease): the second runs the work it takes in itself.
            engine_with(store, fl, order_rule(consumer()), second, resume=False) as two,
            producer(kafka_broker) as p,
        ):
            for i in range(n):
                await send(p, kafka_topic, orjson.dumps({"i": i}), partition=i % 4)
            await runs.wait_for(n)
            taken = [e.intake.accepted["kafka/orders"] for e in (one, two)]
        assert await store.count_runs() == n
        assert await store.count_duplicates() == 0

    assert numbers(runs.finished) == list(range(n))  # every message ran, each exactly once
    assert taken[0] and taken[1] and sum(taken) == n  # each consumer took its share in
    if backend() == "sqlite":
        # On one machine's store, each engine runs what it took in; on PostgreSQL, the cluster's
        # leader decides every event (tests/integration/test_cluster.py).
        assert first.finished and second.finished
        partitions = [{r.params["order"]["i"] % 4 for r in t.finished} for t in (first, second)]
        assert not partitions[0] & partitions[1]  # a partition belongs to one consumer at a time
