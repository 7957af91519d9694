"""Retention as a user meets it: ``evflow db prune`` by hand, ``[store] keep_runs_days`` in a
running service, one pruner at a time on a shared store, and the audit trail verifying after."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from evflow import Engine
from evflow.audit import verify
from evflow.audit_kinds import AuditKind
from evflow.service.pruning import LEASE, Pruner
from evflow.store import connect
from evflow.store.retention import DAY_S, prune
from tests.integration.test_db_cli import loud, make_history
from tests.integration.test_service import clean_env, evflow, serving, write
from tests.observers import until

# A tenth of a second in days: what a test wrote a moment ago is old by then.
MOMENT_DAYS = "0.000001"
MOMENT = float(MOMENT_DAYS)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_db_prune_removes_finished_runs_and_the_trail_verifies(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        where: str = request.getfixturevalue("postgres_url")
    else:
        where = str(tmp_path / "evflow.db")
    if backend == "postgres":
        await make_history(tmp_path / "seed.db")
        status, _, err = await evflow(
            "db", "copy", "--from", str(tmp_path / "seed.db"), "--to", where, cwd=tmp_path
        )
        assert status == 0, err
    else:
        await make_history(Path(where))
    async with connect(where) as store:
        records = len(await store.audit_rows(limit=100_000))
    await anyio.sleep(0.3)

    status, out, err = await evflow("db", "prune", "--store", where, cwd=tmp_path)
    assert status == 2 and "say how many days to keep" in err and not out, out + err
    status, out, err = await evflow(
        "db", "prune", "--keep-days", "0", "--store", where, cwd=tmp_path
    )
    assert status == 2 and "--keep-days: '0' is out of range" in err, out + err

    status, out, err = await evflow(
        "db", "prune", "--keep-days", MOMENT_DAYS, "--store", where, cwd=tmp_path
    )
    assert status == 0, out + err
    assert f"pruned 4 finished run(s) (with their tasks, attempts and logs) and {records}" in out

    status, out, err = await evflow("audit", "verify", "--store", where, cwd=tmp_path)
    assert status == 0 and "verified" in out, out + err
    status, out, err = await evflow("runs", "--store", where, cwd=tmp_path)
    assert status == 0 and "loud" not in out, out + err

    # The store goes on: new runs, new records, and the trail still verifies.
    async with Engine(where, grace_period_s=0) as engine:
        engine.add(loud)
        assert (await engine.run(loud, word="d")).ok
        trail = await engine.store.list_audit()
        assert [r.kind for r in trail][:1] == [AuditKind.AUDIT_PRUNED]
        assert (await verify(engine.store)).ok


async def test_serve_prunes_what_is_older_than_keep_runs_days(tmp_path: Path) -> None:
    project = tmp_path / "p"
    write(
        project / "evflow.toml",
        f"""
        [http]
        enabled = false
        [store]
        path = "var/evflow.db"
        keep_runs_days = {MOMENT_DAYS}
        """,
    )
    db = project / "var" / "evflow.db"
    db.parent.mkdir(parents=True)
    await make_history(db)
    async with serving(project, tmp_path / "logs") as service:
        assert f"keeps    {float(MOMENT_DAYS):g} days of finished runs" in service.stdout

        async def pruned() -> dict[str, object] | None:
            for line in service.stderr.read_text().splitlines():
                record = json.loads(line)
                if str(record.get("msg", record.get("message", ""))).startswith(
                    "retention: pruned"
                ):
                    return dict(record)
            return None

        found = await until(pruned)
        assert "4 run(s)" in str(found.get("msg", found.get("message")))
        assert await service.stop() == 0
    async with connect(db) as store:
        assert await store.count_runs() == 0
        assert (await verify(store)).ok


async def test_one_pruner_at_a_time_on_a_shared_store(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_history(db)
    await anyio.sleep(0.3)
    async with connect(db) as store:
        taken, other = await store.acquire_lease(LEASE, "another-instance", "h", 1, ttl_s=60)
        assert taken
        pruner = Pruner(store, float(MOMENT_DAYS))
        assert await pruner.prune_once() is None  # another instance is pruning
        assert await store.count_runs() == 4
        await store.release_lease(other)
        report = await pruner.prune_once()
        assert report is not None and report.runs == 4 and report.records > 0
        assert await store.list_leases() == []  # the pass gave the lease back
        assert (await verify(store)).ok


async def test_keep_runs_days_is_checked_where_it_is_set(tmp_path: Path) -> None:
    project = tmp_path / "p"
    write(project / "evflow.toml", "[store]\nkeep_runs_days = -3\n")
    status, out, err = await evflow("serve", str(project), cwd=tmp_path, env=clean_env())
    assert status == 2, out + err
    assert "keep_runs_days" in err and "a number of days, more than 0" in err, err


async def test_a_pruned_store_copies_with_its_anchors_and_verifies(
    tmp_path: Path, postgres_url: str
) -> None:
    db = tmp_path / "evflow.db"
    await make_history(db)
    await anyio.sleep(0.05)
    mark = time.time()  # the pruning's cut-off: the history is older, the next run newer
    await anyio.sleep(0.05)
    async with Engine(db, grace_period_s=0) as engine:
        engine.add(loud)
        assert (await engine.run(loud, word="kept")).ok
    async with connect(db) as store:
        report = await prune(store, 1, now=mark + DAY_S)
        assert report.runs == 4 and report.records > 0 and await store.audit_anchors()
    status, out, err = await evflow(
        "db", "copy", "--from", str(db), "--to", postgres_url, cwd=tmp_path
    )
    assert status == 0 and "audit trail of the copy verified" in out, out + err
    async with connect(db) as source, connect(postgres_url) as copy:
        assert await copy.audit_anchors() == await source.audit_anchors()
        assert [r.flow for r in await copy.list_runs()] == ["loud"]
        # The copy prunes on: its anchors are named again by its own first pruning.
        later = await prune(copy, MOMENT)
        assert later.runs == 1
        assert (await verify(copy)).ok
