"""A PostgreSQL server for the tests, and a fresh, empty store location per test.

The server is the one ``EVFLOW_TEST_POSTGRES`` names (default: ``postgresql://postgres@
127.0.0.1:5432/test``, which every development machine and CI runs). When none answers there,
a private server is started in a temporary folder from Debian's binaries (installed by
``scripts/install-postgres``) and stopped at the end. Either way the tests work in a database
of their own, created for the test session and dropped afterwards, and each test gets a
schema of its own in it (cheap, and as empty as a new database). A server we did not start is
never stopped or reconfigured. When no server can be reached or started, the tests fail
loudly; they never skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def private_server() -> Iterator[str]:
    """Start a throwaway server on a free loopback port; yield its URL; stop and remove it."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        subprocess.run(["scripts/install-postgres"], check=False)
        initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdbs:
        pytest.fail(
            "no PostgreSQL server answers at EVFLOW_TEST_POSTGRES (default "
            f"{DEFAULT_URL}) and none could be started: run scripts/install-postgres, or "
            "point EVFLOW_TEST_POSTGRES at a server",
            pytrace=False,
        )
    bindir = os.path.dirname(initdbs[-1])
    root = tempfile.mkdtemp(prefix="evflow-pg-")
    data = os.path.join(root, "data")
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)

    def run(*cmd: str) -> None:
        subprocess.run(_as_postgres_user(list(cmd)), check=True, capture_output=True, text=True)

    try:
        run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run(
            f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(root, "log"),
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"could not start a private PostgreSQL server: {exc.stderr}", pytrace=False)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres_user([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def with_schema(url: str, schema: str) -> str:
    """``url`` whose connections work in ``schema`` (through libpq's ``options``)."""
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}options=" + quote(f"-csearch_path={schema}")


@contextmanager
def session_database() -> Iterator[str]:
    """A database of our own on the test server for this session; dropped afterwards."""
    url = os.environ.get("EVFLOW_TEST_POSTGRES", DEFAULT_URL)
    with private_server() if not _answers(url) else _nothing(url) as server:
        name = f"evflow_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(server, name)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _nothing(url: str) -> Iterator[str]:
    yield url


def fresh_schema(database_url: str) -> str:
    """A new empty schema in the session database; returns a store URL that works in it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return with_schema(database_url, schema)


def server_of(database_url: str) -> str:
    """The URL of the server's maintenance database (for what must not run inside ours)."""
    return with_database(database_url.split("?", 1)[0], "postgres")


@contextmanager
def database_unreachable(database_url: str) -> Iterator[None]:
    """Our test database refuses connections and its open ones are ended (as if the server
    went away, for evflow), until the block ends. Only our own database is touched."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_of(database_url), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            yield
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def terminate_backends(database_url: str) -> int:
    """End every other connection to the session database (a lost server, as evflow sees it)."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_of(database_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


# -- the backend a test run uses ---------------------------------------------------------------

BACKEND_ENV = "EVFLOW_TEST_STORE"
_session: dict[str, str] = {}
_locations: dict[tuple[str, str], str] = {}


def backend() -> str:
    """``sqlite`` (the default) or ``postgres``: the store the engine suites run on
    (``EVFLOW_TEST_STORE``; ``make test`` runs them on both)."""
    value = os.environ.get(BACKEND_ENV, "sqlite")
    if value not in ("sqlite", "postgres"):
        pytest.fail(f"{BACKEND_ENV}={value!r}: use sqlite or postgres", pytrace=False)
    return value


def use_session_database(url: str) -> None:
    _session["url"] = url


def store_for(tmp_path: os.PathLike[str], name: str = "evflow.db") -> str:
    """Where a test's engine keeps its state: ``tmp_path/name`` on SQLite, or a fresh schema
    on PostgreSQL. The same arguments give the same location within a test run."""
    if backend() == "sqlite":
        return os.path.join(os.fspath(tmp_path), name)
    key = (os.fspath(tmp_path), name)
    if key not in _locations:
        _locations[key] = fresh_schema(_session["url"])
    return _locations[key]
