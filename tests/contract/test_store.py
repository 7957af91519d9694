"""The store contract: what every backend must do, tested through the ``Store`` protocol only."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
import psycopg
import pytest

from evflow import Event
from evflow.audit import verify
from evflow.audit_kinds import AuditKind
from evflow.errors import EventNotFound, RunNotFound
from evflow.records import AttemptRecord, LogRecord, RunRecord, TaskRecord
from evflow.states import RunState, TaskState
from evflow.store import Store, is_postgres
from evflow.store.base import AuditEntry, Changes, chain_hash
from evflow.store.chains import genesis

Factory = Callable[[], Store]


def run(run_id: str, state: RunState = RunState.QUEUED, **kw: object) -> RunRecord:
    base = RunRecord(
        id=run_id,
        flow="f",
        flow_version="v1",
        params={"n": 1},
        state=state,
        created_at=1000.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def task(run_id: str, name: str, state: TaskState = TaskState.PENDING) -> TaskRecord:
    return TaskRecord(run_id=run_id, name=name, node=name, state=state)


async def test_events_are_stored_once_per_dedup_key_and_keep_their_identity(
    store_factory: Callable[[], Store],
) -> None:
    async with store_factory() as store:
        a = Event("order.created", source="shop/eu", id="o-1", data={"n": 1})
        b = Event("order.created", source="shop/us", id="o-1", data={"n": 2})
        again = Event("order.created", source="shop/eu", id="o-1", data={"n": 1})
        first = await store.add_events([a, b])
        assert [x.duplicate for x in first] == [False, False]
        assert [x.event_id for x in first] == [a.uid, b.uid]
        (repeat,) = await store.add_events([again])
        assert repeat.duplicate and repeat.event_id == a.uid
        assert await store.count_duplicates() == 1
        assert await store.count_duplicates(source="shop/eu") == 1
        stored = await store.get_event(a.uid)
        assert (stored.uid, stored.id, stored.source, stored.data) == (
            a.uid,
            "o-1",
            "shop/eu",
            {"n": 1},
        )
        assert [e.uid for e in await store.pending_events()] == [a.uid, b.uid]
        with pytest.raises(EventNotFound):
            await store.get_event("o-1")  # the sender's id names two events: ambiguous


async def test_records_round_trip_exactly(store_factory: Factory) -> None:
    async with store_factory() as store:
        data = {
            "big": 2**63 - 1,
            "neg": -(2**63),
            "float": 0.1,
            "text": "zürich ✓",
            "nested": [None],
        }
        ev = Event("x", data=data, subject="s/1", extensions={"tenant": "acme"})
        await store.add_events([ev])
        got = await store.get_event(ev.uid)
        assert got.data == data and got.subject == "s/1" and got.extensions["tenant"] == "acme"
        r = run("r1", params={"when": "2026-01-01", "n": 2**62}, trigger={"kind": "api"})
        await store.apply(Changes(runs=[r], tasks=[task("r1", "a")]), wait=True)
        back = await store.get_run("r1")
        assert back.params == r.params and back.trigger == r.trigger
        assert [t.name for t in back.tasks] == ["a"]


async def test_a_run_created_twice_is_inserted_once(store_factory: Factory) -> None:
    async with store_factory() as store:
        one = Changes(new_runs=[run("r1", params={"n": 1})], new_tasks=[task("r1", "a")])
        two = Changes(new_runs=[run("r1", params={"n": 2})], new_tasks=[task("r1", "a")])
        await store.apply(one, wait=True)
        await store.apply(two, wait=True)
        assert one.created_runs == {"r1"} and two.created_runs == set()
        assert (await store.get_run("r1")).params == {"n": 1}
        assert await store.run_exists("r1") and not await store.run_exists("r2")


async def test_run_transitions_tasks_attempts_and_reads(store_factory: Factory) -> None:
    async with store_factory() as store:
        await store.apply(Changes(runs=[run("r1"), run("r2", created_at=2000.0)]), wait=True)
        done = run("r1", RunState.SUCCEEDED, started_at=1001.0, ended_at=1003.0)
        t = replace(task("r1", "a", TaskState.SUCCEEDED), attempt=2, result=b'{"ok":true}')
        attempts = [
            AttemptRecord("r1", "a", 1, TaskState.FAILED, 1001.0, 1002.0, "boom"),
            AttemptRecord("r1", "a", 2, TaskState.SUCCEEDED, 1002.0, 1003.0),
        ]
        await store.apply(Changes(runs=[done], tasks=[t], attempts=attempts), wait=True)
        got = await store.get_run("r1")
        assert got.state is RunState.SUCCEEDED and got.duration_s == 2.0
        assert got.tasks[0].result == b'{"ok":true}'
        assert [(a.attempt, a.error) for a in await store.list_attempts("r1")] == [
            (1, "boom"),
            (2, None),
        ]
        assert [r.id for r in await store.list_runs()] == ["r2", "r1"]  # newest first
        assert [r.id for r in await store.list_runs(state="succeeded")] == ["r1"]
        assert await store.count_runs(state="queued") == 1
        assert [r.id for r in await store.unfinished_runs()] == ["r2"]
        with pytest.raises(RunNotFound):
            await store.get_run("nope")


async def test_a_run_is_found_by_the_beginning_or_end_of_its_id(store_factory: Factory) -> None:
    async with store_factory() as store:
        ids = ["abcd1111", "abcd2222", "ffff2222"]
        await store.apply(Changes(runs=[run(i) for i in ids]), wait=True)
        assert (await store.get_run("abcd1")).id == "abcd1111"
        assert (await store.get_run("d1111")).id == "abcd1111"  # an end, as the UI shows it
        assert (await store.get_run("f2222")).id == "ffff2222"
        with pytest.raises(RunNotFound, match="ambiguous") as caught:
            await store.get_run("abcd")
        assert "abcd1111" in str(caught.value) and "abcd2222" in str(caught.value)
        with pytest.raises(RunNotFound, match="begin or end with it") as caught:
            await store.get_run("2222")
        assert "abcd2222" in str(caught.value) and "ffff2222" in str(caught.value)
        with pytest.raises(RunNotFound, match="no run 'd_11'"):
            await store.get_run("d_11")  # LIKE's wildcards are taken literally


async def test_logs_page_in_order(store_factory: Factory) -> None:
    async with store_factory() as store:
        lines = [LogRecord("r1", "a", 1, 1000.0 + i, "INFO", f"line {i}") for i in range(25)]
        await store.apply(Changes(logs=lines), wait=True)
        first = await store.list_logs("r1", "a", limit=10)
        rest = await store.list_logs("r1", "a", after_seq=first[-1].seq)
        assert [x.message for x in first + rest] == [f"line {i}" for i in range(25)]


async def test_processed_events_leave_the_pending_set(store_factory: Factory) -> None:
    async with store_factory() as store:
        a, b = Event("x"), Event("y")
        await store.add_events([a, b])
        await store.apply(Changes(processed_events=[a.uid]), wait=True)
        assert [e.uid for e in await store.pending_events()] == [b.uid]
        assert (await store.get_event(a.uid)).status == "processed"


async def test_cursors_are_committed_with_their_events(store_factory: Factory) -> None:
    async with store_factory() as store:
        await store.add_events([Event("tick")], cursors={"schedule:f": "2026-01-01T00:00:00+00:00"})
        assert await store.get_cursor("schedule:f") == "2026-01-01T00:00:00+00:00"
        assert await store.get_cursor("other") is None


async def test_dead_letters_keep_the_payload_and_why(store_factory: Factory) -> None:
    async with store_factory() as store:
        first = await store.add_dead_letter(
            source="kafka/k", reason="not JSON", payload=b"\xff", dedup_key="kafka:t/0/1"
        )
        again = await store.add_dead_letter(
            source="kafka/k", reason="not JSON", payload=b"\xff", dedup_key="kafka:t/0/1"
        )
        assert first and again
        (letter,) = await store.list_dead_letters()
        assert (letter.source, letter.reason, letter.payload) == ("kafka/k", "not JSON", b"\xff")


async def test_the_audit_trail_chains_every_record(store_factory: Factory) -> None:
    async with store_factory() as store:
        entries = [
            AuditEntry(AuditKind.RUN_QUEUED, f"run:r{i}", {"i": i}, actor="cli") for i in range(3)
        ]
        await store.apply(Changes(audit=entries), wait=True)
        rows = await store.audit_rows()
        prev: dict[str, str] = {}
        for _seq, t, kind, subject, actor, data, prev_hash, h, chain, pos in rows:
            assert prev_hash == prev.get(chain, genesis(chain))
            assert chain_hash(prev_hash, pos, t, kind, subject, actor, data) == h
            prev[chain] = h
        heads = await store.audit_heads()
        assert {c: h for c, (_, h) in heads.items() if c in prev} == prev
        subjects = [r.subject for r in await store.list_audit()]
        assert subjects[-3:] == ["run:r0", "run:r1", "run:r2"]
        assert (await verify(store)).ok


async def test_records_with_their_own_time_chain_like_those_taking_the_batchs(
    store_factory: Factory,
) -> None:
    """The writer formats the batch's time once for the records without one; a record that
    brings its own time is hashed with that time. Both verify."""
    async with store_factory() as store:
        batch = [
            AuditEntry(AuditKind.RUN_QUEUED, "run:a", None),
            AuditEntry(AuditKind.RUN_QUEUED, "run:b", {"x": 1}, time=1234.000001),
            AuditEntry(AuditKind.RUN_QUEUED, "run:c", None, actor="cli"),
        ]
        await store.apply(Changes(audit=batch), wait=True)
        rows = {r[3]: r for r in await store.audit_rows()}
        for subject in ("run:a", "run:b", "run:c"):
            _seq, t, kind, _subject, actor, data, prev_hash, h, _chain, pos = rows[subject]
            assert chain_hash(prev_hash, pos, t, kind, subject, actor, data) == h
        assert rows["run:b"][1] == 1234.000001
        assert rows["run:a"][1] == rows["run:c"][1] != 1234.000001
        assert (await verify(store)).ok


def entries(prefix: str, n: int) -> list[AuditEntry]:
    return [AuditEntry(AuditKind.RUN_QUEUED, f"run:{prefix}{i}", {"i": i}) for i in range(n)]


async def test_each_writer_appends_to_a_chain_of_its_own(store_factory: Factory) -> None:
    async with store_factory() as one, store_factory() as two:
        async with anyio.create_task_group() as tg:
            for store, prefix in ((one, "a"), (two, "b")):
                for i in range(5):
                    batch = Changes(audit=entries(f"{prefix}{i}-", 2))
                    tg.start_soon(partial(store.apply, batch, wait=True))
        records = await one.list_audit()
        chains = {r.subject[4]: r.chain for r in records if r.subject.startswith("run:")}
        assert len(set(chains.values())) == 2  # one chain per writer
        for letter, chain in chains.items():
            mine = [r for r in records if r.chain == chain]
            assert [r.pos for r in mine] == list(range(1, 11))
            assert {r.subject[4] for r in mine} == {letter}
        opened = [r.subject for r in records if r.kind == AuditKind.AUDIT_CHAIN_OPENED]
        assert sorted(opened) == sorted(f"chain:{c}" for c in chains.values())
        assert {r.chain for r in records if r.kind == AuditKind.AUDIT_CHAIN_OPENED} == {"system"}
        result = await verify(two)
        assert result.ok and result.checked == len(records) == 22


async def raw_sql(location: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database as someone with write access would."""

    def run() -> list[tuple[Any, ...]]:
        if is_postgres(location):
            with psycopg.connect(location, autocommit=True) as conn:
                cur = conn.execute(statement.replace("?", "%s").encode(), params)
                return cur.fetchall() if cur.description else []
        with closing(sqlite3.connect(location)) as conn:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows

    return await anyio.to_thread.run_sync(run)


