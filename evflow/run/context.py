"""What a running task can know about itself, and the logger it gets.

``get_logger()`` inside a task returns a :class:`TaskLogger`: its lines are stored with the
run (level, time, message) and also passed on to the stdlib logger ``evflow.task.<flow>``,
where the application's own logging configuration decides what to show. evflow never
configures logging itself.
"""

from __future__ import annotations

import contextvars
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..frozen import record

__all__ = ["TaskContext", "TaskLogger", "current_task", "get_logger"]

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


@record
class TaskContext:
    """The run and task an attempt belongs to."""

    run_id: str
    flow: str
    task: str
    attempt: int
    params: dict[str, Any]
    sink: Callable[[str, str, int, float, str, str], None]
    min_level: int = logging.INFO


_CURRENT: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "evflow_current_task", default=None
)


def current_task() -> TaskContext | None:
    """The context of the task attempt running in this coroutine or thread, if any."""
    return _CURRENT.get()


def set_current(ctx: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _CURRENT.set(ctx)


def reset_current(token: contextvars.Token[TaskContext | None]) -> None:
    _CURRENT.reset(token)


class TaskLogger:
    """A logger whose lines are stored with the task attempt that wrote them."""

    def __init__(self, ctx: TaskContext | None) -> None:
        self._ctx = ctx
        name = f"evflow.task.{ctx.flow}" if ctx else "evflow.task"
        self._std = logging.getLogger(name)

    def log(self, level: int | str, msg: str, *args: Any, exc_info: bool = False) -> None:
        lvl = LEVELS.get(level, logging.INFO) if isinstance(level, str) else level
        text = (msg % args) if args else str(msg)
        if exc_info:
            text = f"{text}\n{traceback.format_exc().rstrip()}"
        ctx = self._ctx
        if ctx is not None and lvl >= ctx.min_level:
            ctx.sink(
                ctx.run_id, ctx.task, ctx.attempt, time.time(), logging.getLevelName(lvl), text
            )
        if self._std.isEnabledFor(lvl):
            # stored above already: the task-output capture must not store it again
            extra = {"run_id": ctx.run_id, "task": ctx.task, "evflow_stored": True} if ctx else {}
            self._std.log(lvl, text, extra=extra)

    def debug(self, msg: str, *args: Any) -> None:
        self.log(logging.DEBUG, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=True)


def get_logger() -> TaskLogger:
    """The logger of the task attempt running here (outside a task, a plain pass-through)."""
    return TaskLogger(_CURRENT.get())
