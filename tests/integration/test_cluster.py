"""Cluster mode on PostgreSQL: each instance registers, heartbeats from a thread of its own,
and stops its work once it is out of the cluster; ``evflow cluster`` and ``/api/cluster`` show
the instances and the leases they hold."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import orjson
import psycopg
import pytest
from playwright.async_api import expect

from evflow import Engine, Event, Rule, RunState, TaskState, flow, task
from evflow.cluster import ClusterOptions
from evflow.cluster.feed import PendingFeed
from evflow.cluster.status import cluster_status
from evflow.errors import ConfigError, OwnershipLost
from evflow.http.bodies import ClusterView, Instance, Lease
from evflow.records import InstanceRecord
from evflow.run.ends import RECHECK_S
from evflow.run.new_runs import new_run, queued_changes
from evflow.service.config import load_config
from evflow.store import connect
from evflow.store.postgres import PostgresStore
from evflow.store.postgres_batch import _notify_ends
from evflow.store.postgres_instances import FENCE
from tests.integration.browser import chromium
from tests.integration.test_service import clean_env, evflow, write
from tests.integration.test_ui_browser import screenshot, served
from tests.integration.test_ui_views import open_page
from tests.observers import LIMIT_S, until
from tests.postgres import database_unreachable

FAST = ClusterOptions(heartbeat_s=0.1, ttl_s=3.0)


def registry_now(url: str, instance_id: str) -> tuple[str, float, float]:
    """(state, heartbeat age, TTL) of an instance, read over a connection of the test's own
    (usable while the engine's event loop is blocked)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT stopped_at IS NOT NULL, extract(epoch from now() - heartbeat_at), ttl_s "
            "FROM instances WHERE id = %s",
            (instance_id,),
        ).fetchone()
    assert row is not None, f"instance {instance_id} is not registered"
    stopped, age, ttl = bool(row[0]), float(row[1]), float(row[2])
    state = "stopped" if stopped else "alive" if age <= ttl else "dead"
    return state, age, ttl


def stall(seconds: float) -> None:
    """Hold the event loop, as CPU-bound work on it would."""
    time.sleep(seconds)


async def instances(url: str) -> list[InstanceRecord]:
    async with PostgresStore(url) as store:
        return await store.list_instances()


async def test_an_instance_registers_and_heartbeats_from_a_thread_of_its_own(
    postgres_url: str,
) -> None:
    async with Engine(postgres_url, grace_period_s=0, cluster=FAST) as engine:
        member = engine.membership
        assert member is not None
        (me,) = await instances(postgres_url)
        assert (me.id, me.state, me.pid, me.ttl_s) == (member.id, "alive", member.pid, 3.0)
        assert me.version == __import__("evflow").__version__
        await until(lambda: anyio.to_thread.run_sync(lambda: member.beats >= 2))
        # CPU-bound work holding the event loop (for less than half the TTL) does not stop
        # the heartbeat: the thread keeps beating.
        before = member.beats
        stall(1.0)
        assert member.beats > before
        state, age, _ = registry_now(postgres_url, member.id)
        assert state == "alive" and age < 1.0
    # A clean stop is recorded as such: stopped, not dead.
    (me,) = await instances(postgres_url)
    assert me.state == "stopped" and not me.alive


async def test_a_stalled_event_loop_stops_the_heartbeat_and_the_instance_stops_its_work(
    postgres_url: str,
) -> None:
    options = ClusterOptions(heartbeat_s=0.1, ttl_s=1.0)
    seen: list[str] = []
    with pytest.raises(BaseExceptionGroup) as caught:
        async with Engine(postgres_url, grace_period_s=0, cluster=options) as engine:
            member = engine.membership
            assert member is not None
            await until(lambda: anyio.to_thread.run_sync(lambda: member.beats >= 1))
            # The loop stalls past the TTL: the heartbeat stops after half of it, so the
            # others see this instance dead while it is stalled...
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                state, _, _ = registry_now(postgres_url, member.id)
                if state == "dead":
                    seen.append(state)
                    break
                stall(0.1)
            # ...and once it runs again, it finds itself out of the cluster and stops.
            with anyio.fail_after(LIMIT_S):
                await anyio.sleep_forever()
    assert seen == ["dead"]
    lost = caught.value.split(OwnershipLost)[0]
    assert lost is not None
    assert "out of the cluster" in str(lost.exceptions[0])
    (me,) = await instances(postgres_url)
    assert me.state == "dead"  # not marked stopped: it did not stop cleanly