# (how the trail is altered, the position in the chain named, words of the reason)
TAMPERING = {
    "edited": ("UPDATE audit SET data = ? WHERE chain = ? AND pos = 2", 2, "edited"),
    "deleted": ("DELETE FROM audit WHERE chain = ? AND pos = 2", 2, "missing"),
    "reordered": ("", 2, "out of order"),
    "truncated": ("DELETE FROM audit WHERE chain = ? AND pos > 2", 3, "cut short"),
    "head removed": ("DELETE FROM audit_heads WHERE chain = ?", None, "no anchored head"),
    "chain removed": ("DELETE FROM audit WHERE chain = ?", None, "no anchored head"),
}


@pytest.mark.parametrize("how", TAMPERING)
async def test_verify_names_the_record_altered_in_its_chain(
    store_factory: Factory, store_location: str, how: str
) -> None:
    async with store_factory() as one, store_factory() as two:
        for i in range(2):
            await one.apply(Changes(audit=entries(f"a{i}-", 2)), wait=True)
            await two.apply(Changes(audit=entries(f"b{i}-", 2)), wait=True)
        assert (await verify(one)).ok
    ((chain,),) = await raw_sql(
        store_location, "SELECT chain FROM audit WHERE subject = 'run:a0-0'"
    )
    statement, pos, words = TAMPERING[how]
    if how == "reordered":  # records 2 and 3 trade places in the trail, hashes and all
        ((s2,), (s3,)) = await raw_sql(
            store_location,
            "SELECT seq FROM audit WHERE chain = ? AND pos IN (2, 3) ORDER BY pos",
            chain,
        )
        for old, new in ((s2, -1), (s3, s2), (-1, s3)):
            await raw_sql(store_location, "UPDATE audit SET seq = ? WHERE seq = ?", new, old)
    elif how == "edited":
        await raw_sql(store_location, statement, b'{"i":99}', chain)
    else:
        await raw_sql(store_location, statement, chain)
        if how == "chain removed":
            await raw_sql(store_location, "DELETE FROM audit_heads WHERE chain = ?", chain)
    async with store_factory() as store:
        result = await verify(store)
    assert not result.ok
    assert (result.chain, result.pos) == (chain, pos), result
    assert result.reason is not None and words in result.reason, result.reason
    if how == "edited":
        ((seq,),) = await raw_sql(
            store_location, "SELECT seq FROM audit WHERE chain = ? AND pos = 2", chain
        )
        assert result.bad_seq == seq


