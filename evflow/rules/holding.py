"""How a rule turns matching events into runs: one :class:`Holding` per policy, each with its
own state. ``Immediate`` starts a run per event; ``Debouncing`` one run after a quiet period;
``Batching`` one run per count or window; ``Correlating`` one run per pair of events sharing a
key, within a window. :class:`~evflow.rules.state.RuleState` owns what is common (events it
has released, events it holds, matching) and asks its policy the rest.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from ..events import Event
from ..frozen import record
from .decisions import CorrelationTimedOut, Decision, Held, NotMatched, RunRequested, run_key
from .match import MISSING, Glob, Unmapped, copy_value, event_dict, key_text, parse_path, resolve
from .match import short as short_value
from .policies import Batch, Correlate
from .rule import Rule

__all__ = ["Batching", "Correlating", "Debouncing", "Holding", "Immediate", "holding_for"]

Fired = list[tuple[datetime, list[Decision]]]


class Holding(Protocol):
    """One rule policy's state. ``offer`` decides on a matching event (raising
    :class:`~evflow.rules.match.Unmapped` when the rule cannot build its params); ``due``
    fires what is due at ``now``, each with the time it was due."""

    def offer(self, event: Event, now: datetime) -> Decision: ...

    def due(self, now: datetime) -> Fired: ...

    def next_deadline(self) -> datetime | None: ...

    def why(self, event_id: str) -> str:
        """Why a held event waits (for ``Held`` answers to a repeat)."""
        ...


@record
class Hooks:
    """What a policy tells its rule: events it now holds, and decisions that release some."""

    rule: Rule
    hold: Callable[[str], None]
    release: Callable[[Sequence[Decision]], None]

    @property
    def name(self) -> str:
        assert self.rule.name is not None
        return self.rule.name

    def run(self, params: dict[str, Any], event_ids: tuple[str, ...]) -> RunRequested:
        assert self.rule.flow is not None
        return RunRequested(
            self.name, self.rule.flow, params, event_ids, run_key(self.name, event_ids)
        )

    def params(self, event: Event) -> dict[str, Any]:
        return self.rule.complete({"": self.rule.refs(event)})


class Immediate:
    """A run per matching event."""

    def __init__(self, hooks: Hooks) -> None:
        self.h = hooks

    def offer(self, event: Event, now: datetime) -> Decision:
        return self.h.run(self.h.params(event), (event.uid,))

    def due(self, now: datetime) -> Fired:
        return []

    def next_deadline(self) -> datetime | None:
        return None

    def why(self, event_id: str) -> str:
        return "held"


class Debouncing:
    """One run once ``quiet_s`` pass without another matching event; the last event's params."""

    def __init__(self, hooks: Hooks, quiet_s: float) -> None:
        self.h = hooks
        self.quiet_s = quiet_s
        self._ids: list[str] = []
        self._params: dict[str, Any] = {}
        self._deadline: datetime | None = None

    def offer(self, event: Event, now: datetime) -> Decision:
        self._params = self.h.params(event)
        self._ids.append(event.uid)
        self.h.hold(event.uid)
        self._deadline = now + timedelta(seconds=self.quiet_s)
        return Held(self.h.name, event.uid, self.why(event.uid))

    def due(self, now: datetime) -> Fired:
        if self._deadline is None or self._deadline > now:
            return []
        deadline = self._deadline
        decision = self.h.run(self._params, tuple(self._ids))
        self._ids, self._params, self._deadline = [], {}, None
        self.h.release([decision])
        return [(deadline, [decision])]

    def next_deadline(self) -> datetime | None:
        return self._deadline

    def why(self, event_id: str) -> str:
        assert self._deadline is not None
        return f"debouncing until {self._deadline.isoformat()}"


class Batching:
    """One run per ``count`` events, or per ``window_s`` from the first event of a batch."""

    def __init__(self, hooks: Hooks, batch: Batch) -> None:
        self.h = hooks
        self.batch = batch
        self._items: list[tuple[str, Any]] = []
        self._deadline: datetime | None = None

    def offer(self, event: Event, now: datetime) -> Decision:
        item = event_dict(event) if self.h.rule.params is None else self.h.params(event)
        if not self._items and self.batch.window_s is not None:
            self._deadline = now + timedelta(seconds=self.batch.window_s)
        self._items.append((event.uid, item))
        self.h.hold(event.uid)
        if self.batch.count is not None and len(self._items) >= self.batch.count:
            return self._fire()
        return Held(self.h.name, event.uid, self.why(event.uid))

    def _fire(self) -> Decision:
        ids = tuple(eid for eid, _ in self._items)
        decision = self.h.run({self.batch.param: [item for _, item in self._items]}, ids)
        self._items, self._deadline = [], None
        self.h.release([decision])
        return decision

    def due(self, now: datetime) -> Fired:
        if self._deadline is None or self._deadline > now:
            return []
        deadline = self._deadline
        return [(deadline, [self._fire()])]

    def next_deadline(self) -> datetime | None:
        return self._deadline

    def why(self, event_id: str) -> str:
        count = f"/{self.batch.count}" if self.batch.count is not None else ""
        until = f" until {self._deadline.isoformat()}" if self._deadline is not None else ""
        return f"batch {len(self._items)}{count}{until}"


