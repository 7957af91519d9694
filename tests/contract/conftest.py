"""One suite for every store backend: each test takes ``store_factory`` and opens its stores
(``async with store_factory() as store``), once per backend in ``BACKENDS``. A new backend
plugs in by adding one entry, a factory of an unopened store for a test's ``tmp_path``, and
nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from evflow.store import Store, connect

BACKENDS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp: connect(tmp / "evflow.db"),
}


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Make stores of one backend on one shared location (two of them: two connections)."""
    backend = BACKENDS[request.param]
    return lambda: backend(tmp_path)
