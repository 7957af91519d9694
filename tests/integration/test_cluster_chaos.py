"""Chaos on a cluster of three ``evflow serve`` processes sharing one PostgreSQL store and one
Kafka consumer group, under a mixed load: webhooks to every instance (some re-sent with the
same delivery id), Kafka records, files, and a schedule firing every second. The leader is
SIGKILLed and started again, another instance is SIGSTOPped past its TTL and woken, and the
listener connections are terminated. Then, from the store: every input gave exactly one event,
every event exactly one run, every fire time one event, and every run succeeded; a task ran
twice only where its instance died or stalled while running it; the stalled instance wrote
nothing after its takeover; and a pool of two slots shared across the cluster never had more
than two tries running at once."""

from __future__ import annotations

import itertools
import os
import random
import signal
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from tests.brokers import KafkaBroker
from tests.integration.test_cluster_faults import last_write_after_takeover
from tests.integration.test_service import Service, clean_env, serving, write
from tests.observers import until
from tests.postgres import server_of

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WORK_PY = """
import os
import time
from pathlib import Path

from evflow import Interval, flow, task

WORK = Path(os.environ["WORK"])


def held(what: str, key: str) -> None:
    with (WORK / "pool.log").open("a") as f:
        f.write(f"{what} {time.time()!r} {os.getpid()} {key}\\n")


@task(pool="warehouse")
def note(source: str, key: str) -> str:
    held("start", f"{source} {key}")
    time.sleep(0.1)
    with (WORK / "handled.log").open("a") as f:
        f.write(f"{source} {key} {os.getpid()}\\n")
    held("end", f"{source} {key}")
    return key


@flow
def handle(source: str, key: str) -> None:
    note(source, key)


@flow(schedule=Interval(1))
def tick(scheduled_time: str = "") -> None:
    note("tick", scheduled_time)
"""

INPUTS_PY = """
import os

from evflow import Rule
from evflow.sensors import FileSensor, KafkaSensor, WebhookSensor

hook = WebhookSensor("orders")
Rule(on=hook, flow="handle", params={"source": "hook", "key": "{data.key}"})

stream = KafkaSensor(
    "stream", topics=os.environ["TOPIC"], bootstrap_servers=os.environ["BOOTSTRAP"],
    group_id="chaos",
)
Rule(on=stream, flow="handle", params={"source": "kafka", "key": "{data.key}"})

drop = FileSensor(os.environ["DROP"], pattern="*.txt", settle_s=0.2)
Rule(on=drop, flow="handle", params={"source": "file", "key": "{data.path}"})
"""

LIMIT_S = 90  # a Kafka rebalance after a killed member waits out its session timeout


def project(root: Path) -> Path:
    write(
        root / "evflow.toml",
        """
        [engine]
        grace_period_s = 1

        [cluster]
        heartbeat_s = 0.3
        ttl_s = 2
        max_runs = 3  # the leader creates the runs: the rest spread to the others

        [pools]
        warehouse = { slots = 2, scope = "cluster" }
        """,
    )
    write(root / "flows" / "__init__.py", "")
    (root / "flows" / "work.py").write_text(WORK_PY)
    write(root / "sensors" / "__init__.py", "")
    (root / "sensors" / "inputs.py").write_text(INPUTS_PY)
    (root / "drop").mkdir()
    return root


def base_url(service: Service) -> str:
    line = next(ln for ln in service.stdout.splitlines() if ln.strip().startswith("http "))
    return line.split()[1]


