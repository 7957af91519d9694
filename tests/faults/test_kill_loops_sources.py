"""SIGKILL loops under files landing and under Kafka records: one event and one run per input.

The same attack as the webhook loop in ``test_kill_loops.py``, on the two other intakes. A real
``evflow serve`` is SIGKILLed several times while files are renamed into its watched folder, or
while records are produced to its Kafka topic (the real test broker); inputs also arrive while
it is down. A last clean start must then hold exactly one event and one run per file (per
topic/partition/offset), every run succeeded, and a task started twice only when a kill
interrupted the process running it (from the ledger each task execution appends to).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from evflow.records import EventRecord
from evflow.store import connect
from tests.brokers import KafkaBroker
from tests.faults.test_kill_loops import LIMIT_S, base_url, killed_at_the_end
from tests.integration.test_service import serving, write
from tests.observers import until

pytestmark = pytest.mark.slow

KILLS = 3
PER_ROUND = 30  # inputs while the service runs, in each round
WHILE_DOWN = 5  # inputs while it is dead, before each restart

FLOW = '''
"""Each execution appends to ledger.txt, flushed at once: what ran, and how often."""

import os

import anyio

from evflow import flow, task


def note(line: str) -> None:
    fd = os.open("ledger.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


@task
async def handle(key: str) -> str:
    note(f"start {key} {os.getpid()}")
    await anyio.sleep(0.2)  # long enough for the kill to land mid-task
    note(f"end {key} {os.getpid()}")
    return key


@flow
def handle_input(key: str) -> None:
    handle(key)
'''


def write_project(root: Path, settings: str, sensor: str) -> None:
    write(
        root / "evflow.toml",
        f'[store]\npath = "var/evflow.db"\n\n[engine]\ngrace_period_s = 0.5\n{settings}\n',
    )
    write(root / "flows" / "__init__.py", "")
    write(root / "flows" / "inputs.py", FLOW)
    write(root / "sensors" / "inputs.py", sensor)


async def settle_and_check(
    project: Path,
    logs: Path,
    killed: list[int],
    expected: dict[str, str],
    input_of: Callable[[EventRecord], str],
) -> None:
    """Start cleanly, wait for a finished run per expected input, stop, and check the store and
    the ledger: one event and one run per input, tasks re-run only after a kill.

    ``expected`` maps each input (as ``input_of`` names an event's) to the key its task
    execution writes to the ledger."""
    async with serving(project, logs) as service:
        url = base_url(service.stdout)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def all_done() -> bool:
                resp = await client.get("/api/runs", params={"limit": 1000})
                runs = resp.json()["runs"]
                return len(runs) >= len(expected) and all(
                    r["state"] in ("succeeded", "failed", "cancelled") for r in runs
                )

            await until(all_done, within_s=LIMIT_S)
        assert await service.stop() == 0

    async with connect(project / "var" / "evflow.db") as store:
        events = await store.list_events(limit=100_000)
        runs = await store.list_runs(limit=100_000)
    per_input = Counter(input_of(e) for e in events)
    assert {k for k, c in per_input.items() if c > 1} == set(), "an input made two events"
    assert set(per_input) == set(expected), "an input was lost (or one came from nowhere)"
    started_by = Counter(eid for r in runs for eid in r.trigger.get("events", ()))
    assert len(runs) == len(events)
    assert set(started_by) == {e.uid for e in events}
    assert all(c == 1 for c in started_by.values()), "an event started two runs"
    assert {str(r.state) for r in runs} == {"succeeded"}
    ends: dict[str, list[int]] = {}
    starts: dict[str, list[int]] = {}
    for line in (project / "ledger.txt").read_text().splitlines():
        what, key, pid = line.split()
        (starts if what == "start" else ends).setdefault(key, []).append(int(pid))
    assert set(ends) == set(expected.values())
    for key, pids in starts.items():
        assert len(pids) == len(set(pids)), f"input {key} ran twice in one process: {pids}"
        assert set(pids[:-1]) <= set(killed), f"input {key} re-ran without a kill: {pids}"


async def consuming(url: str, *, more_than: int) -> None:
    """Wait until the service holds more than ``more_than`` events."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def enough() -> bool:
            resp = await client.get("/api/events", params={"limit": 500})
            return len(resp.json()["events"]) > more_than

        await until(enough, within_s=LIMIT_S)


async def running(url: str) -> None:
    """Wait until a run is running: the kill that follows interrupts a task."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def some() -> bool:
            resp = await client.get("/api/runs", params={"state": "running", "limit": 1})
            return bool(resp.json()["runs"])

        await until(some, within_s=LIMIT_S)


# -- files ------------------------------------------------------------------------------------

FILE_SENSOR = """
from evflow import Rule
from evflow.sensors import FileSensor

inbox = FileSensor("inbox", pattern="*.csv", settle_s=0.1)
Rule(on=inbox, flow="handle_input", params={"key": "{data.path}"})
"""


def land(inbox: Path, n: int) -> str:
    """Write file ``n`` under a temporary name and rename it in, as the README says to."""
    name = f"f-{n:05d}.csv"
    part = inbox / f"{name}.part"
    part.write_text(f"id,n\n{n},{n}\n")
    os.rename(part, inbox / name)
    return name


async def test_sigkill_while_files_land_loses_and_doubles_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_project(project, "", FILE_SENSOR)
    inbox = project / "inbox"
    inbox.mkdir()
    landed: dict[str, str] = {}  # file name -> the task's key (the same)
    killed: list[int] = []
    n = 0
    for round_ in range(KILLS):
        for _ in range(WHILE_DOWN):
            name = land(inbox, n)
            landed[name] = name
            n += 1
        async with killed_at_the_end(project, tmp_path / f"logs-{round_}", killed) as (_, url):
            # half, then wait for the sensor to take files, then the rest with the kill landing
            # among them: some settled and running, some settling, some not seen yet
            for _ in range(PER_ROUND // 2):
                name = land(inbox, n)
                landed[name] = name
                n += 1
            await consuming(url, more_than=len(landed) - PER_ROUND // 2 - WHILE_DOWN)
            for i in range(PER_ROUND // 2):
                name = land(inbox, n)
                landed[name] = name
                n += 1
                if i % 3 == 0:
                    await anyio.sleep(0.05)
            await running(url)
    await settle_and_check(
        project, tmp_path / "logs-final", killed, landed, lambda e: str(e.data["path"])
    )


# -- Kafka ------------------------------------------------------------------------------------


def kafka_sensor(topic: str) -> str:
    return f"""
from evflow import Rule
from evflow.sensors import KafkaSensor

records = KafkaSensor(
    "records",
    topics="{topic}",
    group_id="kill-loop",
    fetch_max_wait_ms=10,
    session_timeout_ms=3000,
    heartbeat_interval_ms=300,
)
Rule(on=records, flow="handle_input", params={{"key": "{{data.key}}"}})
"""


async def produce(producer: AIOKafkaProducer, topic: str, n: int, produced: dict[str, str]) -> None:
    """Produce record ``n``; note where the broker put it (its delivery report)."""
    key = f"r-{n:05d}"
    meta = await producer.send_and_wait(topic, orjson.dumps({"key": key}))
    produced[f"{meta.partition}/{meta.offset}"] = key


@pytest.mark.kafka
async def test_sigkill_under_kafka_records_loses_and_doubles_nothing(
    tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    project = tmp_path / "project"
    write_project(
        project, f'[kafka]\nbootstrap = "{kafka_broker.bootstrap}"', kafka_sensor(kafka_topic)
    )
    produced: dict[str, str] = {}  # "partition/offset" -> key
    killed: list[int] = []
    n = 0
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for round_ in range(KILLS):
            for _ in range(WHILE_DOWN):
                await produce(producer, kafka_topic, n, produced)
                n += 1
            async with killed_at_the_end(project, tmp_path / f"logs-{round_}", killed) as (_, url):
                for _ in range(PER_ROUND // 2):
                    await produce(producer, kafka_topic, n, produced)
                    n += 1
                # kill only once the consumer takes records: a kill before it has joined its
                # group would test nothing
                await consuming(url, more_than=len(produced) - PER_ROUND // 2 - WHILE_DOWN)
                for _ in range(PER_ROUND // 2):
                    await produce(producer, kafka_topic, n, produced)
                    n += 1
                await running(url)
    finally:
        await producer.stop()

    def where(e: EventRecord) -> str:
        assert e.extensions["topic"] == kafka_topic
        return f"{e.extensions['partition']}/{e.extensions['offset']}"

    await settle_and_check(project, tmp_path / "logs-final", killed, produced, where)
    # and each record's event carries that record's key
    async with connect(project / "var" / "evflow.db") as store:
        events = await store.list_events(limit=100_000)
    assert {where(e): e.data["key"] for e in events} == produced
