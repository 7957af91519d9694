"""CLI actions on a store, without a service: retry, backfill, trigger and cancel."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson

from evflow.cli.display import RunShown
from evflow.http.schemas import Attempt, LogLine, Task
from tests.integration.test_audit import make_trail
from tests.integration.test_service import clean_env, evflow, write


def project(root: Path) -> Path:
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "jobs.py",
        """
        from pathlib import Path

        from evflow import Cron, flow, get_logger, task

        MARK = Path(__file__).parent.parent / "marks.txt"

        @task
        def first() -> str:
            with MARK.open("a") as f:
                f.write("first\\n")
            return "ok"

        @task
        def second(x: str) -> str:
            if not (Path(__file__).parent.parent / "flag").exists():
                raise RuntimeError("flag file missing")
            get_logger().info("flag found")
            return x + "!"

        @flow
        def flaky() -> None:
            second(first())

        @task
        def stamp(when: str) -> str:
            return when

        @flow(schedule=Cron("0 * * * *"))
        def hourly(scheduled_time: str = "") -> None:
            stamp(scheduled_time)
    """,
    )
    return root


async def runs(root: Path, store: Path) -> list[dict[str, Any]]:
    status, out, err = await evflow(
        "runs", "--store", str(store), "--json", "--limit", "50", cwd=root
    )
    assert status == 0, out + err
    return list(orjson.loads(out))


async def test_retry_a_failed_run_from_a_store(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    store = tmp_path / "evflow.db"
    status, out, err = await evflow("run", "flows/jobs.py:flaky", "--store", str(store), cwd=root)
    assert status == 1, out + err
    assert "flag file missing" in out
    run_id = re.search(r"^run ([0-9a-f]{32})", out, re.M).group(1)  # type: ignore[union-attr]

    (root / "flag").touch()
    status, out, err = await evflow("retry", run_id[-10:], "--store", str(store), cwd=root)
    assert status == 0, out + err
    assert "succeeded" in out
    status, out, err = await evflow("show", run_id, "--store", str(store), "--json", cwd=root)
    shown = orjson.loads(out)
    assert shown["state"] == "succeeded"
    attempts = {t["name"]: t["attempt"] for t in shown["tasks"]}
    assert attempts == {"first": 1, "second": 2}  # the finished task kept its result
    # --json prints the API's shapes: every key of each, no other
    assert set(shown) == RunShown.__required_keys__
    assert all(set(t) == Task.__required_keys__ for t in shown["tasks"])
    tries = [(a["task"], a["attempt"], a["state"]) for a in shown["attempts"]]
    assert tries == [("first", 1, "succeeded"), ("second", 1, "failed"), ("second", 2, "succeeded")]
    assert all(set(a) == Attempt.__required_keys__ for a in shown["attempts"])
    assert [line["message"] for line in shown["logs"]] == ["flag found"]
    assert all(set(line) == LogLine.__required_keys__ for line in shown["logs"])
    status, out, err = await evflow("logs", run_id, "--store", str(store), "--json", cwd=root)
    assert status == 0, out + err
    assert orjson.loads(out) == shown["logs"]
    assert (root / "marks.txt").read_text() == "first\n"

    # from a task: it and what is downstream of it run again, here
    status, out, err = await evflow(
        "retry", run_id, "--from", "first", "--store", str(store), cwd=root
    )
    assert status == 0, out + err
    assert "running 'first' and everything downstream of it again" in out
    assert (root / "marks.txt").read_text() == "first\nfirst\n"
    status, out, err = await evflow(
        "retry", run_id, "--from", "nope", "--store", str(store), cwd=root
    )
    assert status == 2 and "no task 'nope'" in err, out + err

    # user mistakes are errors naming what exists, with status 2
    status, out, err = await evflow("logs", run_id, "nope", "--store", str(store), cwd=root)
    assert status == 2 and "its tasks: first, second" in err, out + err
    status, out, err = await evflow("runs", "--state", "done", "--store", str(store), cwd=root)
    assert status == 2 and "invalid choice: 'done'" in err, out + err


async def test_backfill_runs_each_slot_once(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    store = tmp_path / "evflow.db"
    args = (
        "backfill",
        "hourly",
        "--start",
        "2026-03-01T00:00Z",
        "--end",
        "2026-03-01T05:00Z",
        "--max-active",
        "2",
        "--store",
        str(store),
    )
    status, out, err = await evflow(*args, cwd=root)
    assert status == 0, out + err
    assert "6 succeeded, 0 failed" in out
    done = await runs(root, store)
    assert sorted(r["params"]["scheduled_time"] for r in done) == [
        f"2026-03-01T0{h}:00:00+00:00" for h in range(6)
    ]
    assert {r["trigger"]["kind"] for r in done} == {"backfill"}

    status, out, err = await evflow(*args, cwd=root)  # the same range again: nothing new
    assert status == 0, out + err
    assert "0 succeeded, 0 failed" in out
    assert len(await runs(root, store)) == 6


async def test_trigger_into_a_store_then_cancel_it(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    store = tmp_path / "evflow.db"
    env = clean_env()
    status, out, err = await evflow("trigger", "flaky", "--store", str(store), cwd=root, env=env)
    assert status == 0, out + err
    run_id = re.search(r"run ([0-9a-f]{32}) queued", out).group(1)  # type: ignore[union-attr]
    (queued,) = await runs(root, store)
    assert queued["state"] == "queued"

    status, out, err = await evflow("cancel", run_id, "--store", str(store), cwd=root)
    assert status == 0 and "cancelled" in out, out + err
    (cancelled,) = await runs(root, store)
    assert cancelled["state"] == "cancelled"
    status, out, err = await evflow("cancel", run_id, "--store", str(store), cwd=root)
    assert status == 0 and "already finished" in out


async def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """``evflow audit export | head -1``: no BrokenPipeError traceback, a clean exit."""
    db = tmp_path / "evflow.db"
    await make_trail(db)
    for _ in range(30):  # enough records that the export outruns a reader taking one line
        await make_trail(db)
    script = (
        f"{sys.executable} -m evflow.cli audit export --store {db} | head -1 >/dev/null; "
        "exit ${PIPESTATUS[0]}"
    )
    with anyio.fail_after(120):
        done = await anyio.run_process(["bash", "-c", script], check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
