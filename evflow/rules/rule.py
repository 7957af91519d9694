"""``Rule``: which events start runs of a flow, with which params, under which policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from ..errors import RuleError
from ..events import Event
from ..frozen import record
from .match import (
    _GLOB_KEYS,
    _OPERATORS,
    _REF,
    _ROOTS,
    _SYMBOLS,
    MISSING,
    Glob,
    Unmapped,
    _Check,
    _is_number,
    _operator_check,
    _Path,
    _ValueCheck,
    copy_value,
    parse_path,
    resolve,
    short,
)
from .policies import _WHEN_RUNNING, Batch, Correlate, WhenRunning


class _HasSource(Protocol):
    @property
    def source(self) -> str: ...


class _HasName(Protocol):
    @property
    def name(self) -> str: ...


@record
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
            raise RuleError(f"{self.describe()}: match must be a dict, not {type(match).__name__}")
        if params is not None and not isinstance(params, Mapping):
            raise RuleError(
                f"{self.describe()}: params must be a dict, not {type(params).__name__}"
            )
        self.match = dict(match or {})
        self.params = None if params is None else dict(params)
        if debounce_s is not None and (not _is_number(debounce_s) or debounce_s <= 0):
            raise RuleError(
                f"{self.describe()}: debounce_s must be a number > 0, not {debounce_s!r}"
            )
        if batch is not None and not isinstance(batch, Batch):
            raise RuleError(f"{self.describe()}: batch must be a Batch, not {batch!r}")
        if correlate is not None and not isinstance(correlate, Correlate):
            raise RuleError(f"{self.describe()}: correlate must be a Correlate, not {correlate!r}")
        chosen = [
            n
            for n, v in (("debounce_s", debounce_s), ("batch", batch), ("correlate", correlate))
            if v is not None
        ]
        if len(chosen) > 1:
            raise RuleError(
                f"{self.describe()}: choose one of debounce_s, batch and correlate, "
                f"not {' and '.join(chosen)}"
            )
        self.debounce_s = debounce_s
        self.batch = batch
        self.correlate = correlate
        if when_running not in _WHEN_RUNNING:
            raise RuleError(
                f"{self.describe()}: when_running must be one of "
                f"{', '.join(_WHEN_RUNNING)}, not {when_running!r}"
            )
        self.when_running = when_running
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise RuleError(f"{self.describe()}: priority must be an integer, not {priority!r}")
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

    def describe(self) -> str:
        """How messages name the rule."""
        if self.name is not None:
            return f"rule {self.name!r}"
        flow = f" of flow {self.flow!r}" if self.flow is not None else ""
        return f"rule on {self._on_label()!r}{flow}"

    def _check_name(self, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise RuleError(f"{self.describe()}: name must be a non-empty string, not {name!r}")
        return name

    def _flow_name(self, flow: Any) -> str:
        fname = flow if isinstance(flow, str) else getattr(flow, "name", None)
        if not isinstance(fname, str) or not fname:
            raise RuleError(
                f"{self.describe()}: flow must be a flow name or have a .name, not {flow!r}"
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
            raise RuleError(f"{self.describe()} belongs to flow {self.flow!r}, not {fname!r}")
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
            glob = Glob([on])

            def on_type(event: Event) -> str | None:
                if glob(event.type):
                    return None
                return f"type {event.type!r} does not match {glob.describe()}"

            return [on_type]
        source = getattr(on, "source", None)
        if not isinstance(source, str):
            raise RuleError(
                f"{self.describe()}: on must be a sensor (with a .source string), "
                f"an event type glob or None, not {on!r}"
            )

        def on_source(event: Event) -> str | None:
            if event.source == source:
                return None
            return f"source {event.source!r} is not {source!r}"

        return [on_source]

    def _globs(self, key: str, value: Any) -> Glob:
        patterns = [value] if isinstance(value, str) else value
        if (
            not isinstance(patterns, list | tuple)
            or not patterns
            or not all(isinstance(p, str) for p in patterns)
        ):
            raise RuleError(
                f"{self.describe()}: match key {key!r} needs a glob string or a "
                f"non-empty list of them, not {short(value)}"
            )
        return Glob(patterns)

    def _compile_match(self) -> list[_Check]:
        checks: list[_Check] = []
        for key, spec in self.match.items():
            if key in _GLOB_KEYS:
                checks.append(self._field_check(key, self._globs(key, spec)))
                continue
            path = parse_path(key) if isinstance(key, str) else None
            if path is None or path.root != "data" or not path.segments:
                raise RuleError(
                    f"{self.describe()}: unknown match key {key!r} "
                    f"(expected type, source, subject or data.<path>)"
                )
            checks.append(self._data_check(path, self._operators(key, spec)))
        return checks

    @staticmethod
    def _field_check(field_name: str, glob: Glob) -> _Check:
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
            value = resolve(path, event)
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
                f"{self.describe()}: match key {key!r} has an empty operator dict "
                f"(to compare with {{}} use {{'eq': {{}}}})"
            )
        out: list[_ValueCheck] = []
        for op, operand in spec.items():
            where = f"{self.describe()}: match key {key!r} operator {op!r}"
            if op not in _OPERATORS:
                raise RuleError(
                    f"{self.describe()}: match key {key!r} has unknown operator "
                    f"{op!r} (expected one of {', '.join(_OPERATORS)})"
                )
            if op in ("in", "not_in"):
                if not isinstance(operand, list | tuple):
                    raise RuleError(f"{where} needs a list, not {short(operand)}")
                operand = list(operand)
            elif op == "glob":
                operand = self._globs(f"{key}.glob", operand)
            elif op == "exists":
                if not isinstance(operand, bool):
                    raise RuleError(f"{where} needs true or false, not {short(operand)}")
            elif op in _SYMBOLS and not (_is_number(operand) or isinstance(operand, str)):
                raise RuleError(f"{where} needs a number or a string, not {short(operand)}")
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
                    f"{self.describe()}: param names must be non-empty strings, not {pname!r}"
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
            path = parse_path(text)
            if path is None or (correlated and not side):
                raise RuleError(
                    f"{self.describe()}: param {pname!r} refers to unknown path "
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

    def refs(self, event: Event, side: Literal["", "a", "b"] = "") -> dict[str, Any]:
        """The values of ``side``'s references in ``event``; raises ``Unmapped``."""
        out: dict[str, Any] = {}
        for spec in self._specs:
            if spec.kind != "ref" or spec.side != side or spec.path is None:
                continue
            value = resolve(spec.path, event)
            if value is MISSING:
                prefix = f"{side}." if side else ""
                raise Unmapped(
                    f"{self.describe()}: param {spec.name!r} needs "
                    f"{prefix}{spec.path.text}, which the event does not have"
                )
            out[spec.name] = copy_value(value)
        return out

    def complete(
        self, mapped: Mapping[str, dict[str, Any] | None], key: Any = None
    ) -> dict[str, Any]:
        """Params from literals, mapped references per side and the correlation key."""
        out: dict[str, Any] = {}
        for spec in self._specs:
            if spec.kind == "literal":
                out[spec.name] = copy_value(spec.value)
            elif spec.kind == "key":
                out[spec.name] = copy_value(key)
            else:
                side_values = mapped.get(spec.side)
                out[spec.name] = None if side_values is None else side_values[spec.name]
        return out

    def map_params(self, event: Event) -> dict[str, Any]:
        """The params for ``event`` (not for correlate rules); raises :class:`RuleError`."""
        if self.correlate is not None:
            raise RuleError(f"{self.describe()}: a correlate rule maps params from two events")
        try:
            return self.complete({"": self.refs(event, "")})
        except Unmapped as exc:
            raise RuleError(str(exc)) from None
