"""Retention on every backend: old finished runs go with their tasks, attempts and logs, the
audit trail's oldest records go, and the trail still verifies (its pruned chains anchored),
while an anchor altered by hand to hide a deletion is named."""

from __future__ import annotations

import time

import pytest

from evflow import Event
from evflow.audit import verify
from evflow.audit_kinds import AuditKind
from evflow.errors import RunNotFound
from evflow.records import AttemptRecord, LogRecord, RunRecord, TaskRecord
from evflow.states import RunState, TaskState
from evflow.store import Store
from evflow.store.base import AuditEntry, Changes
from evflow.store.retention import DAY_S, prune

from .test_store import Factory, raw_sql

# The prunings below run 40 days from now, keeping 30 days: what is written today is old then,
# and a record or run dated 20 days from now is recent.
NOW = time.time()
LATER = NOW + 40 * DAY_S
CUT = LATER - 30 * DAY_S
OLD = NOW - 60
RECENT = NOW + 20 * DAY_S


def a_run(run_id: str, created: float, state: RunState, ended: float | None) -> RunRecord:
    task = TaskRecord(run_id=run_id, name="t", node="t", state=TaskState.SUCCEEDED)
    return RunRecord(
        id=run_id,
        flow="f",
        flow_version="v1",
        params={},
        state=state,
        created_at=created,
        ended_at=ended,
        tasks=(task,),
    )


async def add_run(store: Store, run: RunRecord) -> None:
    attempt = AttemptRecord(run.id, "t", 1, TaskState.SUCCEEDED, run.created_at, run.ended_at)
    log = LogRecord(run.id, "t", 1, run.created_at, "INFO", "hello")
    changes = Changes(runs=[run], tasks=list(run.tasks), attempts=[attempt], logs=[log])
    await store.apply(changes, wait=True)


def entries(prefix: str, n: int, at: float | None = None) -> list[AuditEntry]:
    """Records written now (``at`` None: dated as they are written), or dated ``at``."""
    return [
        AuditEntry(
            AuditKind.RUN_QUEUED, f"run:{prefix}{i}", {"i": i}, time=None if at is None else at + i
        )
        for i in range(n)
    ]


async def test_old_finished_runs_go_with_their_tasks_attempts_and_logs(
    store_factory: Factory,
) -> None:
    async with store_factory() as store:
        await add_run(store, a_run("old-done", OLD, RunState.SUCCEEDED, OLD + 5))
        await add_run(store, a_run("old-failed", OLD, RunState.FAILED, OLD + 5))
        await add_run(store, a_run("old-running", OLD, RunState.RUNNING, None))
        await add_run(store, a_run("ended-lately", OLD, RunState.SUCCEEDED, RECENT))
        await add_run(store, a_run("recent", RECENT, RunState.SUCCEEDED, RECENT + 5))
        await store.add_events([Event("x", source="s", id="old")])
        report = await prune(store, 30, now=LATER)
        assert report.runs == 2
        for gone in ("old-done", "old-failed"):
            with pytest.raises(RunNotFound):
                await store.get_run(gone)
            assert await store.list_attempts(gone) == []
            assert await store.list_logs(gone) == []
            assert await store.count_tasks(gone) == 0
        for kept in ("old-running", "ended-lately", "recent"):
            run = await store.get_run(kept)
            assert [t.name for t in run.tasks] == ["t"]
            assert len(await store.list_logs(kept)) == 1
        assert await store.count_events() == 1  # events stay: their dedup keys are memory
        again = await prune(store, 30, now=LATER)
        # Nothing more but the first pruning's own record, dated today: 40 days old by then.
        assert (again.runs, again.records) == (0, 1)


async def test_the_trail_verifies_after_pruning_in_steps_and_again_later(
    store_factory: Factory,
) -> None:
    async with store_factory() as one, store_factory() as two:
        for i in range(3):  # two writers, two chains, their records interleaved
            await one.apply(Changes(audit=entries(f"a{i}-", 4)), wait=True)
            await two.apply(Changes(audit=entries(f"b{i}-", 4)), wait=True)
        await one.apply(Changes(audit=entries("new-", 3, RECENT)), wait=True)
        before = await one.list_audit()
        old = [r for r in before if r.time < CUT]

        steps: list[int] = []
        report = await prune(
            one, 30, now=LATER, step_records=5, progress=lambda r: steps.append(r.records)
        )
        assert report.records == len(old) and report.steps == len(steps) > 2
        after = await one.list_audit()
        assert not [r for r in after if r.time < CUT and r.kind != AuditKind.AUDIT_PRUNED]
        assert {r.subject for r in after} >= {"run:new-0", "run:new-1", "run:new-2"}
        pruned = [r for r in after if r.kind == AuditKind.AUDIT_PRUNED]
        assert sum(r.data["records"] for r in pruned) == len(old)
        anchors = await one.audit_anchors()
        assert {r.chain for r in old} <= set(anchors)
        result = await verify(two)
        assert result.ok, result

        # Later, writing goes on, and a pruning a year on takes the first prunings' records
        # too: the anchors they named are named again, and the trail still verifies.
        await two.apply(Changes(audit=entries("c-", 2)), wait=True)
        later = await prune(two, 30, now=LATER + 365 * DAY_S, step_records=4)
        assert later.records >= len(after)
        assert not [r for r in await two.list_audit() if r.kind != AuditKind.AUDIT_PRUNED]
        result = await verify(one)
        assert result.ok, result
        await one.apply(Changes(audit=entries("d-", 2)), wait=True)
        result = await verify(one)
        assert result.ok and result.checked >= 2, result


# (how a pruned trail is altered, words of the reason)
AFTER_PRUNING = {
    "the record after the anchor deleted": ("missing",),
    "the anchor moved over a deleted record": ("anchor",),
    "the anchor removed": ("missing",),
}


@pytest.mark.parametrize("how", AFTER_PRUNING)
async def test_a_pruned_trail_altered_by_hand_is_named(
    store_factory: Factory, store_location: str, how: str
) -> None:
    async with store_factory() as store:
        await store.apply(Changes(audit=entries("a-", 4)), wait=True)
        await store.apply(Changes(audit=entries("b-", 4, RECENT)), wait=True)
        await prune(store, 30, now=LATER)
        assert (await verify(store)).ok
    ((chain,),) = await raw_sql(store_location, "SELECT chain FROM audit WHERE subject = 'run:b-0'")
    ((pos, _),) = await raw_sql(
        store_location, "SELECT pos, hash FROM audit_anchors WHERE chain = ?", chain
    )
    assert pos == 4  # a-0 … a-3 were pruned
    if how == "the anchor removed":
        await raw_sql(store_location, "DELETE FROM audit_anchors WHERE chain = ?", chain)
    else:
        ((next_hash,),) = await raw_sql(
            store_location, "SELECT hash FROM audit WHERE chain = ? AND pos = 5", chain
        )
        await raw_sql(store_location, "DELETE FROM audit WHERE chain = ? AND pos = 5", chain)
        if how == "the anchor moved over a deleted record":
            await raw_sql(
                store_location,
                "UPDATE audit_anchors SET pos = 5, hash = ? WHERE chain = ?",
                next_hash,
                chain,
            )
    async with store_factory() as store:
        result = await verify(store)
    assert not result.ok and result.chain == chain, result
    (words,) = AFTER_PRUNING[how]
    assert result.reason is not None and words in result.reason, result.reason
