"""Rules through a running Engine: ``engine.emit`` → durable event → rule layer → runs.

Real Engine, real SQLite file, real tasks. Time-based policies (debounce, batch windows,
correlation timeouts) run on a :class:`~evflow.clock.ManualClock`, so they are instant: the
engine's rule loop sleeps on ``clock.sleep_until`` and wakes when the test moves the clock.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from evflow import Batch, Correlate, Engine, Event, Rule, RunState, TaskState, flow, task
from evflow.clock import ManualClock
from evflow.records import AuditRecord
from evflow.signals import CorrelationTimedOut
from tests.conftest import CLOCK_START
from tests.engines import started
from tests.observers import LIMIT_S, RunLog, until

T0 = CLOCK_START  # where the shared `clock` fixture starts


class Alerts:
    """A subscriber that collects correlation time-out signals."""

    def __init__(self) -> None:
        self.timed_out: list[CorrelationTimedOut] = []
        self.arrived = anyio.Event()

    def attach(self, engine: Engine) -> Alerts:
        engine.signals.subscribe(CorrelationTimedOut, self.correlation_timed_out)
        return self

    def correlation_timed_out(self, signal: CorrelationTimedOut) -> None:
        self.timed_out.append(signal)
        self.arrived.set()


async def audit(engine: Engine, event_id: str, kind: str) -> AuditRecord:
    """The first audit record of ``kind`` about the event, once the rule layer wrote it."""

    async def probe() -> AuditRecord | None:
        records = await engine.store.list_audit(subject=f"event:{event_id}")
        return next((r for r in records if r.kind == kind), None)

    return await until(probe)


async def matched_run(engine: Engine, event_id: str) -> str:
    """The id of the run the event started."""
    record = await audit(engine, event_id, "rule.matched")
    run_id: str = record.data["run_id"]
    return run_id


async def kinds(engine: Engine, event_id: str) -> list[str]:
    await engine.store.flush()
    return [r.kind for r in await engine.store.list_audit(subject=f"event:{event_id}")]


# -- matching and parameters ------------------------------------------------------------------


async def test_a_matching_event_starts_a_run_and_a_mismatch_is_audited_with_its_reason(
    tmp_path: Path,
) -> None:
    @task
    def greet(name: str, country: str) -> str:
        return f"hello {name} from {country}"

    @flow
    def welcome(name: str, country: str) -> None:
        greet(name, country)

    runs = RunLog()
    rule = Rule(
        "user.*",
        match={"data.country": ["FR", "BE"]},
        params={"name": "{data.name}", "country": "{data.country}"},
        name="welcome-eu",
    )
    wrong_country = Event(type="user.signed_up", data={"name": "Bob", "country": "US"})
    wrong_type = Event(type="order.created", data={"name": "Cy", "country": "FR"})
    hit = Event(type="user.signed_up", data={"name": "Ada", "country": "FR"})
    async with started(tmp_path, runs) as engine:
        engine.add(welcome, rule)
        for ev in (wrong_country, wrong_type, hit):
            accepted = await engine.emit(ev)
            assert not accepted.duplicate

        (run,) = await runs.wait_for(1)
        result = await engine.wait(run.id)
        assert result.ok, result.error
        assert result.params == {"name": "Ada", "country": "FR"}
        assert result.result("greet") == "hello Ada from FR"
        assert run.trigger == {"kind": "event", "rule": "welcome-eu", "events": [hit.uid]}

        matched = await audit(engine, hit.uid, "rule.matched")
        assert matched.data == {"rule": "welcome-eu", "run_id": run.id}
        country = await audit(engine, wrong_country.uid, "rule.not_matched")
        assert country.data["reason"] == (
            "welcome-eu: data.country='US' is not one of ['FR', 'BE']"
        )
        kind = await audit(engine, wrong_type.uid, "rule.not_matched")
        assert kind.data["reason"] == "welcome-eu: type 'order.created' does not match 'user.*'"

        assert await engine.store.count_runs() == 1
        for ev in (wrong_country, wrong_type, hit):
            assert (await engine.store.get_event(ev.uid)).status == "processed"


async def test_params_are_taken_from_event_paths_and_never_evaluated(tmp_path: Path) -> None:
    @task
    def collect(
        title: str, first_tag: str, subject: str, event_id: str, when: str, literal: str, doc: Any
    ) -> dict[str, Any]:
        return {
            "title": title,
            "first_tag": first_tag,
            "subject": subject,
            "event_id": event_id,
            "when": when,
            "literal": literal,
            "doc": doc,
        }

    @flow
    def publish(
        title: str, first_tag: str, subject: str, event_id: str, when: str, literal: str, doc: Any
    ) -> None:
        collect(title, first_tag, subject, event_id, when, literal, doc)

    rule = Rule(
        "doc.published",
        params={
            "title": "{data.doc.title}",
            "first_tag": "{data.tags.0}",
            "subject": "{subject}",
            "event_id": "{id}",
            "when": "{time}",
            "literal": "v-{data.doc.title}",  # not exactly a reference: a literal string
            "doc": "{data.doc}",
        },
        name="publish-docs",
    )
    runs = RunLog()
    at = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    doc = {"title": "__import__('os').getcwd()", "pages": [1, 2]}
    ev = Event(
        type="doc.published", subject="docs/42", time=at, data={"doc": doc, "tags": ["a", "b"]}
    )
    unmappable = Event(type="doc.published", data={"doc": {"pages": []}, "tags": ["x"]})
    async with started(tmp_path, runs) as engine:
        engine.add(publish, rule)
        await engine.emit(unmappable)
        await engine.emit(ev)
        (run,) = await runs.wait_for(1)
        result = await engine.wait(run.id)
        assert result.ok, result.error
        assert result.result("collect") == {
            "title": "__import__('os').getcwd()",
            "first_tag": "a",
            "subject": "docs/42",
            "event_id": ev.id,
            "when": at.isoformat(),
            "literal": "v-{data.doc.title}",
            "doc": doc,
        }

        # a matching event that lacks a value the rule needs: no run, a dead letter
        record = await audit(engine, unmappable.uid, "rule.not_mapped")
        assert "param 'title' needs data.doc.title" in record.data["reason"]
        letters = await until(engine.store.list_dead_letters)
        assert len(letters) == 1
        assert "data.doc.title" in letters[0].reason
        assert await engine.store.count_runs() == 1


async def test_a_replayed_event_starts_one_run_and_is_counted_as_a_duplicate(
    tmp_path: Path,
) -> None:
    @task
    def handle(n: int) -> int:
        return n

    @flow
    def orders(n: int) -> None:
        handle(n)

    rule = Rule("order.created", params={"n": "{data.n}"}, name="orders")
    runs = RunLog()
    original = Event(type="order.created", source="shop", id="order-42", data={"n": 42})
    async with started(tmp_path, runs) as engine:
        engine.add(orders, rule)
        first = await engine.emit(original)
        # the same delivery again, and another copy carrying the same explicit dedup key
        again = await engine.emit(
            Event(type="order.created", source="shop", id="order-42", data={"n": 42})
        )
        copy = await engine.emit(
            Event(type="order.created", source="relay", data={"n": 42}, dedup_key="shop/order-42")
        )
        assert not first.duplicate
        assert again.duplicate and again.event_id == first.event_id
        assert copy.duplicate and copy.event_id == first.event_id
        (run,) = await runs.wait_for(1)
        assert run.state is RunState.SUCCEEDED
        assert await engine.store.count_runs() == 1
        assert await engine.store.count_duplicates() == 2
        assert await engine.store.count_duplicates(source="shop") == 1

    # replayed into the next process: still one event, one run, and the run is not re-run
    async with started(tmp_path, runs) as engine:
        engine.add(orders, rule)
        replay = await engine.emit(
            Event(type="order.created", source="shop", id="order-42", data={"n": 42})
        )
        assert replay.duplicate and replay.event_id == first.event_id
        assert await engine.store.count_runs() == 1
        assert await engine.store.count_duplicates() == 3
        assert (await engine.store.get_run(run.id)).state is RunState.SUCCEEDED
    assert len(runs.finished) == 1


# -- debounce, batch, correlate (on a manual clock) -------------------------------------------


async def test_debounce_makes_one_run_with_the_last_events_params(
    tmp_path: Path, clock: ManualClock
) -> None:
    @task
    def rebuild(version: int) -> int:
        return version

    @flow
    def site(version: int) -> None:
        rebuild(version)

    runs = RunLog()
    rule = Rule("page.changed", params={"version": "{data.version}"}, debounce_s=30, name="site")
    burst = [Event(type="page.changed", data={"version": v}) for v in (1, 2, 3)]
    async with started(tmp_path, runs, clock=clock) as engine:
        engine.add(site, rule)
        for i, ev in enumerate(burst):
            if i:
                # 20 s later: past the first event's quiet time, inside the latest one's
                clock.advance(20)
            await engine.emit(ev)
            held = await audit(engine, ev.uid, "rule.held")
            assert "debouncing until" in held.data["why"]
        assert await engine.store.count_runs() == 0

        clock.advance(30)  # 30 s after the last event of the burst
        (run,) = await runs.wait_for(1)
        assert run.state is RunState.SUCCEEDED
        assert run.params == {"version": 3}
        assert run.trigger["events"] == [ev.uid for ev in burst]
        for ev in burst:
            assert await matched_run(engine, ev.uid) == run.id
            assert (await engine.store.get_event(ev.uid)).status == "processed"
        assert await engine.store.count_runs() == 1


async def test_batch_by_count_makes_one_run_per_full_batch(tmp_path: Path) -> None:
    @task
    def total(orders: list[dict[str, int]]) -> int:
        return sum(o["amount"] for o in orders)

    @flow
    def settle(orders: list[dict[str, int]]) -> None:
        total(orders)

    runs = RunLog()
    rule = Rule(
        "order.paid",
        params={"amount": "{data.amount}"},
        batch=Batch(count=3, param="orders"),
        name="settle",
    )
    events = [Event(type="order.paid", data={"amount": n}) for n in range(1, 8)]
    async with started(tmp_path, runs) as engine:
        engine.add(settle, rule)
        for ev in events:
            await engine.emit(ev)
        finished = await runs.wait_for(2)
        by_first = sorted(finished, key=lambda r: r.params["orders"][0]["amount"])
        assert [r.params["orders"] for r in by_first] == [
            [{"amount": 1}, {"amount": 2}, {"amount": 3}],
            [{"amount": 4}, {"amount": 5}, {"amount": 6}],
        ]
        assert [(await engine.wait(r.id)).result("total") for r in by_first] == [6, 15]
        # the seventh waits for two more; it stays undecided in the store meanwhile
        held = await audit(engine, events[6].uid, "rule.held")
        assert held.data["why"] == "batch 1/3"
        assert (await engine.store.get_event(events[6].uid)).status == "pending"
        assert await engine.store.count_runs() == 2


async def test_batch_by_time_makes_one_run_with_the_windows_events(
    tmp_path: Path, clock: ManualClock
) -> None:
    @task
    def count(events: list[dict[str, Any]]) -> list[str]:
        return [e["data"]["name"] for e in events]

    @flow
    def digest(events: list[dict[str, Any]]) -> None:
        count(events)

    runs = RunLog()
    rule = Rule("user.joined", batch=Batch(window_s=60), name="digest")  # no params: event dicts
    first = [Event(type="user.joined", data={"name": n}) for n in ("ada", "bob")]
    later = Event(type="user.joined", data={"name": "cy"})
    async with started(tmp_path, runs, clock=clock) as engine:
        engine.add(digest, rule)
        for ev in first:
            await engine.emit(ev)
            await audit(engine, ev.uid, "rule.held")
        clock.advance(60)
        (run,) = await runs.wait_for(1)
        assert [e["id"] for e in run.params["events"]] == [ev.id for ev in first]
        assert (await engine.wait(run.id)).result("count") == ["ada", "bob"]

        # the next event opens a new window
        await engine.emit(later)
        await audit(engine, later.uid, "rule.held")
        clock.advance(60)
        _, second = await runs.wait_for(2)
        assert [e["data"]["name"] for e in second.params["events"]] == ["cy"]
        assert await engine.store.count_runs() == 2


def _payments_flow() -> Any:
    @task
    def book(order: str, customer: str, amount: float | None) -> dict[str, Any]:
        return {"order": order, "customer": customer, "amount": amount}

    @flow
    def payments(order: str, customer: str, amount: float | None = None) -> None:
        book(order, customer, amount)

    return payments


def _correlate_rule(on_timeout: str) -> Rule:
    return Rule(
        match={"type": ["order.placed", "payment.received"]},
        correlate=Correlate(
            a="order.placed",
            b="payment.received",
            key="data.order",
            window_s=300,
            on_timeout=on_timeout,  # type: ignore[arg-type]
        ),
        params={"order": "{key}", "customer": "{a.data.customer}", "amount": "{b.data.amount}"},
        name="pair",
    )


async def test_correlate_runs_once_for_a_pair_and_alerts_when_the_partner_never_comes(
    tmp_path: Path, clock: ManualClock
) -> None:
    runs = RunLog()
    alerts = Alerts()
    placed_1 = Event(type="order.placed", data={"order": "o-1", "customer": "ada"})
    placed_2 = Event(type="order.placed", data={"order": "o-2", "customer": "bob"})
    paid_1 = Event(type="payment.received", data={"order": "o-1", "amount": 9.5})
    async with started(tmp_path, runs, alerts, clock=clock) as engine:
        engine.add(_payments_flow(), _correlate_rule("alert"))
        await engine.emit(placed_1)
        await engine.emit(placed_2)
        await audit(engine, placed_2.uid, "rule.held")
        clock.advance(100)  # the payment comes within the window
        await engine.emit(paid_1)
        (run,) = await runs.wait_for(1)
        assert run.params == {"order": "o-1", "customer": "ada", "amount": 9.5}
        assert run.trigger["events"] == [placed_1.uid, paid_1.uid]

        clock.advance(200)  # o-2's window (300 s from its arrival) closes without a payment
        with anyio.fail_after(LIMIT_S):
            await alerts.arrived.wait()
        (timed_out,) = alerts.timed_out
        assert timed_out.event_ids == (placed_2.uid,)
        assert timed_out.action == "alert"
        assert "no b event ('payment.received') with data.order='o-2'" in timed_out.reason
        record = await audit(engine, placed_2.uid, "rule.correlation_timed_out")
        assert record.data["action"] == "alert"
        assert record.data["key"] == "o-2"
        assert "rule.matched" not in await kinds(engine, placed_2.uid)
        assert (await engine.store.get_event(placed_2.uid)).status == "processed"
        assert await engine.store.count_runs() == 1


async def test_correlate_with_on_timeout_run_runs_the_lone_side(
    tmp_path: Path, clock: ManualClock
) -> None:
    runs = RunLog()
    placed = Event(type="order.placed", data={"order": "o-3", "customer": "cy"})
    async with started(tmp_path, runs, clock=clock) as engine:
        engine.add(_payments_flow(), _correlate_rule("run"))
        await engine.emit(placed)
        await audit(engine, placed.uid, "rule.held")
        clock.advance(300)
        (run,) = await runs.wait_for(1)
        assert run.state is RunState.SUCCEEDED
        assert run.params == {"order": "o-3", "customer": "cy", "amount": None}
        timed_out = await audit(engine, placed.uid, "rule.correlation_timed_out")
        assert timed_out.data["action"] == "run"
        assert await matched_run(engine, placed.uid) == run.id
        assert await engine.store.count_runs() == 1


# -- when the flow is already running -----------------------------------------------------------


class Gates:
    """Tasks of run ``n`` report that they started and wait until the test releases them."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.started: defaultdict[int, anyio.Event] = defaultdict(anyio.Event)
        self.release: defaultdict[int, anyio.Event] = defaultdict(anyio.Event)

    def flow(self) -> Any:
        gates = self

        @task
        async def step(n: int) -> int:
            gates.log.append(("start", n))
            gates.started[n].set()
            await gates.release[n].wait()
            gates.log.append(("end", n))
            return n

        @flow(max_active_runs=1)
        def job(n: int) -> None:
            step(n)

        return job

    async def wait_started(self, n: int) -> None:
        with anyio.fail_after(LIMIT_S):
            await self.started[n].wait()


