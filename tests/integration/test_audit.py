"""The tamper-evident audit trail, checked through the real `evflow audit` command."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import anyio
import orjson

from evflow import Engine, Event, Rule, flow, task
from evflow.audit_kinds import AuditKind
from evflow.store.base import AuditEntry, Changes
from evflow.store.sqlite import SqliteStore
from tests.observers import RunLog

LIMIT_S = 30


@task
async def one() -> int:
    return 1


@flow
def audited() -> None:
    one()


def evflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def make_trail(path: Path) -> None:
    finished = RunLog()
    async with Engine(path, grace_period_s=0) as engine:
        engine.add(audited, Rule(on="order.*"))
        finished.attach(engine)
        with anyio.fail_after(LIMIT_S):
            await engine.run(audited)
            await engine.emit(Event("order.created", data={"n": 1}), actor="token:abcd@127.0.0.1")
            await engine.emit(Event("other.thing"))
            await finished.wait_for(2)


async def test_an_untouched_trail_verifies(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    done = evflow_cli("audit", "verify", "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert "audit trail intact" in done.stdout


async def test_an_edited_record_is_named(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    with closing(sqlite3.connect(db)) as conn:
        seq, subject = conn.execute(
            "SELECT seq, subject FROM audit WHERE kind = 'run.succeeded' LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE audit SET kind = 'run.failed' WHERE seq = ?", (seq,))
        conn.commit()
    done = evflow_cli("audit", "verify", "--store", str(db))
    assert done.returncode == 1
    assert f"BROKEN at record {seq}" in done.stderr
    assert subject in done.stderr and "edited" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_deleted_or_reordered_record_is_named(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM audit WHERE seq = 3")
        conn.commit()
    done = evflow_cli("audit", "verify", "--store", str(db))
    assert done.returncode == 1
    assert "record 3 is missing" in done.stderr

    db2 = tmp_path / "second.db"
    await make_trail(db2)
    with closing(sqlite3.connect(db2)) as conn:
        # Swap the contents of records 2 and 3, each keeping its own hashes.
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT seq, time, kind, subject, actor, data FROM audit WHERE seq IN (2, 3)"
            )
        }
        for seq, other in ((2, 3), (3, 2)):
            conn.execute(
                "UPDATE audit SET time=?, kind=?, subject=?, actor=?, data=? WHERE seq=?",
                (*rows[other], seq),
            )
        conn.commit()
    done = evflow_cli("audit", "verify", "--store", str(db2))
    assert done.returncode == 1
    assert "BROKEN at record 2" in done.stderr


async def test_two_writers_on_one_file_extend_one_chain(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    async with SqliteStore(db) as first, SqliteStore(db) as second:
        for i in range(20):
            store = first if i % 2 else second
            await store.apply(
                Changes(audit=[AuditEntry(AuditKind.EVENT_EMITTED, f"writer:{i % 2}", {"i": i})]),
                wait=True,
            )
    done = evflow_cli("audit", "verify", "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert "20 record(s) verified" in done.stdout


async def test_export_writes_json_lines_with_actors(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    out = tmp_path / "trail.jsonl"
    done = evflow_cli(
        "audit", "export", "--store", str(db), "--since", "2000-01-01T00:00Z", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    records = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = {r["kind"] for r in records}
    assert {
        "event.received",
        "event.emitted",
        "rule.matched",
        "rule.not_matched",
        "run.queued",
        "run.succeeded",
    } <= kinds
    # Each event is on the trail before the decisions it caused.
    first = {r["subject"]: r["kind"] for r in reversed(records)}
    assert all(first[s] == "event.received" for s in first if s.startswith("event:"))
    emitted = next(r for r in records if r["kind"] == "event.emitted")
    assert emitted["actor"] == "token:abcd@127.0.0.1"
    future = evflow_cli("audit", "export", "--store", str(db), "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout == ""