async def test_two_stores_on_one_location_write_at_once(
    store_factory: Callable[[], Store],
) -> None:
    async with store_factory() as one, store_factory() as two:

        async def emit(s: Store, prefix: str) -> None:
            for i in range(20):
                await s.add_events([Event("x", source=prefix, id=str(i))])

        async with anyio.create_task_group() as tg:
            tg.start_soon(emit, one, "a")
            tg.start_soon(emit, two, "b")
        assert len(await one.list_events(limit=100)) == 40
        assert len(await two.pending_events()) == 40


async def test_a_lease_has_one_holder_and_changes_hands_only_when_free(
    store_factory: Factory,
) -> None:
    async with store_factory() as store:
        taken, a = await store.acquire_lease("engine", "a", "host-a", 11, ttl_s=30)
        assert taken and (a.owner, a.host, a.pid, a.epoch) == ("a", "host-a", 11, 1)
        assert a.expires_at - a.renewed_at == pytest.approx(30, abs=1)

        taken, held = await store.acquire_lease("engine", "b", "host-b", 22, ttl_s=30)
        assert not taken and held.owner == "a" and held.epoch == 1  # a holds it: b is told who
        again, same = await store.acquire_lease("engine", "a", "host-a", 11, ttl_s=30)
        assert again and same.epoch == 1  # taking your own lease again keeps its epoch

        renewed = await store.renew_lease(a, ttl_s=30)
        assert renewed is not None and renewed.renewed_at >= a.renewed_at

        forced, b = await store.acquire_lease("engine", "b", "host-b", 22, ttl_s=30, force=True)
        assert forced and b.owner == "b" and b.epoch == 2  # the fencing token went up
        assert await store.renew_lease(a, ttl_s=30) is None  # a lost it, and can tell
        await store.release_lease(a)  # a stale holder's release changes nothing
        assert [(x.owner, x.epoch) for x in await store.list_leases()] == [("b", 2)]

        await store.release_lease(b)
        assert await store.list_leases() == []
        taken, c = await store.acquire_lease("engine", "c", "host-c", 33, ttl_s=30)
        assert taken and c.epoch == 1


