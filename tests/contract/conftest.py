"""One suite for every store backend: each test takes ``store_factory`` and opens its stores
(``async with store_factory() as store``), once per backend. A backend plugs in with one
entry in ``location``: where a test's stores live, given the test's ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from evflow.store import Store, connect

BACKENDS = ("postgres", "sqlite")


@pytest.fixture(params=BACKENDS)
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's stores live: a SQLite file, or an empty PostgreSQL schema."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "evflow.db")


@pytest.fixture
def store_factory(store_location: str) -> Callable[[], Store]:
    """Make stores of one backend on one shared location (two of them: two connections)."""
    return lambda: connect(store_location)
