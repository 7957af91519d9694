"""The small interfaces that plug-ins implement, side by side.

* :class:`Intake` — the one durable path every source writes events through.
* :class:`Sensor` — a long-lived source of events (files, Kafka, webhooks).

The :class:`~evflow.store.base.Store` interface lives with its implementations in ``store/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from anyio.abc import TaskStatus

from .events import Event
from .frozen import record

__all__ = ["Accepted", "Intake", "Sensor"]


@record
class Accepted:
    """What intake did with one event.

    ``event_id`` is the id under which the event is stored; for a repeat it is the id of the
    first copy, and ``duplicate`` is true.
    """

    event_id: str
    duplicate: bool


class Intake(Protocol):
    """Durable intake: commit first, acknowledge after."""

    async def submit(
        self, events: Sequence[Event], *, cursors: Mapping[str, str] | None = None
    ) -> list[Accepted]:
        """Store ``events`` and the ``cursors`` values in one transaction; return after commit.

        A repeat (same ``dedup_key`` as a stored event) is dropped and counted, not an error.
        Raises :class:`~evflow.errors.Saturated` if the backlog is full and the caller should
        back off (a webhook answers 429/503; Kafka pauses its partitions).
        """
        ...

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        dedup_key: str | None = None,
    ) -> str:
        """Record input that could not become an event; returns the dead letter's id."""
        ...

    async def get_cursor(self, name: str) -> str | None:
        """The last value committed for cursor ``name`` (by :meth:`submit`), or None."""
        ...

    @property
    def saturated(self) -> bool:
        """True while the backlog is full."""
        ...

    async def wait_not_saturated(self) -> None:
        """Return once the backlog has room again (at once if it has)."""
        ...


@runtime_checkable
class Sensor(Protocol):
    """A long-lived source of events.

    ``source`` is the CloudEvents ``source`` of the events it emits; a ``Rule(on=sensor)``
    matches exactly those events. ``run`` runs until cancelled and calls
    ``task_status.started()`` once it is listening.
    """

    name: str

    @property
    def source(self) -> str: ...

    def describe(self) -> str:
        """One line for the service's startup summary, e.g. ``watching inbox/ for *.csv``."""
        ...

    async def run(self, intake: Intake, *, task_status: TaskStatus[None]) -> None: ...
