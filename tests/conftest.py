"""Shared fixtures. The Kafka broker fixture lives in its own plugin module; the PostgreSQL
server and per-test store locations come from tests/postgres.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import backend, fresh_schema, session_database, use_session_database

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
