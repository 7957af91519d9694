"""Rules: which events start which flow runs, and with which parameters.

This module is pure logic: no I/O, no asyncio, no clock. The engine keeps one
:class:`RuleState` per rule (or one :class:`RuleSet` for all of them), offers it each event with
the current time, calls :meth:`RuleState.due` when :meth:`RuleState.next_deadline` comes, and acts
on the returned decisions (creating runs durably, writing the audit trail).

Matching
    ``on`` is a sensor (anything with a ``source`` string: events whose ``source`` equals it), a
    glob on the event type (``"order.*"``, fnmatch-style and case-sensitive; ``*`` also crosses
    dots), or None (every event). ``match`` adds globs on ``type``/``source``/``subject`` (a list
    means any of) and filters on ``data.<path>`` fields (list indices allowed: ``data.items.0``):
    a scalar means equality, a list means membership, a dict holds operators (``eq ne gt ge lt
    le in not_in glob exists``, all must hold). A dict is always read as operators; to compare
    with a dict value use ``{"eq": {...}}``. A missing field fails every filter except
    ``exists: false``; a field that is present with a JSON null exists. ``true`` never equals
    ``1``.

Parameters
    ``params`` maps a parameter name to a value. A string that is exactly ``"{path}"``, with path
    one of ``id type source subject time dedup_key data data.<dotted path>``, takes that value
    from the event (JSON types kept, ``time`` as an ISO 8601 string). Every other value is a
    literal, copied as is: nothing is evaluated and nothing is formatted, so ``"x-{data.a}"`` is
    the literal string ``x-{data.a}``, and so are values nested in lists or dicts. A string shaped
    like a reference (``"{name}"`` or ``"{name.more}"``) whose name is not a known root is refused
    when the rule is built, to catch typos. In a correlate rule, references name the side,
    ``"{a.data.amount}"`` or ``"{b.id}"``, and ``"{key}"`` is the correlation key's value.

Policies (at most one per rule)
    ``debounce_s``: one run ``debounce_s`` after the last of a burst, params from the last event.
    ``batch``: one run per ``count`` events or per ``window_s`` from the first event of a batch.
    ``correlate``: one run when an ``a`` event and a ``b`` event with the same key arrive within
    ``window_s`` of each other; a lone event times out after ``window_s``.

Time is always the ``now`` passed in (the engine passes the arrival time), never ``event.time``.
"""

from __future__ import annotations

import copy
import enum
import fnmatch
import hashlib
import heapq
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeAlias

import orjson

from .errors import RuleError
from .events import Event

__all__ = [
    "Batch",
    "Correlate",
    "CorrelationTimedOut",
    "Decision",
    "Held",
    "NotMapped",
    "NotMatched",
    "PolicyAction",
    "Rule",
    "RuleSet",
    "RuleState",
    "RunRequested",
    "TimeoutAction",
    "WhenRunning",
    "policy_action",
    "run_key",
]

WhenRunning: TypeAlias = Literal["queue", "skip", "replace"]
PolicyAction: TypeAlias = Literal["start", "skip", "replace"]
TimeoutAction: TypeAlias = Literal["ignore", "alert", "run"]

_WHEN_RUNNING = ("queue", "skip", "replace")
_ON_TIMEOUT = ("ignore", "alert", "run")
_ROOTS = ("id", "type", "source", "subject", "time", "dedup_key", "data")
_GLOB_KEYS = ("type", "source", "subject")
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "glob", "exists")
# A string shaped like a reference: "{name}" or "{name.rest}" with no spaces or braces inside.
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[^{}\s]*)?)\}")


class _HasSource(Protocol):
    @property
    def source(self) -> str: ...


class _HasName(Protocol):
    @property
    def name(self) -> str: ...


class _Missing(enum.Enum):
    MISSING = 0


_MISSING = _Missing.MISSING


class _Unmapped(Exception):
    """Internal: an event lacks a value the rule needs."""


# -- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRequested:
    """Start a run of ``flow`` with ``params``; ``key`` is its idempotency key."""

    rule: str
    flow: str
    params: dict[str, Any]
    event_ids: tuple[str, ...]
    key: str


@dataclass(frozen=True, slots=True)
class NotMatched:
    """The event is not for this rule; ``reason`` says which filter failed."""

    rule: str
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotMapped:
    """The event matched but lacks a value the rule needs (a parameter or correlation key)."""

    rule: str
    event_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Held:
    """The event waits inside a debounce, batch or correlation; the engine keeps it unprocessed."""

    rule: str
    event_id: str
    why: str


