"""Typed signals: frozen notices, named in the past tense, of what happened inside the engine.

The engine publishes; the live stream, metrics, alerts, user callbacks and the CLI's progress
display subscribe. Dispatch is synchronous and cheap: a subscriber that needs I/O queues the
work for a task group of its own. A subscriber that raises is logged and isolated; it never
breaks a run or the publisher.

```python
unsubscribe = engine.signals.subscribe(TaskStateChanged, lambda s: print(s.task.state))
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .abc import Accepted
from .events import Event
from .frozen import record
from .records import RunRecord, TaskRecord

__all__ = [
    "CorrelationTimedOut",
    "EventsAccepted",
    "RunStateChanged",
    "SensorStatusChanged",
    "Signal",
    "Signals",
    "TaskStateChanged",
]

log = logging.getLogger("evflow.signals")


class Signal:
    """Base of every signal (frozen dataclasses below)."""

    __slots__ = ()


@record
class EventsAccepted(Signal):
    """Fresh (non-duplicate) events were committed by intake, in this order."""

    events: Sequence[Event]
    accepted: Sequence[Accepted]


@record
class RunStateChanged(Signal):
    """A run was queued, started, noted as waiting, or finished; ``run`` is its new record."""

    run: RunRecord


@record
class TaskStateChanged(Signal):
    """A task instance of ``flow``'s run changed state (or its waiting note changed)."""

    flow: str
    task: TaskRecord


@record
class CorrelationTimedOut(Signal):
    """A correlated event's partner did not arrive within the rule's window."""

    rule: str
    flow: str
    event_ids: tuple[str, ...]
    key: Any
    action: str
    reason: str


@record
class SensorStatusChanged(Signal):
    """A sensor started listening, was reported off, failed or is restarting."""

    sensor: str
    status: str


S = TypeVar("S", bound=Signal)
Subscriber = Callable[[Any], None]


class Signals:
    """One hub: ``subscribe`` to a signal class, ``publish`` an instance.

    Subscribers to a class receive its instances only (not subclasses'), in subscription
    order. ``wants`` lets a publisher skip building a signal nobody listens to.
    """

    __slots__ = ("_subs",)

    def __init__(self) -> None:
        self._subs: dict[type[Signal], list[Subscriber]] = {}

    def subscribe(self, kind: type[S], fn: Callable[[S], None]) -> Callable[[], None]:
        """Call ``fn(signal)`` for every ``kind`` published; returns the unsubscribe function."""
        subs = self._subs.setdefault(kind, [])
        subs.append(fn)

        def unsubscribe() -> None:
            if fn in subs:
                subs.remove(fn)

        return unsubscribe

    def wants(self, kind: type[Signal]) -> bool:
        return bool(self._subs.get(kind))

    def publish(self, signal: Signal) -> None:
        subs = self._subs.get(type(signal))
        if not subs:
            return
        for fn in tuple(subs):
            try:
                fn(signal)
            except Exception:
                log.exception("subscriber %r failed on %s", fn, type(signal).__name__)
