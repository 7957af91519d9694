"""Pools counted across the cluster: ``Pool(n, scope="cluster")`` holds at most ``n`` tasks
running on all the instances of a PostgreSQL store together; a plain pool holds ``n`` on each.
The places are rows of the store, freed when the holding instance dies."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import psycopg
from playwright.async_api import expect

from evflow import Engine, Pool, RunState, flow, task
from evflow.cluster import ClusterOptions
from evflow.http.bodies import ClusterView, Place
from tests.integration.browser import chromium
from tests.integration.test_service import clean_env, evflow
from tests.integration.test_ui_browser import screenshot, served
from tests.integration.test_ui_views import open_page
from tests.observers import until

FAST = ClusterOptions(heartbeat_s=0.1, ttl_s=3.0)

running: set[str] = set()
peak = {"n": 0}
release = {"event": anyio.Event()}


@task(pool="warehouse")
async def load(n: int) -> int:
    """Holds its slot until the test releases it, counting how many run at once."""
    key = f"{n}"
    running.add(key)
    peak["n"] = max(peak["n"], len(running))
    try:
        await release["event"].wait()
    finally:
        running.discard(key)
    return n


@flow
def loads(n: int) -> None:
    load(n)


@task(pool="warehouse", slots=2)
async def wide(n: int) -> int:
    running.add(f"wide {n}")
    peak["n"] = max(peak["n"], len(running))
    try:
        await release["event"].wait()
    finally:
        running.discard(f"wide {n}")
    return n


@flow
def wide_loads(n: int) -> None:
    wide(n)


def reset() -> None:
    running.clear()
    peak["n"] = 0
    release["event"] = anyio.Event()


def instance(url: str, pool: Pool) -> Engine:
    engine = Engine(url, grace_period_s=0, cluster=FAST, pools={"warehouse": pool})
    engine.add(loads)
    if pool.slots >= 2:
        engine.add(wide_loads)
    return engine


def places(url: str) -> list[tuple[str, int, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT name, slot, holder FROM slots ORDER BY slot").fetchall()
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


async def run_many(first: Engine, second: Engine, flow_: object, count: int) -> list[str]:
    """``count`` runs, alternating between the two instances."""
    ids = []
    for n in range(count):
        engine = first if n % 2 == 0 else second
        ids.append(await engine.submit(flow_, n=n))  # type: ignore[arg-type]
    return ids


async def finish(first: Engine, second: Engine, ids: list[str]) -> None:
    release["event"].set()
    for n, run_id in enumerate(ids):
        engine = first if n % 2 == 0 else second
        assert (await engine.wait(run_id)).state is RunState.SUCCEEDED


async def test_a_cluster_pool_holds_its_slots_across_every_instance(postgres_url: str) -> None:
    reset()
    first = instance(postgres_url, Pool(2, scope="cluster"))
    second = instance(postgres_url, Pool(2, scope="cluster"))
    async with first, second:
        ids = await run_many(first, second, loads, 6)
        # Two tasks run (one on each instance, or both on one); the others wait for a place.
        await until(lambda: anyio.to_thread.run_sync(lambda: len(running) == 2))
        held = places(postgres_url)
        assert [(name, slot) for name, slot, _ in held] == [
            ("pool:warehouse", 0),
            ("pool:warehouse", 1),
        ]
        assert all(holder.endswith("/load") for _, _, holder in held)

        async def someone_waits_across_the_cluster() -> bool:
            for n, run_id in enumerate(ids):
                engine = first if n % 2 == 0 else second
                run = await engine.store.get_run(run_id)
                if any("across the cluster" in (t.waiting or "") for t in run.tasks):
                    return True
            return False

        assert await until(someone_waits_across_the_cluster)
        await anyio.sleep(0.3)  # places given back now would let a third start: none is
        assert len(running) == 2
        await finish(first, second, ids)
    assert peak["n"] == 2
    assert places(postgres_url) == []  # every place given back


async def test_a_plain_pool_counts_on_each_instance(postgres_url: str) -> None:
    """The control for the test above: the same load with the pool per instance runs four."""
    reset()
    first = instance(postgres_url, Pool(2))
    second = instance(postgres_url, Pool(2))
    async with first, second:
        ids = await run_many(first, second, loads, 6)
        await until(lambda: anyio.to_thread.run_sync(lambda: len(running) == 4))
        assert places(postgres_url) == []  # nothing taken in the store
        await finish(first, second, ids)
    assert peak["n"] == 4


async def test_a_task_takes_all_its_slots_of_a_cluster_pool_at_once(postgres_url: str) -> None:
    """A task of two slots in a pool of three: one such task runs at a time, and no two
    instances can each hold part of what the other waits for."""
    reset()
    first = instance(postgres_url, Pool(3, scope="cluster"))
    second = instance(postgres_url, Pool(3, scope="cluster"))
    async with first, second:
        ids = await run_many(first, second, wide_loads, 4)
        await until(lambda: anyio.to_thread.run_sync(lambda: len(running) == 1))
        assert len(places(postgres_url)) == 2
        release["event"].set()
        for n, run_id in enumerate(ids):
            engine = first if n % 2 == 0 else second
            assert (await engine.wait(run_id)).state is RunState.SUCCEEDED
    assert peak["n"] == 1
    assert places(postgres_url) == []


async def test_the_places_of_a_dead_instance_are_free_again(postgres_url: str) -> None:
    reset()
    survivor = instance(postgres_url, Pool(1, scope="cluster"))
    async with survivor:
        assert survivor.membership is not None
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            # A place held by an instance that died without giving it back.
            conn.execute(
                "INSERT INTO instances (id, host, pid, version, ttl_s, heartbeat_at) "
                "VALUES ('gone', 'elsewhere', 1, '0', 1, now() - interval '1 hour')"
            )
            conn.execute(
                "INSERT INTO slots (name, slot, instance, holder) "
                "VALUES ('pool:warehouse', 0, 'gone', 'r/load')"
            )
        run_id = await survivor.submit(loads, n=1)
        await until(lambda: anyio.to_thread.run_sync(lambda: len(running) == 1))
        ((name, slot, holder),) = places(postgres_url)
        assert (name, slot) == ("pool:warehouse", 0) and holder == f"{run_id}/load"
        release["event"].set()
        assert (await survivor.wait(run_id)).state is RunState.SUCCEEDED


async def test_cluster_pools_show_in_the_api_and_evflow_cluster(
    postgres_url: str, tmp_path: Path
) -> None:
    reset()
    engine = instance(postgres_url, Pool(2, scope="cluster"))
    async with engine, served(engine) as base:
        run_id = await engine.submit(loads, n=1)
        await until(lambda: anyio.to_thread.run_sync(lambda: len(running) == 1))
        async with httpx.AsyncClient(base_url=base) as http:
            pools = (await http.get("/api/pools")).json()["pools"]
            cluster = (await http.get("/api/cluster")).json()
        assert [(p["name"], p["scope"], p["capacity"]) for p in pools] == [
            ("warehouse", "cluster", 2)
        ]
        assert set(cluster) == ClusterView.__required_keys__
        (place,) = cluster["places"]
        assert set(place) == Place.__required_keys__
        assert place["holder"] == f"{run_id}/load" and place["name"] == "pool:warehouse"

        code, out, err = await evflow(
            "cluster", "--store", postgres_url, cwd=tmp_path, env=clean_env()
        )
        assert code == 0, err
        row = next(line for line in out.splitlines() if line.startswith("pool:warehouse"))
        assert row.split()[-1] == "1"
        async with httpx.AsyncClient(base_url=base) as http:
            metrics = (await http.get("/metrics")).text
        assert 'evflow_cluster_places_held{limit="pool:warehouse"} 1.0' in metrics
        release["event"].set()
        assert (await engine.wait(run_id)).state is RunState.SUCCEEDED


async def test_the_cluster_page_lists_the_places_held(postgres_url: str) -> None:
    reset()
    engine = instance(postgres_url, Pool(2, scope="cluster"))
    async with engine, served(engine) as base, chromium() as browser:
        page, problems = await open_page(browser, base, "/cluster")
        await expect(page.get_by_test_id("places-empty")).to_be_visible()
        run_id = await engine.submit(loads, n=1)
        await until(lambda: anyio.to_thread.run_sync(lambda: len(running) == 1))
        table = page.get_by_test_id("cluster-places")
        await expect(table).to_contain_text("pool:warehouse")  # refreshed live
        await expect(table).to_contain_text(f"{run_id}/load")
        pools, _ = await open_page(browser, base, "/pools")
        await expect(pools.get_by_test_id("pool-warehouse")).to_contain_text("cluster-wide")
        await screenshot(page, "cluster-places.png")
        release["event"].set()
        assert (await engine.wait(run_id)).state is RunState.SUCCEEDED
        assert problems == []