@dataclass(frozen=True, slots=True)
class CorrelationTimedOut:
    """A correlated event's partner did not come within the window.

    For ``action="run"`` a :class:`RunRequested` for the same event follows in the same list.
    """

    rule: str
    event_ids: tuple[str, ...]
    key_value: Any
    action: TimeoutAction
    reason: str


Decision: TypeAlias = RunRequested | NotMatched | NotMapped | Held | CorrelationTimedOut


def run_key(rule_name: str, event_ids: Sequence[str]) -> str:
    """The idempotency key of a run started by ``rule_name`` for ``event_ids``.

    ``rule:event_id`` for one event; for several, their count and a hash of the sorted ids, so
    the key does not depend on arrival order.
    """
    if not event_ids:
        raise RuleError(f"rule {rule_name!r}: a run needs at least one event")
    if len(event_ids) == 1:
        return f"{rule_name}:{event_ids[0]}"
    digest = hashlib.sha256("\n".join(sorted(event_ids)).encode()).hexdigest()[:24]
    return f"{rule_name}:{len(event_ids)}:{digest}"


def policy_action(when_running: str, active_runs: int) -> PolicyAction:
    """What to do with a new run when the flow has ``active_runs`` active runs.

    ``queue`` always starts (the run waits for a free slot), ``skip`` drops it and ``replace``
    cancels the active runs first, each only when a run is active.
    """
    if when_running not in _WHEN_RUNNING:
        raise RuleError(
            f"when_running must be one of {', '.join(_WHEN_RUNNING)}, not {when_running!r}"
        )
    if active_runs < 0:
        raise RuleError(f"active_runs must be >= 0, not {active_runs}")
    if active_runs == 0 or when_running == "queue":
        return "start"
    return "skip" if when_running == "skip" else "replace"


# -- policies -----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Batch:
    """Collect ``count`` events, or the events of ``window_s`` seconds from the first, into one run.

    The run's parameter ``param`` is the list of each event's mapped params (or of event dicts
    ``{id, type, source, subject, time, data}`` when the rule has no ``params``).
    """

    count: int | None = None
    window_s: float | None = None
    param: str = "events"

    def __post_init__(self) -> None:
        if self.count is None and self.window_s is None:
            raise RuleError("batch needs a count, a window_s or both")
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1
        ):
            raise RuleError(f"batch count must be an integer >= 1, not {self.count!r}")
        if self.window_s is not None and (not _is_number(self.window_s) or self.window_s <= 0):
            raise RuleError(f"batch window_s must be a number > 0, not {self.window_s!r}")
        if not isinstance(self.param, str) or not self.param.isidentifier():
            raise RuleError(f"batch param must be an identifier, not {self.param!r}")


@dataclass(frozen=True, slots=True)
class Correlate:
    """Pair an ``a`` event with a ``b`` event (type globs) whose ``key`` paths are equal.

    The pair must arrive within ``window_s`` of each other. A lone event times out after
    ``window_s``: ``on_timeout`` says whether that is ignored, alerted, or runs with only the
    side present (the other side's params are None).
    """

    a: str
    b: str
    key: str
    window_s: float
    on_timeout: TimeoutAction = "ignore"

    def __post_init__(self) -> None:
        for side in ("a", "b"):
            glob = getattr(self, side)
            if not isinstance(glob, str) or not glob:
                raise RuleError(f"correlate {side} must be a non-empty type glob, not {glob!r}")
        if not isinstance(self.key, str) or _parse_path(self.key) is None:
            raise RuleError(
                f"correlate key {self.key!r} is not a path ({', '.join(_ROOTS)} or data.<path>)"
            )
        if not _is_number(self.window_s) or self.window_s <= 0:
            raise RuleError(f"correlate window_s must be a number > 0, not {self.window_s!r}")
        if self.on_timeout not in _ON_TIMEOUT:
            raise RuleError(
                f"correlate on_timeout must be one of {', '.join(_ON_TIMEOUT)}, "
                f"not {self.on_timeout!r}"
            )


# -- paths, globs and filters -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    text: str
    root: str
    segments: tuple[str, ...]


def _parse_path(text: str) -> _Path | None:
    root, dot, rest = text.partition(".")
    if root not in _ROOTS:
        return None
    if not dot:
        return _Path(text, root, ())
    segments = tuple(rest.split("."))
    if root != "data" or "" in segments:
        return None
    return _Path(text, root, segments)