def query(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def taken_over(url: str, pid: int) -> bool:
    rows = query(
        url, "SELECT 1 FROM instances WHERE pid = %s AND taken_over_by IS NOT NULL", (pid,)
    )
    return bool(rows)


def leader_pid(url: str) -> int | None:
    rows = query(url, "SELECT pid FROM leases WHERE name = 'leader' AND expires_at > now()")
    return int(str(rows[0][0])) if rows else None


POOL_SLOTS = 2


def taken_over_since(url: str) -> dict[int, float]:
    """The instances taken over (by pid): when each last heartbeat landed. From then on its
    places were free to others once its TTL ran out."""
    rows = query(
        url,
        "SELECT pid, extract(epoch from heartbeat_at)::float8 FROM instances "
        "WHERE taken_over_by IS NOT NULL",
    )
    return {int(str(pid)): float(str(at)) for pid, at in rows}


def most_at_once(log: str, frozen: Mapping[int, float]) -> int:
    """The most tries of the pool's task running at one time across the instances, from the
    start and end lines they wrote. A try without an end was killed with its instance; a try of
    an instance taken over (``frozen``: pid, its last heartbeat) still running after its last
    heartbeat is left out: its place was free to others once its TTL ran out (it may have
    been dispatched before a stall and begun after it), and it ends without running on."""
    open_: dict[tuple[str, str], list[float]] = {}
    edges: list[tuple[float, int]] = []
    for line in log.splitlines():
        what, at, pid, key = line.split(" ", 3)
        if what == "start":
            open_.setdefault((pid, key), []).append(float(at))
            continue
        begun, ended = open_[(pid, key)].pop(0), float(at)
        if int(pid) in frozen and ended > frozen[int(pid)]:
            continue
        edges += [(begun, 1), (ended, -1)]
    running = peak = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


class Load:
    """What the test sent, to compare with what the store holds."""

    def __init__(self, root: Path, producer: AIOKafkaProducer, topic: str) -> None:
        self.root = root
        self.producer = producer
        self.topic = topic
        self.deliveries: set[str] = set()
        self.records = 0
        self.files = 0
        self._n = itertools.count()

    async def webhooks(self, services: Sequence[Service], n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(n):
                k = next(self._n)
                delivery = f"d{k}"
                body = {"key": f"h{k}"}
                targets = [random.choice(services)]
                if k % 4 == 0:  # re-sent, to another instance, with the same delivery id
                    targets.append(random.choice(services))
                for service in targets:
                    answer = await http.post(
                        f"{base_url(service)}/hooks/orders",
                        json=body,
                        headers={"X-Delivery-Id": delivery},
                    )
                    assert answer.status_code in (200, 202), answer.text
                self.deliveries.add(delivery)

    async def kafka(self, n: int) -> None:
        for _ in range(n):
            k = next(self._n)
            await self.producer.send_and_wait(
                self.topic, f'{{"key": "k{k}"}}'.encode(), partition=k % 4
            )
            self.records += 1

    def files_(self, n: int) -> None:
        for _ in range(n):
            k = next(self._n)
            part = self.root / "drop" / f"f{k}.txt.part"
            part.write_text(str(k))
            part.rename(part.with_suffix(""))
            self.files += 1

    async def all(self, services: Sequence[Service]) -> None:
        await self.webhooks(services, 12)
        await self.kafka(12)
        self.files_(3)


async def test_a_cluster_under_load_loses_and_doubles_nothing_through_kills_and_stalls(
    tmp_path: Path, postgres_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    root = project(tmp_path / "project")
    env = clean_env(
        EVFLOW_STORE_URL=postgres_url,
        WORK=str(root),
        TOPIC=kafka_topic,
        BOOTSTRAP=kafka_broker.bootstrap,
        DROP=str(root / "drop"),
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(producer.stop)
        names = iter(range(100))

        async def start() -> Service:
            return await stack.enter_async_context(
                serving(root, tmp_path / f"logs-{next(names)}", env)
            )

        services = [await start() for _ in range(3)]
        load = Load(root, producer, kafka_topic)
        await load.all(services)

        # The leader dies (with whatever it was running and deciding) and comes back.
        pid = await until(lambda: anyio.to_thread.run_sync(leader_pid, postgres_url))
        leader = next(s for s in services if s.process.pid == pid)
        leader.process.send_signal(signal.SIGKILL)
        await leader.process.wait()
        services = [s for s in services if s is not leader]
        await load.all(services)
        services.append(await start())
        await load.all(services)

        # An instance stalls past its TTL: the others take its work; woken, it stops.
        stalled = services[0]
        os.kill(stalled.process.pid, signal.SIGSTOP)
        try:
            # The others declare it dead once it is silent past its TTL, then take more load.
            await until(
                lambda: anyio.to_thread.run_sync(taken_over, postgres_url, stalled.process.pid),
                within_s=30,
            )
            await load.all(services[1:])
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)
        with anyio.fail_after(30):
            assert await stalled.process.wait() != 0
        services = services[1:]

        # The listeners lose their connections: the polls behind them still find the work.
        name = urlsplit(postgres_url).path.lstrip("/")
        ended = query(
            server_of(postgres_url),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query LIKE 'LISTEN%%'",
            (name,),
        )
        assert ended, "no listener connection was found to terminate"
        await load.all(services)

        inputs = len(load.deliveries) + load.records + load.files

        def settled() -> bool:
            handled = query(postgres_url, "SELECT count(*) FROM runs WHERE flow = 'handle'")
            open_runs = query(
                postgres_url, "SELECT count(*) FROM runs WHERE state NOT IN ('succeeded')"
            )
            return handled[0][0] == inputs and open_runs[0][0] == 0

        await until(lambda: anyio.to_thread.run_sync(settled), within_s=LIMIT_S)
        # The instances that died: the killed one, the stalled one, and on a loaded machine any
        # that stalled on its own and was taken over (it stops by itself).
        frozen = taken_over_since(postgres_url)
        assert leader.process.pid in frozen and stalled.process.pid in frozen
        for s in services:
            code = await s.stop()
            # A loaded machine can stall an instance past its TTL while it stops: the others
            # take it over, and it exits with the taken-over status instead of 0.
            assert code == 0 or taken_over(postgres_url, s.process.pid), (s.process.pid, code)
        frozen = taken_over_since(postgres_url)

    # Every input gave exactly one event...
    by_source: dict[str, int] = dict(
        (str(k), int(str(v)))
        for k, v in query(
            postgres_url,
            "SELECT source, count(*) FROM events WHERE source <> '' GROUP BY source",
        )
    )
    hooks = [v for k, v in by_source.items() if "orders" in str(k)]
    kafka = [v for k, v in by_source.items() if "stream" in str(k) or "kafka" in str(k)]
    files = [v for k, v in by_source.items() if "drop" in str(k) or "file" in str(k)]
    assert hooks == [len(load.deliveries)], by_source
    assert kafka == [load.records], by_source
    assert files == [load.files], by_source
    # ...every event exactly one run, and every run succeeded...
    doubled = query(
        postgres_url,
        "SELECT params->>'source', params->>'key', count(*) FROM runs WHERE flow = 'handle' "
        "GROUP BY 1, 2 HAVING count(*) > 1",
    )
    assert doubled == []
    assert query(postgres_url, "SELECT DISTINCT state FROM runs") == [("succeeded",)]
    # ...and every fire time of the schedule one event and one run.
    ticks = query(
        postgres_url,
        "SELECT params->>'scheduled_time', count(*) FROM runs WHERE flow = 'tick' GROUP BY 1",
    )
    assert ticks and all(n == 1 for _, n in ticks)
    # A task ran twice only where an instance died (or stalled) while running it...
    ran: dict[str, list[int]] = {}
    for line in (root / "handled.log").read_text().splitlines():
        what, by = line.rsplit(" ", 1)
        ran.setdefault(what, []).append(int(by))
    again = {k: pids for k, pids in ran.items() if len(pids) > 1}
    assert all(set(pids) & frozen.keys() for pids in again.values()), again
    # ...and nothing an instance taken over wrote landed after that: its audit chain (the one
    # it opened, by its pid) ends before that moment.
    for pid in frozen:
        taken_at, last_write = last_write_after_takeover(postgres_url, pid)
        assert last_write < taken_at, pid
    # The cluster pool's slots were never exceeded, across the three instances...
    log = (root / "pool.log").read_text()
    assert most_at_once(log, frozen) <= POOL_SLOTS
    # ...and were used: the count above is not zero for want of tries.
    assert log.count("start ") >= inputs
