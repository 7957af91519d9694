"""Ordering tasks: ``>>``/``<<`` between operators, XComArgs, task groups and lists;
``chain()``, ``cross_downstream()`` and edge ``Label``s."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from ...errors import FlowDefinitionError
from ...flows import Node
from ...flows.tasks import caller_location

__all__ = ["Label", "chain", "cross_downstream", "leaves", "link", "roots"]


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple | set):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _nodes(value: Any, end: str) -> list[Node]:
    out: list[Node] = []
    for item in _flatten(value):
        operator = getattr(item, "operator", None)  # an XComArg
        if isinstance(operator, Node):
            item = operator
        if isinstance(item, Node):
            out.append(item)
        elif hasattr(item, "group_id"):  # a TaskGroup: its first or last tasks
            out.extend(item.roots() if end == "roots" else item.leaves())
        else:
            raise FlowDefinitionError(
                f"cannot order tasks against {item!r}: expected a task, a task group, the "
                "result of a @task, or a list of them",
                location=caller_location(),
            )
    return out


def roots(value: Any) -> list[Node]:
    """The tasks that an edge *into* ``value`` reaches."""
    return _nodes(value, "roots")


def leaves(value: Any) -> list[Node]:
    """The tasks that an edge *out of* ``value`` leaves from."""
    return _nodes(value, "leaves")


def link(up: Any, down: Any) -> None:
    """``up >> down`` for any mix of tasks, XComArgs, task groups and lists."""
    for u in leaves(up):
        for d in roots(down):
            u.flow.add_edge(u, d)


class Label:
    """An edge label (``a >> Label("yes") >> b``): shown in Airflow's UI, a plain edge here."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._from: list[Any] = []

    def __repr__(self) -> str:
        return f"Label({self.label!r})"

    def after(self, up: Any) -> Label:
        bound = Label(self.label)
        bound._from = [*self._from, up]
        return bound

    def __rrshift__(self, other: Any) -> Label:
        return self.after(other)

    def __rshift__(self, other: Any) -> Any:
        for up in self._from:
            link(up, other)
        return other


def chain(*tasks: Any) -> None:
    """``chain(a, [b, c], d)`` is ``a >> [b, c] >> d``; two adjacent lists pair up one to one."""
    for up, down in itertools.pairwise(tasks):
        if isinstance(up, list | tuple) and isinstance(down, list | tuple):
            if len(up) != len(down):
                raise FlowDefinitionError(
                    f"chain(): adjacent lists must have the same length, not {len(up)} "
                    f"and {len(down)}",
                    location=caller_location(),
                )
            pairs: Iterable[tuple[Any, Any]] = zip(up, down, strict=True)
        else:
            pairs = [(up, down)]
        for u, d in pairs:
            link(u, d)


def cross_downstream(from_tasks: Sequence[Any], to_tasks: Any) -> None:
    """Every task of ``from_tasks`` runs before every task of ``to_tasks``."""
    link(list(from_tasks), to_tasks)
