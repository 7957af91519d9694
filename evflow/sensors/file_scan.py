"""What a file sensor sees in its folder: which paths count, and what a batch of stats found.

The rules (ignore globs on every path component, ``pattern`` on the name or the whole relative
path, the marker, nothing outside the root's real location) are described in
:mod:`evflow.sensors.file`. Everything here does blocking filesystem calls, so the sensor runs it
in worker threads.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from watchfiles import Change

from ..frozen import record

__all__ = ["FileInfo", "FolderScan", "Observed"]

# Refusals are warnings of the sensor itself, on its logger.
logger = logging.getLogger("evflow.sensors.file")

_REFUSED_MEMORY = 4096
_MTIME_CREDIT_S = 0.1


@record
class FileInfo:
    """One regular file under the root, as it was when stat'ed."""

    abs_path: str
    rel: str
    size: int
    mtime_ns: int
    still_s: float = field(default=0.0, compare=False)  # unchanged for this long when stat'ed

    @property
    def sig(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


@dataclass(slots=True)
class Observed:
    """What a batch of stat calls found: files to track, paths gone, files ready now."""

    files: list[FileInfo] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    ready: list[FileInfo] = field(default_factory=list)
    root_gone: bool = False


def _match_parts(pat: Sequence[str], parts: Sequence[str]) -> bool:
    if not pat:
        return not parts
    head = pat[0]
    if head == "**":
        return any(_match_parts(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], head) and _match_parts(pat[1:], parts[1:])


class FolderScan:
    """Classifies and stats the paths under one sensor's root, by that sensor's rules."""

    def __init__(
        self,
        name: str,
        patterns: tuple[str, ...],
        ignore: tuple[str, ...],
        recursive: bool,
        marker: str | None,
    ) -> None:
        self.name = name
        self.patterns = patterns
        self._split = tuple(tuple(p.strip("/").split("/")) if "/" in p else None for p in patterns)
        self.ignore = ignore
        self.recursive = recursive
        self.marker = marker
        self._refused: set[tuple[str, str]] = set()

    def ignored(self, parts: Sequence[str]) -> bool:
        *dirs, last = parts
        if any(fnmatchcase(d, g) for d in dirs for g in self.ignore):
            return True
        if self.marker is not None and last == self.marker:
            return False
        return any(fnmatchcase(last, g) for g in self.ignore)

    def matches(self, parts: Sequence[str]) -> bool:
        for pat, split in zip(self.patterns, self._split, strict=True):
            if split is None:
                if fnmatchcase(parts[-1], pat):
                    return True
            elif _match_parts(split, parts):
                return True
        return False

    def inside(self, root: str, abs_path: str) -> str | None:
        """The real path of ``abs_path`` if it stays under ``root``; else warn and None."""
        real = os.path.realpath(abs_path)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
        key = (abs_path, real)
        if key not in self._refused:
            if len(self._refused) >= _REFUSED_MEMORY:
                self._refused.clear()
            self._refused.add(key)
            logger.warning(
                "sensor %s refused %s: it resolves to %s, outside the watched folder %s",
                self.name,
                abs_path,
                real,
                root,
            )
        return None

    def stat_file(self, root: str, abs_path: str, parts: Sequence[str]) -> FileInfo | None:
        """A :class:`FileInfo` for a regular file inside the root, else None."""
        real = self.inside(root, abs_path)
        if real is None:
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        still = min(max(0.0, time.time() - st.st_mtime_ns / 1e9), _MTIME_CREDIT_S)
        return FileInfo(abs_path, "/".join(parts), st.st_size, st.st_mtime_ns, still)

    def walk(self, root: str, top: str) -> Iterable[tuple[str, list[str]]]:
        """Every non-ignored entry (not folders) under ``top``, with its parts below ``root``."""
        prefix = root.rstrip(os.sep) + os.sep
        stack = [top]
        seen: set[str] = set()
        while stack:
            folder = stack.pop()
            real = self.inside(root, folder)
            if real is None or real in seen:
                continue
            seen.add(real)
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                parts = entry.path[len(prefix) :].split(os.sep)
                if self.ignored(parts):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir:
                    if self.recursive:
                        stack.append(entry.path)
                else:
                    yield entry.path, parts

    def marker_folder(self, root: str, folder: str) -> list[FileInfo]:
        """The files directly in ``folder`` that a marker there releases."""
        prefix = root.rstrip(os.sep) + os.sep
        out: list[FileInfo] = []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return out
        for entry in entries:
            if entry.name == self.marker:
                continue
            parts = entry.path[len(prefix) :].split(os.sep)
            if self.ignored(parts) or not self.matches(parts):
                continue
            info = self.stat_file(root, entry.path, parts)
            if info is not None:
                out.append(info)
        return out

    def observe_entries(self, root: str, entries: Iterable[tuple[str, list[str]]]) -> Observed:
        obs = Observed()
        for abs_path, parts in entries:
            if self.marker is not None:
                if parts[-1] == self.marker and self.inside(root, abs_path) is not None:
                    folder = os.path.dirname(abs_path)
                    if os.path.isfile(abs_path):
                        obs.ready.extend(self.marker_folder(root, folder))
                continue
            if not self.matches(parts):
                continue
            info = self.stat_file(root, abs_path, parts)
            if info is None:
                obs.gone.append(abs_path)
            else:
                obs.files.append(info)
        return obs

    def observe_tree(self, root: str, top: str | None = None) -> Observed:
        return self.observe_entries(root, self.walk(root, top or root))

    def observe_changes(self, root: str, changes: set[tuple[Change, str]]) -> Observed:
        prefix = root.rstrip(os.sep) + os.sep
        entries: dict[str, list[str]] = {}
        new_dirs: list[str] = []
        root_touched = False
        for change, path in sorted(changes, key=lambda c: (c[1], c[0])):
            if path == root:
                root_touched = True
                continue
            if not path.startswith(prefix) or path in entries:
                continue
            parts = path[len(prefix) :].split(os.sep)
            if change == Change.deleted:
                entries[path] = parts
            elif os.path.isdir(path):
                # A folder moved in arrives as one event; its contents need a scan.
                if change == Change.added and self.recursive:
                    new_dirs.append(path)
            else:
                entries[path] = parts
        obs = self.observe_entries(root, entries.items())
        obs.root_gone = root_touched and not os.path.isdir(root)
        for folder in new_dirs:
            more = self.observe_tree(root, folder)
            obs.files.extend(more.files)
            obs.ready.extend(more.ready)
        return obs

    def restat(self, root: str, paths: list[str]) -> list[tuple[str, FileInfo | None]]:
        prefix = root.rstrip(os.sep) + os.sep
        return [(p, self.stat_file(root, p, p[len(prefix) :].split(os.sep))) for p in paths]
