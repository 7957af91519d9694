"""This instance's membership of the cluster: registered, heartbeating, or out.

The heartbeat runs on a thread of its own over a connection of its own, so CPU-bound work on
the event loop cannot starve it. The thread beats only while the event loop shows signs of
life: a loop stalled for half the TTL stops the heartbeat, so that the other instances take its
work over instead of waiting on a process that does nothing. An instance that could not beat
for a whole TTL — the database was away, or the loop stalled — is out: the registry no longer
takes its heartbeats, and :meth:`Membership.keep` raises
:class:`~evflow.errors.OwnershipLost`, which stops the instance's work.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import anyio
import anyio.abc

from ..errors import OwnershipLost, StoreError
from ..frozen import record
from ..records import InstanceRecord
from .registry import InstanceRegistry

__all__ = ["ClusterOptions", "Membership"]

log = logging.getLogger("evflow.cluster")


@record
class ClusterOptions:
    """``[cluster]``: how often an instance heartbeats, after how long without a heartbeat
    the others count it as dead, and how many runs it holds at once. ``enabled=False`` runs an
    engine on a PostgreSQL store as the store's only instance, as on SQLite: no heartbeats,
    fencing or hand-backs, and a second instance on the store is refused."""

    heartbeat_s: float = 5.0
    ttl_s: float = 30.0
    max_runs: int = 100  # runs one instance holds at once; beyond, others take them
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be above 0, not {self.heartbeat_s!r}")
        if self.max_runs < 1:
            raise ValueError(f"max_runs must be at least 1, not {self.max_runs!r}")
        if not self.ttl_s >= 2 * self.heartbeat_s:
            raise ValueError(
                f"ttl_s ({self.ttl_s!r}) must be at least twice heartbeat_s "
                f"({self.heartbeat_s!r}), so that one late heartbeat is not a death"
            )


def _version() -> str:
    from .. import __version__  # the package is initialised by the time an engine starts

    return __version__


class Membership:
    """Registers this instance on ``registry`` and keeps it alive until :meth:`leave`."""

    def __init__(
        self,
        registry: InstanceRegistry,
        options: ClusterOptions | None = None,
        *,
        http: str | None = None,
    ) -> None:
        self.registry = registry
        self.options = options or ClusterOptions()
        self.http = http
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}-{self.pid}-{uuid.uuid4().hex[:6]}"
        self.record: InstanceRecord | None = None
        self.beats = 0  # heartbeats written, for metrics
        self._tick = time.monotonic()  # the event loop's last sign of life
        self._last_beat = time.monotonic()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def join(self) -> InstanceRecord:
        """Register this instance (its id, host, pid, version and HTTP address)."""
        sent = time.monotonic()
        self.record = await self.registry.register_instance(
            self.id,
            host=self.host,
            pid=self.pid,
            version=_version(),
            http=self.http,
            ttl_s=self.options.ttl_s,
        )
        self._last_beat = sent
        log.info(
            "instance %s joined the cluster on %s (heartbeat every %gs, dead after %gs)",
            self.id,
            self.registry.describe(),
            self.options.heartbeat_s,
            self.options.ttl_s,
        )
        return self.record

    def current(self) -> bool:
        """Whether the others surely count this instance alive: its last heartbeat was sent
        less than the TTL ago (less half a heartbeat, for margin). An instance whose loop or
        database stalled past that may have been taken over: it starts no task until a
        heartbeat lands again, or it learns that it is out."""
        opts = self.options
        age = time.monotonic() - self._last_beat
        return self._lost is None and age < opts.ttl_s - opts.heartbeat_s / 2

    async def until_current(self) -> None:
        """Return once :meth:`current` holds; while it does not, wait (an instance found out
        of the cluster stops, which cancels the wait)."""
        # Polled: the heartbeat thread changes what current() sees, and an anyio.Event cannot
        # be set from another thread.
        while not self.current():  # noqa: ASYNC110
            await anyio.sleep(self.options.heartbeat_s / 4)

    async def advertise(self, http: str) -> None:
        """Record where this instance's HTTP API answers (known once its port is bound)."""
        self.http = http
        await self.registry.set_instance_http(self.id, http)

    async def keep(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the heartbeat thread and show it the loop is alive, until cancelled; raise
        :class:`OwnershipLost` once this instance is out of the cluster."""
        self._tick = time.monotonic()
        self._thread = threading.Thread(
            target=self._beat, name=f"evflow-heartbeat-{self.id}", daemon=True
        )
        self._thread.start()
        task_status.started()
        try:
            while True:
                await anyio.sleep(self.options.heartbeat_s / 2)
                self._tick = time.monotonic()
                if self._lost is None and getattr(self.registry, "fenced", False):
                    self._lost = "the store refused its writes: another instance took it over"
                if self._lost is not None:
                    raise OwnershipLost(
                        f"instance {self.id} is out of the cluster on {self.registry.describe()} "
                        f"({self._lost}); stopping its work, which the other instances take over"
                    )
        finally:
            self._stop.set()

    async def leave(self) -> None:
        """A clean stop: end the heartbeat and say so in the registry (shielded)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        with anyio.CancelScope(shield=True):
            if thread is not None:
                await anyio.to_thread.run_sync(thread.join, 10.0)
            if self.record is not None and self._lost is None:
                try:
                    await self.registry.instance_stopped(self.id)
                except StoreError as exc:
                    log.warning("instance %s could not record its stop: %s", self.id, exc)

    # -- the heartbeat thread ------------------------------------------------------------------
    def _beat(self) -> None:
        import psycopg  # the registry is a PostgreSQL store, so psycopg is installed

        from ..store.postgres_instances import heartbeat

        opts = self.options
        conn: psycopg.Connection[Any] | None = None
        stalled = False
        try:
            while not self._stop.wait(opts.heartbeat_s):
                now = time.monotonic()
                if now - self._tick > opts.ttl_s / 2:
                    if not stalled:
                        log.warning(
                            "instance %s: the event loop has not run for %.1fs; heartbeats "
                            "stop, so that other instances take its work over",
                            self.id,
                            now - self._tick,
                        )
                    stalled = True
                    continue
                stalled = False
                try:
                    if conn is None:
                        conn = psycopg.connect(
                            self.registry.url,
                            autocommit=True,
                            connect_timeout=max(1, int(opts.heartbeat_s)),
                        )
                        ms = int(opts.heartbeat_s * 1000)
                        conn.execute(f"SET statement_timeout = {ms}")
                    sent = time.monotonic()  # the row's time is at or after this
                    beat = heartbeat(conn, self.id)
                except psycopg.Error as exc:
                    if conn is not None:
                        conn.close()
                        conn = None
                    silent = time.monotonic() - self._last_beat
                    log.warning(
                        "instance %s: heartbeat failed (%s); silent for %.1fs of %gs",
                        self.id,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
                        silent,
                        opts.ttl_s,
                    )
                    if silent > opts.ttl_s:
                        self._lost = f"no heartbeat for {silent:.0f}s: {exc}"
                        return
                    continue
                if beat is None:
                    self._lost = (
                        f"its last heartbeat is older than its TTL of {opts.ttl_s:g}s, so the "
                        "others count it as dead"
                    )
                    return
                self.beats += 1
                self._last_beat = sent
        finally:
            if conn is not None:
                conn.close()
