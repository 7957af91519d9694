"""Crash safety with real processes: SIGKILL mid-run, start again, the run completes.

Finished tasks are not re-run, the interrupted attempt counts, queued runs are not lost, and a
branch's choice survives the restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import anyio
from anyio.abc import Process

from evflow import Engine, RunState, TaskState, flow, task
from evflow.records import RunRecord
from evflow.store import Store, connect
from tests.observers import until
from tests.postgres import store_for

SCRIPT = Path(__file__).parent / "scripts" / "crash_flows.py"
LIMIT_S = 60  # includes starting a Python interpreter; a hang fails instead of blocking


async def lines(path: Path) -> list[str]:
    p = anyio.Path(path)
    return (await p.read_text()).splitlines() if await p.exists() else []


def output_file(path: Path) -> IO[bytes]:
    return path.open("ab")


async def spawn(tmp_path: Path, flow: str, mode: str, out: IO[bytes], *, released: bool) -> Process:
    env = {k: v for k, v in os.environ.items() if k != "EVFLOW_TEST_RELEASE"}
    if released:
        env["EVFLOW_TEST_RELEASE"] = "1"
    cmd = [
        sys.executable,
        str(SCRIPT),
        store_for(tmp_path),
        str(tmp_path / "work"),
        flow,
        mode,
    ]
    return await anyio.open_process(
        cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
    )


async def run_ids(work: Path) -> dict[str, str] | None:
    p = anyio.Path(work / "runs.json")
    return json.loads(await p.read_text()) if await p.exists() else None


async def tasks_of(store: Store, run_id: str) -> dict[str, tuple[TaskState, int]]:
    run = await store.get_run(run_id)
    return {t.name: (t.state, t.attempt) for t in run.tasks}


async def kill(proc: Process) -> None:
    proc.send_signal(signal.SIGKILL)
    with anyio.fail_after(LIMIT_S):
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def resume(tmp_path: Path, flow: str) -> None:
    """Start the second process (blocking condition now satisfied); it must end cleanly."""
    log = tmp_path / f"{flow}-resume.out"
    with output_file(log) as out:
        async with await spawn(tmp_path, flow, "resume", out, released=True) as proc:
            with anyio.fail_after(LIMIT_S):
                await proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text


async def test_killed_run_resumes_without_redoing_finished_tasks(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    db = store_for(tmp_path)

    with output_file(tmp_path / "chain-start.out") as out:
        async with await spawn(tmp_path, "chain", "start", out, released=False) as proc:
            ids = await until(lambda: run_ids(work))
            r1, r2 = ids["r1"], ids["r2"]
            await until(lambda: _has_lines(work / "two.log", ["r1"]))
            async with connect(db) as store:
                # The running record is committed right after the task starts; pin the crash
                # after that commit so "the interrupted attempt counts" is what is tested.
                async def step_two_running() -> bool:
                    return (await tasks_of(store, r1)).get("step_two") == (TaskState.RUNNING, 1)

                await until(step_two_running)

                async def queued() -> RunRecord | None:
                    run = await store.get_run(r2, with_tasks=False)
                    return run if run.waiting else None

                waiting = await until(queued)
                assert waiting.state is RunState.QUEUED
                assert waiting.waiting is not None and "max_active_runs=1" in waiting.waiting
                await kill(proc)

    assert await lines(work / "one.log") == ["r1"]
    await resume(tmp_path, "chain")

    async with connect(db) as store:
        first = await store.get_run(r1)
        second = await store.get_run(r2)
        assert first.state is RunState.SUCCEEDED, first.error
        assert second.state is RunState.SUCCEEDED, second.error
        # step_one ran once per run: its result came from the store after the restart.
        assert await tasks_of(store, r1) == {
            "step_one": (TaskState.SUCCEEDED, 1),
            "step_two": (TaskState.SUCCEEDED, 2),  # the killed attempt counts
        }
        assert await tasks_of(store, r2) == {
            "step_one": (TaskState.SUCCEEDED, 1),
            "step_two": (TaskState.SUCCEEDED, 1),
        }
        results = {t.name: json.loads(t.result or b"null") for t in first.tasks}
        assert results == {"step_one": "one:r1", "step_two": "one:r1|two"}
        assert second.waiting is None

        run_audit = [a.kind for a in await store.list_audit(subject=f"run:{r1}")]
        assert "run.resumed" in run_audit
        assert run_audit[-1] == "run.succeeded"
        task_audit = [a.kind for a in await store.list_audit(subject=f"run:{r1}/task:step_two")]
        assert task_audit == ["task.running", "task.interrupted", "task.running", "task.succeeded"]
        attempts = sorted((a.task, a.attempt, a.state) for a in await store.list_attempts(r1))
        assert attempts == [
            ("step_one", 1, TaskState.SUCCEEDED),
            ("step_two", 1, TaskState.INTERRUPTED),  # the killed attempt is on record
            ("step_two", 2, TaskState.SUCCEEDED),
        ]
        assert await store.unfinished_runs() == []

    assert await lines(work / "one.log") == ["r1", "r2"]  # exactly once per run
    # step_two of r1 started twice (killed, resumed); r2 ran only after r1 (max_active_runs=1).
    assert await lines(work / "two.log") == ["r1", "r1", "r2"]


async def test_branch_choice_survives_a_restart(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    db = store_for(tmp_path)

    with output_file(tmp_path / "branch-start.out") as out:
        async with await spawn(tmp_path, "branch", "start", out, released=False) as proc:
            ids = await until(lambda: run_ids(work))
            r1 = ids["r1"]
            await until(lambda: _has_lines(work / "slow.log", ["slow"]))
            async with connect(db) as store:

                async def decided() -> bool:
                    t = await tasks_of(store, r1)
                    return (
                        t.get("left") == (TaskState.SUCCEEDED, 1)
                        and t.get("slow") == (TaskState.RUNNING, 1)
                        and t.get("right") == (TaskState.PENDING, 0)
                    )

                await until(decided)
                await kill(proc)

    await resume(tmp_path, "branch")

    async with connect(db) as store:
        run = await store.get_run(r1)
        assert run.state is RunState.SUCCEEDED, run.error
        assert await tasks_of(store, r1) == {
            "choose": (TaskState.SUCCEEDED, 1),
            "left": (TaskState.SUCCEEDED, 1),
            "slow": (TaskState.SUCCEEDED, 2),
            "right": (TaskState.SKIPPED, 0),
        }
    assert await lines(work / "choose.log") == ["choose"]
    assert await lines(work / "left.log") == ["left"]
    assert await lines(work / "slow.log") == ["slow", "slow"]
    assert await lines(work / "right.log") == []


async def _has_lines(path: Path, expected: list[str]) -> bool:
    return await lines(path) == expected


# -- graceful shutdown (same process): interrupted, not failed; resumed at the next start --------
async def test_shutdown_interrupts_a_running_task_and_the_next_start_resumes_it(
    tmp_path: Path,
) -> None:
    db = store_for(tmp_path)
    calls = {"first": 0, "blocker": 0}
    blocking = anyio.Event()
    released = False

    @task
    async def first() -> int:
        calls["first"] += 1
        return 1

    @task
    async def blocker(x: int) -> int:
        calls["blocker"] += 1
        if not released:
            blocking.set()
            await anyio.sleep_forever()
        return x + 1

    @flow
    def graceful() -> None:
        blocker(first())

    with anyio.fail_after(LIMIT_S):
        async with Engine(db, grace_period_s=0) as engine:
            run_id = await engine.submit(graceful)
            await blocking.wait()

    async with connect(db) as store:
        run = await store.get_run(run_id)
        assert run.state is RunState.RUNNING  # unfinished, to resume; not failed or cancelled
        assert await tasks_of(store, run_id) == {
            "first": (TaskState.SUCCEEDED, 1),
            "blocker": (TaskState.INTERRUPTED, 1),
        }

    released = True
    engine = Engine(db, grace_period_s=0)
    engine.add(graceful)
    async with engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.wait(run_id)
    assert result.ok, result.error
    assert result.result("blocker") == 2
    assert result.tasks["first"].attempts == 1
    assert result.tasks["blocker"].attempts == 2
    assert calls == {"first": 1, "blocker": 2}


async def test_shutdown_lets_running_tasks_finish_within_the_grace_period(
    tmp_path: Path,
) -> None:
    db = store_for(tmp_path)
    running = anyio.Event()
    release = anyio.Event()

    @task
    async def finishing() -> str:
        running.set()
        await release.wait()
        return "done"

    @flow
    def patient() -> None:
        finishing()

    async def release_once_stopping(engine: Engine) -> None:
        async def stopping() -> bool:
            return not engine.running

        await until(stopping)
        release.set()

    with anyio.fail_after(LIMIT_S):
        async with (
            anyio.create_task_group() as tg,
            Engine(db, grace_period_s=LIMIT_S) as engine,
        ):
            run_id = await engine.submit(patient)
            await running.wait()
            tg.start_soon(release_once_stopping, engine)

    async with connect(db) as store:
        run = await store.get_run(run_id)
        assert run.state is RunState.SUCCEEDED, run.error
        assert await tasks_of(store, run_id) == {"finishing": (TaskState.SUCCEEDED, 1)}


async def test_a_task_interrupted_again_and_again_is_given_up(tmp_path: Path) -> None:
    # A task that takes the process down with it must not restart-loop forever.
    db = store_for(tmp_path)
    entered = 0
    blocking = anyio.Event()

    @task
    async def never_finishes() -> None:
        nonlocal entered
        entered += 1
        blocking.set()
        await anyio.sleep_forever()

    @flow
    def doomed() -> None:
        never_finishes()

    run_id = ""
    for start in range(5):
        blocking = anyio.Event()
        engine = Engine(db, grace_period_s=0)
        engine.add(doomed)
        with anyio.fail_after(LIMIT_S):
            async with engine:
                if start == 0:
                    run_id = await engine.submit(doomed)
                if start < 4:
                    await blocking.wait()
                else:
                    result = await engine.wait(run_id)

    assert entered == 4
    assert result.state is RunState.FAILED
    t = result.tasks["never_finishes"]
    assert t.state is TaskState.FAILED
    assert t.error is not None and "interrupted 4 times" in t.error
    async with connect(db) as store:
        attempts = [(a.attempt, a.state) for a in await store.list_attempts(run_id)]
    assert attempts == [(n, TaskState.INTERRUPTED) for n in (1, 2, 3, 4)]


async def test_failed_attempts_before_a_restart_count_against_the_retries(tmp_path: Path) -> None:
    db = store_for(tmp_path)
    entered = 0
    blocking = anyio.Event()

    @task(retries=1, retry_delay=0)
    async def fragile() -> None:
        nonlocal entered
        entered += 1
        if entered == 2:  # the retry is running when the engine stops
            blocking.set()
            await anyio.sleep_forever()
        raise RuntimeError(f"failure {entered}")

    @flow
    def budget() -> None:
        fragile()

    with anyio.fail_after(LIMIT_S):
        async with Engine(db, grace_period_s=0) as engine:
            run_id = await engine.submit(budget)
            await blocking.wait()
        engine = Engine(db, grace_period_s=0)
        engine.add(budget)
        async with engine:
            result = await engine.wait(run_id)

    # Attempt 1 failed, attempt 2 was interrupted, attempt 3 failed: with retries=1 that is
    # the end; the restart does not hand out a fresh retry budget.
    assert entered == 3
    t = result.tasks["fragile"]
    assert t.state is TaskState.FAILED
    assert t.attempts == 3
    assert t.error == "RuntimeError: failure 3"
