"""Wake-ups between instances: PostgreSQL ``LISTEN``/``NOTIFY`` on a connection of its own.

A notification is a hint, never the only way work is found: it may be lost while the
connection is down, so every listener also polls slowly. After a dropped connection the
listener reconnects with backoff, and wakes everyone once it listens again (hints sent in
between were lost). Idle, it costs nothing: the connection waits on the server. A
notification's payload is passed on; the wake-up after a reconnection passes ``None``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import anyio

__all__ = ["EVENTS_CHANNEL", "RUNS_CHANNEL", "RUN_ENDS_CHANNEL", "Listener", "Wake"]

log = logging.getLogger("evflow.cluster")

EVENTS_CHANNEL = "evflow_events"  # new events stored: the leader decides on them
RUNS_CHANNEL = "evflow_runs"  # runs handed back, or a cancel asked: instances look
RUN_ENDS_CHANNEL = "evflow_run_ends"  # runs that ended (their ids): waiters on them return

Wake = Callable[[str | None], None]  # called with a notification's payload (None: look again)


class Listener:
    """Calls ``wakes[channel](payload)`` for each notification on ``channel``, until
    cancelled."""

    def __init__(self, url: str, wakes: Mapping[str, Wake]) -> None:
        self.url = url
        self.wakes = dict(wakes)
        self.received = 0  # notifications, for tests and metrics
        self.connected = anyio.Event()

    async def run(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=10
                )
                async with conn:
                    for channel in self.wakes:
                        await conn.execute(f"LISTEN {channel}")
                    delay = 0.5
                    self.connected.set()
                    for wake in self.wakes.values():
                        wake(None)  # hints may have been missed while not listening
                    async for note in conn.notifies():
                        self.received += 1
                        woken = self.wakes.get(note.channel)
                        if woken is not None:
                            woken(note.payload)
            except psycopg.Error as exc:
                self.connected = anyio.Event()
                text = str(exc).strip()
                log.warning(
                    "the cluster listener lost its connection (%s); reconnecting in %.1fs "
                    "(slow polls go on meanwhile)",
                    text.splitlines()[0] if text else type(exc).__name__,
                    delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)
