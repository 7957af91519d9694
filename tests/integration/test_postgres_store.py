"""The PostgreSQL store as users meet it: losing the database while serving, migrations under
a lock, a newer schema refused, and one clear line for each way the URL can be wrong. The
engine suites run on PostgreSQL too (``EVFLOW_TEST_STORE=postgres``); these tests are about
what only a database server does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson
import psycopg
import pytest

from evflow import Engine, Event, Rule, RunState, flow, get_logger, task
from evflow.audit import verify
from evflow.errors import SchemaVersionError, StoreError
from evflow.http.server import HttpServer, create_app
from evflow.intake import StoreIntake
from evflow.sensors.webhook import WebhookSensor
from evflow.store import Store, connect
from evflow.store.postgres import PostgresStore
from evflow.store.postgres_schema import SCHEMA_VERSION
from tests.brokers import KafkaBroker
from tests.integration.test_kafka_sensor import (
    FAST,
    WAIT_S,
    events_by_offset,
    merge,
    producer,
    running,
    send,
)
from tests.kafka_seams import CommitLog, WatchedSensor
from tests.observers import LIMIT_S, until
from tests.postgres import database_unreachable, fresh_schema, terminate_backends

TOKEN = "t0ken"


@task
async def double(n: int) -> int:
    return 2 * n


@flow
def doubled(n: int) -> None:
    double(n)


@asynccontextmanager
async def webhook_service(url: str) -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    engine = Engine(url, grace_period_s=0)
    engine.add(doubled, Rule(on=WebhookSensor("in", token=TOKEN), params={"n": "{data.n}"}))
    async with engine, anyio.create_task_group() as tg:
        with anyio.fail_after(LIMIT_S):
            await engine.sensors_settled()
            port = await tg.start(
                HttpServer(access_log=False).serve, create_app(engine), "127.0.0.1", 0
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield engine, client
        tg.cancel_scope.cancel()


async def post(client: httpx.AsyncClient, n: int) -> httpx.Response:
    return await client.post(
        "/hooks/in",
        json={"n": n},
        headers={"Authorization": f"Bearer {TOKEN}", "X-Delivery-Id": f"d-{n}"},
    )


async def test_losing_the_database_refuses_webhooks_with_503_and_loses_nothing(
    postgres_url: str,
) -> None:
    async with webhook_service(postgres_url) as (engine, client):
        for n in range(3):
            assert (await post(client, n)).status_code == 202

        acknowledged = {0, 1, 2}
        refused = 0
        with database_unreachable(postgres_url):
            # Until evflow notices, a request may still be taken; once it has, each one is
            # answered 503 with Retry-After, and nothing it sent is kept.
            for n in range(3, 40):
                resp = await post(client, n)
                if resp.status_code == 503:
                    refused += 1
                    assert int(resp.headers["Retry-After"]) >= 1
                    assert "not stored" in resp.json()["error"]
                    if refused >= 3:
                        break
                else:
                    assert resp.status_code == 202, resp.text
                    acknowledged.add(n)
                await anyio.sleep(0.05)
            assert refused >= 3
            ready = await client.get("/readyz")
            assert ready.status_code == 503

        # Back: evflow reconnects by itself and takes events again.
        async def taken() -> bool:
            resp = await post(client, 100)
            return resp.status_code == 202

        await until(taken)
        acknowledged.add(100)

        async def all_done() -> bool:
            runs = await engine.store.list_runs(limit=200)
            done = {r.params["n"] for r in runs if r.state is RunState.SUCCEEDED}
            return acknowledged <= done

        await until(all_done)
        runs = await engine.store.list_runs(limit=200)
        ns = [r.params["n"] for r in runs]
        assert len(ns) == len(set(ns)), "a delivery started two runs"
        assert set(ns) == acknowledged, "every acknowledged delivery ran, and only those"


async def test_terminated_backends_are_replaced_without_losing_a_write(postgres_url: str) -> None:
    async with webhook_service(postgres_url) as (engine, client):
        for n in range(5):
            assert (await post(client, n)).status_code == 202
        assert terminate_backends(postgres_url.split("?", 1)[0]) >= 1
        for n in range(5, 10):
            resp = await post(client, n)
            assert resp.status_code in (202, 503)
            if resp.status_code == 503:  # the sender retries, as told
                await until(partial(_accepted, client, n))

        async def ten_runs() -> bool:
            runs = await engine.store.list_runs(limit=50)
            return sum(r.state is RunState.SUCCEEDED for r in runs) == 10

        await until(ten_runs)
    async with connect(postgres_url) as store:
        assert (await verify(store)).ok


async def _accepted(client: httpx.AsyncClient, n: int) -> bool:
    return (await post(client, n)).status_code == 202


async def test_two_processes_migrating_at_once_migrate_once(postgres_url: str) -> None:
    async def open_close() -> None:
        async with connect(postgres_url):
            pass

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(open_close)
    versions = await _versions(postgres_url)
    assert versions == list(range(1, SCHEMA_VERSION + 1))


async def _versions(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT version FROM evflow_schema ORDER BY version")
        return [int(r[0]) for r in await cur.fetchall()]


async def test_a_schema_newer_than_the_code_is_refused(postgres_url: str) -> None:
    async with connect(postgres_url):
        pass
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO evflow_schema (version) VALUES (%s)", (SCHEMA_VERSION + 5,))
    with pytest.raises(SchemaVersionError, match="newer than this evflow understands"):
        async with connect(postgres_url):
            pass


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda u: u._replace(netloc="postgres:pw@127.0.0.1:1"), "is the server running"),
        (lambda u: u._replace(path="/no_such_database_x"), "createdb no_such_database_x"),
        (lambda u: u._replace(netloc="nobody_here:pw@" + u.netloc.split("@")[-1]), "user"),
    ],
)
async def test_a_wrong_store_url_is_one_clear_line(
    postgres_url: str, mutate: object, says: str
) -> None:
    url = mutate(urlsplit(postgres_url)).geturl()  # type: ignore[operator]
    with pytest.raises(StoreError) as info:
        async with PostgresStore(url):
            pass
    message = str(info.value)
    assert says in message and "\n" not in message
    assert ":pw@" not in message  # the password is masked


@pytest.mark.kafka
async def test_kafka_pauses_while_the_database_is_away_and_loses_nothing(
    postgres_url: str, kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    log = CommitLog()
    sensor = WatchedSensor(
        "orders", kafka_topic, bootstrap_servers=kafka_broker.bootstrap, log=log, **FAST
    )
    async with connect(postgres_url) as store, producer(kafka_broker) as p:
        intake = StoreIntake(store)
        async with running(sensor, intake):
            first = merge(*[await send(p, kafka_topic, orjson.dumps({"n": n})) for n in range(5)])
            with anyio.fail_after(WAIT_S):
                await log.wait_for(first)
            with database_unreachable(postgres_url):
                late = merge(
                    *[await send(p, kafka_topic, orjson.dumps({"n": n})) for n in range(5, 10)]
                )
                await until(lambda: _paused(store))
                await anyio.sleep(1)  # the sensor keeps trying; nothing may be committed
                assert log.committed == first, "an offset was committed while the store was away"
            with anyio.fail_after(WAIT_S):
                await log.wait_for(late)
        events = await events_by_offset(store)
        assert sorted(e.data["n"] for e in events.values()) == list(range(10))
        assert await store.count_duplicates() == 0


async def _paused(store: Store) -> bool:
    return not store.available


@task
async def slow(n: int) -> int:
    await anyio.sleep(0.5)
    return n


@task
def add_one(n: int) -> int:
    return n + 1


@flow
def slow_then_add(n: int) -> None:
    add_one(slow(n))


async def test_runs_in_flight_finish_when_the_database_comes_back(postgres_url: str) -> None:
    async with Engine(postgres_url, grace_period_s=0) as engine:
        engine.add(slow_then_add)
        run_ids = [await engine.submit(slow_then_add, n=n) for n in range(5)]

        with database_unreachable(postgres_url):
            await anyio.sleep(1.5)  # every slow task ends, and the next one starts, meanwhile

        async def finished() -> bool:
            runs = [await engine.store.get_run(r) for r in run_ids]
            return all(r.state.finished for r in runs)

        await until(finished)
        runs = [await engine.store.get_run(r) for r in run_ids]
        assert [r.state for r in runs] == [RunState.SUCCEEDED] * 5, [r.error for r in runs]
        for r in runs:
            assert {t.name: t.result for t in r.tasks} == {
                "slow": str(r.params["n"]).encode(),
                "add_one": str(r.params["n"] + 1).encode(),
            }
        assert (await verify(engine.store)).ok


async def _prepared_after_reads(store: PostgresStore) -> int:
    """How many statements the store's connection has prepared after ten identical reads."""
    async with store:
        (accepted,) = await store.add_events([Event("x", source="s", id="1")])
        assert store._pool is not None
        async with store._pool.connection() as conn:  # the one connection the reads use
            for _ in range(10):  # past psycopg's default threshold of 5 runs
                await conn.execute("SELECT id FROM events WHERE uid = %s", (accepted.event_id,))
            cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])