def _resolve(path: _Path, event: Event) -> Any:
    """The value at ``path`` in ``event``, or ``_MISSING``."""
    if path.root == "time":
        return event.time.isoformat()
    if path.root != "data":
        return getattr(event, path.root)
    current: Any = event.data
    for seg in path.segments:
        if isinstance(current, Mapping):
            if seg not in current:
                return _MISSING
            current = current[seg]
        elif isinstance(current, list | tuple) and seg.isascii() and seg.isdigit():
            index = int(seg)
            if index >= len(current):
                return _MISSING
            current = current[index]
        else:
            return _MISSING
    return current


def _copy_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return copy.deepcopy(value)


def _short(value: Any) -> str:
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


class _Glob:
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
    """A check of one operator on a resolved value (which may be ``_MISSING``)."""
    if op == "exists":

        def exists(value: Any) -> str | None:
            if operand and value is _MISSING:
                return f"{path} is missing"
            if not operand and value is not _MISSING:
                return f"{path} exists ({_short(value)})"
            return None

        return exists

    def check(value: Any) -> str | None:
        if value is _MISSING:
            return f"{path} is missing"
        shown = f"{path}={_short(value)}"
        if op == "eq":
            return None if _json_eq(value, operand) else f"{shown} is not {_short(operand)}"
        if op == "ne":
            return f"{shown} equals {_short(operand)}" if _json_eq(value, operand) else None
        if op == "in":
            found = any(_json_eq(value, o) for o in operand)
            return None if found else f"{shown} is not one of {_short(operand)}"
        if op == "not_in":
            found = any(_json_eq(value, o) for o in operand)
            return f"{shown} is one of {_short(operand)}" if found else None
        if op == "glob":
            if not isinstance(value, str):
                return f"{shown} is not a string"
            glob: _Glob = operand
            return None if glob(value) else f"{shown} does not match {glob.describe()}"
        # gt ge lt le
        if not _comparable(value, operand):
            return f"{shown} cannot be compared with {_short(operand)}"
        ok = {
            "gt": value > operand,
            "ge": value >= operand,
            "lt": value < operand,
            "le": value <= operand,
        }[op]
        return None if ok else f"{shown} is not {_SYMBOLS[op]} {_short(operand)}"

    return check


# -- the rule -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ParamSpec:
    name: str
    kind: Literal["literal", "ref", "key"]
    side: Literal["", "a", "b"]
    path: _Path | None
    value: Any


