"""SIGKILL loops: ``evflow serve`` killed again and again under load loses and doubles nothing.

Real ``evflow serve`` processes on a project written into ``tmp_path``, real HTTP, real SIGKILL.
Every task execution appends ``start``/``end`` lines to a ledger file, so the test can tell a task
re-run after a kill interrupted it (allowed: tasks are at-least-once) from a task run twice
for no reason (never allowed).
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import orjson
import pytest

from evflow.store import connect
from tests.integration.test_service import Service, serving, write
from tests.observers import until

pytestmark = pytest.mark.slow

KILLS = 3
DELIVERIES_PER_ROUND = 40
LIMIT_S = 60


def write_project(root: Path) -> None:
    write(
        root / "evflow.toml",
        """
        [store]
        path = "var/evflow.db"

        [engine]
        grace_period_s = 0.5
        """,
    )
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "orders.py",
        '''
        """Each execution appends to ledger.txt, flushed at once: what ran, and how often."""

        import os

        import anyio

        from evflow import flow, task


        def note(line: str) -> None:
            fd = os.open("ledger.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, (line + "\\n").encode())
            finally:
                os.close(fd)


        @task
        async def handle(n: int) -> int:
            note(f"start {n} {os.getpid()}")
            await anyio.sleep(0.05)  # long enough for a kill to land mid-task now and then
            note(f"end {n} {os.getpid()}")
            return n


        @flow
        def orders(n: int) -> None:
            handle(n)
        ''',
    )
    write(
        root / "sensors" / "hooks.py",
        """
        from evflow import Rule
        from evflow.sensors import WebhookSensor

        orders_hook = Rule(on=WebhookSensor("orders"), flow="orders", params={"n": "{data.n}"})
        """,
    )


def base_url(summary: str) -> str:
    found = re.search(r"http://127\.0\.0\.1:\d+", summary)
    assert found, summary
    return found.group(0)


@asynccontextmanager
async def killed_at_the_end(
    project: Path, logs: Path, killed: list[int]
) -> AsyncIterator[tuple[Service, str]]:
    """A service that is SIGKILLed (not stopped) when the block ends; its pid goes to ``killed``."""
    async with serving(project, logs) as service:
        killed.append(service.process.pid)
        try:
            yield service, base_url(service.stdout)
        finally:
            service.process.send_signal(signal.SIGKILL)
            with anyio.fail_after(LIMIT_S):
                await service.process.wait()


async def send(client: httpx.AsyncClient, n: int) -> bool:
    """POST delivery ``n``; True once it got its 202 (a killed server refuses or drops it)."""
    body = orjson.dumps({"n": n})
    headers = {"Content-Type": "application/json", "X-Delivery-Id": f"d-{n}"}
    try:
        resp = await client.post("/hooks/orders", content=body, headers=headers)
    except httpx.TransportError:
        return False
    assert resp.status_code in (202, 503), resp.text
    return resp.status_code == 202


async def test_sigkill_under_webhooks_loses_and_doubles_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_project(project)
    acked: set[int] = set()
    sent: set[int] = set()
    killed: list[int] = []
    n = 0
    for round_ in range(KILLS):
        async with (
            killed_at_the_end(project, tmp_path / f"logs-{round_}", killed) as (_, url),
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            batch = list(range(n, n + DELIVERIES_PER_ROUND))
            n += DELIVERIES_PER_ROUND
            # half of this round's deliveries, plus a re-send of every earlier one
            redo = sorted(sent)[-DELIVERIES_PER_ROUND // 2 :]
            for i in [*batch[: len(batch) // 2], *redo]:
                sent.add(i)
                if await send(client, i):
                    acked.add(i)
            # the other half concurrently, with the kill landing among them
            async with anyio.create_task_group() as tg:

                async def one(i: int) -> None:
                    sent.add(i)
                    if await send(client, i):
                        acked.add(i)

                for i in batch[len(batch) // 2 :]:
                    tg.start_soon(one, i)
                await anyio.sleep(0.05)
                tg.cancel_scope.cancel()

    # a last, clean start: everything accepted must run to its end
    async with serving(project, tmp_path / "logs-final") as service:
        url = base_url(service.stdout)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def all_done() -> bool:
                resp = await client.get("/api/runs", params={"limit": 1000})
                runs = resp.json()["runs"]
                return len(runs) >= len(acked) and all(
                    r["state"] in ("succeeded", "failed", "cancelled") for r in runs
                )

            await until(all_done, within_s=LIMIT_S)
        assert await service.stop() == 0

    async with connect(project / "var" / "evflow.db") as store:
        events = await store.list_events(limit=100_000)
        runs = await store.list_runs(limit=100_000)
    deliveries = Counter(e.extensions.get("delivery") for e in events)
    assert {d for d, c in deliveries.items() if c > 1} == set(), "a delivery made two events"
    assert acked <= {int(str(d)[2:]) for d in deliveries}, "an acknowledged delivery was lost"
    # one run per event, every run finished and succeeded
    started_by = Counter(eid for r in runs for eid in r.trigger.get("events", ()))
    assert len(runs) == len(events)
    assert all(c == 1 for c in started_by.values())
    assert {str(r.state) for r in runs} == {"succeeded"}
    # at-least-once tasks: every delivery's task ended at least once, and a task started again
    # only in a later process after a process running it was killed
    ends: dict[str, list[int]] = {}
    starts: dict[str, list[int]] = {}
    for line in (project / "ledger.txt").read_text().splitlines():
        what, key, pid = line.split()
        (starts if what == "start" else ends).setdefault(key, []).append(int(pid))
    assert set(ends) == {str(d)[2:] for d in deliveries}
    for key, pids in starts.items():
        assert len(pids) == len(set(pids)), f"delivery {key} ran twice in one process: {pids}"
        assert set(pids[:-1]) <= set(killed), f"delivery {key} re-ran without a kill: {pids}"
