"""Mapping: ``Op.partial(...).expand(arg=[...])`` makes one task instance per item.

evflow's own mapping runs the instances; each one gets its items set on a copy of the
operator (the attribute of the same name, or for ``@task`` the call's keyword). Items are
data: they are never rendered as templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location
from .context import RETURN_KEY
from .xcom import XComArg

if TYPE_CHECKING:
    from .base import BaseOperator

__all__ = ["MAP_PREFIX", "OperatorPartial", "map_source"]

#: The keyword through which one instance of a mapped task gets its item.
MAP_PREFIX = "_evflow_map_"


def map_source(value: Any, where: str, arg: str) -> Any:
    """The source of one mapped argument: a list, or the task whose result is the list."""
    if isinstance(value, XComArg):
        if value.key != RETURN_KEY:
            raise FlowDefinitionError(
                f"{where}: .expand({arg}=...) maps over one key of a result; map over the "
                "whole result of a task that returns the list",
                location=caller_location(),
            )
        return value.operator
    if isinstance(value, list | tuple):
        return list(value)
    raise FlowDefinitionError(
        f"{where}: .expand({arg}=...) needs a list or the result of a task, not {value!r}",
        location=caller_location(),
    )


class OperatorPartial:
    """``Op.partial(task_id=..., ...)``: call ``.expand(arg=[...])`` to make the mapped task."""

    def __init__(
        self, cls: type[BaseOperator], kwargs: dict[str, Any], *, arguments: bool = True
    ) -> None:
        self.cls = cls
        self.kwargs = kwargs
        self.arguments = arguments  # mapped names are constructor arguments

    def expand(self, **mapped: Any) -> XComArg:
        """The mapped task: one instance per item (mapped arguments zipped, equal lengths)."""
        if not mapped:
            raise FlowDefinitionError(
                f"{self.cls.__name__}.partial(...).expand() needs at least one argument to map",
                location=caller_location(),
            )
        both = sorted(set(mapped) & set(self.kwargs))
        if both:
            raise FlowDefinitionError(
                f"{self.cls.__name__}: {', '.join(both)} given to both partial() and expand()",
                location=caller_location(),
            )
        op = self.cls.__new__(self.cls)
        op._evflow_mapped = dict(mapped)  # type: ignore[attr-defined]
        placeholders: dict[str, Any] = {
            k: [] if k == "op_args" else None for k in mapped if self.arguments
        }
        op.__init__(**self.kwargs, **placeholders)  # type: ignore[misc]
        return XComArg(op)
