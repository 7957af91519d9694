"""Task attempts on the run's clock: retry delays wait on it, records are stamped with it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio

from evflow import RunResult, TaskState, flow, task
from evflow.clock import ManualClock
from evflow.signals import TaskStateChanged
from tests.engines import new_engine
from tests.observers import LIMIT_S, until

START = datetime(2030, 1, 1, tzinfo=UTC)


async def test_retry_delays_wait_on_the_manual_clock_not_in_real_time(tmp_path: Path) -> None:
    calls = 0

    @task(retries=2, retry_delay=3600, retry_backoff=2.0, retry_jitter=0, max_retry_delay_s=86400)
    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError(f"boom {calls}")
        return calls

    @flow
    def hourly_retries() -> None:
        flaky()

    clock = ManualClock(START)
    seen: list[TaskState] = []
    began = time.monotonic()
    async with new_engine(tmp_path, clock=clock) as engine:
        engine.signals.subscribe(TaskStateChanged, lambda s: seen.append(s.task.state))

        def retry_sleeping(after_calls: int) -> Callable[[], Awaitable[bool]]:
            async def probe() -> bool:
                return calls == after_calls and clock.sleepers > 0

            return probe

        result: RunResult | None = None
        with anyio.fail_after(LIMIT_S):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    nonlocal result
                    result = await engine.run(hourly_retries)

                tg.start_soon(run)
                for expected_calls, delay_s in ((1, 3600), (2, 7200)):
                    await until(retry_sleeping(expected_calls))
                    clock.advance(delay_s - 1)  # not yet: the attempt must not start early
                    await anyio.wait_all_tasks_blocked()
                    assert calls == expected_calls and clock.sleepers == 1
                    clock.advance(1)
        assert result is not None and result.ok, result and result.error
        attempts = await engine.store.list_attempts(result.run_id)

    assert time.monotonic() - began < LIMIT_S
    assert calls == 3 and result.result("flaky") == 3
    assert seen.count(TaskState.RETRYING) == 2
    # Timestamps come from the clock: each attempt starts exactly when its delay ran out.
    assert [(a.attempt, a.state) for a in attempts] == [
        (1, TaskState.FAILED),
        (2, TaskState.FAILED),
        (3, TaskState.SUCCEEDED),
    ]
    t0 = START.timestamp()
    assert [a.started_at for a in attempts] == [t0, t0 + 3600, t0 + 3600 + 7200]
