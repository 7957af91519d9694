"""The API's reads for the web UI over real HTTP: the flow grid and triggers, run search, a
run's overview, paged tasks and timeline, and a JSON 400 naming the input for bad queries."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from evflow import flow, task

from .test_api import assert_error, finished, service, trigger

pytestmark = pytest.mark.slow


@task
async def part(i: int) -> int:
    if i == 3:
        raise ValueError("part 3 is broken")
    return i


@task
async def parts(n: int) -> list[int]:
    return list(range(n))


@flow
def fan(n: int) -> None:
    part.map(parts(n))


async def test_grid_counts_mapped_instances_and_marks_failures(tmp_path: Path) -> None:
    async with service(tmp_path) as (engine, client):
        engine.add(fan)
        ok = await trigger(client, "hello", name="ada")
        await finished(client, ok)
        bad = await trigger(client, "flaky", flag=str(tmp_path / "missing"))
        await finished(client, bad)
        grid = (await client.get("/api/flows/flaky/grid?runs=5")).json()
        assert [r["id"] for r in grid["runs"]] == [bad]
        cells = grid["runs"][0]["cells"]
        assert any(c["state"] == "failed" for c in cells.values())
        assert [t["name"] for t in grid["tasks"]] == [
            t["name"] for t in (await client.get("/api/flows/flaky")).json()["tasks"]
        ]

        run_id = await trigger(client, "fan", n=6)
        await finished(client, run_id)
        cell = (await client.get("/api/flows/fan/grid")).json()["runs"][0]["cells"]["part"]
        assert cell == {
            "state": "failed",
            "counts": {"succeeded": 5, "failed": 1},
            "total": 6,
            "attempt": 1,
            "mapped": True,
        }

        overview = (await client.get(f"/api/runs/{run_id}/overview")).json()
        assert overview["mapped"]["part"]["total"] == 6
        assert all(t["map_index"] is None for t in overview["tasks"])
        page = (await client.get(f"/api/runs/{run_id}/tasks?node=part&limit=4&offset=2")).json()
        assert [t["name"] for t in page["tasks"]] == ["part[2]", "part[3]", "part[4]", "part[5]"]
        assert page["total"] == 6
        failed = (await client.get(f"/api/runs/{run_id}/tasks?node=part&state=failed")).json()
        assert [t["name"] for t in failed["tasks"]] == ["part[3]"] and failed["total"] == 1
        assert "part 3 is broken" in failed["tasks"][0]["traceback"]

        timeline = (await client.get(f"/api/runs/{run_id}/timeline")).json()
        rows = {r["task"]: r for r in timeline["rows"]}
        assert rows["part"]["mapped"] and rows["part"]["count"] == 6
        assert [b["kind"] for b in rows["parts"]["bars"]][-1] == "running"
        assert all(b["end"] is not None for r in rows.values() for b in r["bars"])


async def test_triggers_show_the_schedule_and_rules(tmp_path: Path) -> None:
    async with service(tmp_path) as (_, client):
        nightly = (await client.get("/api/flows/nightly/triggers?fires=3")).json()
        assert nightly["schedule"]["active"] is False  # added with schedule=False
        times = nightly["schedule"]["next"]
        assert len(times) == 3 and times == sorted(times)
        orders = (await client.get("/api/flows/orders/triggers")).json()
        assert orders["schedule"] is None
        (rule,) = orders["rules"]
        assert (rule["name"], rule["on"], rule["params"]) == (
            "orders",
            "order.*",
            {"n": "{data.n}"},
        )


async def test_search_finds_runs_by_id_flow_and_params(tmp_path: Path) -> None:
    async with service(tmp_path) as (_, client):
        ada = await trigger(client, "hello", name="ada lovelace")
        grace = await trigger(client, "hello", name="grace")
        for run_id in (ada, grace):
            await finished(client, run_id)
        found = (await client.get("/api/runs/search", params={"q": "lovelace"})).json()
        assert [r["id"] for r in found["runs"]] == [ada] and found["total"] == 1
        by_end = (await client.get("/api/runs/search", params={"q": grace[-12:]})).json()
        assert by_end["total"] == 1
        every = (await client.get("/api/runs/search", params={"flow": "hello"})).json()
        assert every["total"] == 2 and every["q"] is None
        later = await client.get("/api/runs/search", params={"since": "2999-01-01T00:00:00Z"})
        assert later.json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "mentions"),
    [
        ("/api/flows/hello/grid?runs=0", "runs"),
        ("/api/flows/hello/grid?runs=101", "runs"),
        ("/api/flows/hello/grid?runs=many", "runs"),
        ("/api/flows/hello/triggers?fires=51", "fires"),
        ("/api/runs/search?limit=501", "limit"),
        ("/api/runs/search?limit=3%1E", "limit"),  # int() would strip the separator
        ("/api/runs/search?limit=1_0", "limit"),
        ("/api/runs/search?limit=%EF%BC%93", "limit"),  # a full-width digit
        ("/api/runs/search?limit=1&limit=2", "given 2 times"),
        ("/api/runs/search?offset=-1", "offset"),
        ("/api/runs/search?state=sleeping", "state"),
        ("/api/runs/search?since=yesterday", "since"),
        ("/api/runs/search?q=" + "x" * 201, "q"),
        ("/api/runs/RUN/tasks?limit=501", "limit"),
        ("/api/runs/RUN/tasks?state=done", "state"),
    ],
)
async def test_bad_query_parameters_are_a_json_400(
    tmp_path: Path, path: str, mentions: str
) -> None:
    async with service(tmp_path) as (_, client):
        run_id = await trigger(client, "hello", name="x")
        resp = await client.get(path.replace("RUN", run_id))
        assert_error(resp, 400, mentions)


async def test_unknown_flow_or_run_is_a_json_404(tmp_path: Path) -> None:
    async with service(tmp_path) as (_, client):
        for path in (
            "/api/flows/nope/grid",
            "/api/flows/nope/triggers",
            "/api/runs/nope/overview",
            "/api/runs/nope/tasks",
            "/api/runs/nope/timeline",
        ):
            assert_error(await client.get(path), 404)
        with anyio.fail_after(5):
            assert (await client.get("/api/runs/search?q=%25")).json()["total"] == 0
