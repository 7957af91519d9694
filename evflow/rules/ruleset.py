"""Many bound rules, offered every event together."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from ..errors import RuleError
from ..events import Event
from .decisions import Decision
from .rule import Rule
from .state import RuleState


class RuleSet:
    """The states of many bound rules, offered every event together."""

    def __init__(self, rules: Iterable[Rule] = (), *, remember: int = 10_000) -> None:
        self._remember = remember
        self._states: dict[str, RuleState] = {}
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> RuleState:
        """Add a bound rule; raises :class:`RuleError` if its name is taken."""
        state = RuleState(rule, remember=self._remember)
        if state.rule.name in self._states:
            raise RuleError(f"rule {state.rule.name!r} is already in the rule set")
        self._states[state._name] = state
        return state

    def remove(self, name: str) -> Rule:
        """Remove and return the rule called ``name`` (its held events are no longer held)."""
        try:
            return self._states.pop(name).rule
        except KeyError:
            raise RuleError(f"no rule {name!r} in the rule set") from None

    def get(self, name: str) -> Rule:
        """The rule called ``name``."""
        try:
            return self._states[name].rule
        except KeyError:
            raise RuleError(f"no rule {name!r} in the rule set") from None

    def __iter__(self) -> Iterator[Rule]:
        return (state.rule for state in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def offer(self, event: Event, now: datetime) -> list[Decision]:
        """Every rule's decisions on ``event``, in the order the rules were added."""
        return [d for state in self._states.values() for d in state.offer(event, now)]

    def due(self, now: datetime) -> list[Decision]:
        """Everything due at or before ``now``, rule by rule."""
        return [d for state in self._states.values() for d in state.due(now)]

    def next_deadline(self) -> datetime | None:
        """The earliest deadline of any rule, or None."""
        deadlines = [d for s in self._states.values() if (d := s.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def held_event_ids(self) -> set[str]:
        """Ids held by any rule."""
        return {eid for state in self._states.values() for eid in state.held_event_ids()}
