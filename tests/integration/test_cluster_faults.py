"""Instances that die or stall, for real: two ``evflow serve`` processes share one PostgreSQL
store; one is SIGKILLed, or SIGSTOPped past its TTL and woken again. The other adopts its run;
finished tasks never run again; a woken instance writes nothing more and stops."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest

from tests.integration.test_service import Service, clean_env, serving, write
from tests.observers import LIMIT_S, until

PIPE = """
import os
from pathlib import Path

import anyio

from evflow import flow, task

WORK = Path(os.environ["WORK"])


def note(name: str, n: int) -> None:
    with (WORK / name).open("a") as f:
        f.write(f"{n} {os.getpid()}\\n")


@task
async def first(n: int) -> int:
    note("first.log", n)
    return n


@task
async def slow(n: int) -> int:
    note("slow.log", n)
    while not (WORK / "release").exists():
        await anyio.sleep(0.05)
    note("done.log", n)
    return n


@flow
def pipe(n: int) -> None:
    slow(first(n))
"""


def project(root: Path) -> Path:
    write(
        root / "evflow.toml",
        """
        [engine]
        grace_period_s = 0

        [cluster]
        heartbeat_s = 0.2
        ttl_s = 2
        """,
    )
    write(root / "flows" / "__init__.py", "")
    (root / "flows" / "pipe.py").write_text(PIPE)
    return root


def lines(path: Path) -> list[tuple[int, int]]:
    """(n, pid) per line of a task's log."""
    if not path.exists():
        return []
    return [(int(a), int(b)) for a, b in (ln.split() for ln in path.read_text().splitlines())]


def base_url(service: Service) -> str:
    line = next(ln for ln in service.stdout.splitlines() if ln.strip().startswith("http "))
    return line.split()[1]


async def two_instances(stack: AsyncExitStack, root: Path, url: str) -> tuple[Service, Service]:
    env = clean_env(EVFLOW_STORE_URL=url, WORK=str(root))
    first = await stack.enter_async_context(serving(root, root / "logs-a", env))
    second = await stack.enter_async_context(serving(root, root / "logs-b", env))
    return first, second


def run_row(url: str) -> tuple[str, str | None, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT state, owner, epoch FROM runs").fetchone()
    assert row is not None
    return str(row[0]), row[1], int(row[2])


def succeeded(url: str) -> bool:
    return run_row(url)[0] == "succeeded"


def slow_running(url: str) -> bool:
    """Whether the store has `slow` running (its start committed)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT state FROM tasks WHERE name = 'slow'").fetchone()
    return row is not None and row[0] == "running"


def last_write_after_takeover(url: str, pid: int) -> tuple[float, float]:
    """(when the instance of ``pid`` was taken over, the time of its last audit record)."""
    with psycopg.connect(url, autocommit=True) as conn:
        taken = conn.execute(
            "SELECT extract(epoch from stopped_at)::float8 FROM instances "
            "WHERE pid = %s AND taken_over_by IS NOT NULL",
            (pid,),
        ).fetchone()
        last = conn.execute(
            "SELECT max(a.time) FROM audit a WHERE a.chain IN ("
            "  SELECT substr(subject, 7) FROM audit WHERE kind = 'audit.chain_opened' "
            "  AND (convert_from(data, 'UTF8')::jsonb ->> 'pid')::int = %s)",
            (pid,),
        ).fetchone()
    assert taken is not None and last is not None and last[0] is not None
    return float(taken[0]), float(last[0])


def attempts_of(url: str, task: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state FROM attempts WHERE task = %s ORDER BY attempt", (task,)
        ).fetchall()
    return [str(r[0]) for r in rows]


async def trigger(service: Service, n: int) -> str:
    async with httpx.AsyncClient(base_url=base_url(service)) as http:
        answer = await http.post("/api/flows/pipe/runs", json={"params": {"n": n}})
    assert answer.status_code == 201, answer.text
    run_id: str = answer.json()["run_id"]
    return run_id


async def wait_lines(path: Path, n: int) -> list[tuple[int, int]]:
    async def probe() -> list[tuple[int, int]] | None:
        found = lines(path)
        return found if len(found) >= n else None

    return await until(probe, within_s=LIMIT_S * 2)


@pytest.fixture
async def work(tmp_path: Path) -> AsyncIterator[Path]:
    yield project(tmp_path / "project")


async def test_a_killed_instances_run_goes_on_on_another_without_redoing_finished_tasks(
    work: Path, postgres_url: str
) -> None:
    async with AsyncExitStack() as stack:
        a, b = await two_instances(stack, work, postgres_url)
        await trigger(a, 1)
        ((_, pid_a),) = await wait_lines(work / "slow.log", 1)
        assert pid_a == a.process.pid
        await until(lambda: anyio.to_thread.run_sync(slow_running, postgres_url))
        a.process.send_signal(signal.SIGKILL)
        await a.process.wait()
        # Its process is gone: the other instance, on the same host, takes over at its next
        # heartbeat, without waiting for the TTL.
        slow = await wait_lines(work / "slow.log", 2)
        assert slow[1] == (1, b.process.pid)
        (work / "release").touch()
        await until(lambda: anyio.to_thread.run_sync(succeeded, postgres_url))
        assert lines(work / "first.log") == [(1, a.process.pid)]  # finished: not run again
        assert lines(work / "done.log") == [(1, b.process.pid)]
        _, owner, epoch = run_row(postgres_url)
        assert owner is not None and owner.split("-")[-2] == str(b.process.pid)
        assert epoch == 2
        assert attempts_of(postgres_url, "slow") == ["interrupted", "succeeded"]
        assert await b.stop() == 0


async def test_a_stalled_instance_is_taken_over_and_writes_nothing_when_it_wakes(
    work: Path, postgres_url: str
) -> None:
    async with AsyncExitStack() as stack:
        a, b = await two_instances(stack, work, postgres_url)
        await trigger(a, 2)
        await wait_lines(work / "slow.log", 1)
        await until(lambda: anyio.to_thread.run_sync(slow_running, postgres_url))
        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            # Silent past its TTL (2 s): the other declares it dead and adopts its run.
            slow = await wait_lines(work / "slow.log", 2)
            assert slow[1] == (2, b.process.pid)
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        # Awake again, it finds itself out of the cluster and stops, writing nothing more.
        with anyio.fail_after(LIMIT_S):
            status = await a.process.wait()
        assert status != 0
        assert "taken over" in a.stderr.read_text() or "out of the cluster" in a.stderr.read_text()
        (work / "release").touch()
        await until(lambda: anyio.to_thread.run_sync(succeeded, postgres_url))
        assert lines(work / "done.log") == [(2, b.process.pid)]
        assert attempts_of(postgres_url, "slow") == ["interrupted", "succeeded"]
        assert await b.stop() == 0
    # Nothing the stalled instance wrote landed after it was taken over: its audit chain (the
    # one it opened, by its pid) ends before that moment.
    taken_at, last_write = last_write_after_takeover(postgres_url, a.process.pid)
    assert last_write < taken_at
