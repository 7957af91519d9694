"""The SQLite store under a real Engine: schema version, durability, logs, the audit trail."""

from __future__ import annotations

import os
import socket
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from evflow import Engine, RunState, TaskState, flow, get_logger, task
from evflow.audit import verify
from evflow.errors import SchemaVersionError, StoreError, StoreInUse
from evflow.records import RunRecord, TaskRecord
from evflow.store import connect
from evflow.store.base import Changes, chain_hash
from evflow.store.chains import genesis
from evflow.store.schema import SCHEMA_VERSION
from evflow.store.sqlite import SqliteStore
from tests.engines import new_engine
from tests.observers import LIMIT_S


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


@task
async def greet(name: str) -> str:
    return f"hello {name}"


@task
def shout(text: str) -> str:
    return text.upper()


@flow
def hello(name: str) -> None:
    shout(greet(name))


async def test_new_store_has_the_current_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "dir" / "evflow.db"  # missing folders are created
    async with SqliteStore(db):
        pass
    assert user_version(db) == SCHEMA_VERSION >= 1
    async with SqliteStore(f"sqlite:///{db}"):  # the URL form, reopened: no migration again
        pass
    assert user_version(db) == SCHEMA_VERSION


async def test_two_stores_opening_a_new_file_at_once_both_work(tmp_path: Path) -> None:
    # ``evflow serve`` and a CLI command may open a fresh store at the same moment; the schema
    # must be created once, not twice.
    db = tmp_path / "evflow.db"
    opened: list[int] = []

    async def open_one() -> None:
        async with SqliteStore(db) as store:
            opened.append(await store.count_runs())

    with anyio.fail_after(LIMIT_S):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(open_one)
    assert opened == [0, 0, 0]
    assert user_version(db) == SCHEMA_VERSION


