"""print() and the logging module inside tasks land in their own attempt's log, never mixed
between concurrent tasks (threads included), and never in the service's own output."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import httpx
import orjson
import pytest

from evflow import flow, task
from evflow.run.capture import capture_task_output
from evflow.store.sqlite import SqliteStore
from tests.engines import new_engine
from tests.integration.test_service import evflow, serving, write
from tests.observers import until


@task
async def chatty_async(n: int) -> int:
    for i in range(n):
        print(f"async line {i}")
        await anyio.lowlevel.checkpoint()
    logging.getLogger("airflow.task").warning("async warned")
    return n


@task
def chatty_thread(n: int) -> int:
    for i in range(n):
        print(f"thread line {i}", flush=True)
    print("to stderr", file=sys.stderr)
    logging.getLogger("some.library").info("thread info")
    return n


@flow
def chatter(n: int) -> None:
    chatty_async(n)
    chatty_thread(n)


async def test_each_tasks_output_is_its_own_and_nothing_leaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger().setLevel(logging.INFO)
    undo = capture_task_output()  # here, not in a fixture: pytest swaps sys.stdout per phase
    try:
        async with new_engine(tmp_path) as engine:
            result = await engine.run(chatter, n=50)
            assert result.ok, result.error
            logs = {
                name: [
                    (r.level, r.message) for r in await engine.store.list_logs(result.run_id, name)
                ]
                for name in ("chatty_async", "chatty_thread")
            }
        print("outside any task")
    finally:
        undo()
    assert logs["chatty_async"] == [
        *(("INFO", f"async line {i}") for i in range(50)),
        ("WARNING", "airflow.task: async warned"),
    ]
    assert logs["chatty_thread"] == [
        *(("INFO", f"thread line {i}") for i in range(50)),
        ("ERROR", "to stderr"),
        ("INFO", "some.library: thread info"),
    ]
    out = capsys.readouterr().out
    assert "outside any task" in out and "line" not in out


async def test_evflow_serve_keeps_its_log_json_when_tasks_print(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "evflow.toml", '[store]\npath = "var/evflow.db"\n')
    write(project / "flows" / "__init__.py", "")
    write(
        project / "flows" / "noisy.py",
        """
        import logging

        from evflow import flow, task

        @task
        def shout(word: str) -> str:
            print("printed", word)
            logging.getLogger("legacy").warning("logged %s", word)
            return word

        @flow
        def noisy(word: str) -> None:
            shout(word)
        """,
    )
    write(
        project / "sensors" / "hooks.py",
        """
        from evflow import Rule
        from evflow.sensors import WebhookSensor

        Rule(on=WebhookSensor("noisy"), flow="noisy", params={"word": "{data.word}"})
        """,
    )
    async with serving(project, tmp_path / "logs") as service:
        url = re.search(r"http://127\.0\.0\.1:\d+", service.stdout)
        assert url is not None
        async with httpx.AsyncClient(base_url=url.group(0)) as client:
            resp = await client.post(
                "/hooks/noisy",
                content=orjson.dumps({"word": "hey"}),
                headers={"Content-Type": "application/json"},
            )
            assert resp.status_code == 202

            async def run_id() -> str | None:
                runs = (await client.get("/api/runs")).json()["runs"]
                return runs[0]["id"] if runs and runs[0]["state"] == "succeeded" else None

            rid = await until(run_id)
            lines = (await client.get(f"/api/runs/{rid}/logs")).json()["logs"]
        assert [(x["level"], x["message"]) for x in lines] == [
            ("INFO", "printed hey"),
            ("WARNING", "legacy: logged hey"),
        ]
        assert await service.stop() == 0
        assert service.process.stdout is not None
        rest = b"".join([chunk async for chunk in service.process.stdout])
    assert "printed" not in service.stdout + rest.decode()  # nothing leaked onto stdout
    for line in service.stderr.read_text().splitlines():
        json.loads(line)  # every line of the service's log is still one JSON object


async def test_a_local_backfill_keeps_task_output_in_the_task_logs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(
        project / "flows" / "daily.py",
        """
        from evflow import flow, task

        @task
        def report(day: str) -> str:
            print("report for", day)
            return day

        @flow(schedule="@daily")
        def daily(scheduled_time: str = "") -> None:
            report(scheduled_time)
        """,
    )
    db = tmp_path / "evflow.db"
    status, out, err = await evflow(
        "backfill", "daily", "--start", "2026-11-01", "--end", "2026-11-03",
        "--store", str(db), "--project", str(project), cwd=project,
    )  # fmt: skip
    assert status == 0, out + err
    assert "report for" not in out + err  # the prints went to the task logs
    async with SqliteStore(db) as store:
        runs = await store.list_runs()
        assert len(runs) == 3  # both ends included
        logs = [line.message for r in runs for line in await store.list_logs(r.id)]
    assert sorted(logs) == sorted(f"report for {r.params['scheduled_time']}" for r in runs)
