"""``XComArg``: a task's future result used as another task's argument (TaskFlow style).

``transform(extract())`` passes the ``XComArg`` of ``extract`` to ``transform``: an edge
``extract >> transform`` is added, and at run time the argument is the upstream task's
result. ``arg["key"]`` reads one key of a ``multiple_outputs`` result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location
from .context import RETURN_KEY, TaskInstance

if TYPE_CHECKING:
    from .base import BaseOperator

__all__ = ["DagParam", "XComArg", "find_xcom_args", "resolve_xcom_args"]


class DagParam:
    """A parameter of an ``@dag`` function inside its body: the run's value at run time."""

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        return f"DagParam({self.name!r})"


class XComArg:
    """The result (or one key of it) of ``operator``, known once it has run."""

    def __init__(self, operator: BaseOperator, key: str = RETURN_KEY) -> None:
        self.operator = operator
        self.key = key

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"

    def __getitem__(self, key: str) -> XComArg:
        return XComArg(self.operator, key)

    def __iter__(self) -> Iterator[Any]:
        raise FlowDefinitionError(
            f"the result of task {self.operator.task_id!r} is iterated while the DAG is built, "
            "but it exists only at run time: pass it to a task, or map over it with "
            ".expand(arg=...)",
            location=caller_location(),
        )

    def __bool__(self) -> bool:
        raise FlowDefinitionError(
            f"the result of task {self.operator.task_id!r} is used as a truth value while the "
            "DAG is built, but it exists only at run time: use @task.branch to choose tasks",
            location=caller_location(),
        )

    # -- ordering, delegated to the operator -------------------------------------------------
    def __rshift__(self, other: Any) -> Any:
        return self.operator >> other

    def __lshift__(self, other: Any) -> Any:
        return self.operator << other

    def __rrshift__(self, other: Any) -> XComArg:
        other >> self.operator
        return self

    def __rlshift__(self, other: Any) -> XComArg:
        other << self.operator
        return self

    def set_upstream(self, other: Any) -> None:
        self.operator.set_upstream(other)

    def set_downstream(self, other: Any) -> None:
        self.operator.set_downstream(other)

    def resolve(self, ti: TaskInstance) -> Any:
        return ti.pull(self.operator.task_id, self.key)


def find_xcom_args(value: Any) -> Iterator[XComArg]:
    """Every :class:`XComArg` inside ``value`` (lists, tuples, dicts)."""
    if isinstance(value, XComArg):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from find_xcom_args(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from find_xcom_args(v)


def resolve_xcom_args(value: Any, ti: TaskInstance, params: Mapping[str, Any]) -> Any:
    """``value`` with each :class:`XComArg` (and ``@dag`` parameter) replaced by its value."""
    if isinstance(value, XComArg):
        return value.resolve(ti)
    if isinstance(value, DagParam):
        return params.get(value.name, value.default)
    if isinstance(value, Mapping):
        return {k: resolve_xcom_args(v, ti, params) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(resolve_xcom_args(v, ti, params) for v in value)
    if isinstance(value, list):
        return [resolve_xcom_args(v, ti, params) for v in value]
    return value
