"""PostgreSQL without a cluster (``[cluster] enabled = false``): one instance runs the store as
on SQLite, under the store's ``engine`` lease, with no registration, heartbeat or fencing; and
the two ways of running a PostgreSQL store refuse to run beside each other."""

from __future__ import annotations

import os
import re
from pathlib import Path

import anyio
import pytest
from playwright.async_api import expect

from evflow import Engine, RunState, TaskState, flow, task
from evflow.cluster import ClusterOptions
from evflow.cluster.status import cluster_status
from evflow.errors import StoreInUse
from evflow.store.postgres import PostgresStore
from tests.integration.browser import chromium
from tests.integration.test_service import clean_env, copy_example, evflow, serving
from tests.integration.test_ui_browser import served
from tests.integration.test_ui_views import open_page
from tests.observers import LIMIT_S

ALONE = ClusterOptions(enabled=False)
FAST = ClusterOptions(heartbeat_s=0.1, ttl_s=3.0)


@task
async def double(x: int) -> int:
    return 2 * x


@flow
def doubled(x: int = 1) -> None:
    double(x)


async def test_an_engine_outside_the_cluster_runs_the_store_alone_under_its_lease(
    postgres_url: str,
) -> None:
    async with Engine(postgres_url, grace_period_s=0, cluster=ALONE) as engine:
        engine.add(doubled)
        result = await engine.run(doubled, x=21)
        assert result.ok and result.result("double") == 42
        assert engine.membership is None
        status = await cluster_status(engine.store)
        assert status["mode"] == "single" and status["instances"] == []
        (lease,) = status["leases"]
        assert (lease["name"], lease["pid"]) == ("engine", os.getpid())
        async with PostgresStore(postgres_url) as store:
            run = await store.get_run(result.run_id, with_tasks=False)
            assert await store.runs_by_owner() == {}  # finished: no unfinished run has an owner
            assert run.state is RunState.SUCCEEDED
    async with PostgresStore(postgres_url) as store:
        assert await store.list_leases() == []  # given back at a clean stop
        assert await store.list_instances() == []  # never registered


async def test_a_second_engine_outside_the_cluster_is_refused(postgres_url: str) -> None:
    async with Engine(postgres_url, grace_period_s=0, cluster=ALONE):
        with pytest.raises(StoreInUse, match=rf"pid {os.getpid()}"):
            async with Engine(postgres_url, grace_period_s=0, cluster=ALONE):
                pass


async def test_an_engine_outside_the_cluster_is_refused_while_cluster_instances_live(
    postgres_url: str,
) -> None:
    async with Engine(postgres_url, grace_period_s=0, cluster=FAST):
        with pytest.raises(StoreInUse, match=r"cluster of 1 live instance") as refused:
            async with Engine(postgres_url, grace_period_s=0, cluster=ALONE):
                pass
        assert "enabled = false" in str(refused.value)
        async with PostgresStore(postgres_url) as store:
            # The refused engine gave its lease back; the cluster's leader holds its own.
            assert [lease.name for lease in await store.list_leases()] == ["leader"]
    # Once the cluster has stopped, the store can be run alone.
    async with Engine(postgres_url, grace_period_s=0, cluster=ALONE) as engine:
        engine.add(doubled)
        assert (await engine.run(doubled)).ok


async def test_a_cluster_instance_is_refused_while_an_engine_runs_the_store_alone(
    postgres_url: str,
) -> None:
    async with Engine(postgres_url, grace_period_s=0, cluster=ALONE):
        with pytest.raises(StoreInUse, match=r"outside the cluster") as refused:
            async with Engine(postgres_url, grace_period_s=0, cluster=FAST):
                pass
        assert f"pid {os.getpid()}" in str(refused.value)
        assert re.search(r"its lease expires in \d+s", str(refused.value)), refused.value
        async with PostgresStore(postgres_url) as store:
            (refused_instance,) = await store.list_instances()
            assert refused_instance.state == "stopped"  # it left; nobody adopts from it
    # A command-line engine in cluster mode (it drives only its own runs) is not refused.
    async with (
        Engine(postgres_url, grace_period_s=0, cluster=ALONE),
        Engine(postgres_url, grace_period_s=0, cluster=FAST, resume=False) as cli,
    ):
        cli.add(doubled)
        assert (await cli.run(doubled)).ok


async def test_an_engine_outside_the_cluster_resumes_what_it_left_unfinished(
    postgres_url: str,
) -> None:
    blocking = anyio.Event()
    released = False

    @task
    async def blocker() -> str:
        if not released:
            blocking.set()
            await anyio.sleep_forever()
        return "done"

    @flow
    def held() -> None:
        blocker()

    with anyio.fail_after(LIMIT_S):
        async with Engine(postgres_url, grace_period_s=0, cluster=ALONE) as engine:
            run_id = await engine.submit(held)
            await blocking.wait()
    released = True
    engine = Engine(postgres_url, grace_period_s=0, cluster=ALONE)
    engine.add(held)
    async with engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.wait(run_id)
    assert result.ok, result.error
    assert result.tasks["blocker"].attempts == 2
    assert result.tasks["blocker"].state is TaskState.SUCCEEDED


async def test_serve_with_the_cluster_off_says_so_and_the_cluster_command_shows_one_instance(
    tmp_path: Path, postgres_url: str
) -> None:
    project = copy_example(tmp_path / "example")
    env = clean_env(EVFLOW_STORE_URL=postgres_url, EVFLOW_CLUSTER_ENABLED="false")
    async with serving(project, tmp_path / "logs", env) as service:
        rows = service.stdout.splitlines()
        assert (
            "  cluster  off ([cluster] enabled = false): this instance alone runs the store" in rows
        ), service.stdout
        assert not any(r.startswith("  cluster  instance") for r in rows)
        status, out, err = await evflow("cluster", "--store", postgres_url, cwd=project, env=env)
        assert status == 0, err
        assert "one instance, outside any cluster" in out, out
        status, _, err = await evflow("serve", "--port", "0", cwd=project, env=env)
        assert status != 0
        assert "in use by another evflow instance" in err, err
        assert await service.stop() == 0


async def test_the_cluster_page_says_the_instance_runs_the_store_alone(postgres_url: str) -> None:
    async with (
        Engine(postgres_url, grace_period_s=0, cluster=ALONE) as engine,
        served(engine) as base,
        chromium() as browser,
    ):
        page, problems = await open_page(browser, base, "/cluster")
        summary = page.get_by_test_id("cluster-summary")
        await expect(summary).to_contain_text("outside any cluster")
        await expect(summary).to_contain_text("[cluster] enabled = false")
        await expect(page.get_by_test_id("cluster-leases")).to_contain_text("engine")
        assert problems == []