async def test_losing_the_database_for_longer_than_the_ttl_stops_the_instance(
    postgres_url: str,
) -> None:
    options = ClusterOptions(heartbeat_s=0.1, ttl_s=1.0)
    with pytest.raises(BaseExceptionGroup) as caught:
        async with Engine(postgres_url, grace_period_s=0, cluster=options) as engine:
            member = engine.membership
            assert member is not None
            with database_unreachable(postgres_url.split("?", 1)[0]):
                with anyio.fail_after(LIMIT_S):
                    await anyio.sleep_forever()  # until the instance stops itself
    lost = caught.value.split(OwnershipLost)[0]
    assert lost is not None
    assert "no heartbeat for" in str(lost.exceptions[0])


async def test_evflow_cluster_and_the_api_show_instances_and_leases(
    postgres_url: str, tmp_path: Path
) -> None:
    async with (
        Engine(postgres_url, grace_period_s=0, cluster=FAST) as engine,
        served(engine) as base,
    ):
        member = engine.membership
        assert member is not None
        await member.advertise(base)
        async with httpx.AsyncClient(base_url=base) as http:
            body = (await http.get("/api/cluster")).json()
        assert body["mode"] == "cluster" and body["this"] == member.id and body["alive"] == 1
        (inst,) = body["instances"]
        assert (inst["id"], inst["state"], inst["http"]) == (member.id, "alive", base)
        # the shapes the OpenAPI document gives, every key of each
        assert set(body) == ClusterView.__required_keys__
        assert set(inst) == Instance.__required_keys__
        assert all(set(lease) == Lease.__required_keys__ for lease in body["leases"])
        assert [lease["name"] for lease in body["leases"]] == ["leader"]

        code, out, err = await evflow(
            "cluster", "--store", postgres_url, cwd=tmp_path, env=clean_env()
        )
        assert code == 0, err
        assert "1 alive of 1 registered" in out and "RUNS" in out
        row = next(line for line in out.splitlines() if line.startswith(member.id))
        assert "alive" in row and base in row
        assert any(line.startswith("leader ") for line in out.splitlines())

        code, out, err = await evflow("cluster", "--url", base, "--json", cwd=tmp_path)
        assert code == 0, err
        assert orjson.loads(out)["instances"][0]["id"] == member.id

        async with httpx.AsyncClient(base_url=base) as http:
            metrics = (await http.get("/metrics")).text
        assert "evflow_cluster_instances_alive 1.0" in metrics
        assert "evflow_cluster_leader 1.0" in metrics
        assert "evflow_cluster_fenced 0.0" in metrics


async def test_evflow_cluster_on_a_sqlite_store_says_one_instance_runs_it(tmp_path: Path) -> None:
    path = tmp_path / "evflow.db"
    async with connect(path):
        pass
    code, out, err = await evflow("cluster", "--store", str(path), cwd=tmp_path)
    assert code == 0, err
    assert "one instance" in out and "PostgreSQL" in out


