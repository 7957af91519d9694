"""FileSensor: turns files landing in a folder into events.

Change notifications come from :func:`watchfiles.awatch` (inotify, FSEvents, ReadDirectoryChanges;
or its polling watcher for network filesystems); there is no polling loop of ours, and an idle
sensor costs next to no CPU (the native watcher thread checks its queue every 50 ms).

When a file counts as arrived
    * Default mode: once its size and ``mtime_ns`` have held still for ``settle_s`` seconds. Every
      file the watcher or the start-up scan reports becomes a *candidate*; one task re-stats each
      candidate when its deadline passes, and a file that changed meanwhile starts over. The
      clock starts when the file is stat'ed, credited with the time since its mtime up to 0.1 s
      (the watcher reports a change 50-100 ms late; the cap bounds the effect of a skewed
      clock on a network filesystem).
    * Marker mode (``marker="_SUCCESS"``): when a file named ``marker`` is created or rewritten
      in a folder, every file directly in that folder that matches ``pattern`` is emitted at once,
      as it is at that moment (``settle_s`` is not used: the marker says the folder is complete).
      The marker itself is never emitted. Files added to the folder later wait for the marker to
      be written again. The marker name is exempt from ``ignore``.

What is never emitted
    Directories; names matching an ``ignore`` glob (checked on every component of the path
    relative to the root, so an ignored folder hides its contents); files not matching
    ``pattern``; and any path whose real location (``os.path.realpath``) lies outside the root,
    which is refused with a warning on the ``evflow.sensors.file`` logger.

``pattern`` is a glob, or several, on the file name; a glob containing ``/`` is matched against
the whole path relative to the root instead (``**`` stands for any number of folders).

Event ``data``: ``path`` (relative to the root, ``/``-separated; also the ``subject``),
``abs_path`` (under the root with the root's own symlinks resolved; a link inside the root keeps
its name), ``size``, ``mtime`` (ISO 8601, UTC), ``mtime_ns`` and ``root`` (the resolved root).
Its ``dedup_key`` is ``"file:<abs_path>:<size>:<mtime_ns>"``, so a file is recorded as
seen in the very transaction that stores its event; on start the sensor scans the folder and
submits every file already there, and the store drops those it has already seen.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import re
import types
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from watchfiles import Change, awatch

from evflow.abc import Intake
from evflow.errors import Saturated, SensorError
from evflow.events import Event

from .file_scan import FileInfo, FolderScan, Observed
from .filesystems import shared_filesystem

__all__ = ["FileSensor"]

logger = logging.getLogger("evflow.sensors.file")

_SUBMIT_BATCH = 256
_EMITTED_MEMORY = 4096
_WATCH_DEBOUNCE_MS = 400
_WATCH_STEP_MS = 50


@dataclass(slots=True)
class _Candidate:
    sig: tuple[int, int]
    deadline: float


@dataclass(slots=True)
class _RunState:
    """The mutable state of one :meth:`FileSensor.run`."""

    root: str
    candidates: dict[str, _Candidate] = field(default_factory=dict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    ready: list[FileInfo] = field(default_factory=list)
    wake: anyio.Event = field(default_factory=anyio.Event)
    seq: int = 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def _mtime_iso(mtime_ns: int) -> str:
    secs, ns = divmod(mtime_ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, tz=UTC).replace(microsecond=ns // 1000).isoformat()


class FileSensor:
    """Emit an event for every file that arrives in ``path`` (see the module docs for the rules).

    ``path`` is resolved against the current directory when the sensor is built and created at
    start if missing. ``polling=True`` uses the polling watcher (every ``poll_interval_s``) for
    network filesystems, where change notifications are not delivered; the default (None)
    polls when the folder is on shared storage (NFS, SMB, FUSE buckets: see
    :mod:`~evflow.sensors.filesystems`) and uses notifications otherwise.
    """

    singleton = True  # in a cluster, one instance watches the folder: the leader

    def __init__(
        self,
        path: str | os.PathLike[str],
        pattern: str | Sequence[str] = "*",
        *,
        name: str | None = None,
        recursive: bool = False,
        settle_s: float = 1.0,
        marker: str | None = None,
        polling: bool | None = None,
        poll_interval_s: float = 1.0,
        event_type: str = "file.arrived",
        ignore: Sequence[str] = (".*", "*.tmp", "*.part", "*~"),
    ) -> None:
        given = os.fspath(path)
        if not given:
            raise SensorError("FileSensor: path must not be empty")
        self.path = Path(os.path.abspath(os.path.expanduser(given)))
        patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        if not patterns or not all(isinstance(p, str) and p.strip("/") for p in patterns):
            raise SensorError(f"FileSensor({given!r}): pattern must be one or more non-empty globs")
        self.patterns: tuple[str, ...] = patterns
        if not math.isfinite(settle_s) or settle_s < 0:
            raise SensorError(f"FileSensor({given!r}): settle_s must be >= 0, not {settle_s!r}")
        if not math.isfinite(poll_interval_s) or poll_interval_s <= 0:
            raise SensorError(
                f"FileSensor({given!r}): poll_interval_s must be > 0, not {poll_interval_s!r}"
            )
        if marker is not None and (not marker or "/" in marker or marker in (".", "..")):
            raise SensorError(f"FileSensor({given!r}): marker must be a plain file name")
        if not event_type:
            raise SensorError(f"FileSensor({given!r}): event_type must not be empty")
        self.name: str = name or _slug(given) or _slug(self.path.name) or "root"
        self.recursive = recursive
        self.settle_s = float(settle_s)
        self.marker = marker
        self._polling = polling
        self._shared: str | None = None  # the shared filesystem found, when polling=None
        self.poll_interval_s = float(poll_interval_s)
        self.event_type = event_type
        self.ignore: tuple[str, ...] = tuple(ignore)
        self._scan = FolderScan(self.name, patterns, self.ignore, recursive, marker)
        self._created = False
        self._emitted: OrderedDict[str, tuple[int, int]] = OrderedDict()

    @property
    def polling(self) -> bool:
        """Whether the folder is polled: as asked, or (by default) when it is on shared
        storage, looked up again at each call (the folder may be mounted after construction)."""
        if self._polling is not None:
            return self._polling
        self._shared = shared_filesystem(self.path)
        return self._shared is not None

    # -- Sensor protocol --------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The CloudEvents ``source`` of this sensor's events."""
        return f"file/{self.name}"

    def describe(self) -> str:
        """One line for the startup summary."""
        parts = [f"watching {self.path}{os.sep} for {', '.join(self.patterns)}"]
        if self.recursive:
            parts.append("recursively")
        if self.marker is not None:
            parts.append(f"when marker {self.marker} appears")
        else:
            parts.append(f"settled {self.settle_s:g}s")
        if self.polling:
            parts.append(f"polling every {self.poll_interval_s:g}s")
            if self._shared is not None:
                parts.append(f"({self._shared}: shared storage)")
        line = ", ".join(parts)
        if self._created:
            line += " (folder created)"
        elif not self.path.exists():
            line += " (folder missing; created at start)"
        return line

    def __repr__(self) -> str:
        return f"FileSensor({str(self.path)!r}, pattern={self.patterns!r}, name={self.name!r})"

    async def run(
        self, intake: Intake, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch until cancelled; ``task_status.started()`` once the watcher is live."""
        root = await anyio.to_thread.run_sync(self._prepare_root)
        polled = await anyio.to_thread.run_sync(lambda: self.polling)
        state = _RunState(root=root)
        stop = anyio.Event()
        changes = awatch(
            root,
            watch_filter=self._watch_filter(root),
            debounce=_WATCH_DEBOUNCE_MS,
            step=_WATCH_STEP_MS,
            stop_event=stop,
            force_polling=True if polled else None,
            poll_delay_ms=max(1, round(self.poll_interval_s * 1000)),
            recursive=self.recursive,
            ignore_permission_denied=True,
        )
        try:
            async with anyio.create_task_group() as tg:
                try:
                    tg.start_soon(self._watch_loop, state, changes, stop)
                    await self._until_watching(changes)
                    # The watcher is live before the scan, so nothing written from now on is
                    # missed; a file seen by both only becomes one candidate.
                    found = await anyio.to_thread.run_sync(self._scan.observe_tree, root)
                    self._absorb(state, found)
                    task_status.started()
                    await self._deadline_loop(state, intake)
                finally:
                    # Wakes the watcher thread at once, so cancellation does not wait for it.
                    stop.set()
        except ExceptionGroup as group:
            # One failure inside our own task group: raise it as itself, not wrapped.
            if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], ExceptionGroup):
                raise group.exceptions[0] from None
            raise

    # -- setup ------------------------------------------------------------------------------

    def _prepare_root(self) -> str:
        path = self.path
        if path.exists() and not path.is_dir():
            raise SensorError(f"{self!r}: {path} exists and is not a folder")
        if not path.exists():
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SensorError(f"{self!r}: cannot create folder {path}: {exc}") from exc
            self._created = True
            logger.info("created folder %s for sensor %s", path, self.name)
        if not os.access(path, os.R_OK | os.X_OK):
            raise SensorError(f"{self!r}: folder {path} is not readable")
        return os.path.realpath(path)

    @staticmethod
    async def _until_watching(changes: AsyncGenerator[Any, None]) -> None:
        """Return once ``awatch`` has built its watcher.

        ``awatch`` creates the OS watcher before its first ``await``, so the generator being
        suspended on an await means the watcher exists.
        """
        if not isinstance(changes, types.AsyncGeneratorType):
            raise SensorError(f"unexpected watcher type {type(changes).__name__}")
        with anyio.fail_after(60):
            spins = 0
            while changes.ag_await is None and changes.ag_frame is not None:
                spins += 1
                await anyio.sleep(0 if spins < 100 else 0.005)
        if changes.ag_frame is None:
            raise SensorError("file watcher stopped before it started")

    def _watch_filter(self, root: str) -> Callable[[Change, str], bool]:
        prefix = root.rstrip(os.sep) + os.sep

        def keep(change: Change, path: str) -> bool:
            if path == root:
                return True
            if not path.startswith(prefix):
                return False
            parts = path[len(prefix) :].split(os.sep)
            return not self._scan.ignored(parts)

        return keep

    # -- classification (runs in worker threads) --------------------------------------------

    # -- the two loops ----------------------------------------------------------------------

    async def _watch_loop(
        self,
        state: _RunState,
        changes: AsyncGenerator[set[tuple[Change, str]], None],
        stop: anyio.Event,
    ) -> None:
        async with aclosing(changes):
            async for batch in changes:
                found = await anyio.to_thread.run_sync(
                    self._scan.observe_changes, state.root, batch
                )
                self._absorb(state, found)
                if found.root_gone:
                    raise SensorError(f"{self!r}: the watched folder {state.root} was removed")
        if not stop.is_set():
            raise SensorError(f"{self!r}: the file watcher stopped unexpectedly")

    def _absorb(self, state: _RunState, found: Observed) -> None:
        """Turn observations into candidates (or ready files) and wake the deadline loop."""
        now = anyio.current_time()
        for path in found.gone:
            state.candidates.pop(path, None)
        for info in found.files:
            cand = state.candidates.get(info.abs_path)
            if cand is not None and cand.sig == info.sig:
                continue
            if cand is None and self._emitted.get(info.abs_path) == info.sig:
                continue  # already emitted in this version; a metadata-only change
            self._track(state, info.abs_path, info.sig, now + self.settle_s - info.still_s)
        state.ready.extend(found.ready)
        state.wake.set()

    @staticmethod
    def _track(state: _RunState, path: str, sig: tuple[int, int], deadline: float) -> None:
        state.candidates[path] = _Candidate(sig, deadline)
        state.seq += 1
        heapq.heappush(state.heap, (deadline, state.seq, path))

    async def _deadline_loop(self, state: _RunState, intake: Intake) -> None:
        """Re-stat candidates as their deadlines pass; submit the settled and the ready."""
        while True:
            now = anyio.current_time()
            due: list[str] = []
            while state.heap and state.heap[0][0] <= now:
                deadline, _, path = heapq.heappop(state.heap)
                cand = state.candidates.get(path)
                if cand is not None and cand.deadline == deadline:
                    due.append(path)
            if due:
                results = await anyio.to_thread.run_sync(self._scan.restat, state.root, due)
                now = anyio.current_time()
                for path, info in results:
                    cand = state.candidates.get(path)
                    if cand is None or cand.deadline > now:
                        continue  # re-observed while we were stat'ing
                    if info is None:
                        del state.candidates[path]
                    elif info.sig == cand.sig:
                        del state.candidates[path]
                        state.ready.append(info)
                    else:
                        self._track(state, path, info.sig, now + self.settle_s - info.still_s)
            if state.ready:
                ready, state.ready = state.ready, []
                await self._submit(intake, state.root, ready)
                continue
            state.wake = anyio.Event()
            delay = state.heap[0][0] - anyio.current_time() if state.heap else math.inf
            if delay > 0:
                with anyio.move_on_after(delay):
                    await state.wake.wait()

    # -- emitting ---------------------------------------------------------------------------

    def _event(self, info: FileInfo, root: str) -> Event:
        return Event(
            type=self.event_type,
            source=self.source,
            subject=info.rel,
            data={
                "path": info.rel,
                "abs_path": info.abs_path,
                "size": info.size,
                "mtime": _mtime_iso(info.mtime_ns),
                "mtime_ns": info.mtime_ns,
                "root": root,
            },
            dedup_key=f"file:{info.abs_path}:{info.size}:{info.mtime_ns}",
        )

    async def _submit(self, intake: Intake, root: str, infos: list[FileInfo]) -> None:
        """Submit in batches; when saturated, wait for room and retry (files wait on disk)."""
        unique = sorted(
            {(i.abs_path, i.sig): i for i in infos}.values(), key=lambda i: (i.mtime_ns, i.rel)
        )
        for start in range(0, len(unique), _SUBMIT_BATCH):
            chunk = unique[start : start + _SUBMIT_BATCH]
            events = [self._event(i, root) for i in chunk]
            while True:
                try:
                    accepted = await intake.submit(events)
                    break
                except Saturated:
                    await intake.wait_not_saturated()
            repeats = sum(1 for a in accepted if a.duplicate)
            logger.debug(
                "sensor %s submitted %d file(s), %d already seen", self.name, len(events), repeats
            )
            for info in chunk:
                self._emitted[info.abs_path] = info.sig
                self._emitted.move_to_end(info.abs_path)
            while len(self._emitted) > _EMITTED_MEMORY:
                self._emitted.popitem(last=False)