@dataclass(slots=True)
class _Waiter:
    event_id: str
    side: Literal["a", "b"]
    key_value: Any
    key_text: str
    item: Any  # this side's mapped references, or the event dict when the rule has no params
    deadline: datetime


class Correlating:
    """Pairs an ``a`` event with a ``b`` event whose keys are equal, within ``window_s``; a
    lone event times out (ignored, alerted, or run with only its side)."""

    def __init__(self, hooks: Hooks, corr: Correlate) -> None:
        self.h = hooks
        self.corr = corr
        self._key_path = parse_path(corr.key)
        self._waiters: dict[str, _Waiter] = {}
        self._queues: dict[tuple[str, str], deque[str]] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0
        self._sides: tuple[tuple[Literal["a", "b"], Glob], ...] = (
            ("a", Glob([corr.a])),
            ("b", Glob([corr.b])),
        )

    def _item(self, event: Event, side: Literal["a", "b"]) -> Any:
        return event_dict(event) if self.h.rule.params is None else self.h.rule.refs(event, side)

    def _params(self, a: _Waiter | None, b: _Waiter | None, key: Any) -> dict[str, Any]:
        a_item = None if a is None else a.item
        b_item = None if b is None else b.item
        if self.h.rule.params is None:
            return {"a": a_item, "b": b_item, "key": copy_value(key)}
        return self.h.rule.complete({"a": a_item, "b": b_item}, key)

    def offer(self, event: Event, now: datetime) -> Decision:
        corr = self.corr
        assert self._key_path is not None
        key_value = resolve(self._key_path, event)
        if key_value is MISSING:
            raise Unmapped(f"{self.h.rule.describe()}: correlation key {corr.key} is missing")
        sides = [side for side, glob in self._sides if glob(event.type)]
        if not sides:
            return NotMatched(
                self.h.name,
                event.uid,
                f"type {event.type!r} matches neither a ({corr.a!r}) nor b ({corr.b!r})",
            )
        text = key_text(key_value)
        deadline = now + timedelta(seconds=corr.window_s)
        for side in sides:
            queue = self._queues.get(("b" if side == "a" else "a", text))
            if not queue:
                continue
            mine = _Waiter(event.uid, side, key_value, text, self._item(event, side), deadline)
            partner = self._waiters.pop(queue.popleft())
            if not queue:
                del self._queues[(partner.side, text)]
            a, b = (mine, partner) if side == "a" else (partner, mine)
            decision = self.h.run(self._params(a, b, key_value), (a.event_id, b.event_id))
            self.h.release([decision])
            return decision
        side = sides[0]
        waiter = _Waiter(event.uid, side, key_value, text, self._item(event, side), deadline)
        self._waiters[event.uid] = waiter
        self.h.hold(event.uid)
        self._queues.setdefault((side, text), deque()).append(event.uid)
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, event.uid))
        return Held(self.h.name, event.uid, self.why(event.uid))

    def due(self, now: datetime) -> Fired:
        fired: Fired = []
        while self._heap and self._heap[0][0] <= now:
            deadline, _, eid = heapq.heappop(self._heap)
            waiter = self._waiters.pop(eid, None)
            if waiter is not None:
                fired.append((deadline, self._time_out(waiter)))
        return fired

    def next_deadline(self) -> datetime | None:
        while self._heap and self._heap[0][2] not in self._waiters:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def why(self, event_id: str) -> str:
        waiter = self._waiters[event_id]
        other = "b" if waiter.side == "a" else "a"
        return (
            f"waiting for {other} ({getattr(self.corr, other)!r}) with "
            f"{self.corr.key}={short_value(waiter.key_value)} until {waiter.deadline.isoformat()}"
        )

    def _time_out(self, waiter: _Waiter) -> list[Decision]:
        corr = self.corr
        queue = self._queues.get((waiter.side, waiter.key_text))
        if queue is not None:
            queue.remove(waiter.event_id)
            if not queue:
                del self._queues[(waiter.side, waiter.key_text)]
        other = "b" if waiter.side == "a" else "a"
        reason = (
            f"no {other} event ({getattr(corr, other)!r}) with "
            f"{corr.key}={short_value(waiter.key_value)} within {corr.window_s}s"
        )
        out: list[Decision] = [
            CorrelationTimedOut(
                self.h.name, (waiter.event_id,), waiter.key_value, corr.on_timeout, reason
            )
        ]
        if corr.on_timeout == "run":
            a, b = (waiter, None) if waiter.side == "a" else (None, waiter)
            out.append(self.h.run(self._params(a, b, waiter.key_value), (waiter.event_id,)))
        self.h.release(out)
        return out


def holding_for(hooks: Hooks) -> Holding:
    """The policy state for ``hooks.rule``."""
    rule = hooks.rule
    if rule.debounce_s is not None:
        return Debouncing(hooks, rule.debounce_s)
    if rule.batch is not None:
        return Batching(hooks, rule.batch)
    if rule.correlate is not None:
        return Correlating(hooks, rule.correlate)
    return Immediate(hooks)