def test_cluster_settings_are_checked(tmp_path: Path) -> None:
    write(tmp_path / "evflow.toml", "[cluster]\nheartbeat_s = 10\nttl_s = 15\n")
    with pytest.raises(ConfigError, match=r"ttl_s = 15 must be at least twice heartbeat_s"):
        load_config(tmp_path, env={})
    write(tmp_path / "evflow.toml", "[cluster]\nttl_s = 0\n")
    with pytest.raises(ConfigError, match=r"\[cluster\]\.ttl_s: 0 is out of range"):
        load_config(tmp_path, env={})
    write(tmp_path / "evflow.toml", "[cluster]\nttl_s = 40\n")
    env = {"EVFLOW_CLUSTER_TTL_S": "12", "EVFLOW_CLUSTER_HEARTBEAT_S": "2"}
    cfg = load_config(tmp_path, env=env)
    assert (cfg.cluster.heartbeat_s, cfg.cluster.ttl_s) == (2.0, 12.0)


# -- two instances on one store -------------------------------------------------------------------

gate = {"release": anyio.Event()}
ran: list[str] = []


@task
async def record(n: int) -> int:
    ran.append(f"record {n}")
    return n


@task
async def held(n: int) -> int:
    ran.append(f"held {n}")
    await gate["release"].wait()
    return n


@flow
def recorded(n: int) -> None:
    record(n)


@flow
def holding(n: int) -> None:
    held(record(n))


def instance(url: str) -> Engine:
    engine = Engine(url, grace_period_s=0, cluster=FAST)
    engine.add(recorded, Rule(on="order.placed", params={"n": "{data.n}"}))
    engine.add(holding)
    return engine


