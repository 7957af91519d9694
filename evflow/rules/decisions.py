"""What the rule layer decides about events: the decision records and a run's idempotency key."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeAlias

from ..errors import RuleError
from ..frozen import record
from .policies import TimeoutAction


@record
class RunRequested:
    """Start a run of ``flow`` with ``params``; ``key`` is its idempotency key."""

    rule: str
    flow: str
    params: dict[str, Any]
    event_ids: tuple[str, ...]
    key: str


@record
class NotMatched:
    """The event is not for this rule; ``reason`` says which filter failed."""

    rule: str
    event_id: str
    reason: str


@record
class NotMapped:
    """The event matched but lacks a value the rule needs (a parameter or correlation key)."""

    rule: str
    event_id: str
    reason: str


@record
class Held:
    """The event waits inside a debounce, batch or correlation; the engine keeps it unprocessed."""

    rule: str
    event_id: str
    why: str


@record
class CorrelationTimedOut:
    """A correlated event's partner did not come within the window.

    For ``action="run"`` a :class:`RunRequested` for the same event follows in the same list.
    """

    rule: str
    event_ids: tuple[str, ...]
    key_value: Any
    action: TimeoutAction
    reason: str


Decision: TypeAlias = RunRequested | NotMatched | NotMapped | Held | CorrelationTimedOut


def run_key(rule_name: str, event_ids: Sequence[str]) -> str:
    """The idempotency key of a run started by ``rule_name`` for ``event_ids``.

    ``rule:event_id`` for one event; for several, their count and a hash of the sorted ids, so
    the key does not depend on arrival order.
    """
    if not event_ids:
        raise RuleError(f"rule {rule_name!r}: a run needs at least one event")
    if len(event_ids) == 1:
        return f"{rule_name}:{event_ids[0]}"
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:24]
    return f"{rule_name}:{len(event_ids)}:{digest}"
