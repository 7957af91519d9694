"""Engines for tests: on this test's store, and running with their sensors listening.

Every engine made here stores its state where :func:`tests.postgres.store_for` says, so
``EVFLOW_TEST_STORE=postgres`` runs the same tests on PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from evflow import Engine, Flow, Rule
from tests.observers import LIMIT_S
from tests.postgres import store_for


def new_engine(
    tmp_path: os.PathLike[str], flow: Flow | None = None, *rules: Rule, **options: Any
) -> Engine:
    """An engine (not started) on this test's store, with ``flow`` and its ``rules`` added.

    ``grace_period_s`` is 0 unless given, so a test's engine stops at once.
    """
    options.setdefault("grace_period_s", 0)
    engine = Engine(store_for(tmp_path), **options)
    if flow is not None:
        engine.add(flow, *rules)
    return engine


@asynccontextmanager
async def started(
    tmp_path: os.PathLike[str], *observers: Any, **options: Any
) -> AsyncIterator[Engine]:
    """A running engine on this test's store with ``observers`` (anything with ``attach``)
    attached before it starts; ``options`` as for :func:`new_engine`."""
    engine = new_engine(tmp_path, **options)
    for observer in observers:
        observer.attach(engine)
    async with engine:
        yield engine


@asynccontextmanager
async def listening(engine: Engine) -> AsyncIterator[Engine]:
    """``engine`` started, entered once every sensor it has is listening."""
    async with engine:
        with anyio.fail_after(LIMIT_S):
            await engine.sensors_settled()
        assert set(engine.sensor_status.values()) == {"listening"}, engine.sensor_status
        yield engine