async def test_an_expired_lease_can_be_taken(store_factory: Factory) -> None:
    async with store_factory() as store:
        taken, a = await store.acquire_lease("engine", "a", "host-a", 11, ttl_s=0.05)
        assert taken
        await anyio.sleep(0.2)  # past its expiry, by the store's clock
        taken, b = await store.acquire_lease("engine", "b", "host-b", 22, ttl_s=30)
        assert taken and b.owner == "b" and b.epoch == a.epoch + 1


async def test_a_writer_whose_head_was_removed_goes_on_in_a_new_chain(
    store_factory: Factory, store_location: str
) -> None:
    async with store_factory() as store:
        await store.apply(Changes(audit=entries("a", 2)), wait=True)
        ((chain,),) = await raw_sql(store_location, "SELECT chain FROM audit WHERE pos = 2")
        await raw_sql(store_location, "DELETE FROM audit_heads WHERE chain = ?", chain)
        await store.apply(Changes(audit=entries("b", 2)), wait=True)
        later = [r for r in await store.list_audit() if r.subject.startswith("run:b")]
        assert [r.pos for r in later] == [1, 2] and later[0].chain != chain
        result = await verify(store)
    assert not result.ok and result.chain == chain, result
    assert result.reason is not None and "no anchored head" in result.reason
