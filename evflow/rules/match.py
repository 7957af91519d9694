"""Matching events and taking values from them: globs on type/source/subject, filters and
operators on data fields, and parameter paths (``{data.x.y}``). Never ``eval``, never a
template engine."""

from __future__ import annotations

import copy
import enum
import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import orjson

from ..events import Event
from ..frozen import record

_ROOTS = ("id", "type", "source", "subject", "time", "dedup_key", "data")
_GLOB_KEYS = ("type", "source", "subject")
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "glob", "exists")
# A string shaped like a reference: "{name}" or "{name.rest}" with no spaces or braces inside.
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[^{}\s]*)?)\}")


class _Missing(enum.Enum):
    MISSING = 0


MISSING = _Missing.MISSING


class Unmapped(Exception):
    """Internal: an event lacks a value the rule needs."""


@record
class _Path:
    text: str
    root: str
    segments: tuple[str, ...]


def parse_path(text: str) -> _Path | None:
    root, dot, rest = text.partition(".")
    if root not in _ROOTS:
        return None
    if not dot:
        return _Path(text, root, ())
    segments = tuple(rest.split("."))
    if root != "data" or "" in segments:
        return None
    return _Path(text, root, segments)


def resolve(path: _Path, event: Event) -> Any:
    """The value at ``path`` in ``event``, or ``MISSING``."""
    if path.root == "time":
        return event.time.isoformat()
    if path.root != "data":
        return getattr(event, path.root)
    current: Any = event.data
    for seg in path.segments:
        if isinstance(current, Mapping):
            if seg not in current:
                return MISSING
            current = current[seg]
        elif isinstance(current, list | tuple) and seg.isascii() and seg.isdigit():
            index = int(seg)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def copy_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return copy.deepcopy(value)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_eq(x: Any, y: Any) -> bool:
    """Equality as JSON sees it: ``true`` is not ``1``."""
    if isinstance(x, bool) or isinstance(y, bool):
        return isinstance(x, bool) and isinstance(y, bool) and x == y
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        return x.keys() == y.keys() and all(_json_eq(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return len(x) == len(y) and all(_json_eq(a, b) for a, b in zip(x, y, strict=True))
    return bool(x == y)


class Glob:
    """One or more fnmatch patterns, any of which may match."""

    __slots__ = ("_regexes", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._regexes = tuple(re.compile(fnmatch.translate(p)) for p in self.patterns)

    def __call__(self, value: str) -> bool:
        return any(r.match(value) for r in self._regexes)

    def describe(self) -> str:
        if len(self.patterns) == 1:
            return repr(self.patterns[0])
        return "any of " + ", ".join(repr(p) for p in self.patterns)


_Check: TypeAlias = Callable[[Event], str | None]
_ValueCheck: TypeAlias = Callable[[Any], str | None]

_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _comparable(value: Any, operand: Any) -> bool:
    return (_is_number(value) and _is_number(operand)) or (
        isinstance(value, str) and isinstance(operand, str)
    )


def _operator_check(path: str, op: str, operand: Any) -> _ValueCheck:
    """A check of one operator on a resolved value (which may be ``MISSING``)."""
    if op == "exists":

        def exists(value: Any) -> str | None:
            if operand and value is MISSING:
                return f"{path} is missing"
            if not operand and value is not MISSING:
                return f"{path} exists ({short(value)})"
            return None

        return exists

    def check(value: Any) -> str | None:
        if value is MISSING:
            return f"{path} is missing"
        shown = f"{path}={short(value)}"
        if op == "eq":
            return None if _json_eq(value, operand) else f"{shown} is not {short(operand)}"
        if op == "ne":
            return f"{shown} equals {short(operand)}" if _json_eq(value, operand) else None
        if op == "in":
            found = any(_json_eq(value, o) for o in operand)
            return None if found else f"{shown} is not one of {short(operand)}"
        if op == "not_in":
            found = any(_json_eq(value, o) for o in operand)
            return f"{shown} is one of {short(operand)}" if found else None
        if op == "glob":
            if not isinstance(value, str):
                return f"{shown} is not a string"
            glob: Glob = operand
            return None if glob(value) else f"{shown} does not match {glob.describe()}"
        # gt ge lt le
        if not _comparable(value, operand):
            return f"{shown} cannot be compared with {short(operand)}"
        ok = {
            "gt": value > operand,
            "ge": value >= operand,
            "lt": value < operand,
            "le": value <= operand,
        }[op]
        return None if ok else f"{shown} is not {_SYMBOLS[op]} {short(operand)}"

    return check


def event_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time.isoformat(),
        "data": copy_value(event.data),
    }


def key_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
