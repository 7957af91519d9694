"""``TaskGroup`` and ``@task_group``: tasks named ``group.task``, ordered as one block.

``group >> t`` runs ``t`` after the group's last tasks (those with no downstream task inside
the group); ``t >> group`` runs the group's first tasks after ``t``. Groups nest; a group's
``default_args`` apply over the DAG's to the tasks created in it.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Self

from ...errors import FlowDefinitionError
from ...flows import Node
from ...flows.tasks import caller_location
from .arguments import check_extra
from .relations import link

if TYPE_CHECKING:
    from .dag import DAG

__all__ = ["TaskGroup", "current_group", "task_group"]

_CURRENT_GROUP: contextvars.ContextVar[TaskGroup | None] = contextvars.ContextVar(
    "evflow_airflow_task_group", default=None
)


def current_group() -> TaskGroup | None:
    """The task group whose ``with`` block is running here."""
    return _CURRENT_GROUP.get()


class TaskGroup:
    """A named group of tasks of one DAG."""

    def __init__(
        self,
        group_id: str,
        prefix_group_id: bool = True,
        parent_group: TaskGroup | None = None,
        dag: DAG | None = None,
        default_args: Mapping[str, Any] | None = None,
        tooltip: str = "",
        **kwargs: Any,
    ) -> None:
        from .dag import current_dag

        check_extra(
            {k: v for k, v in kwargs.items() if k not in ("ui_color", "ui_fgcolor")},
            f"TaskGroup {group_id!r}",
            strict=True,
        )
        if not isinstance(group_id, str) or not group_id.strip() or "." in group_id:
            raise FlowDefinitionError(
                f"TaskGroup needs a non-empty group_id without dots, not {group_id!r}",
                location=caller_location(),
            )
        self.parent_group = parent_group if parent_group is not None else current_group()
        owner = dag if dag is not None else current_dag()
        if owner is None and self.parent_group is not None:
            owner = self.parent_group.dag
        if owner is None:
            raise FlowDefinitionError(
                f"TaskGroup {group_id!r} has no DAG: create it inside `with DAG(...):` or "
                "pass dag=",
                location=caller_location(),
            )
        self.dag: DAG = owner
        self._group_id = group_id
        self.prefix_group_id = prefix_group_id
        self.tooltip = tooltip
        inherited = self.parent_group.default_args if self.parent_group is not None else {}
        self.default_args: dict[str, Any] = {**inherited, **(default_args or {})}
        self.children: list[Node] = []
        self._tokens: list[contextvars.Token[TaskGroup | None]] = []

    def __repr__(self) -> str:
        return f"<TaskGroup: {self.group_id}>"

    @property
    def group_id(self) -> str:
        parent = self.parent_group
        if parent is not None and parent.prefix_group_id:
            return f"{parent.group_id}.{self._group_id}"
        return self._group_id

    def child_id(self, task_id: str) -> str:
        """The full task_id of a task created in this group."""
        return f"{self.group_id}.{task_id}" if self.prefix_group_id else task_id

    def add(self, node: Node) -> None:
        self.children.append(node)
        if self.parent_group is not None:
            self.parent_group.add(node)

    def __enter__(self) -> Self:
        self._tokens.append(_CURRENT_GROUP.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _CURRENT_GROUP.reset(self._tokens.pop())

    def roots(self) -> list[Node]:
        """The group's first tasks (no upstream task inside the group)."""
        inside = set(map(id, self.children))
        return [n for n in self.children if not any(id(u) in inside for u in n.upstream)]

    def leaves(self) -> list[Node]:
        """The group's last tasks (no downstream task inside the group)."""
        inside = set(map(id, self.children))
        return [n for n in self.children if not any(id(d) in inside for d in n.downstream)]

    def __rshift__(self, other: Any) -> Any:
        link(self, other)
        return other

    def __lshift__(self, other: Any) -> Any:
        link(other, self)
        return other

    def __rrshift__(self, other: Any) -> TaskGroup:
        link(other, self)
        return self

    def __rlshift__(self, other: Any) -> TaskGroup:
        link(self, other)
        return self

    def set_upstream(self, other: Any) -> None:
        link(other, self)

    def set_downstream(self, other: Any) -> None:
        link(self, other)


def task_group(
    fn: Callable[..., Any] | None = None, /, group_id: str | None = None, **group_kwargs: Any
) -> Any:
    """``@task_group``: calling the function builds its tasks inside a :class:`TaskGroup`.

    The call returns what the function returns (e.g. the result of its last ``@task``),
    or the group when the function returns nothing.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def build(*args: Any, **kwargs: Any) -> Any:
            with TaskGroup(group_id or f.__name__, **group_kwargs) as group:
                out = f(*args, **kwargs)
            return group if out is None else out

        return build

    return wrap if fn is None else wrap(fn)
