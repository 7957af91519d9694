"""Durable intake: the one path by which every source's events enter evflow.

An event is acknowledged (the webhook's 202, the Kafka offset commit, the file counted as
seen) only after :meth:`StoreIntake.submit` returns, which is after the store committed it.
Repeats are dropped by dedup key and counted. When the backlog of accepted-but-unprocessed
events is full, ``submit`` raises :class:`~evflow.errors.Saturated` so that sources push back
(429/503, paused partitions, files left on disk) instead of memory growing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio

from .abc import Accepted
from .errors import Saturated, StoreUnavailable
from .events import Event
from .store.base import DeadLetter, Store
from .tracing import IntakeSpans

__all__ = ["StoreIntake"]

OnAccepted = Callable[[Sequence[Event], Sequence[Accepted]], Awaitable[None]]

STORE_POLL_S = 0.5  # how often a paused source looks whether the store is back


class StoreIntake:
    """:class:`~evflow.abc.Intake` over a :class:`~evflow.store.base.Store`.

    ``backlog`` tells how many accepted events still wait for the rule layer (the engine
    passes its own count; standalone, nothing waits). ``on_accepted`` receives the fresh
    (non-duplicate) events after commit — the engine hands them to its rule loop in memory.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_backlog: int = 10_000,
        backlog: Callable[[], int] | None = None,
        on_accepted: OnAccepted | None = None,
    ) -> None:
        self.store = store
        self.max_backlog = max_backlog
        self._backlog = backlog or (lambda: 0)
        self._on_accepted = on_accepted
        self._room = anyio.Event()
        self.accepted: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()

    @property
    def saturated(self) -> bool:
        return self._backlog() >= self.max_backlog or not self.store.available

    def capacity_changed(self) -> None:
        """Called by the consumer of the backlog when it shrank."""
        if not self.saturated:
            self._room.set()
            self._room = anyio.Event()

    async def wait_not_saturated(self) -> None:
        while self.saturated:
            # The backlog shrinking is announced; the store coming back is polled.
            with anyio.move_on_after(STORE_POLL_S):
                await self._room.wait()

    async def submit(
        self, events: Sequence[Event], *, cursors: Mapping[str, str] | None = None
    ) -> list[Accepted]:
        if events and not self.store.available:
            raise StoreUnavailable(
                f"the database of store {self.store.describe()} cannot be reached; evflow is "
                "reconnecting (nothing was stored)"
            )
        if events and self.saturated:
            raise Saturated(f"engine backlog is full ({self._backlog()} events waiting)")
        spans = IntakeSpans(events)
        events = spans.events
        try:
            results = await self.store.add_events(events, cursors=cursors)
        except BaseException as exc:
            spans.end(error=exc)
            raise
        spans.end([r.duplicate for r in results])
        fresh = [ev for ev, res in zip(events, results, strict=True) if not res.duplicate]
        for ev, res in zip(events, results, strict=True):
            (self.duplicates if res.duplicate else self.accepted)[ev.source] += 1
        if fresh and self._on_accepted is not None:
            await self._on_accepted(fresh, [r for r in results if not r.duplicate])
        return results

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        dedup_key: str | None = None,
    ) -> str:
        self.dead_letters[source] += 1
        return await self.store.add_dead_letter(
            source=source, reason=reason, payload=payload, headers=headers, dedup_key=dedup_key
        )

    def dead_letter_note(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes,
        dedup_key: str | None = None,
    ) -> DeadLetter:
        """A dead letter to commit with other changes (counted now, as it is decided)."""
        self.dead_letters[source] += 1
        return DeadLetter(source=source, reason=reason, payload=payload, dedup_key=dedup_key)

    async def get_cursor(self, name: str) -> str | None:
        return await self.store.get_cursor(name)
