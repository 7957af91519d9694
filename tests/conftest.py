"""Shared fixtures: this test's store and an engine on it (tests/engines.py makes engines for
tests that need options). The Kafka broker fixture lives in its own plugin module; the
PostgreSQL server and per-test store locations come from tests/postgres.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evflow import Engine
from evflow.clock import ManualClock
from tests.engines import new_engine
from tests.postgres import (
    backend,
    fresh_schema,
    session_database,
    store_for,
    use_session_database,
)

pytest_plugins = ["tests.conftest_kafka"]


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test session's own on the test server (see tests/postgres.py)."""
    with session_database() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """A store URL for this test alone: an empty schema in the session's database."""
    return fresh_schema(postgres_database)


@pytest.fixture(scope="session", autouse=True)
def _store_backend(request: pytest.FixtureRequest) -> None:
    """On ``EVFLOW_TEST_STORE=postgres``, engines made with ``store_for`` use the session's
    PostgreSQL database."""
    if backend() == "postgres":
        use_session_database(request.getfixturevalue("postgres_database"))


@pytest.fixture
def store(tmp_path: Path) -> str:
    """Where this test's engine keeps its state: SQLite under ``tmp_path``, or a fresh
    PostgreSQL schema on ``EVFLOW_TEST_STORE=postgres`` (see tests/postgres.py)."""
    return store_for(tmp_path)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    """An engine (not started) on this test's :func:`store`, stopping at once when exited."""
    return new_engine(tmp_path)


CLOCK_START = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
"""Where the ``clock`` fixture starts: a fixed instant, so tests state times exactly."""


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at :data:`CLOCK_START`, moved only by the test (timers, retry delays,
    schedules fire without real time passing)."""
    return ManualClock(CLOCK_START)
