"""The store reads behind the web UI's grid, timeline, paging and search, on every backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from evflow.records import AttemptRecord, RunRecord, TaskRecord
from evflow.states import RunState, TaskState
from evflow.store import Store
from evflow.store.base import AuditEntry, Changes

Factory = Callable[[], Store]


def _audit(kind: str, subject: str, data: dict[str, Any]) -> AuditEntry:
    """An audit entry of ``kind`` given by its text (as stored)."""
    return AuditEntry(cast(Any, kind), subject, data)


def _run(run_id: str, flow: str, created_at: float, **params: object) -> RunRecord:
    return RunRecord(
        id=run_id,
        flow=flow,
        flow_version="v1",
        params=params,
        state=RunState.RUNNING,
        created_at=created_at,
    )


def _task(
    run_id: str,
    name: str,
    state: TaskState,
    *,
    node: str = "",
    index: int | None = None,
    attempt: int = 1,
) -> TaskRecord:
    return TaskRecord(
        run_id=run_id, name=name, node=node or name, state=state, map_index=index, attempt=attempt
    )


async def test_task_counts_group_a_mapped_task_by_state(store_factory: Factory) -> None:
    async with store_factory() as store:
        tasks = [_task("r1", "extract", TaskState.SUCCEEDED, attempt=2)]
        tasks += [
            _task(
                "r1",
                f"load[{i}]",
                TaskState.FAILED if i % 4 == 0 else TaskState.SUCCEEDED,
                node="load",
                index=i,
            )
            for i in range(10)
        ]
        tasks.append(_task("r2", "extract", TaskState.RUNNING))
        tasks.append(_task("r1", "load", TaskState.SUCCEEDED, attempt=0))  # the mapped task's own
        runs = [_run("r1", "etl", 1.0), _run("r2", "etl", 2.0)]
        await store.apply(Changes(runs=runs, tasks=tasks), wait=True)
        counts = sorted(await store.task_counts(["r1", "r2", "missing"]))
        assert counts == [
            ("r1", "extract", "succeeded", 1, 2, False),
            ("r1", "load", "failed", 3, 1, True),
            ("r1", "load", "succeeded", 1, 0, False),
            ("r1", "load", "succeeded", 7, 1, True),
            ("r2", "extract", "running", 1, 1, False),
        ]
        assert await store.task_counts([]) == []

        # Counted for the same filters as the pages below.
        assert await store.count_tasks("r1") == 12
        assert await store.count_tasks("r1", node="load") == 11
        assert await store.count_tasks("r1", node="load", mapped=True) == 10
        assert await store.count_tasks("r1", node="load", state="failed", mapped=True) == 3
        assert await store.count_tasks("r1", mapped=False) == 2
        assert await store.count_tasks("r1", node="extract", mapped=True) == 0
        assert await store.count_tasks("missing") == 0

        page = await store.list_tasks("r1", node="load", mapped=True, limit=4, offset=4)
        assert [t.map_index for t in page] == [4, 5, 6, 7]
        failed = await store.list_tasks("r1", node="load", state="failed", mapped=True)
        assert [t.name for t in failed] == ["load[0]", "load[4]", "load[8]"]
        assert [t.name for t in await store.list_tasks("r1", mapped=False)] == ["extract", "load"]
        assert len(await store.list_tasks("r1", mapped=True)) == 10
        # Own records and instances read together: a node's own record first, then its
        # instances by index.
        both = await store.list_tasks("r1", node="load", limit=3, offset=0)
        assert [t.name for t in both] == ["load", "load[0]", "load[1]"]
        both = await store.list_tasks("r1", state="succeeded", limit=3, offset=1)
        assert [t.name for t in both] == ["load", "load[1]", "load[2]"]
        assert await store.count_tasks("r1", state="succeeded") == 9


async def test_a_task_changed_twice_in_one_commit_keeps_its_last_record(
    store_factory: Factory,
) -> None:
    async with store_factory() as store:
        await store.apply(Changes(runs=[_run("r1", "etl", 1.0)]), wait=True)
        running = _task("r1", "extract", TaskState.RUNNING)
        ended = replace(running, state=TaskState.SUCCEEDED, result=b"1")
        other = _task("r1", "load", TaskState.RUNNING)
        # Queued without waiting, then one commit for all three changes.
        await store.apply(Changes(tasks=[running, other]))
        await store.apply(Changes(tasks=[ended]), wait=True)
        run = await store.get_run("r1")
        assert {t.name: (t.state, t.result) for t in run.tasks} == {
            "extract": (TaskState.SUCCEEDED, b"1"),
            "load": (TaskState.RUNNING, None),
        }


async def test_search_runs_finds_id_flow_and_param_text(store_factory: Factory) -> None:
    async with store_factory() as store:
        runs = [
            _run("a1b2c3", "orders", 1.0, customer="ada_lovelace"),
            _run("d4e5f6", "billing", 2.0, customer="grace"),
            replace(_run("0a9b8c", "orders", 3.0, customer="alan"), state=RunState.FAILED),
        ]
        await store.apply(Changes(runs=runs), wait=True)

        async def ids(text: str, **kw: object) -> tuple[list[str], int]:
            found, total = await store.search_runs(text, **kw)  # type: ignore[arg-type]
            return [r.id for r in found], total

        assert await ids("lovelace") == (["a1b2c3"], 1)
        assert await ids("ORDERS") == (["0a9b8c", "a1b2c3"], 2)  # newest first, any case
        assert await ids("d4e5") == (["d4e5f6"], 1)
        assert await ids("orders", state="failed") == (["0a9b8c"], 1)
        assert await ids("orders", limit=1, offset=1) == (["a1b2c3"], 2)
        # The total whether the page ends the listing, fills the page, or is past the end.
        assert await ids("orders", limit=1) == (["0a9b8c"], 2)
        assert await ids("orders", limit=5, offset=1) == (["a1b2c3"], 2)
        assert await ids("orders", offset=5) == ([], 2)
        assert await ids("a_l") == (["a1b2c3"], 1)  # "_" is itself, not a wildcard
        assert await ids("%") == ([], 0)
        assert await ids("orders", since=2.5) == (["0a9b8c"], 1)


async def test_task_waits_come_from_the_audit_trail(store_factory: Factory) -> None:
    async with store_factory() as store:
        audit = [
            _audit("task.waiting", "run:r1/task:load", {"reason": "pool db is full (1/1)"}),
            _audit("task.running", "run:r1/task:load", {"attempt": 1}),
            _audit("task.waiting", "run:r10/task:load", {"reason": "another run"}),
            _audit("task.waiting", "run:r1/task:save[3]", {"reason": "global limit"}),
        ]
        await store.apply(Changes(audit=audit), wait=True)
        waits = await store.task_waits("r1", ["load", "save[3]", "other"])
        assert [(task, reason) for task, _, reason in waits] == [
            ("load", "pool db is full (1/1)"),
            ("save[3]", "global limit"),
        ]
        assert all(isinstance(t, float) for _, t, _ in waits)
        assert await store.task_waits("r2", ["load"]) == []
        assert await store.task_waits("r1", []) == []


async def test_mapped_summary_and_attempts_of_named_tasks(store_factory: Factory) -> None:
    async with store_factory() as store:
        tasks = [
            replace(
                _task("r1", f"load[{i}]", TaskState.SUCCEEDED, node="load", index=i),
                queued_at=10.0 + i,
                started_at=20.0 + i,
                ended_at=30.0 + i,
            )
            for i in range(3)
        ]
        tasks.append(
            replace(
                _task("r1", "load[3]", TaskState.RUNNING, node="load", index=3),
                queued_at=11.0,
                started_at=25.0,
            )
        )
        tasks.append(
            replace(
                _task("r1", "load[4]", TaskState.FAILED, node="load", index=4, attempt=3),
                queued_at=9.0,
                started_at=40.0,
                ended_at=50.0,
            )
        )
        tasks.append(_task("r1", "send[0]", TaskState.PENDING, node="send", index=0, attempt=0))
        tasks.append(replace(_task("r1", "load", TaskState.RUNNING, attempt=0), queued_at=1.0))
        tasks.append(replace(_task("r1", "extract", TaskState.SUCCEEDED), started_at=1.0))
        attempts = [
            AttemptRecord("r1", "extract", 1, TaskState.FAILED, 1.0, 2.0, "boom"),
            AttemptRecord("r1", "extract", 2, TaskState.SUCCEEDED, 3.0, 4.0),
            AttemptRecord("r1", "load[0]", 1, TaskState.SUCCEEDED, 20.0, 30.0),
        ]
        await store.apply(
            Changes(runs=[_run("r1", "etl", 1.0)], tasks=tasks, attempts=attempts), wait=True
        )
        # Per node and state, over the instances only (not the mapped task's own record).
        assert sorted(await store.mapped_summary("r1")) == [
            ("load", "failed", 1, 3, 9.0, 40.0, 50.0, 0),
            ("load", "running", 1, 1, 11.0, 25.0, None, 1),
            ("load", "succeeded", 3, 1, 10.0, 20.0, 32.0, 0),
            ("send", "pending", 1, 0, None, None, None, 0),
        ]
        assert await store.mapped_summary("r2") == []
        got = await store.list_attempts_of("r1", ["extract"])
        assert [(a.task, a.attempt, a.error) for a in got] == [
            ("extract", 1, "boom"),
            ("extract", 2, None),
        ]
        assert await store.list_attempts_of("r1", []) == []


async def test_a_page_of_instances_follows_the_map_index_not_the_name(
    store_factory: Factory,
) -> None:
    async with store_factory() as store:
        tasks = [
            _task("r1", f"send[{i}]", TaskState.SUCCEEDED, node="send", index=i) for i in range(12)
        ]
        await store.apply(Changes(runs=[_run("r1", "mail", 1.0)], tasks=tasks), wait=True)
        page = await store.list_tasks("r1", node="send", mapped=True, limit=4, offset=8)
        assert [t.name for t in page] == ["send[8]", "send[9]", "send[10]", "send[11]"]
        assert await store.count_tasks("r1", node="send", mapped=True) == 12