async def test_a_store_from_a_newer_evflow_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    async with SqliteStore(db):
        pass
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.commit()
    with pytest.raises(SchemaVersionError) as info:
        async with SqliteStore(db):
            pass
    msg = str(info.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in msg and f"({SCHEMA_VERSION})" in msg, msg
    assert str(db) in msg
    with pytest.raises(SchemaVersionError):
        async with Engine(db):
            pass
    assert user_version(db) == SCHEMA_VERSION + 1  # left untouched


async def test_reopening_the_store_keeps_runs_and_results(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    async with Engine(db, grace_period_s=0) as engine:
        with anyio.fail_after(LIMIT_S):
            first = await engine.run(hello, name="ada")
    assert first.ok, first.error

    async with Engine(db, grace_period_s=0) as engine:
        engine.add(hello)
        with anyio.fail_after(LIMIT_S):
            again = await engine.wait(first.run_id)  # finished: returns at once
            second = await engine.run(hello, name="bob")
        assert again.state is RunState.SUCCEEDED
        assert again.params == {"name": "ada"}
        assert again.result("shout") == "HELLO ADA"
        assert second.result("shout") == "HELLO BOB"
        assert await engine.store.count_runs(flow="hello") == 2
        assert await engine.store.count_runs(state="succeeded") == 2
        listed = await engine.store.list_runs(flow="hello")
        assert {r.id for r in listed} == {first.run_id, second.run_id}
        by_prefix = await engine.store.get_run(first.run_id[:12])
        assert by_prefix.id == first.run_id

    async with SqliteStore(db) as store:
        run = await store.get_run(first.run_id)
        assert run.state is RunState.SUCCEEDED
        assert run.flow_version == hello.version
        assert {t.name: t.state for t in run.tasks} == {
            "greet": TaskState.SUCCEEDED,
            "shout": TaskState.SUCCEEDED,
        }
        assert await store.unfinished_runs() == []


async def test_task_logs_are_stored_with_their_level(engine: Engine) -> None:
    @task
    async def chatty(n: int) -> int:
        log = get_logger()
        log.debug("not stored at the default level")
        log.info("starting with %d", n)
        log.warning("careful")
        return n

    @task
    def threaded(n: int) -> int:
        log = get_logger()  # a sync task in a worker thread logs to its own attempt too
        log.error("from a thread: %s", n)
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("caught")
        return n + 1

    @flow
    def logging_flow(n: int) -> None:
        threaded(chatty(n))

    async with engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(logging_flow, n=7)
        assert result.ok, result.error
        logs = await engine.store.list_logs(result.run_id)
        assert [(lg.task, lg.level, lg.message.splitlines()[0]) for lg in logs] == [
            ("chatty", "INFO", "starting with 7"),
            ("chatty", "WARNING", "careful"),
            ("threaded", "ERROR", "from a thread: 7"),
            ("threaded", "ERROR", "caught"),
        ]
        assert "KeyError" in logs[-1].message  # the traceback is kept
        assert all(lg.attempt == 1 for lg in logs)
        only = await engine.store.list_logs(result.run_id, "threaded")
        assert [lg.message.splitlines()[0] for lg in only] == ["from a thread: 7", "caught"]
        after = await engine.store.list_logs(result.run_id, after_seq=logs[1].seq)
        assert [lg.seq for lg in after] == [logs[2].seq, logs[3].seq]


async def test_logs_of_each_attempt_are_kept(tmp_path: Path) -> None:
    tries = 0

    @task(retries=1, retry_delay=0)
    def twice() -> None:
        nonlocal tries
        tries += 1
        get_logger().info("try %d", tries)
        if tries == 1:
            raise RuntimeError("first try fails")

    @flow
    def retried() -> None:
        twice()

    async with new_engine(tmp_path, task_log_level=10) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(retried)
        assert result.ok, result.error
        logs = await engine.store.list_logs(result.run_id)
        assert [(lg.attempt, lg.message) for lg in logs] == [(1, "try 1"), (2, "try 2")]


async def test_audit_trail_has_a_record_per_state_change(tmp_path: Path) -> None:
    tries = 0

    @task(retries=1, retry_delay=0)
    async def flaky() -> int:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise RuntimeError("once")
        return tries

    @task
    def after(n: int) -> int:
        return n

    @flow
    def audited() -> None:
        after(flaky())

    async with new_engine(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            result = await engine.run(audited)
        assert result.ok, result.error
        store = engine.store
        await store.flush()
        rid = result.run_id
        assert [a.kind for a in await store.list_audit(subject=f"run:{rid}")] == [
            "run.queued",
            "run.running",
            "run.succeeded",
        ]
        assert [a.kind for a in await store.list_audit(subject=f"run:{rid}/task:flaky")] == [
            "task.running",
            "task.retrying",
            "task.running",
            "task.succeeded",
        ]
        assert [a.kind for a in await store.list_audit(subject=f"run:{rid}/task:after")] == [
            "task.running",
            "task.succeeded",
        ]
        retrying = (await store.list_audit(subject=f"run:{rid}/task:flaky"))[1]
        assert retrying.data["error"] == "RuntimeError: once"

        # The trail is hash chains: each record covers the one before it in its chain.
        rows = await store.audit_rows()
        assert rows
        prev: dict[str, str] = {}
        for _seq, t, kind, subject, actor, data, prev_hash, h, chain, pos in rows:
            assert prev_hash == prev.get(chain, genesis(chain))
            assert h == chain_hash(prev_hash, pos, t, kind, subject, actor, data)
            prev[chain] = h
        first_chain = rows[-1][8]

    # Reopened, the writer appends to a chain of its own; the trail's order goes on.
    async with new_engine(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            await engine.run(audited)
        await engine.store.flush()
        rows = await engine.store.audit_rows()
        seqs = [r[0] for r in rows]
        assert seqs == list(range(1, len(rows) + 1))
        assert rows[-1][8] != first_chain
        assert (await verify(engine.store)).ok


async def test_a_run_created_twice_under_one_id_is_inserted_once_and_never_reset(
    tmp_path: Path,
) -> None:
    """Two writers (two deciders, a replay) creating the run of one (rule, event): the first
    insert wins, the second changes nothing and learns that it did not create the run."""
    db = tmp_path / "evflow.db"

    def run_of(n: int) -> RunRecord:
        return RunRecord(
            id="r-1",
            flow="hello",
            flow_version="v",
            params={"n": n},
            state=RunState.QUEUED,
            created_at=1.0,
        )

    def creating(n: int) -> Changes:
        run = run_of(n)
        task = TaskRecord(run_id=run.id, name="t", node="t", state=TaskState.PENDING)
        return Changes(new_runs=[run], new_tasks=[task])

    async with SqliteStore(db) as one, SqliteStore(db) as two:
        first, second = creating(1), creating(2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: one.apply(first, wait=True))
            tg.start_soon(lambda: two.apply(second, wait=True))
        assert len(first.created_runs | second.created_runs) == 1
        assert first.created_runs.isdisjoint(second.created_runs)
        winner = 1 if first.created_runs else 2
        done = replace(run_of(winner), state=RunState.SUCCEEDED)
        await one.apply(Changes(runs=[done]), wait=True)
        again = creating(3)  # decided once more, later: the finished run stays as it is
        await two.apply(again, wait=True)
        assert again.created_runs == set()
        stored = await two.get_run("r-1")
        assert stored.state is RunState.SUCCEEDED
        assert stored.params == {"n": winner}
        assert [t.name for t in stored.tasks] == ["t"]
        assert await two.count_runs() == 1


async def test_a_second_engine_on_a_store_is_refused_naming_the_first(tmp_path: Path) -> None:
    # One machine's store (SQLite) runs one engine; on PostgreSQL, several join a cluster
    # (tests/integration/test_cluster.py).
    where = tmp_path / "evflow.db"
    async with Engine(where, grace_period_s=0):
        with pytest.raises(
            StoreInUse, match=rf"another evflow instance \(host \S+, pid {os.getpid()}"
        ):
            async with Engine(where, grace_period_s=0):
                pass
        # A command-line engine (no resuming) may work beside it.
        async with Engine(where, grace_period_s=0, resume=False) as helper:
            helper.add(hello)
            assert (await helper.run(hello, name="x")).state is RunState.SUCCEEDED
    # Given back at a clean stop: the next engine starts at once.
    async with Engine(where, grace_period_s=0) as engine:
        leases = await engine.store.list_leases()
        assert [(x.name, x.host, x.pid) for x in leases] == [
            ("engine", socket.gethostname(), os.getpid())
        ]


async def test_the_lease_of_a_killed_process_on_this_host_is_taken_over_at_once(
    tmp_path: Path,
) -> None:
    proc = await anyio.open_process(["true"])  # a process that has exited: its pid is free
    await proc.wait()
    dead_pid = proc.pid
    where = tmp_path / "evflow.db"  # on PostgreSQL: see test_cluster.py
    async with connect(where) as store:
        taken, old = await store.acquire_lease(
            "engine", "killed", socket.gethostname(), dead_pid, ttl_s=3600
        )
        assert taken
    async with Engine(where, grace_period_s=0) as engine:
        (lease,) = await engine.store.list_leases()
        assert (lease.pid, lease.epoch) == (os.getpid(), old.epoch + 1)


def test_a_postgresql_url_given_as_a_path_is_refused_not_made_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="is a PostgreSQL URL, not a SQLite file"):
        SqliteStore(Path("postgresql://evflow:secret@db.internal:5432/evflow"))
    assert list(tmp_path.iterdir()) == []
