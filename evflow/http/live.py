"""The live feed: run and task state changes fanned out to server-sent-event connections.

:class:`LiveHub` subscribes to the engine's signals and keeps a bounded queue per open
``/api/stream`` connection; a slow client's overflow is dropped and counted, never buffered.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..signals import RunStateChanged, TaskStateChanged
from .bodies import TaskChange
from .schemas import run_shape

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["LiveHub", "sse"]


def sse(event: str, data: Any, *, event_id: int | None = None) -> bytes:
    """One Server-Sent Event whose data is ``data`` as one line of JSON."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
    return f"{head}event: {event}\n".encode() + b"data: " + body + b"\n\n"


class _Subscriber:
    """One open ``/api/stream`` connection: a bounded queue and what it is interested in."""

    __slots__ = ("dropped", "receive", "run_id", "send")

    def __init__(self, buffer: int, run_id: str | None) -> None:
        send, receive = anyio.create_memory_object_stream[tuple[str, Mapping[str, object]]](buffer)
        self.send: MemoryObjectSendStream[tuple[str, Mapping[str, object]]] = send
        self.receive: MemoryObjectReceiveStream[tuple[str, Mapping[str, object]]] = receive
        self.run_id = run_id
        self.dropped = 0


class LiveHub:
    """An engine observer that fans run and task state changes out to SSE connections.

    ``buffer`` events are kept per connection; beyond that a slow client's events are dropped
    and counted. ``ping_interval_s`` is how often an idle stream sends a ``: ping`` comment.
    :meth:`close` (at shutdown) ends every stream, including log streams that follow a run.
    """

    def __init__(self, *, buffer: int = 256, ping_interval_s: float = 15.0) -> None:
        self.buffer = buffer
        self.ping_interval_s = ping_interval_s
        self.closing = anyio.Event()
        self._subs: set[_Subscriber] = set()

    def attach(self, engine: Engine) -> LiveHub:
        """Subscribe to ``engine``'s run and task signals."""
        engine.signals.subscribe(RunStateChanged, self.run_state)
        engine.signals.subscribe(TaskStateChanged, self.task_state)
        return self

    @property
    def connections(self) -> int:
        return len(self._subs)

    # -- subscribers -------------------------------------------------------------------------
    def run_state(self, signal: RunStateChanged) -> None:
        if self._subs:
            run = signal.run
            self._publish(run.id, "run", run_shape(run))

    def task_state(self, signal: TaskStateChanged) -> None:
        if self._subs:
            inst = signal.task
            change: TaskChange = {
                "run_id": inst.run_id,
                "flow": signal.flow,
                "name": inst.name,
                "node": inst.node,
                "state": str(inst.state),
                "attempt": inst.attempt,
                "started_at": inst.started_at,
                "ended_at": inst.ended_at,
                "error": inst.error,
                "waiting": inst.waiting,
            }
            self._publish(inst.run_id, "task", change)

    def _publish(self, run_id: str, kind: str, data: Mapping[str, object]) -> None:
        for sub in self._subs:
            if sub.run_id is not None and sub.run_id != run_id:
                continue
            try:
                sub.send.send_nowait((kind, data))
            except anyio.WouldBlock:
                sub.dropped += 1
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    # -- connections -------------------------------------------------------------------------
    def subscribe(self, run_id: str | None = None) -> _Subscriber:
        sub = _Subscriber(self.buffer, run_id)
        if self.closing.is_set():
            sub.send.close()
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self._subs.discard(sub)
        sub.send.close()
        sub.receive.close()

    def close(self) -> None:
        """End every open stream (the server is shutting down)."""
        self.closing.set()
        for sub in self._subs:
            sub.send.close()

    async def stream(self, run_id: str | None) -> AsyncGenerator[bytes, None]:
        """The body of one ``/api/stream`` answer."""
        sub = self.subscribe(run_id)
        try:
            yield b"retry: 2000\n: connected\n\n"
            while True:
                item: tuple[str, Mapping[str, object]] | None = None
                with anyio.move_on_after(self.ping_interval_s):
                    try:
                        item = await sub.receive.receive()
                    except anyio.EndOfStream:
                        return
                if item is None:
                    yield b": ping\n\n"
                    continue
                if sub.dropped:
                    yield sse("dropped", {"count": sub.dropped})
                    sub.dropped = 0
                yield sse(*item)
        finally:
            self.unsubscribe(sub)
