"""Signal subscribers the tests wait on: real conditions, no sleeping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import anyio

from evflow.records import RunRecord
from evflow.signals import RunStateChanged

if TYPE_CHECKING:
    from evflow import Engine

T = TypeVar("T")

LIMIT_S = 20  # bound on any single wait: a hang fails the test instead of blocking the suite


class RunLog:
    """A subscriber to run signals: the runs that finished, and a way to wait for some."""

    def __init__(self) -> None:
        self.finished: list[RunRecord] = []
        self._changed = anyio.Event()

    def attach(self, engine: Engine) -> RunLog:
        engine.signals.subscribe(RunStateChanged, lambda s: self.run_state(s.run))
        return self

    def run_state(self, run: RunRecord) -> None:
        if run.state.finished:
            self.finished.append(run)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_until(self, done: Callable[[list[RunRecord]], bool]) -> list[RunRecord]:
        with anyio.fail_after(LIMIT_S):
            while not done(self.finished):
                await self._changed.wait()
        return list(self.finished)

    async def wait_for(self, n: int) -> list[RunRecord]:
        return await self.wait_until(lambda runs: len(runs) >= n)


async def until(probe: Callable[[], Awaitable[T | None]], within_s: float = LIMIT_S) -> T:
    """Poll ``probe`` (a store read, a file, an HTTP call) until it returns something truthy.

    For conditions no observer reports; bounded, so a hang fails the test.
    """
    with anyio.fail_after(within_s):
        while True:
            value = await probe()
            if value:
                return value
            await anyio.sleep(0.01)