class Rule:
    """Which events start runs of a flow, with which params, under which policy.

    See the module docstring for ``on``, ``match``, ``params`` and the policies. A rule is
    bound to a flow and named by :meth:`bind` (the engine calls it when the rule is added); run
    idempotency keys use the name, so give rules explicit names where they may be reordered.
    Treat a rule as immutable: :meth:`bind` and :meth:`with_name` return copies.
    """

    __slots__ = (
        "_checks",
        "_specs",
        "batch",
        "correlate",
        "debounce_s",
        "flow",
        "match",
        "name",
        "on",
        "params",
        "priority",
        "when_running",
    )

    on: _HasSource | str | None
    match: dict[str, Any]
    params: dict[str, Any] | None
    flow: str | None
    name: str | None
    debounce_s: float | None
    batch: Batch | None
    correlate: Correlate | None
    when_running: WhenRunning
    priority: int
    _checks: tuple[_Check, ...]
    _specs: tuple[_ParamSpec, ...]

    def __init__(
        self,
        on: _HasSource | str | None = None,
        *,
        match: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        flow: str | _HasName | None = None,
        name: str | None = None,
        debounce_s: float | None = None,
        batch: Batch | None = None,
        correlate: Correlate | None = None,
        when_running: WhenRunning = "queue",
        priority: int = 0,
    ) -> None:
        self.on = on
        self.name = None
        self.flow = None
        self.match = {}
        self.params = None
        if name is not None:
            self.name = self._check_name(name)
        if flow is not None:
            self.flow = self._flow_name(flow)
        if match is not None and not isinstance(match, Mapping):
            raise RuleError(f"{self._describe()}: match must be a dict, not {type(match).__name__}")
        if params is not None and not isinstance(params, Mapping):
            raise RuleError(
                f"{self._describe()}: params must be a dict, not {type(params).__name__}"
            )
        self.match = dict(match or {})
        self.params = None if params is None else dict(params)
        if debounce_s is not None and (not _is_number(debounce_s) or debounce_s <= 0):
            raise RuleError(
                f"{self._describe()}: debounce_s must be a number > 0, not {debounce_s!r}"
            )
        if batch is not None and not isinstance(batch, Batch):
            raise RuleError(f"{self._describe()}: batch must be a Batch, not {batch!r}")
        if correlate is not None and not isinstance(correlate, Correlate):
            raise RuleError(f"{self._describe()}: correlate must be a Correlate, not {correlate!r}")
        chosen = [
            n
            for n, v in (("debounce_s", debounce_s), ("batch", batch), ("correlate", correlate))
            if v is not None
        ]
        if len(chosen) > 1:
            raise RuleError(
                f"{self._describe()}: choose one of debounce_s, batch and correlate, "
                f"not {' and '.join(chosen)}"
            )
        self.debounce_s = debounce_s
        self.batch = batch
        self.correlate = correlate
        if when_running not in _WHEN_RUNNING:
            raise RuleError(
                f"{self._describe()}: when_running must be one of "
                f"{', '.join(_WHEN_RUNNING)}, not {when_running!r}"
            )
        self.when_running = when_running
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise RuleError(f"{self._describe()}: priority must be an integer, not {priority!r}")
        self.priority = priority
        self._checks = (*self._compile_on(), *self._compile_match())
        self._specs = self._compile_params()

    # -- naming and binding -----------------------------------------------------------------

    def _on_label(self) -> str:
        if self.on is None:
            return "*"
        if isinstance(self.on, str):
            return self.on
        sensor_name = getattr(self.on, "name", None)
        if isinstance(sensor_name, str) and sensor_name:
            return sensor_name
        source = getattr(self.on, "source", None)
        return source if isinstance(source, str) else repr(self.on)

    def _describe(self) -> str:
        if self.name is not None:
            return f"rule {self.name!r}"
        flow = f" of flow {self.flow!r}" if self.flow is not None else ""
        return f"rule on {self._on_label()!r}{flow}"

    def _check_name(self, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise RuleError(f"{self._describe()}: name must be a non-empty string, not {name!r}")
        return name

    def _flow_name(self, flow: Any) -> str:
        fname = flow if isinstance(flow, str) else getattr(flow, "name", None)
        if not isinstance(fname, str) or not fname:
            raise RuleError(
                f"{self._describe()}: flow must be a flow name or have a .name, not {flow!r}"
            )
        return fname

    def _copy(self) -> Rule:
        new = object.__new__(Rule)
        for slot in Rule.__slots__:
            object.__setattr__(new, slot, getattr(self, slot))
        return new

    def bind(self, flow: str | _HasName, *, index: int = 0) -> Rule:
        """A copy bound to ``flow``; an unnamed rule is named ``flow:on#index``.

        ``index`` is the rule's position among its flow's rules. Raises :class:`RuleError` if the
        rule is already bound to another flow.
        """
        fname = self._flow_name(flow)
        if self.flow is not None and self.flow != fname:
            raise RuleError(f"{self._describe()} belongs to flow {self.flow!r}, not {fname!r}")
        new = self._copy()
        new.flow = fname
        if new.name is None:
            new.name = f"{fname}:{self._on_label()}#{index}"
        return new

    def with_name(self, name: str) -> Rule:
        """A copy named ``name``."""
        new = self._copy()
        new.name = self._check_name(name)
        return new

    def __repr__(self) -> str:
        policy = ""
        if self.debounce_s is not None:
            policy = f", debounce_s={self.debounce_s!r}"
        elif self.batch is not None:
            policy = f", batch={self.batch!r}"
        elif self.correlate is not None:
            policy = f", correlate={self.correlate!r}"
        return (
            f"Rule(on={self._on_label()!r}, flow={self.flow!r}, name={self.name!r}"
            f"{policy}, when_running={self.when_running!r})"
        )

    # -- compilation ------------------------------------------------------------------------

    def _compile_on(self) -> list[_Check]:
        on = self.on
        if on is None:
            return []
        if isinstance(on, str):
            glob = _Glob([on])

            def on_type(event: Event) -> str | None:
                if glob(event.type):
                    return None
                return f"type {event.type!r} does not match {glob.describe()}"

            return [on_type]
        source = getattr(on, "source", None)
        if not isinstance(source, str):
            raise RuleError(
                f"{self._describe()}: on must be a sensor (with a .source string), "
                f"an event type glob or None, not {on!r}"
            )

        def on_source(event: Event) -> str | None:
            if event.source == source:
                return None
            return f"source {event.source!r} is not {source!r}"

        return [on_source]

    def _globs(self, key: str, value: Any) -> _Glob:
        patterns = [value] if isinstance(value, str) else value
        if (
            not isinstance(patterns, list | tuple)
            or not patterns
            or not all(isinstance(p, str) for p in patterns)
        ):
            raise RuleError(
                f"{self._describe()}: match key {key!r} needs a glob string or a "
                f"non-empty list of them, not {_short(value)}"
            )
        return _Glob(patterns)

    def _compile_match(self) -> list[_Check]:
        checks: list[_Check] = []
        for key, spec in self.match.items():
            if key in _GLOB_KEYS:
                checks.append(self._field_check(key, self._globs(key, spec)))
                continue
            path = _parse_path(key) if isinstance(key, str) else None
            if path is None or path.root != "data" or not path.segments:
                raise RuleError(
                    f"{self._describe()}: unknown match key {key!r} "
                    f"(expected type, source, subject or data.<path>)"
                )
            checks.append(self._data_check(path, self._operators(key, spec)))
        return checks

    @staticmethod
    def _field_check(field_name: str, glob: _Glob) -> _Check:
        def check(event: Event) -> str | None:
            value = getattr(event, field_name)
            if value is None:
                return f"{field_name} is missing, so does not match {glob.describe()}"
            if glob(value):
                return None
            return f"{field_name} {value!r} does not match {glob.describe()}"

        return check

    @staticmethod
    def _data_check(path: _Path, value_checks: list[_ValueCheck]) -> _Check:
        def check(event: Event) -> str | None:
            value = _resolve(path, event)
            for value_check in value_checks:
                reason = value_check(value)
                if reason is not None:
                    return reason
            return None

        return check

    def _operators(self, key: str, spec: Any) -> list[_ValueCheck]:
        if isinstance(spec, list | tuple):
            return [_operator_check(key, "in", list(spec))]
        if not isinstance(spec, Mapping):
            return [_operator_check(key, "eq", spec)]
        if not spec:
            raise RuleError(
                f"{self._describe()}: match key {key!r} has an empty operator dict "
                f"(to compare with {{}} use {{'eq': {{}}}})"
            )
        out: list[_ValueCheck] = []
        for op, operand in spec.items():
            where = f"{self._describe()}: match key {key!r} operator {op!r}"
            if op not in _OPERATORS:
                raise RuleError(
                    f"{self._describe()}: match key {key!r} has unknown operator "
                    f"{op!r} (expected one of {', '.join(_OPERATORS)})"
                )
            if op in ("in", "not_in"):
                if not isinstance(operand, list | tuple):
                    raise RuleError(f"{where} needs a list, not {_short(operand)}")
                operand = list(operand)
            elif op == "glob":
                operand = self._globs(f"{key}.glob", operand)
            elif op == "exists":
                if not isinstance(operand, bool):
                    raise RuleError(f"{where} needs true or false, not {_short(operand)}")
            elif op in _SYMBOLS and not (_is_number(operand) or isinstance(operand, str)):
                raise RuleError(f"{where} needs a number or a string, not {_short(operand)}")
            out.append(_operator_check(key, op, operand))
        return out

    def _compile_params(self) -> tuple[_ParamSpec, ...]:
        if self.params is None:
            return ()
        specs: list[_ParamSpec] = []
        correlated = self.correlate is not None
        roots = ("key", "a.<path>", "b.<path>") if correlated else (*_ROOTS[:-1], "data.<path>")
        for pname, value in self.params.items():
            if not isinstance(pname, str) or not pname:
                raise RuleError(
                    f"{self._describe()}: param names must be non-empty strings, not {pname!r}"
                )
            ref = _REF.fullmatch(value) if isinstance(value, str) else None
            if ref is None:
                specs.append(_ParamSpec(pname, "literal", "", None, value))
                continue
            text = ref.group(1)
            side: Literal["", "a", "b"] = ""
            if correlated and text == "key":
                specs.append(_ParamSpec(pname, "key", "", None, None))
                continue
            if correlated and text[:2] in ("a.", "b."):
                side = "a" if text[0] == "a" else "b"
                text = text[2:]
            path = _parse_path(text)
            if path is None or (correlated and not side):
                raise RuleError(
                    f"{self._describe()}: param {pname!r} refers to unknown path "
                    f"{value!r} (expected {{{'}, {'.join(roots)}}})"
                )
            specs.append(_ParamSpec(pname, "ref", side, path, None))
        return tuple(specs)

    # -- evaluation -------------------------------------------------------------------------

    def mismatch(self, event: Event) -> str | None:
        """Why ``event`` does not match ``on`` and ``match``, or None if it does."""
        for check in self._checks:
            reason = check(event)
            if reason is not None:
                return reason
        return None

    def _map_refs(self, event: Event, side: Literal["", "a", "b"]) -> dict[str, Any]:
        """The values of ``side``'s references in ``event``; raises ``_Unmapped``."""
        out: dict[str, Any] = {}
        for spec in self._specs:
            if spec.kind != "ref" or spec.side != side or spec.path is None:
                continue
            value = _resolve(spec.path, event)
            if value is _MISSING:
                prefix = f"{side}." if side else ""
                raise _Unmapped(
                    f"{self._describe()}: param {spec.name!r} needs "
                    f"{prefix}{spec.path.text}, which the event does not have"
                )
            out[spec.name] = _copy_value(value)
        return out

    def _complete(
        self, mapped: Mapping[str, dict[str, Any] | None], key: Any = None
    ) -> dict[str, Any]:
        """Params from literals, mapped references per side and the correlation key."""
        out: dict[str, Any] = {}
        for spec in self._specs:
            if spec.kind == "literal":
                out[spec.name] = _copy_value(spec.value)
            elif spec.kind == "key":
                out[spec.name] = _copy_value(key)
            else:
                side_values = mapped.get(spec.side)
                out[spec.name] = None if side_values is None else side_values[spec.name]
        return out

    def map_params(self, event: Event) -> dict[str, Any]:
        """The params for ``event`` (not for correlate rules); raises :class:`RuleError`."""
        if self.correlate is not None:
            raise RuleError(f"{self._describe()}: a correlate rule maps params from two events")
        try:
            return self._complete({"": self._map_refs(event, "")})
        except _Unmapped as exc:
            raise RuleError(str(exc)) from None


def _event_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "subject": event.subject,
        "time": event.time.isoformat(),
        "data": _copy_value(event.data),
    }


