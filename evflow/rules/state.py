"""The in-memory state of one bound rule: events offered, held by a policy, released as
decisions."""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ..errors import RuleError
from ..events import Event
from .decisions import (
    CorrelationTimedOut,
    Decision,
    Held,
    NotMapped,
    NotMatched,
    RunRequested,
    run_key,
)
from .match import (
    _MISSING,
    _copy_value,
    _event_dict,
    _Glob,
    _key_text,
    _parse_path,
    _resolve,
    _short,
    _Unmapped,
)
from .policies import Batch, Correlate
from .rule import Rule


@dataclass(slots=True)
class _Waiter:
    event_id: str
    side: Literal["a", "b"]
    key_value: Any
    key_text: str
    item: Any  # this side's mapped references, or the event dict when the rule has no params
    deadline: datetime


class RuleState:
    """The in-memory state of one bound rule: offer events, fire what is due.

    ``remember`` bounds how many released event ids are remembered: re-offering one of them
    returns the decisions it was released with (same idempotency key) instead of counting it
    again. Re-offering a held event only answers :class:`Held`.
    """

    def __init__(self, rule: Rule, *, remember: int = 10_000) -> None:
        if rule.name is None or rule.flow is None:
            raise RuleError(f"{rule._describe()} is not bound to a flow; call rule.bind(flow)")
        self.rule = rule
        self._name: str = rule.name
        self._flow: str = rule.flow
        self._remember = remember
        self._released: OrderedDict[str, tuple[Decision, ...]] = OrderedDict()
        self._held: set[str] = set()
        # debounce
        self._deb_ids: list[str] = []
        self._deb_params: dict[str, Any] = {}
        self._deb_deadline: datetime | None = None
        # batch
        self._batch: list[tuple[str, Any]] = []
        self._batch_deadline: datetime | None = None
        # correlate
        self._waiters: dict[str, _Waiter] = {}
        self._queues: dict[tuple[str, str], deque[str]] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0
        corr = rule.correlate
        self._side_globs: tuple[tuple[Literal["a", "b"], _Glob], ...] = (
            () if corr is None else (("a", _Glob([corr.a])), ("b", _Glob([corr.b])))
        )

    # -- public -----------------------------------------------------------------------------

    def offer(self, event: Event, now: datetime) -> list[Decision]:
        """Decide on ``event`` arriving at ``now``.

        Whatever is due at ``now`` fires first and comes first in the list, so an event never
        joins a window that has already closed.
        """
        out = self.due(now)
        eid = event.uid
        if eid in self._released:
            self._released.move_to_end(eid)
            out.extend(d for d in self._released[eid] if not any(d is o for o in out))
            return out
        if eid in self._held:
            out.append(Held(self._name, eid, f"already held: {self._held_why(eid)}"))
            return out
        reason = self.rule.mismatch(event)
        if reason is not None:
            out.append(NotMatched(self._name, eid, reason))
            return out
        try:
            if self.rule.debounce_s is not None:
                out.append(self._offer_debounce(event, now, self.rule.debounce_s))
            elif self.rule.batch is not None:
                out.append(self._offer_batch(event, now, self.rule.batch))
            elif self.rule.correlate is not None:
                out.append(self._offer_correlate(event, now, self.rule.correlate))
            else:
                params = self.rule._complete({"": self.rule._map_refs(event, "")})
                out.append(self._run(params, (eid,)))
        except _Unmapped as exc:
            out.append(NotMapped(self._name, eid, str(exc)))
        return out

    def due(self, now: datetime) -> list[Decision]:
        """Fire every debounce, batch window and correlation timeout due at or before ``now``."""
        fired: list[tuple[datetime, list[Decision]]] = []
        if self._deb_deadline is not None and self._deb_deadline <= now:
            fired.append((self._deb_deadline, [self._fire_debounce()]))
        if self._batch_deadline is not None and self._batch_deadline <= now:
            fired.append((self._batch_deadline, [self._fire_batch()]))
        while self._heap and self._heap[0][0] <= now:
            deadline, _, eid = heapq.heappop(self._heap)
            waiter = self._waiters.pop(eid, None)
            if waiter is not None:
                fired.append((deadline, self._time_out(waiter)))
        fired.sort(key=lambda item: item[0])
        return [d for _, decisions in fired for d in decisions]

    def next_deadline(self) -> datetime | None:
        """When :meth:`due` next has something to fire, or None."""
        while self._heap and self._heap[0][2] not in self._waiters:
            heapq.heappop(self._heap)
        candidates = [
            self._deb_deadline,
            self._batch_deadline,
            self._heap[0][0] if self._heap else None,
        ]
        present = [c for c in candidates if c is not None]
        return min(present) if present else None

    def held_event_ids(self) -> set[str]:
        """Ids of events waiting in a debounce, batch or correlation (not yet released)."""
        return set(self._held)

    # -- helpers ----------------------------------------------------------------------------

    def _run(self, params: dict[str, Any], event_ids: tuple[str, ...]) -> RunRequested:
        return RunRequested(
            self._name, self._flow, params, event_ids, run_key(self._name, event_ids)
        )

    def _release(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, RunRequested | CorrelationTimedOut):
                for eid in decision.event_ids:
                    self._held.discard(eid)
                    self._released[eid] = (*self._released.get(eid, ()), decision)
                    self._released.move_to_end(eid)
        while len(self._released) > self._remember:
            self._released.popitem(last=False)

    def _held_why(self, eid: str) -> str:
        if eid in self._deb_ids and self._deb_deadline is not None:
            return f"debouncing until {self._deb_deadline.isoformat()}"
        if eid in self._waiters:
            return self._waiting_why(self._waiters[eid])
        return self._batch_why()

    # debounce

    def _offer_debounce(self, event: Event, now: datetime, quiet_s: float) -> Decision:
        self._deb_params = self.rule._complete({"": self.rule._map_refs(event, "")})
        self._deb_ids.append(event.uid)
        self._held.add(event.uid)
        self._deb_deadline = now + timedelta(seconds=quiet_s)
        return Held(self._name, event.uid, f"debouncing until {self._deb_deadline.isoformat()}")

    def _fire_debounce(self) -> Decision:
        decision = self._run(self._deb_params, tuple(self._deb_ids))
        self._deb_ids, self._deb_params, self._deb_deadline = [], {}, None
        self._release([decision])
        return decision

    # batch

    def _batch_why(self) -> str:
        batch = self.rule.batch
        assert batch is not None
        count = f"/{batch.count}" if batch.count is not None else ""
        until = (
            f" until {self._batch_deadline.isoformat()}" if self._batch_deadline is not None else ""
        )
        return f"batch {len(self._batch)}{count}{until}"

    def _offer_batch(self, event: Event, now: datetime, batch: Batch) -> Decision:
        if self.rule.params is None:
            item: Any = _event_dict(event)
        else:
            item = self.rule._complete({"": self.rule._map_refs(event, "")})
        if not self._batch and batch.window_s is not None:
            self._batch_deadline = now + timedelta(seconds=batch.window_s)
        self._batch.append((event.uid, item))
        self._held.add(event.uid)
        if batch.count is not None and len(self._batch) >= batch.count:
            return self._fire_batch()
        return Held(self._name, event.uid, self._batch_why())

    def _fire_batch(self) -> Decision:
        batch = self.rule.batch
        assert batch is not None
        ids = tuple(eid for eid, _ in self._batch)
        decision = self._run({batch.param: [item for _, item in self._batch]}, ids)
        self._batch, self._batch_deadline = [], None
        self._release([decision])
        return decision

    # correlate

    def _waiting_why(self, waiter: _Waiter) -> str:
        corr = self.rule.correlate
        assert corr is not None
        other = "b" if waiter.side == "a" else "a"
        return (
            f"waiting for {other} ({getattr(corr, other)!r}) with "
            f"{corr.key}={_short(waiter.key_value)} until {waiter.deadline.isoformat()}"
        )

    def _side_item(self, event: Event, side: Literal["a", "b"]) -> Any:
        if self.rule.params is None:
            return _event_dict(event)
        return self.rule._map_refs(event, side)

    def _corr_params(self, a: _Waiter | None, b: _Waiter | None, key: Any) -> dict[str, Any]:
        a_item = None if a is None else a.item
        b_item = None if b is None else b.item
        if self.rule.params is None:
            return {"a": a_item, "b": b_item, "key": _copy_value(key)}
        return self.rule._complete({"a": a_item, "b": b_item}, key)

    def _offer_correlate(self, event: Event, now: datetime, corr: Correlate) -> Decision:
        key_path = _parse_path(corr.key)
        assert key_path is not None
        key_value = _resolve(key_path, event)
        if key_value is _MISSING:
            raise _Unmapped(f"{self.rule._describe()}: correlation key {corr.key} is missing")
        sides = [side for side, glob in self._side_globs if glob(event.type)]
        if not sides:
            return NotMatched(
                self._name,
                event.uid,
                f"type {event.type!r} matches neither a ({corr.a!r}) nor b ({corr.b!r})",
            )
        key_text = _key_text(key_value)
        deadline = now + timedelta(seconds=corr.window_s)
        for side in sides:
            queue = self._queues.get(("b" if side == "a" else "a", key_text))
            if not queue:
                continue
            mine = _Waiter(
                event.uid, side, key_value, key_text, self._side_item(event, side), deadline
            )
            partner = self._waiters.pop(queue.popleft())
            if not queue:
                del self._queues[(partner.side, key_text)]
            a, b = (mine, partner) if side == "a" else (partner, mine)
            decision = self._run(self._corr_params(a, b, key_value), (a.event_id, b.event_id))
            self._release([decision])
            return decision
        side = sides[0]
        waiter = _Waiter(
            event.uid, side, key_value, key_text, self._side_item(event, side), deadline
        )
        self._waiters[event.uid] = waiter
        self._held.add(event.uid)
        self._queues.setdefault((side, key_text), deque()).append(event.uid)
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, event.uid))
        return Held(self._name, event.uid, self._waiting_why(waiter))

    def _time_out(self, waiter: _Waiter) -> list[Decision]:
        corr = self.rule.correlate
        assert corr is not None
        queue = self._queues.get((waiter.side, waiter.key_text))
        if queue is not None:
            queue.remove(waiter.event_id)
            if not queue:
                del self._queues[(waiter.side, waiter.key_text)]
        other = "b" if waiter.side == "a" else "a"
        reason = (
            f"no {other} event ({getattr(corr, other)!r}) with "
            f"{corr.key}={_short(waiter.key_value)} within {corr.window_s}s"
        )
        out: list[Decision] = [
            CorrelationTimedOut(
                self._name, (waiter.event_id,), waiter.key_value, corr.on_timeout, reason
            )
        ]
        if corr.on_timeout == "run":
            a, b = (waiter, None) if waiter.side == "a" else (None, waiter)
            out.append(self._run(self._corr_params(a, b, waiter.key_value), (waiter.event_id,)))
        self._release(out)
        return out
