"""A burst against a small backlog: every 202 has its run, every 429 says when to retry, and a
sender that retries after Retry-After loses nothing and doubles nothing."""

from __future__ import annotations

from pathlib import Path

import anyio

from evflow import RunState
from tests.integration.test_webhook import new_engine, post_order, running, serving
from tests.observers import LIMIT_S, until

BURST = 300


async def test_a_burst_over_a_small_backlog_is_paced_by_429_and_loses_nothing(
    tmp_path: Path,
) -> None:
    engine = new_engine(tmp_path, max_backlog=5)
    refused: list[int] = []
    accepted: dict[int, str] = {}
    async with running(engine), serving(engine) as client:

        async def deliver(n: int) -> None:
            while True:  # a sender that honours Retry-After (shortened: it says seconds)
                resp = await post_order(client, {"n": n}, delivery=f"d-{n}")
                if resp.status_code == 202:
                    accepted[n] = resp.json()["event_id"]
                    return
                assert resp.status_code == 429, resp.text
                assert int(resp.headers["Retry-After"]) >= 1
                refused.append(n)
                await anyio.sleep(0.05)

        with anyio.fail_after(LIMIT_S * 3):
            async with anyio.create_task_group() as tg:
                for n in range(BURST):
                    tg.start_soon(deliver, n)

        async def all_ran() -> bool:
            runs = await engine.store.list_runs(limit=10 * BURST)
            return len(runs) >= BURST and all(r.state.finished for r in runs)

        await until(all_ran, within_s=LIMIT_S * 3)
        runs = await engine.store.list_runs(limit=10 * BURST)
        events = await engine.store.list_events(limit=10 * BURST)
    assert refused, "the backlog limit never pushed back: the test did not test anything"
    assert sorted(accepted) == list(range(BURST))
    assert len(events) == BURST  # a delivery retried after 429 is one event, not two
    assert len(runs) == BURST
    assert {r.params["n"] for r in runs} == set(range(BURST))
    assert {r.state for r in runs} == {RunState.SUCCEEDED}
    by_event = {eid: r.id for r in runs for eid in r.trigger["events"]}
    assert set(by_event) == set(accepted.values())  # every 202's event has its run