def _key_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return repr(value)


# -- state --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Waiter:
    event_id: str
    side: Literal["a", "b"]
    key_value: Any
    key_text: str
    item: Any  # this side's mapped references, or the event dict when the rule has no params
    deadline: datetime


class RuleState:
    """The in-memory state of one bound rule: offer events, fire what is due.

    ``remember`` bounds how many released event ids are remembered: re-offering one of them
    returns the decisions it was released with (same idempotency key) instead of counting it
    again. Re-offering a held event only answers :class:`Held`.
    """

    def __init__(self, rule: Rule, *, remember: int = 10_000) -> None:
        if rule.name is None or rule.flow is None:
            raise RuleError(f"{rule._describe()} is not bound to a flow; call rule.bind(flow)")
        self.rule = rule
        self._name: str = rule.name
        self._flow: str = rule.flow
        self._remember = remember
        self._released: OrderedDict[str, tuple[Decision, ...]] = OrderedDict()
        self._held: set[str] = set()
        # debounce
        self._deb_ids: list[str] = []
        self._deb_params: dict[str, Any] = {}
        self._deb_deadline: datetime | None = None
        # batch
        self._batch: list[tuple[str, Any]] = []
        self._batch_deadline: datetime | None = None
        # correlate
        self._waiters: dict[str, _Waiter] = {}
        self._queues: dict[tuple[str, str], deque[str]] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = 0
        corr = rule.correlate
        self._side_globs: tuple[tuple[Literal["a", "b"], _Glob], ...] = (
            () if corr is None else (("a", _Glob([corr.a])), ("b", _Glob([corr.b])))
        )

    # -- public -----------------------------------------------------------------------------

    def offer(self, event: Event, now: datetime) -> list[Decision]:
        """Decide on ``event`` arriving at ``now``.

        Whatever is due at ``now`` fires first and comes first in the list, so an event never
        joins a window that has already closed.
        """
        out = self.due(now)
        eid = event.id
        if eid in self._released:
            self._released.move_to_end(eid)
            out.extend(d for d in self._released[eid] if not any(d is o for o in out))
            return out
        if eid in self._held:
            out.append(Held(self._name, eid, f"already held: {self._held_why(eid)}"))
            return out
        reason = self.rule.mismatch(event)
        if reason is not None:
            out.append(NotMatched(self._name, eid, reason))
            return out
        try:
            if self.rule.debounce_s is not None:
                out.append(self._offer_debounce(event, now, self.rule.debounce_s))
            elif self.rule.batch is not None:
                out.append(self._offer_batch(event, now, self.rule.batch))
            elif self.rule.correlate is not None:
                out.append(self._offer_correlate(event, now, self.rule.correlate))
            else:
                params = self.rule._complete({"": self.rule._map_refs(event, "")})
                out.append(self._run(params, (eid,)))
        except _Unmapped as exc:
            out.append(NotMapped(self._name, eid, str(exc)))
        return out

    def due(self, now: datetime) -> list[Decision]:
        """Fire every debounce, batch window and correlation timeout due at or before ``now``."""
        fired: list[tuple[datetime, list[Decision]]] = []
        if self._deb_deadline is not None and self._deb_deadline <= now:
            fired.append((self._deb_deadline, [self._fire_debounce()]))
        if self._batch_deadline is not None and self._batch_deadline <= now:
            fired.append((self._batch_deadline, [self._fire_batch()]))
        while self._heap and self._heap[0][0] <= now:
            deadline, _, eid = heapq.heappop(self._heap)
            waiter = self._waiters.pop(eid, None)
            if waiter is not None:
                fired.append((deadline, self._time_out(waiter)))
        fired.sort(key=lambda item: item[0])
        return [d for _, decisions in fired for d in decisions]

    def next_deadline(self) -> datetime | None:
        """When :meth:`due` next has something to fire, or None."""
        while self._heap and self._heap[0][2] not in self._waiters:
            heapq.heappop(self._heap)
        candidates = [
            self._deb_deadline,
            self._batch_deadline,
            self._heap[0][0] if self._heap else None,
        ]
        present = [c for c in candidates if c is not None]
        return min(present) if present else None

    def held_event_ids(self) -> set[str]:
        """Ids of events waiting in a debounce, batch or correlation (not yet released)."""
        return set(self._held)

    # -- helpers ----------------------------------------------------------------------------

    def _run(self, params: dict[str, Any], event_ids: tuple[str, ...]) -> RunRequested:
        return RunRequested(
            self._name, self._flow, params, event_ids, run_key(self._name, event_ids)
        )

    def _release(self, decisions: Sequence[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, RunRequested | CorrelationTimedOut):
                for eid in decision.event_ids:
                    self._held.discard(eid)
                    self._released[eid] = (*self._released.get(eid, ()), decision)
                    self._released.move_to_end(eid)
        while len(self._released) > self._remember:
            self._released.popitem(last=False)

    def _held_why(self, eid: str) -> str:
        if eid in self._deb_ids and self._deb_deadline is not None:
            return f"debouncing until {self._deb_deadline.isoformat()}"
        if eid in self._waiters:
            return self._waiting_why(self._waiters[eid])
        return self._batch_why()

    # debounce

    def _offer_debounce(self, event: Event, now: datetime, quiet_s: float) -> Decision:
        self._deb_params = self.rule._complete({"": self.rule._map_refs(event, "")})
        self._deb_ids.append(event.id)
        self._held.add(event.id)
        self._deb_deadline = now + timedelta(seconds=quiet_s)
        return Held(self._name, event.id, f"debouncing until {self._deb_deadline.isoformat()}")

    def _fire_debounce(self) -> Decision:
        decision = self._run(self._deb_params, tuple(self._deb_ids))
        self._deb_ids, self._deb_params, self._deb_deadline = [], {}, None
        self._release([decision])
        return decision

    # batch

    def _batch_why(self) -> str:
        batch = self.rule.batch
        assert batch is not None
        count = f"/{batch.count}" if batch.count is not None else ""
        until = (
            f" until {self._batch_deadline.isoformat()}" if self._batch_deadline is not None else ""
        )
        return f"batch {len(self._batch)}{count}{until}"

    def _offer_batch(self, event: Event, now: datetime, batch: Batch) -> Decision:
        if self.rule.params is None:
            item: Any = _event_dict(event)
        else:
            item = self.rule._complete({"": self.rule._map_refs(event, "")})
        if not self._batch and batch.window_s is not None:
            self._batch_deadline = now + timedelta(seconds=batch.window_s)
        self._batch.append((event.id, item))
        self._held.add(event.id)
        if batch.count is not None and len(self._batch) >= batch.count:
            return self._fire_batch()
        return Held(self._name, event.id, self._batch_why())

    def _fire_batch(self) -> Decision:
        batch = self.rule.batch
        assert batch is not None
        ids = tuple(eid for eid, _ in self._batch)
        decision = self._run({batch.param: [item for _, item in self._batch]}, ids)
        self._batch, self._batch_deadline = [], None
        self._release([decision])
        return decision

    # correlate

    def _waiting_why(self, waiter: _Waiter) -> str:
        corr = self.rule.correlate
        assert corr is not None
        other = "b" if waiter.side == "a" else "a"
        return (
            f"waiting for {other} ({getattr(corr, other)!r}) with "
            f"{corr.key}={_short(waiter.key_value)} until {waiter.deadline.isoformat()}"
        )

    def _side_item(self, event: Event, side: Literal["a", "b"]) -> Any:
        if self.rule.params is None:
            return _event_dict(event)
        return self.rule._map_refs(event, side)

    def _corr_params(self, a: _Waiter | None, b: _Waiter | None, key: Any) -> dict[str, Any]:
        a_item = None if a is None else a.item
        b_item = None if b is None else b.item
        if self.rule.params is None:
            return {"a": a_item, "b": b_item, "key": _copy_value(key)}
        return self.rule._complete({"a": a_item, "b": b_item}, key)

    def _offer_correlate(self, event: Event, now: datetime, corr: Correlate) -> Decision:
        key_path = _parse_path(corr.key)
        assert key_path is not None
        key_value = _resolve(key_path, event)
        if key_value is _MISSING:
            raise _Unmapped(f"{self.rule._describe()}: correlation key {corr.key} is missing")
        sides = [side for side, glob in self._side_globs if glob(event.type)]
        if not sides:
            return NotMatched(
                self._name,
                event.id,
                f"type {event.type!r} matches neither a ({corr.a!r}) nor b ({corr.b!r})",
            )
        key_text = _key_text(key_value)
        deadline = now + timedelta(seconds=corr.window_s)
        for side in sides:
            queue = self._queues.get(("b" if side == "a" else "a", key_text))
            if not queue:
                continue
            mine = _Waiter(
                event.id, side, key_value, key_text, self._side_item(event, side), deadline
            )
            partner = self._waiters.pop(queue.popleft())
            if not queue:
                del self._queues[(partner.side, key_text)]
            a, b = (mine, partner) if side == "a" else (partner, mine)
            decision = self._run(self._corr_params(a, b, key_value), (a.event_id, b.event_id))
            self._release([decision])
            return decision
        side = sides[0]
        waiter = _Waiter(
            event.id, side, key_value, key_text, self._side_item(event, side), deadline
        )
        self._waiters[event.id] = waiter
        self._held.add(event.id)
        self._queues.setdefault((side, key_text), deque()).append(event.id)
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, event.id))
        return Held(self._name, event.id, self._waiting_why(waiter))

    def _time_out(self, waiter: _Waiter) -> list[Decision]:
        corr = self.rule.correlate
        assert corr is not None
        queue = self._queues.get((waiter.side, waiter.key_text))
        if queue is not None:
            queue.remove(waiter.event_id)
            if not queue:
                del self._queues[(waiter.side, waiter.key_text)]
        other = "b" if waiter.side == "a" else "a"
        reason = (
            f"no {other} event ({getattr(corr, other)!r}) with "
            f"{corr.key}={_short(waiter.key_value)} within {corr.window_s}s"
        )
        out: list[Decision] = [
            CorrelationTimedOut(
                self._name, (waiter.event_id,), waiter.key_value, corr.on_timeout, reason
            )
        ]
        if corr.on_timeout == "run":
            a, b = (waiter, None) if waiter.side == "a" else (None, waiter)
            out.append(self._run(self._corr_params(a, b, waiter.key_value), (waiter.event_id,)))
        self._release(out)
        return out


