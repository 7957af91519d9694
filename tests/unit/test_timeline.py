"""The run timeline's bars, from task and attempt records alone (pure, no I/O)."""

from __future__ import annotations

from evflow.http.timeline import MappedSpan, node_state, timeline_rows
from evflow.records import AttemptRecord, TaskRecord
from evflow.states import TaskState


def test_a_pool_wait_then_a_failed_try_a_retry_delay_and_a_success() -> None:
    task = TaskRecord(
        "r",
        "load",
        "load",
        TaskState.SUCCEEDED,
        attempt=2,
        queued_at=0.0,
        started_at=9.0,
        ended_at=12.0,
    )
    attempts = [
        AttemptRecord("r", "load", 1, TaskState.FAILED, 5.0, 6.0, "boom"),
        AttemptRecord("r", "load", 2, TaskState.SUCCEEDED, 9.0, 12.0),
    ]
    waits = [("load", 0.5, "waiting for pool 'db' (1/1 slots in use, 0 waiting)")]
    (row,) = timeline_rows([task], attempts, waits)
    bars = [(b.kind, b.start, b.end, b.state, b.attempt, b.reason) for b in row.bars]
    assert bars == [
        ("waiting", 0.0, 5.0, "waiting", 1, "waiting for pool 'db' (1/1 slots in use, 0 waiting)"),
        ("running", 5.0, 6.0, "failed", 1, None),
        ("waiting", 6.0, 9.0, "waiting", 2, "retry delay"),
        ("running", 9.0, 12.0, "succeeded", 2, None),
    ]


def test_the_try_in_progress_and_a_task_still_waiting_are_open_bars() -> None:
    running = TaskRecord("r", "a", "a", TaskState.RUNNING, attempt=1, queued_at=1.0, started_at=2.0)
    waiting = TaskRecord(
        "r", "b", "b", TaskState.WAITING, queued_at=1.0, waiting="waiting for pool 'db'"
    )
    rows = {r.task: r for r in timeline_rows([running, waiting], [], [], order=["b", "a"])}
    assert [b.end for b in rows["a"].bars] == [2.0, None]
    (wait,) = rows["b"].bars  # still waiting: an open bar that says why
    assert (wait.kind, wait.start, wait.end, wait.reason) == (
        "waiting",
        1.0,
        None,
        "waiting for pool 'db'",
    )
    assert list(rows) == ["b", "a"]  # the flow's order


def test_a_mapped_task_is_one_row_with_counts() -> None:
    own = TaskRecord("r", "item", "item", TaskState.FAILED)
    span = MappedSpan("item", 1.0, 2.0, 9.0, 0, {"succeeded": 9_999, "failed": 1})
    (row,) = timeline_rows([own], [], [], mapped=[span])
    assert (row.task, row.mapped, row.count, row.state) == ("item", True, 10_000, "failed")
    assert [(b.kind, b.start, b.end) for b in row.bars] == [
        ("waiting", 1.0, 2.0),
        ("running", 2.0, 9.0),
    ]
    assert node_state({"succeeded": 3, "running": 1}) == "running"
    assert node_state({"skipped": 2}) == "skipped"