def _job_rule(when_running: str) -> Rule:
    return Rule(
        "job.requested",
        params={"n": "{data.n}"},
        when_running=when_running,  # type: ignore[arg-type]
        name=f"job-{when_running}",
    )


def _job(n: int) -> Event:
    return Event(type="job.requested", data={"n": n})


async def test_when_running_queue_runs_both_in_order(tmp_path: Path) -> None:
    gates = Gates()
    runs = RunLog()
    first, second = _job(1), _job(2)
    async with started(tmp_path, runs) as engine:
        engine.add(gates.flow(), _job_rule("queue"))
        await engine.emit(first)
        await gates.wait_started(1)
        await engine.emit(second)
        second_run = await matched_run(engine, second.uid)
        queued = await engine.store.get_run(second_run)
        assert queued.state is RunState.QUEUED  # waits for the first (max_active_runs=1)

        gates.release[1].set()
        gates.release[2].set()
        finished = await runs.wait_for(2)
        assert [r.params["n"] for r in finished] == [1, 2]
        assert all(r.state is RunState.SUCCEEDED for r in finished)
        assert gates.log == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]


async def test_when_running_skip_drops_the_second_with_an_audit_record(tmp_path: Path) -> None:
    gates = Gates()
    runs = RunLog()
    first, second, third = _job(1), _job(2), _job(3)
    async with started(tmp_path, runs) as engine:
        engine.add(gates.flow(), _job_rule("skip"))
        await engine.emit(first)
        await gates.wait_started(1)
        await engine.emit(second)
        skipped = await audit(engine, second.uid, "rule.skipped")
        assert skipped.data["rule"] == "job-skip"
        assert "flow 'job' is already running (1 active run(s))" in skipped.data["reason"]
        assert "rule.matched" not in await kinds(engine, second.uid)
        assert await engine.store.count_runs() == 1

        gates.release[1].set()
        with anyio.fail_after(LIMIT_S):
            await engine.wait(await matched_run(engine, first.uid))
        gates.release[3].set()
        await engine.emit(third)  # nothing is running any more: this one starts
        finished = await runs.wait_for(2)
        assert [r.params["n"] for r in finished] == [1, 3]
        assert gates.log == [("start", 1), ("end", 1), ("start", 3), ("end", 3)]
        assert await engine.store.count_runs() == 2