class RuleSet:
    """The states of many bound rules, offered every event together."""

    def __init__(self, rules: Iterable[Rule] = (), *, remember: int = 10_000) -> None:
        self._remember = remember
        self._states: dict[str, RuleState] = {}
        for rule in rules:
            self.add(rule)

    def add(self, rule: Rule) -> RuleState:
        """Add a bound rule; raises :class:`RuleError` if its name is taken."""
        state = RuleState(rule, remember=self._remember)
        if state.rule.name in self._states:
            raise RuleError(f"rule {state.rule.name!r} is already in the rule set")
        self._states[state._name] = state
        return state

    def remove(self, name: str) -> Rule:
        """Remove and return the rule called ``name`` (its held events are no longer held)."""
        try:
            return self._states.pop(name).rule
        except KeyError:
            raise RuleError(f"no rule {name!r} in the rule set") from None

    def get(self, name: str) -> Rule:
        """The rule called ``name``."""
        try:
            return self._states[name].rule
        except KeyError:
            raise RuleError(f"no rule {name!r} in the rule set") from None

    def __iter__(self) -> Iterator[Rule]:
        return (state.rule for state in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def offer(self, event: Event, now: datetime) -> list[Decision]:
        """Every rule's decisions on ``event``, in the order the rules were added."""
        return [d for state in self._states.values() for d in state.offer(event, now)]

    def due(self, now: datetime) -> list[Decision]:
        """Everything due at or before ``now``, rule by rule."""
        return [d for state in self._states.values() for d in state.due(now)]

    def next_deadline(self) -> datetime | None:
        """The earliest deadline of any rule, or None."""
        deadlines = [d for s in self._states.values() if (d := s.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def held_event_ids(self) -> set[str]:
        """Ids held by any rule."""
        return {eid for state in self._states.values() for eid in state.held_event_ids()}
