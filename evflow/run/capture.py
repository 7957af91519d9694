"""Task output captured: ``print()`` and the standard ``logging`` module inside a task are stored
as that attempt's log lines, like :func:`evflow.get_logger`, with no change to the task's code
(Airflow DAG files use both).

:func:`capture_task_output` installs it for the process: ``sys.stdout``/``sys.stderr`` become
streams that write a task's lines to its attempt (and anything written outside a task to the
original stream), and a handler on the root logger stores records logged inside a task. The
attempt is found through the task context (a context variable), so concurrent tasks, sync tasks
in worker threads included, never mix. ``evflow serve`` and ``evflow run`` install it; an
embedding application decides for its own process.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from .context import TaskContext, current_task

__all__ = ["TaskLogHandler", "capture_task_output"]

#: A record logged through :class:`~evflow.run.context.TaskLogger` is stored already.
STORED = "evflow_stored"


class _TaskStream(io.TextIOBase):
    """Inside a task, whole lines go to the attempt's log; outside one, to ``original``."""

    def __init__(self, original: TextIO, level: str) -> None:
        self.original = original
        self.level = level
        self._partial: dict[tuple[str, str, int], str] = {}
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        ctx = current_task()
        if ctx is None:
            return self.original.write(s)
        key = (ctx.run_id, ctx.task, ctx.attempt)
        with self._lock:
            *lines, rest = (self._partial.pop(key, "") + s).split("\n")
            if rest:
                self._partial[key] = rest
        now = time.time()
        for line in lines:
            ctx.sink(ctx.run_id, ctx.task, ctx.attempt, now, self.level, line)
        return len(s)

    def flush(self) -> None:
        self.original.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.original.encoding


class TaskLogHandler(logging.Handler):
    """Stores each record logged inside a task attempt with that attempt."""

    def emit(self, record: logging.LogRecord) -> None:
        ctx: TaskContext | None = current_task()
        if ctx is None or getattr(record, STORED, False) or record.levelno < ctx.min_level:
            return
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        ctx.sink(ctx.run_id, ctx.task, ctx.attempt, record.created, record.levelname, text)


def capture_task_output() -> Callable[[], None]:
    """Capture ``print()`` and ``logging`` inside tasks for this process; returns the undo."""
    out, err = sys.stdout, sys.stderr
    sys.stdout = _TaskStream(out, "INFO")
    sys.stderr = _TaskStream(err, "ERROR")
    handler = TaskLogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)

    def undo() -> None:
        root.removeHandler(handler)
        sys.stdout, sys.stderr = out, err

    return undo
