"""Tasks: a function with its options (retries, timeout, pool, trigger rule, ...).

Called inside a flow definition a :class:`Task` adds a node to the flow being built (the
active builder); called anywhere else it is the plain function, so tasks stay testable.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import FlowDefinitionError
from ..frozen import record
from .trigger_rules import TRIGGER_RULES, TriggerRule

if TYPE_CHECKING:
    from .dag import Builder, Node

__all__ = ["BUILDER", "Param", "Task", "TaskOptions", "caller_location", "make_task", "unmapped"]

# The evflow package: frames inside it are not the user's code.
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def caller_location() -> str:
    """``file:line`` of the innermost frame outside the evflow package (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR) and "importlib" not in filename:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "<unknown>"


#: The flow being defined here (the active ``with Flow`` block or ``@flow`` body), if any.
BUILDER: contextvars.ContextVar[Builder | None] = contextvars.ContextVar(
    "evflow_flow_builder", default=None
)


@record
class TaskOptions:
    """How a task runs: retries, timeout, limits, trigger rule."""

    retries: int = 0
    retry_delay_s: float = 1.0
    retry_backoff: float = 2.0
    retry_jitter: float = 0.1
    max_retry_delay_s: float = 300.0
    timeout_s: float | None = None
    pool: str | None = None
    slots: int = 1
    priority: int = 0
    trigger_rule: TriggerRule = "all_success"
    branch: bool = False

    def check(self, where: str) -> None:
        if self.retries < 0:
            raise FlowDefinitionError(f"{where}: retries must be >= 0, not {self.retries}")
        if self.retry_delay_s < 0 or self.retry_backoff < 1 or not 0 <= self.retry_jitter <= 1:
            raise FlowDefinitionError(
                f"{where}: retry_delay_s must be >= 0, retry_backoff >= 1, 0 <= retry_jitter <= 1"
            )
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise FlowDefinitionError(f"{where}: timeout must be > 0 seconds, not {self.timeout_s}")
        if self.slots < 1:
            raise FlowDefinitionError(f"{where}: slots must be >= 1, not {self.slots}")
        if self.trigger_rule not in TRIGGER_RULES:
            raise FlowDefinitionError(
                f"{where}: unknown trigger_rule {self.trigger_rule!r}; "
                f"expected one of {', '.join(sorted(TRIGGER_RULES))}"
            )

    def retry_delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``; ``rand`` in [0, 1) supplies jitter."""
        base = self.retry_delay_s * self.retry_backoff ** max(attempt - 1, 0)
        base = min(base, self.max_retry_delay_s)
        return max(0.0, base * (1 + self.retry_jitter * (2 * rand - 1)))


@record
class Param:
    """A run parameter's placeholder inside an ``@flow`` function body.

    The body runs once, when the flow is defined, to build its graph: a parameter has no value
    yet. Using it as one (``range(n)``, ``if mode == "full":`` as a truth value, ``len``,
    ``int``, iterating it) raises :class:`~evflow.errors.FlowDefinitionError` saying how to do
    it instead; passing it to tasks is what it is for.
    """

    name: str

    def _misused(self, what: str) -> FlowDefinitionError:
        return FlowDefinitionError(
            f"parameter {self.name!r} is used as a value at {caller_location()} ({what}), but "
            "a flow's body only builds its graph, once, before any run: the value exists only "
            "inside tasks. Pass the parameter to a task instead: a task that computes the list, "
            "then .map over its result; or a task with branch=True that returns which tasks "
            "to run"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Param):
            return self.name == other.name
        raise self._misused("compared with ==; its value exists only in a run")

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((Param, self.name))

    def __bool__(self) -> bool:
        raise self._misused("as a truth value, e.g. in an if")

    def __iter__(self) -> Any:
        raise self._misused("iterated")

    def __len__(self) -> int:
        raise self._misused("len()")

    def __index__(self) -> int:
        raise self._misused("as an integer, e.g. in range()")

    def __int__(self) -> int:
        raise self._misused("int()")

    def __float__(self) -> float:
        raise self._misused("float()")


@record
class unmapped:
    """Wrap an argument of ``task.map(...)`` that is passed whole to every instance."""

    value: Any


class Task:
    """A task definition: a function and its :class:`TaskOptions`.

    Called inside an ``@flow`` body it adds a node to the flow and returns it (a reference to
    its future result). Called anywhere else it simply calls the function, so tasks stay
    testable as plain functions.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        options: TaskOptions,
        *,
        on_failure: Callable[..., Any] | None = None,
        on_retry: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.options = options
        # Callbacks live here, not in TaskOptions: they are not part of the flow's version.
        self.on_failure = on_failure
        self.on_retry = on_retry
        self.on_success = on_success
        self.is_async = inspect.iscoroutinefunction(fn)
        self.location = caller_location()
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = BUILDER.get()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add_call(self, args, kwargs, mapped=False)

    def map(self, *args: Any, **kwargs: Any) -> Node:
        """One task instance per item: list/tuple arguments and task results are iterated
        (zipped, equal length); wrap an argument in :class:`unmapped` to pass it whole."""
        builder = BUILDER.get()
        if builder is None:
            raise FlowDefinitionError(
                f"task {self.name!r}: .map() is only valid inside a flow definition",
                task=self.name,
                location=caller_location(),
            )
        return builder.add_call(self, args, kwargs, mapped=True)

    def with_options(self, **changes: Any) -> Task:
        name = changes.get("name", self.name)
        callbacks = {k: getattr(self, k) for k in _CALLBACKS}
        callbacks.update(_pop_callbacks(changes, f"task {name!r}"))
        opts = replace(self.options, **_rename_options(changes))
        opts.check(f"task {self.name!r}")
        return Task(self.fn, name, opts, **callbacks)


_CALLBACKS = ("on_failure", "on_retry", "on_success")


def _pop_callbacks(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Remove the callback options from ``options`` and return them, checked."""
    out = {k: options.pop(k) for k in _CALLBACKS if k in options}
    for k, fn in out.items():
        if fn is not None and not callable(fn):
            raise FlowDefinitionError(
                f"{where}: {k} must be callable, not {type(fn).__name__}",
                location=caller_location(),
            )
    return out


def _rename_options(kw: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the short names of the public decorator (``timeout``, ``retry_delay``)."""
    aliases = {"timeout": "timeout_s", "retry_delay": "retry_delay_s"}
    out = {aliases.get(k, k): v for k, v in kw.items() if k != "name"}
    if "retry_delay_s" in out and hasattr(out["retry_delay_s"], "total_seconds"):
        out["retry_delay_s"] = out["retry_delay_s"].total_seconds()
    return out


def make_task(fn: Callable[..., Any], *, name: str | None = None, **options: Any) -> Task:
    """A :class:`Task` of ``fn`` with the decorator's options (short names accepted), checked."""
    tname = name or getattr(fn, "__name__", None) or type(fn).__name__
    where = f"task {tname!r}"
    options = dict(options)
    callbacks = _pop_callbacks(options, where)
    if not callable(fn):
        raise FlowDefinitionError(
            f"{where} is not callable (got {type(fn).__name__})",
            task=tname,
            location=caller_location(),
        )
    try:
        opts = TaskOptions(**_rename_options(options))
    except TypeError as exc:
        raise FlowDefinitionError(
            f"{where}: {exc}", task=tname, location=caller_location()
        ) from None
    opts.check(where)
    return Task(fn, tname, opts, **callbacks)