async def test_prepared_statements_can_be_turned_off_for_pgbouncer(
    postgres_url: str, postgres_database: str
) -> None:
    store = PostgresStore(f"{postgres_url}&prepare_threshold=none")
    assert store.prepare_threshold is None and "prepare_threshold" not in store.url
    assert "search_path" in store.url  # the other parameters are kept
    assert await _prepared_after_reads(store) == 0
    assert await _prepared_after_reads(PostgresStore(fresh_schema(postgres_database))) > 0
    with pytest.raises(StoreError, match="prepare_threshold='sometimes'"):
        PostgresStore(f"{postgres_url}&prepare_threshold=sometimes")


@task
def echo_word(word: str) -> str:
    return word


@flow
def word_flow(word: str) -> None:
    echo_word(word)


@task
def nul_failure() -> None:
    get_logger().info("line with a \x00 in it")
    raise ValueError("bad \x00 byte")


@flow
def nul_flow() -> None:
    nul_failure()


async def test_nul_characters_are_refused_or_kept_readable_never_a_stuck_run(
    postgres_url: str,
) -> None:
    engine = Engine(postgres_url, grace_period_s=0)
    engine.add(word_flow, Rule(on=WebhookSensor("in", token=TOKEN), params={"word": "{data.w}"}))
    engine.add(nul_flow)
    async with engine, anyio.create_task_group() as tg:
        port = await tg.start(
            HttpServer(access_log=False).serve, create_app(engine), "127.0.0.1", 0
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            # A NUL in the event's own attributes: refused at the door.
            bad = await client.post(
                "/hooks/in",
                json={"specversion": "1.0", "type": "a\x00b", "source": "s", "id": "1"},
                headers={**auth, "Content-Type": "application/cloudevents+json"},
            )
            assert bad.status_code == 400 and "NUL" in bad.json()["error"]
            # A NUL in data mapped into a run's params: a dead letter saying why.
            took = await client.post("/hooks/in", json={"w": "a\x00b"}, headers=auth)
            assert took.status_code == 202
            fine = await client.post("/hooks/in", json={"w": "ok"}, headers=auth)
            assert fine.status_code == 202

            async def letters() -> list[Any]:
                return await engine.store.list_dead_letters()

            (letter,) = await until(letters)
            assert "NUL" in letter.reason

            async def ok_run() -> bool:
                runs = await engine.store.list_runs()
                return [r.params for r in runs if r.state is RunState.SUCCEEDED] == [{"word": "ok"}]

            await until(ok_run)
        # A task whose error and output carry a NUL: recorded, readable, the run ends.
        result = await engine.run(nul_flow)
        assert result.state is RunState.FAILED
        run = await engine.store.get_run(result.run_id)
        (t,) = run.tasks
        assert t.error is not None and "bad \ufffd byte" in t.error
        logs = [lg.message for lg in await engine.store.list_logs(run.id)]
        assert logs == ["line with a \ufffd in it"]
        tg.cancel_scope.cancel()
