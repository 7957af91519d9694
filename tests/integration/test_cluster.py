"""Cluster mode on PostgreSQL: each instance registers, heartbeats from a thread of its own,
and stops its work once it is out of the cluster; ``evflow cluster`` and ``/api/cluster`` show
the instances and the leases they hold."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import orjson
import psycopg
import pytest

from evflow import Engine
from evflow.cluster import ClusterOptions
from evflow.errors import ConfigError, OwnershipLost
from evflow.http.bodies import ClusterView, Instance, Lease
from evflow.records import InstanceRecord
from evflow.service.config import load_config
from evflow.store import connect
from evflow.store.postgres import PostgresStore
from tests.integration.test_service import clean_env, evflow, write
from tests.integration.test_ui_browser import served
from tests.observers import until
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
            await anyio.sleep(30)
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
                with anyio.fail_after(20):
                    await anyio.sleep(30)
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
        assert [lease["name"] for lease in body["leases"]] == ["engine"]

        code, out, err = await evflow(
            "cluster", "--store", postgres_url, cwd=tmp_path, env=clean_env()
        )
        assert code == 0, err
        assert "1 alive of 1 registered" in out
        row = next(line for line in out.splitlines() if line.startswith(member.id))
        assert "alive" in row and base in row
        assert any(line.startswith("engine ") for line in out.splitlines())

        code, out, err = await evflow("cluster", "--url", base, "--json", cwd=tmp_path)
        assert code == 0, err
        assert orjson.loads(out)["instances"][0]["id"] == member.id

        async with httpx.AsyncClient(base_url=base) as http:
            metrics = (await http.get("/metrics")).text
        assert "evflow_cluster_instances_alive 1.0" in metrics


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
