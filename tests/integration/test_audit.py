"""The tamper-evident audit trail, checked through the real `evflow audit` command."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import orjson
import psycopg
import pytest

from evflow import Engine, Event, Rule, flow, task
from evflow.audit import verify
from evflow.audit_kinds import AuditKind
from evflow.store import connect, postgres_schema
from evflow.store import schema as sqlite_schema
from evflow.store.base import GENESIS_HASH, AuditEntry, Changes, chain_hash
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


def one_row(db: Path, sql: str, *params: object) -> tuple[Any, ...]:
    with closing(sqlite3.connect(db)) as conn:
        row: tuple[Any, ...] = conn.execute(sql, params).fetchone()
        return row


def alter(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with closing(sqlite3.connect(db)) as conn:
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()


def broken(db: Path) -> str:
    done = evflow_cli("audit", "verify", "--store", str(db))
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    return done.stderr


async def test_an_edited_record_is_named(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    seq, chain, pos, subject = one_row(
        db, "SELECT seq, chain, pos, subject FROM audit WHERE kind = 'run.succeeded' LIMIT 1"
    )
    alter(db, ("UPDATE audit SET kind = 'run.failed' WHERE seq = ?", (seq,)))
    err = broken(db)
    assert f"BROKEN at record {pos} of chain {chain} (trail record {seq})" in err
    assert subject in err and "edited" in err


async def test_a_deleted_or_reordered_record_is_named(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    seq, chain = one_row(db, "SELECT seq, chain FROM audit WHERE chain != 'system' AND pos = 3")
    alter(db, ("DELETE FROM audit WHERE seq = ?", (seq,)))
    err = broken(db)
    assert f"record 3 of chain {chain}: it is missing" in err

    db2 = tmp_path / "second.db"
    await make_trail(db2)
    chain, s2, s3 = one_row(
        db2,
        "SELECT chain, MIN(seq), MAX(seq) FROM audit WHERE chain != 'system' AND pos IN (2, 3) "
        "GROUP BY chain",
    )
    # Swap the contents of records 2 and 3, each keeping its own hashes.
    rows = {
        s: one_row(db2, "SELECT time, kind, subject, actor, data FROM audit WHERE seq = ?", s)
        for s in (s2, s3)
    }
    alter(
        db2,
        *(
            (
                "UPDATE audit SET time=?, kind=?, subject=?, actor=?, data=? WHERE seq=?",
                (*rows[b], a),
            )
            for a, b in ((s2, s3), (s3, s2))
        ),
    )
    assert f"BROKEN at record 2 of chain {chain} (trail record {s2})" in broken(db2)

    db3 = tmp_path / "third.db"
    await make_trail(db3)
    # Records 2 and 3 trade places in the trail, each whole.
    chain, s2, s3 = one_row(
        db3,
        "SELECT chain, MIN(seq), MAX(seq) FROM audit WHERE chain != 'system' AND pos IN (2, 3) "
        "GROUP BY chain",
    )
    alter(
        db3,
        *(
            ("UPDATE audit SET seq = ? WHERE seq = ?", (b, a))
            for a, b in ((s2, -1), (s3, s2), (-1, s3))
        ),
    )
    err = broken(db3)
    assert f"record 2 of chain {chain}" in err and "out of order" in err


async def test_a_chain_cut_short_from_its_end_is_named(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    await make_trail(db)
    chain, last = one_row(
        db, "SELECT chain, MAX(pos) FROM audit WHERE chain != 'system' GROUP BY chain"
    )
    alter(db, ("DELETE FROM audit WHERE chain = ? AND pos >= ?", (chain, last - 1)))
    err = broken(db)
    assert f"BROKEN at record {last - 1} of chain {chain}: the chain was cut short" in err
    assert f"anchored head is record {last}" in err

    # Removing the head as well leaves the chain's opening record in the system chain.
    alter(db, ("DELETE FROM audit_heads WHERE chain = ?", (chain,)))
    assert f"BROKEN at chain {chain}: the chain opened by trail record 1 has no anchored head" in (
        broken(db)
    )


async def test_two_writers_on_one_file_keep_a_chain_each(tmp_path: Path) -> None:
    db = tmp_path / "evflow.db"
    async with SqliteStore(db) as first, SqliteStore(db) as second:
        for i in range(20):
            store = first if i % 2 else second
            await store.apply(
                Changes(audit=[AuditEntry(AuditKind.EVENT_EMITTED, f"writer:{i % 2}", {"i": i})]),
                wait=True,
            )
    chains: dict[str, set[str]] = {}
    with closing(sqlite3.connect(db)) as conn:
        for subject, chain in conn.execute("SELECT subject, chain FROM audit"):
            chains.setdefault(subject, set()).add(chain)
    assert len(chains["writer:0"]) == len(chains["writer:1"]) == 1
    assert chains["writer:0"] != chains["writer:1"]
    done = evflow_cli("audit", "verify", "--store", str(db))
    assert done.returncode == 0, done.stderr
    assert "22 record(s) verified" in done.stdout  # 20, and each chain's opening


def legacy_trail(n: int) -> list[tuple[Any, ...]]:
    """``n`` records of the single chain kept before schema 5 (SQLite) / 4 (PostgreSQL)."""
    rows, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        data = orjson.dumps({"i": seq})
        h = chain_hash(prev, seq, 1000.0 + seq, "run.queued", f"run:old{seq}", "cli", data)
        rows.append((seq, 1000.0 + seq, "run.queued", f"run:old{seq}", "cli", data, prev, h))
        prev = h
    return rows


def sqlite_before_chains(db: Path, trail: list[tuple[Any, ...]]) -> None:
    """A store file as evflow left it before there were several chains."""
    with closing(sqlite3.connect(db)) as conn:
        for migration in sqlite_schema.MIGRATIONS[:4]:
            conn.executescript(migration)
        conn.executemany("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?)", trail)
        conn.execute("PRAGMA user_version=4")
        conn.commit()


def postgres_before_chains(url: str, trail: list[tuple[Any, ...]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE evflow_schema (version integer NOT NULL)")
        for number, migration in enumerate(postgres_schema.MIGRATIONS[:3], 1):
            conn.execute(migration.encode())
            conn.execute("INSERT INTO evflow_schema (version) VALUES (%s)", (number,))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO audit VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", trail)
        conn.execute("UPDATE audit_head SET seq = %s, hash = %s", (trail[-1][0], trail[-1][7]))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_trail_from_before_chains_verifies_after_the_upgrade(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    trail = legacy_trail(5)
    location: str
    if backend == "postgres":
        location = request.getfixturevalue("postgres_url")
        await anyio.to_thread.run_sync(postgres_before_chains, location, trail)
    else:
        location = str(tmp_path / "evflow.db")
        await anyio.to_thread.run_sync(sqlite_before_chains, Path(location), trail)
    async with connect(location) as store:
        await store.apply(Changes(audit=[AuditEntry(AuditKind.RUN_QUEUED, "run:new")]), wait=True)
        records = await store.list_audit()
        assert [(r.seq, r.chain, r.pos) for r in records[:5]] == [
            (seq, "legacy", seq) for seq in range(1, 6)
        ]
        assert [r.hash for r in records[:5]] == [row[7] for row in trail]
        assert [r.seq for r in records] == list(range(1, 8))  # then the opening, then the new
        result = await verify(store)
        assert result.ok and result.checked == 7, result

    # Legacy records are checked as ever: an edit is named in the legacy chain.
    def edit() -> None:
        if backend == "postgres":
            with psycopg.connect(location, autocommit=True) as conn:
                conn.execute("UPDATE audit SET subject = 'run:other' WHERE seq = 3")
        else:
            alter(Path(location), ("UPDATE audit SET subject = 'run:other' WHERE seq = 3", ()))

    await anyio.to_thread.run_sync(edit)
    async with connect(location) as store:
        result = await verify(store)
    assert (result.chain, result.pos, result.bad_seq) == ("legacy", 3, 3), result


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
    positions: dict[str, list[int]] = {}
    for r in records:
        positions.setdefault(r["chain"], []).append(r["pos"])
    assert sorted(positions) == sorted(["system", records[-1]["chain"]])
    assert all(p == list(range(1, len(p) + 1)) for p in positions.values())
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