async def test_when_running_replace_cancels_the_first_and_runs_the_second(
    tmp_path: Path,
) -> None:
    gates = Gates()
    runs = RunLog()
    first, second = _job(1), _job(2)
    async with started(tmp_path, runs) as engine:
        engine.add(gates.flow(), _job_rule("replace"))
        await engine.emit(first)
        await gates.wait_started(1)
        first_run = await matched_run(engine, first.uid)
        gates.release[2].set()
        await engine.emit(second)
        finished = await runs.wait_for(2)
        second_run = await matched_run(engine, second.uid)

        by_id = {r.id: r for r in finished}
        assert by_id[first_run].state is RunState.CANCELLED
        assert by_id[first_run].error == f"replaced by run {second_run}"
        assert by_id[second_run].state is RunState.SUCCEEDED
        replaced = await engine.store.get_run(first_run)
        assert [t.state for t in replaced.tasks] == [TaskState.CANCELLED]
        assert gates.log == [("start", 1), ("start", 2), ("end", 2)]


@pytest.mark.parametrize("when_running", ["queue", "skip", "replace"])
async def test_an_unrelated_flow_is_not_affected_by_the_policy(
    tmp_path: Path, when_running: str
) -> None:
    """The policy looks at runs of the same flow only."""
    gates = Gates()
    runs = RunLog()

    @task
    def other_step() -> str:
        return "ok"

    @flow
    def other() -> None:
        other_step()

    async with started(tmp_path, runs) as engine:
        engine.add(gates.flow(), _job_rule(when_running))
        engine.add(other, Rule("other.requested", name="other"))
        await engine.emit(_job(1))
        await gates.wait_started(1)
        await engine.emit(Event(type="other.requested"))
        (done,) = await runs.wait_for(1)
        assert done.flow == "other"
        assert done.state is RunState.SUCCEEDED
        gates.release[1].set()
        await runs.wait_for(2)
