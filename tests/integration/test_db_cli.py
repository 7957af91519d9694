"""Choosing the store by URL, and ``evflow db``: status, upgrade, and copying a SQLite
deployment to PostgreSQL with its whole history, as a user moving off one machine would."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from evflow import Engine, Event, flow, get_logger, task
from evflow.audit import verify
from evflow.store import connect
from evflow.store.postgres_schema import SCHEMA_VERSION
from tests.integration.test_service import clean_env, evflow, serving, write

PASSWORD = "s3cret-pw"


@task
def shout(word: str) -> str:
    get_logger().info("shouting %s", word)
    return word.upper()


@task
def boom() -> None:
    raise ValueError("no")


@flow
def loud(word: str) -> None:
    shout(word)


@flow
def broken() -> None:
    boom()


async def make_history(path: Path) -> dict[str, int]:
    """A SQLite store with runs (one failed), logs, an event, a dead letter and a cursor."""
    async with Engine(path, grace_period_s=0) as engine:
        engine.add(loud)
        engine.add(broken)
        for word in ("a", "b", "c"):
            await engine.run(loud, word=word)
        await engine.run(broken)
        await engine.intake.submit([Event("thing.happened", data={"n": 1})], cursors={"k": "7"})
        await engine.intake.dead_letter(source="raw", reason="not JSON", payload=b"\xff")
    async with connect(path) as store:
        return {
            "runs": await store.count_runs(),
            "audit": len(await store.audit_rows(limit=100_000)),
        }


def with_password(url: str) -> str:
    """``url`` with a password (trust auth ignores it; the point is that it is never shown)."""
    parts = urlsplit(url)
    user, host = parts.netloc.split("@", 1)
    return parts._replace(netloc=f"{user}:{PASSWORD}@{host}").geturl()


async def test_copy_moves_the_whole_history_to_postgres(tmp_path: Path, postgres_url: str) -> None:
    db = tmp_path / "evflow.db"
    before = await make_history(db)
    target = with_password(postgres_url)

    status, out, err = await evflow("db", "copy", "--from", str(db), "--to", target, cwd=tmp_path)
    assert status == 0, out + err
    assert "audit trail of the copy verified" in out
    assert PASSWORD not in out + err and "***" in err

    async with connect(db) as source, connect(postgres_url) as copy:
        assert await copy.count_runs() == before["runs"]
        assert await copy.audit_rows(limit=100_000) == await source.audit_rows(limit=100_000)
        assert (await verify(copy)).ok
        for run in await source.list_runs(limit=100):
            copied = await copy.get_run(run.id)
            original = await source.get_run(run.id)
            assert (copied.state, copied.params, copied.error) == (
                original.state,
                original.params,
                original.error,
            )
            assert [(t.name, t.state, t.result) for t in copied.tasks] == [
                (t.name, t.state, t.result) for t in original.tasks
            ]
            assert [lg.message for lg in await copy.list_logs(run.id)] == [
                lg.message for lg in await source.list_logs(run.id)
            ]
            assert len(await copy.list_attempts(run.id)) == len(await source.list_attempts(run.id))
        (event,) = await copy.list_events()
        assert (event.type, event.data) == ("thing.happened", {"n": 1})
        assert await copy.get_cursor("k") == "7"
        (letter,) = await copy.list_dead_letters()
        assert letter.payload == b"\xff"

    status, out, err = await evflow("audit", "verify", "--store", target, cwd=tmp_path)
    assert status == 0 and f"{before['audit']} record(s) verified" in out, out + err
    status, out, err = await evflow("runs", "--store", target, cwd=tmp_path)
    assert status == 0 and out.count("loud") == 3 and "broken" in out, out + err

    # A second copy into the same store would mix two histories: refused.
    status, out, err = await evflow("db", "copy", "--from", str(db), "--to", target, cwd=tmp_path)
    assert status == 2 and "copy into a new, empty store" in err, out + err


async def test_status_and_upgrade(tmp_path: Path, postgres_url: str) -> None:
    url = with_password(postgres_url)
    status, out, err = await evflow("db", "status", "--store", url, cwd=tmp_path)
    assert status == 0, err
    assert f"version 0 of {SCHEMA_VERSION}" in out and "evflow db upgrade" in out
    assert PASSWORD not in out and "***" in out

    status, out, err = await evflow("db", "upgrade", "--store", url, cwd=tmp_path)
    assert status == 0 and f"from version 0 to {SCHEMA_VERSION}" in out, out + err
    status, out, err = await evflow("db", "upgrade", "--store", url, cwd=tmp_path)
    assert status == 0 and "nothing to do" in out, out + err
    status, out, err = await evflow("db", "status", "--store", url, cwd=tmp_path)
    assert "up to date" in out and "runs     0" in out, out + err

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO evflow_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    status, out, err = await evflow("db", "status", "--store", url, cwd=tmp_path)
    assert status == 1 and "NEWER than this evflow" in out, out + err
    status, out, err = await evflow("runs", "--store", url, cwd=tmp_path)
    assert status == 2 and "upgrade evflow" in err and len(err.splitlines()) == 1, err


async def test_sqlite_status_of_a_missing_file_changes_nothing(tmp_path: Path) -> None:
    status, out, err = await evflow("db", "status", "--store", "nothing.db", cwd=tmp_path)
    assert status == 0 and "no store yet" in out, out + err
    assert not (tmp_path / "nothing.db").exists()


async def test_the_store_url_comes_from_the_environment_or_evflow_toml(
    tmp_path: Path, postgres_url: str
) -> None:
    project = tmp_path / "p"
    write(project / "evflow.toml", "[http]\nenabled = false\n")
    await make_history(tmp_path / "seed.db")
    status, _, err = await evflow(
        "db", "copy", "--from", str(tmp_path / "seed.db"), "--to", postgres_url, cwd=tmp_path
    )
    assert status == 0, err

    env = clean_env(EVFLOW_STORE_URL=with_password(postgres_url))
    status, out, err = await evflow("runs", cwd=project, env=env)
    assert status == 0 and out.count("loud") == 3, out + err

    write(project / "evflow.toml", f'[http]\nenabled = false\n[store]\nurl = "{postgres_url}"\n')
    status, out, err = await evflow("runs", cwd=project, env=clean_env())
    assert status == 0 and out.count("loud") == 3, out + err


async def test_serve_on_postgres_shows_the_store_with_its_password_masked(
    tmp_path: Path, postgres_url: str
) -> None:
    project = tmp_path / "p"
    write(project / "evflow.toml", "[engine]\ngrace_period_s = 0\n")
    write(
        project / "flows" / "one.py",
        """
        from evflow import flow, task

        @task
        def a() -> int:
            return 1

        @flow
        def one() -> None:
            a()
        """,
    )
    env = clean_env(EVFLOW_STORE_URL=with_password(postgres_url))
    async with serving(project, tmp_path / "logs", env=env) as service:
        summary = service.stdout
        assert "postgresql://" in summary and "***" in summary
        assert PASSWORD not in summary
        assert "cluster  instance" in summary  # on PostgreSQL, an instance of a cluster
        # What `evflow cluster` shows of the store masks the password too.
        status, out, err = await evflow("cluster", cwd=project, env=env)
        assert status == 0, out + err
        assert "1 alive of 1 registered" in out and "***" in out
        assert PASSWORD not in out + err
        assert await service.stop() == 0
    assert PASSWORD not in (tmp_path / "logs" / "stderr.log").read_text()