async def run_rows(url: str) -> list[tuple[str, str, str | None, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT id, state, owner, epoch FROM runs ORDER BY created_at")
        return [(str(r[0]), str(r[1]), r[2], int(r[3])) for r in rows.fetchall()]


async def test_an_event_accepted_by_any_instance_is_decided_once_by_the_leader(
    postgres_url: str,
) -> None:
    ran.clear()
    async with instance(postgres_url) as first, instance(postgres_url) as second:
        assert first.node is not None and second.node is not None
        assert first.node.is_leader and not second.node.is_leader
        await second.intake.submit([Event("order.placed", data={"n": 7})])
        await first.intake.submit([Event("order.placed", data={"n": 8})])

        async def both_done() -> bool:
            rows = await run_rows(postgres_url)
            return len(rows) == 2 and all(r[1] == "succeeded" for r in rows)

        await until(both_done)
        rows = await run_rows(postgres_url)
        # Decided by the leader, so its runs: each event started exactly one run.
        assert {r[2] for r in rows} == {first.node.id}
        assert sorted(ran) == ["record 7", "record 8"]
        # The follower's event reached the leader by notification, not by a poll.
        assert first.node.listener.received >= 1


async def start_in(tg: anyio.abc.TaskGroup, engine: Engine) -> anyio.Event:
    """Run ``engine`` in a task of ``tg`` (so engines can stop in any order); returns the
    event that stops it."""
    stop = anyio.Event()

    async def hold(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with engine:
            task_status.started()
            await stop.wait()

    await tg.start(hold)
    return stop


async def test_a_clean_stop_hands_the_lease_and_the_unfinished_runs_over(
    postgres_url: str,
) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    first, second = instance(postgres_url), instance(postgres_url)
    async with anyio.create_task_group() as tg:
        stop_first = await start_in(tg, first)
        stop_second = await start_in(tg, second)
        assert first.node is not None and second.node is not None
        assert first.node.is_leader and not second.node.is_leader
        run_id = await first.submit(holding, n=1)
        await until(lambda: anyio.to_thread.run_sync(lambda: "held 1" in ran))
        stop_first.set()
        # The first stopped with the task running: interrupted, handed back, adopted by the
        # second, which also took the leader lease without waiting for it to expire.
        await until(lambda: anyio.to_thread.run_sync(lambda: ran.count("held 1") == 2))
        node = second.node
        await until(lambda: anyio.to_thread.run_sync(lambda: node.is_leader))
        gate["release"].set()
        result = await second.wait(run_id)
        assert result.state is RunState.SUCCEEDED
        assert ran == ["record 1", "held 1", "held 1"]  # `record` finished: never run again
        (row,) = await run_rows(postgres_url)
        assert row[2] == second.node.id and row[3] == 2  # claimed a second time: epoch 2
        attempts = await second.store.list_attempts_of(run_id, ["held"])
        assert [a.state for a in attempts] == [TaskState.INTERRUPTED, TaskState.SUCCEEDED]
        # Each try names the instance that ran it, the interrupted one too.
        assert [a.instance for a in attempts] == [first.node.id, second.node.id]
        assert second.node.adoption.adopted == 1
        stop_second.set()
    states = {i.state for i in await instances(postgres_url)}
    assert states == {"stopped"}


async def test_a_cancel_asked_on_another_instance_reaches_the_run(postgres_url: str) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    async with instance(postgres_url) as first, instance(postgres_url) as second:
        run_id = await first.submit(holding, n=2)
        await until(lambda: anyio.to_thread.run_sync(lambda: "held 2" in ran))
        assert await second.cancel(run_id, reason="not needed any more")
        result = await second.wait(run_id)
        assert result.state is RunState.CANCELLED
        assert ran == ["record 2", "held 2"]


async def test_runs_beyond_an_instances_capacity_go_to_instances_with_room(
    postgres_url: str,
) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    small = Engine(
        postgres_url, grace_period_s=0, cluster=ClusterOptions(heartbeat_s=5, ttl_s=30, max_runs=1)
    )
    small.add(holding)
    async with small, instance(postgres_url) as roomy:
        assert small.node is not None and roomy.node is not None
        ids = [await small.submit(holding, n=n) for n in (1, 2, 3)]
        # The small one keeps one; the other two are handed back and claimed at once (told by
        # a notification, long before the next heartbeat).
        await until(
            lambda: anyio.to_thread.run_sync(
                lambda: ran.count("held 1") + ran.count("held 2") + ran.count("held 3") == 3
            )
        )
        owners = {r[0]: r[2] for r in await run_rows(postgres_url)}
        assert sorted(str(owners[i]) for i in ids) == sorted(
            [small.node.id, roomy.node.id, roomy.node.id]
        )
        assert small.active_runs() == [ids[0]]
        view = await cluster_status(small.store)
        assert {i["id"]: i["runs"] for i in view["instances"]} == {
            small.node.id: 1,
            roomy.node.id: 2,
        }
        assert view["unclaimed_runs"] == 0
        gate["release"].set()
        for run_id in ids:
            assert (await small.wait(run_id)).state is RunState.SUCCEEDED
        assert sorted(ran) == sorted(
            ["record 1", "record 2", "record 3", "held 1", "held 2", "held 3"]
        )


async def submit_at_once(engine: Engine, ns: Iterable[int]) -> list[str]:
    """Runs of ``recorded``, one per ``n``, all submitted at once: their ids."""
    ids: list[str] = []

    async def submit(n: int) -> None:
        ids.append(await engine.submit(recorded, n=n))

    async with anyio.create_task_group() as tg:
        for n in ns:
            tg.start_soon(submit, n)
    return ids


async def now(value: bool) -> bool:
    """A condition already computed, as :func:`until` takes it."""
    return value


async def test_a_wait_on_a_run_driven_elsewhere_returns_when_its_end_is_notified(
    postgres_url: str,
) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    # Heartbeats far apart: the run handed back is claimed because a notification says so,
    # and the wait returns because its end is notified, not because anything polled.
    slow = ClusterOptions(heartbeat_s=10, ttl_s=30, max_runs=1)
    small = Engine(postgres_url, grace_period_s=0, cluster=slow)
    roomy = Engine(postgres_url, grace_period_s=0, cluster=slow)
    for engine in (small, roomy):
        engine.add(holding)
    async with small, roomy:
        kept = await small.submit(holding, n=1)
        elsewhere = await small.submit(holding, n=2)
        await until(lambda: now(roomy.active_runs() == [elsewhere] and "held 2" in ran))
        results: dict[str, RunState] = {}
        ended = anyio.Event()

        async def wait_elsewhere() -> None:
            results[elsewhere] = (await small.wait(elsewhere)).state
            ended.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_elsewhere)
            await until(lambda: now(small._runs.ends.waiting_on(elsewhere)))  # the wait has begun
            gate["release"].set()
            # Read again only every RECHECK_S were the end not told: well within it here.
            with anyio.fail_after(RECHECK_S - 2):
                assert (await small.wait(kept)).state is RunState.SUCCEEDED
                await ended.wait()
        assert results == {elsewhere: RunState.SUCCEEDED}


async def test_many_run_ends_are_told_in_notifications_under_the_payload_limit(
    postgres_url: str,
) -> None:
    ids = [f"{n:032x}" for n in range(1_000)]  # run ids are 32 characters
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as listen:
        await listen.execute("LISTEN evflow_run_ends")
        async with (
            await psycopg.AsyncConnection.connect(postgres_url) as conn,
            conn.transaction(),
        ):
            await _notify_ends(conn, ids)
        told: list[str] = []
        with anyio.fail_after(LIMIT_S):
            async for note in listen.notifies():
                assert len(note.payload.encode()) <= 8_000
                told.extend(note.payload.split())
                if len(told) >= len(ids):
                    break
    assert told == ids


async def test_a_burst_past_capacity_is_handed_back_in_a_few_statements(
    postgres_url: str,
) -> None:
    """Runs created beyond capacity go back together: each hand-back statement tells the
    other instances once (a notification), so the notifications count the statements."""
    ran.clear()
    small = Engine(
        postgres_url, grace_period_s=0, cluster=ClusterOptions(heartbeat_s=5, ttl_s=30, max_runs=1)
    )
    small.add(recorded)
    burst = 200
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as listener:
        await listener.execute("LISTEN evflow_runs")
        async with small:
            ids = await submit_at_once(small, range(burst))
            for run_id in ids:  # each handed back, then claimed again as room frees
                assert (await small.wait(run_id)).state is RunState.SUCCEEDED
            told = [n async for n in listener.notifies(timeout=0.5)]
    assert sorted(ran) == sorted(f"record {n}" for n in range(burst))
    assert 1 <= len(told) <= burst // 10, len(told)


async def test_runs_ending_with_nothing_to_claim_send_no_claim(postgres_url: str) -> None:
    """A run that ends frees room; the instance claims into it only while the shared queue
    may hold runs (a hand-back was notified, or the last claim took all it asked for)."""
    ran.clear()
    small = Engine(
        postgres_url, grace_period_s=0, cluster=ClusterOptions(heartbeat_s=30, ttl_s=60, max_runs=2)
    )
    small.add(recorded)
    async with small:
        assert small.node is not None
        adoption = small.node.adoption
        for n in range(20):  # one at a time: room is never short, nothing is handed back
            assert (await small.run(recorded, n=n)).state is RunState.SUCCEEDED
        claims = adoption.claims
        assert claims <= 2, claims  # the pass at start (and one after a notification at most)
        # Past capacity: handed back, told, claimed again as room frees, long before the
        # heartbeat; the claims stop once the queue is found empty.
        ids = await submit_at_once(small, range(100, 120))
        for run_id in ids:
            assert (await small.wait(run_id)).state is RunState.SUCCEEDED
        after_burst = adoption.claims
        assert after_burst > claims
        for n in range(10):
            assert (await small.run(recorded, n=200 + n)).state is RunState.SUCCEEDED
        assert adoption.claims == after_burst
    assert len(ran) == 50


async def test_an_event_the_leaders_feed_offered_first_is_not_offered_again(
    postgres_url: str,
) -> None:
    """The leader's feed may read an event this instance is committing before the instance
    notes it as accepted here: the feed offers it first, and the instance must not offer it
    again (the rules would decide it twice, and count its dead letter twice)."""
    offered: list[str] = []
    async with PostgresStore(postgres_url) as store:
        feed = PendingFeed(store, lambda evs: offered.extend(e.uid for e in evs), poll_s=60)
        ev = Event(type="order.created", source="shop")
        await store.add_events([ev])
        await feed._read()  # the read wins the race: the event is still pending
        assert offered == [ev.uid]
        assert feed.unoffered([ev]) == []  # accepted here, after: already offered
        other = Event(type="order.created", source="shop")
        assert feed.unoffered([other]) == [other]  # accepted here first: offered by the node
        await store.add_events([other])
        await feed._read()
        assert offered == [ev.uid]  # and not by the feed's next read


@task
async def held_alone(n: int) -> int:
    ran.append(f"alone {n}")
    await gate["release"].wait()
    return n


@flow(max_active_runs=1)
def one_at_a_time(n: int) -> None:
    held_alone(n)


def query_slots(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT name, slot FROM slots").fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


async def test_a_handed_back_run_goes_to_one_instance_however_many_claim_at_once(
    postgres_url: str,
) -> None:
    """Instances claiming the same handed-back runs at the same moment each get different
    ones: a claim that meets a run another instance claimed an instant before (committed after
    this claim began) leaves it to that instance."""
    racers, n = 4, 400
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(PostgresStore(postgres_url)) for _ in range(racers)
        ]
        ids = [f"racer-{i}" for i in range(racers)]
        for store, me in zip(stores, ids, strict=True):
            await store.register_instance(
                me, host="test", pid=os.getpid(), version="test", http=None, ttl_s=60
            )
        runs = [new_run(recorded, {"n": i}) for i in range(n)]
        await stores[0].apply(queued_changes(recorded, runs), wait=True)  # owned by nobody
        claims: list[tuple[str, str, int]] = []

        async def claim(store: PostgresStore, me: str) -> None:
            while len(claims) < n:
                got = await store.claim_runs(me, ["recorded"], 1)
                claims.extend((rid, me, epoch) for rid, epoch in got.items())

        with anyio.fail_after(LIMIT_S):
            async with anyio.create_task_group() as tg:
                for store, me in zip(stores, ids, strict=True):
                    tg.start_soon(claim, store, me)
    by_run: dict[str, list[str]] = {}
    for rid, me, _ in claims:
        by_run.setdefault(rid, []).append(me)
    assert {rid: who for rid, who in by_run.items() if len(who) > 1} == {}
    assert sorted(by_run) == sorted(r.id for r in runs)
    assert {epoch for *_, epoch in claims} == {2}  # each run's first and only claim
    owners = {r[0]: r[2] for r in await run_rows(postgres_url)}
    assert all(owners[rid] == who[0] for rid, who in by_run.items())
    assert len({me for _, me, _ in claims}) > 1  # they did race


async def test_an_instance_stopped_inside_a_write_transaction_is_taken_over_at_once(
    postgres_url: str,
) -> None:
    """A process stopped in the middle of a pipelined write transaction holds its registry
    row, and the server does not count that transaction idle: the takeover ends it instead of
    waiting for it (for as long as statement_timeout), and what it wrote never lands."""
    async with PostgresStore(postgres_url) as taker:
        for me, ttl_s in (("stalled", 1.0), ("taker", 60.0)):
            await taker.register_instance(
                me, host="test", pid=os.getpid(), version="test", http=None, ttl_s=ttl_s
            )
        with pytest.raises(psycopg.OperationalError):
            async with (
                await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn,
                conn.pipeline(),
                conn.transaction(),
            ):
                await conn.execute("SET LOCAL statement_timeout = 0")  # nothing else ends it
                await conn.execute(FENCE, ("stalled",))
                await conn.execute("UPDATE instances SET http = 'wrote' WHERE id = 'stalled'")
                # The statements went out without a sync, and the process stops here.
                await until(lambda: anyio.to_thread.run_sync(in_transaction, postgres_url))
                await until(
                    lambda: anyio.to_thread.run_sync(
                        lambda: registry_now(postgres_url, "stalled")[0] == "dead"
                    )
                )
                with anyio.fail_after(LIMIT_S):
                    taken = await taker.take_over_dead("taker")
                assert [t[0] for t in taken] == ["stalled"]
    state, *_ = registry_now(postgres_url, "stalled")
    assert state == "stopped"
    with psycopg.connect(postgres_url, autocommit=True) as check:
        row = check.execute("SELECT http FROM instances WHERE id = 'stalled'").fetchone()
    assert row == (None,)


def in_transaction(url: str) -> bool:
    """Whether a backend runs a write transaction of the instance ``stalled``."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'evflow:stalled'"
        ).fetchone()
    return row is not None and int(row[0]) > 0


async def test_max_active_runs_holds_across_the_cluster(postgres_url: str) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    first, second = instance(postgres_url), instance(postgres_url)
    first.add(one_at_a_time)
    second.add(one_at_a_time)
    async with first, second:
        a = await first.submit(one_at_a_time, n=1)
        await until(lambda: anyio.to_thread.run_sync(lambda: ran == ["alone 1"]))
        b = await second.submit(one_at_a_time, n=2)  # its own instance has room: not the flow

        async def waiting_why() -> str | None:
            run = await second.store.get_run(b, with_tasks=False)
            return run.waiting

        assert "across the cluster" in await until(waiting_why)
        assert ran == ["alone 1"]
        gate["release"].set()
        assert (await first.wait(a)).state is RunState.SUCCEEDED
        assert (await second.wait(b)).state is RunState.SUCCEEDED
        assert ran == ["alone 1", "alone 2"]
        rows = query_slots(postgres_url)
        assert rows == []  # every place given back


async def test_a_command_line_engines_runs_stay_its_own_while_it_lives(
    postgres_url: str,
) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    async with instance(postgres_url) as service:
        assert service.node is not None
        cli = Engine(postgres_url, grace_period_s=0, cluster=FAST, resume=False)
        cli.add(holding)
        async with cli:
            assert cli.node is not None and not cli.node.is_leader
            run_id = await cli.submit(holding, n=5)
            await until(lambda: anyio.to_thread.run_sync(lambda: "held 5" in ran))
            await service.node.adoption.tick()  # the service looks: nothing is its to take
            assert service.active_runs() == [] and service.node.adoption.adopted == 0
            gate["release"].set()
            assert (await cli.wait(run_id)).state is RunState.SUCCEEDED
        assert ran == ["record 5", "held 5"]


async def test_the_cluster_page_shows_instances_runs_and_leases(postgres_url: str) -> None:
    ran.clear()
    gate["release"] = anyio.Event()
    async with (
        instance(postgres_url) as first,
        instance(postgres_url) as second,
        served(first) as base,
        chromium() as browser,
    ):
        assert first.node is not None and second.node is not None
        await second.submit(holding, n=9)
        await until(lambda: anyio.to_thread.run_sync(lambda: "held 9" in ran))
        page, problems = await open_page(browser, base, "/cluster")
        await expect(page.get_by_test_id("cluster-summary")).to_contain_text("2 alive of 2")
        row = page.get_by_test_id(f"instance-{second.node.id}")
        await expect(row.get_by_test_id("instance-runs")).to_have_text("1")
        await expect(row.get_by_test_id("instance-state")).to_have_text("alive")
        await expect(page.get_by_test_id(f"instance-{first.node.id}")).to_contain_text("this one")
        await expect(page.get_by_test_id("cluster-leases")).to_contain_text("leader")
        await screenshot(page, "cluster.png")
        gate["release"].set()
        await expect(row.get_by_test_id("instance-runs")).to_have_text("0")  # refreshed live
        assert problems == []
