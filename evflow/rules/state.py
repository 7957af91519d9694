"""The in-memory state of one bound rule: events offered, held by its policy, released as
decisions. What the policy holds and when it fires is the policy's own
(:mod:`evflow.rules.holding`); this is what every rule shares."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from ..errors import RuleError
from ..events import Event
from .decisions import CorrelationTimedOut, Decision, Held, NotMapped, NotMatched, RunRequested
from .holding import Hooks, holding_for
from .match import Unmapped
from .rule import Rule


class RuleState:
    """The in-memory state of one bound rule: offer events, fire what is due.

    ``remember`` bounds how many released event ids are remembered: re-offering one of them
    returns the decisions it was released with (same idempotency key) instead of counting it
    again. Re-offering a held event only answers :class:`Held`.
    """

    def __init__(self, rule: Rule, *, remember: int = 10_000) -> None:
        if rule.name is None or rule.flow is None:
            raise RuleError(f"{rule.describe()} is not bound to a flow; call rule.bind(flow)")
        self.rule = rule
        self._name: str = rule.name
        self._remember = remember
        self._released: OrderedDict[str, tuple[Decision, ...]] = OrderedDict()
        self._held: set[str] = set()
        self._policy = holding_for(Hooks(rule, self._held.add, self._release))

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
            out.append(Held(self._name, eid, f"already held: {self._policy.why(eid)}"))
            return out
        reason = self.rule.mismatch(event)
        if reason is not None:
            out.append(NotMatched(self._name, eid, reason))
            return out
        try:
            out.append(self._policy.offer(event, now))
        except Unmapped as exc:
            out.append(NotMapped(self._name, eid, str(exc)))
        return out

    def due(self, now: datetime) -> list[Decision]:
        """Fire every debounce, batch window and correlation timeout due at or before ``now``,
        in the order they came due."""
        fired = sorted(self._policy.due(now), key=lambda item: item[0])
        return [d for _, decisions in fired for d in decisions]

    def next_deadline(self) -> datetime | None:
        """When :meth:`due` next has something to fire, or None."""
        return self._policy.next_deadline()

    def held_event_ids(self) -> set[str]:
        """Ids of events waiting in a debounce, batch or correlation (not yet released)."""
        return set(self._held)

    def _release(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, RunRequested | CorrelationTimedOut):
                for eid in decision.event_ids:
                    self._held.discard(eid)
                    self._released[eid] = (*self._released.get(eid, ()), decision)
                    self._released.move_to_end(eid)
        while len(self._released) > self._remember:
            self._released.popitem(last=False)
