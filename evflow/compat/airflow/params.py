"""Airflow's ``Param``: a DAG parameter's default with a JSON-schema-like description.

evflow keeps the default (a run may override it) and checks the simple ``type`` keywords
(``string``, ``integer``, ``number``, ``boolean``, ``array``, ``object``, ``null``) of the
default at load; other schema keywords are accepted and not enforced.
"""

from __future__ import annotations

from typing import Any

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location

__all__ = ["Param", "param_default"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
    "null": (type(None),),
}


class Param:
    """``Param(default, type=..., description=...)`` in ``DAG(params={...})``."""

    def __init__(self, default: Any = None, description: str | None = None, **schema: Any) -> None:
        self.value = default
        self.description = description
        self.schema = schema
        kinds = schema.get("type")
        names = [kinds] if isinstance(kinds, str) else list(kinds or [])
        unknown = [n for n in names if n not in _TYPES]
        if unknown:
            raise FlowDefinitionError(
                f"Param type {unknown[0]!r} is not a JSON schema type; use one of "
                f"{', '.join(_TYPES)}",
                location=caller_location(),
            )
        if names and default is not None:
            allowed = tuple(t for n in names for t in _TYPES[n])
            wrong_bool = isinstance(default, bool) and "boolean" not in names
            if not isinstance(default, allowed) or wrong_bool:
                raise FlowDefinitionError(
                    f"Param default {default!r} is not of type {' or '.join(names)}",
                    location=caller_location(),
                )

    def __repr__(self) -> str:
        return f"Param({self.value!r})"


def param_default(value: Any) -> Any:
    """A DAG param's default: a :class:`Param`'s value, or the plain value."""
    return value.value if isinstance(value, Param) else value
