"""The rule loop: the one place where decisions about events become durable.

Accepted events arrive in an in-memory inbox (and, after a restart, from the store's pending
events). The loop offers them to the :class:`~evflow.rules.ruleset.RuleSet`, fires what the
rules' timers made due, and writes, in **one** transaction, every decision's audit record, the
runs the decisions create (inserted only if absent: a run id is a hash of the rule and its
events, so a replayed event never starts a second run) and the events marked processed. An
event a policy still holds (debounce, batch, correlation) stays pending, so a restart offers it
again. Runs start only after that commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import anyio
import orjson
from anyio.abc import TaskStatus

from .. import tracing
from ..clock import Clock
from ..errors import EvflowError, StoreUnavailable
from ..events import Event
from ..flows.dag import Flow
from ..intake import StoreIntake as Intake
from ..records import RunRecord
from ..run.queue import RunQueue, new_run, pending_tasks, run_id_for
from ..signals import CorrelationTimedOut as CorrelationTimedOutSignal
from ..signals import Signals
from ..store.base import Store
from ..store.writes import Decisions
from .decisions import CorrelationTimedOut, Decision, Held, NotMapped, NotMatched, RunRequested
from .policies import policy_action
from .ruleset import RuleSet

__all__ = ["RuleLoop"]

log = logging.getLogger("evflow.engine")


class RuleLoop:
    """Decides on accepted events, one batch at a time, until cancelled.

    ``capacity_changed`` is called after each batch (the inbox shrank: intake may take more).
    """

    def __init__(
        self,
        *,
        rules: RuleSet,
        flows: Mapping[str, Flow],
        runs: RunQueue,
        signals: Signals,
        clock: Clock,
        capacity_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.rules = rules
        self.flows = flows
        self.runs = runs
        self.signals = signals
        self.clock = clock
        self.capacity_changed = capacity_changed
        self.inbox: list[Event] = []
        # Trace contexts of events a policy still holds, for the decision that releases them.
        self._carriers: dict[str, dict[str, str]] = {}
        self._wake = anyio.Event()
        self._store: Store | None = None
        self._intake: Intake | None = None

    def open(self, store: Store, intake: Intake) -> None:
        self._store, self._intake = store, intake

    def offer(self, events: Iterable[Event]) -> None:
        """Queue events for the next batch and wake the loop."""
        self.inbox.extend(events)
        self._wake.set()

    def wake(self) -> None:
        """Look again (a rule was added, so a timer may have changed)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self._store is not None and self._intake is not None, "the rule loop is not open"
        task_status.started()
        while True:
            # Reset before looking: anything arriving after the look sets the new event.
            if self._wake.is_set():
                self._wake = anyio.Event()
            if not self.inbox:
                await self._wait_for_work(self._wake)
            batch, self.inbox = self.inbox, []
            try:
                await self._decide(self._store, self._intake, batch)
            except Exception:
                log.exception(
                    "the rule layer failed on %d event(s); they stay pending and are "
                    "decided again at the next start",
                    len(batch),
                )
            self.capacity_changed()

    async def _wait_for_work(self, wake: anyio.Event) -> None:
        """Sleep until events or rules arrive, or a rule's timer (debounce, batch window,
        correlation timeout) comes due on the clock."""
        deadline = self.rules.next_deadline()
        if deadline is None:
            await wake.wait()
            return
        async with anyio.create_task_group() as tg:

            async def timer() -> None:
                await self.clock.sleep_until(deadline)
                tg.cancel_scope.cancel()

            tg.start_soon(timer)
            await wake.wait()
            tg.cancel_scope.cancel()

    async def _decide(self, store: Store, intake: Intake, events: list[Event]) -> None:
        now = self.clock.now()
        decisions: list[Decision] = list(self.rules.due(now))
        offered: list[str] = []
        for ev in events:
            ds = self.rules.offer(ev, now)
            offered.append(ev.uid)
            if not any(
                isinstance(d, RunRequested | Held | NotMapped | CorrelationTimedOut) for d in ds
            ):
                reason = _unmatched_reason(ds)
                decisions.append(NotMatched(rule="*", event_id=ev.uid, reason=reason))
            decisions.extend(d for d in ds if not isinstance(d, NotMatched))
        held = self.rules.held_event_ids()
        if tracing.enabled():
            for ev in events:
                if carrier := tracing.carrier_of(ev.extensions):
                    self._carriers[ev.uid] = carrier
        record = Decisions()
        to_start: list[RunRecord] = []
        by_id = {ev.uid: ev for ev in events}
        for d in decisions:
            await self._apply(store, intake, d, record, to_start, by_id)
        record.processed(eid for eid in offered if eid not in held)
        released = {
            eid
            for d in decisions
            if isinstance(d, RunRequested | CorrelationTimedOut)
            for eid in (d.event_ids)
        }
        record.processed(eid for eid in released if eid not in held and eid not in offered)
        if self._carriers:
            self._carriers = {k: v for k, v in self._carriers.items() if k in held}
        changes = record.changes
        if changes:
            await store.apply(changes, wait=True)
        # Only runs this commit created: another decider may have created one first.
        await self.runs.place([run for run in to_start if run.id in changes.created_runs])

    async def _apply(
        self,
        store: Store,
        intake: Intake,
        d: Decision,
        record: Decisions,
        to_start: list[RunRecord],
        events: Mapping[str, Event],
    ) -> None:
        if isinstance(d, NotMatched):
            record.not_matched(d.event_id, d.reason)
        elif isinstance(d, Held):
            record.held(d.event_id, d.rule, d.why)
        elif isinstance(d, NotMapped):
            ev = events.get(d.event_id)
            letter = intake.dead_letter_note(
                source=ev.source if ev is not None else "evflow.rules",
                reason=d.reason,
                payload=ev.to_json() if ev is not None else d.event_id.encode(),
                dedup_key=f"unmapped:{d.rule}:{d.event_id}",
            )
            record.not_mapped((d.event_id,), d.rule, d.reason, letter)
        elif isinstance(d, CorrelationTimedOut):
            self._timed_out(d, record)
        elif isinstance(d, RunRequested):
            await self._request_run(store, intake, d, record, to_start)

    def _timed_out(self, d: CorrelationTimedOut, record: Decisions) -> None:
        record.correlation_timed_out(d.event_ids, d.rule, d.key_value, d.action, d.reason)
        if d.action == "alert":
            log.warning("rule %s: %s", d.rule, d.reason)
            flow = self.rules.get(d.rule).flow
            self.signals.publish(
                CorrelationTimedOutSignal(
                    rule=d.rule,
                    flow=flow or "",
                    event_ids=d.event_ids,
                    key=d.key_value,
                    action=d.action,
                    reason=d.reason,
                )
            )

    async def _request_run(
        self,
        store: Store,
        intake: Intake,
        d: RunRequested,
        record: Decisions,
        to_start: list[RunRecord],
    ) -> None:
        run_id = run_id_for(d.key, since=min(d.event_ids))  # the earliest event's time
        # A fast answer for the common replay; the insert below is what makes it safe.
        if self.runs.is_active(run_id) or record.creates(run_id) or await _known(store, run_id):
            record.duplicate(d.event_ids, d.rule, run_id)
            return
        flow = self.flows.get(d.flow)
        if flow is None:
            record.flow_missing(d.event_ids, d.rule, d.flow)
            return
        rule = self.rules.get(d.rule)
        active = self.runs.active_runs(flow.name)
        action = policy_action(rule.when_running, len(active))
        if action == "skip":
            reason = f"flow {flow.name!r} is already running ({len(active)} active run(s))"
            record.skipped(d.event_ids, d.rule, reason)
            return
        try:
            run = new_run(
                flow,
                d.params,
                run_id=run_id,
                priority=rule.priority,
                trigger={"kind": "event", "rule": d.rule, "events": list(d.event_ids)},
            )
        except EvflowError as exc:
            letter = intake.dead_letter_note(
                source="evflow.rules",
                reason=str(exc),
                payload=orjson.dumps({"rule": d.rule, "events": d.event_ids}),
                dedup_key=f"badparams:{d.key}",
            )
            record.not_mapped(d.event_ids, d.rule, str(exc), letter)
            return
        if tracing.enabled():
            run = self._traced(d, run)
        if action == "replace":
            self.runs.replace(active, f"replaced by run {run_id}")
        record.matched(d.event_ids, d.rule, run, pending_tasks(flow, run))
        to_start.append(run)

    def _traced(self, d: RunRequested, run: RunRecord) -> RunRecord:
        """A decision span, child of the first event's trace and linked to every event's; the
        run keeps its context in its trigger, so the run's span continues the trace."""
        carriers = [c for eid in d.event_ids if (c := self._carriers.get(eid))]
        with tracing.start_span(
            f"evflow.decide {d.rule}",
            parent=carriers[0] if carriers else None,
            links=carriers if len(d.event_ids) > 1 else (),
            attributes={
                "evflow.rule": d.rule,
                "evflow.flow": d.flow,
                "evflow.run_id": run.id,
                "evflow.events": len(d.event_ids),
            },
        ) as span:
            if span is None:
                return run
            return replace(run, trigger={**run.trigger, **tracing.inject(span)})


def _unmatched_reason(decisions: Iterable[Decision]) -> str:
    reasons = [f"{d.rule}: {d.reason}" for d in decisions if isinstance(d, NotMatched)]
    return "; ".join(reasons) if reasons else "no rules"


async def _known(store: Store, run_id: str) -> bool:
    """Whether the run exists; False while the database cannot be read, which is safe: the
    run is inserted only if absent."""
    try:
        return await store.run_exists(run_id)
    except StoreUnavailable:
        return False
