"""The DAG: flows, their nodes and tasks, how they are built, validated and versioned.

A flow is a named DAG of :class:`Node` objects, each a :class:`Task` (a function and its
options) placed in that flow. The decorators in :mod:`evflow.flows.decorators` and the ``with
Flow(...)`` block build it through the active :class:`Builder`.

Validation happens while the flow is defined, so a broken flow fails at import with its file
and line, never half-way through a run.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import CycleError, DuplicateTaskError, FlowDefinitionError, ParamError
from .trigger_rules import TRIGGER_RULES, TriggerRule

__all__ = [
    "Flow",
    "Node",
    "Param",
    "Task",
    "TaskOptions",
    "caller_location",
    "make_task",
    "unmapped",
]

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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Param:
    """A run parameter's placeholder inside an ``@flow`` function body."""

    name: str


@dataclass(frozen=True, slots=True)
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


class Node:
    """One task in one flow. ``a >> b`` makes ``b`` run after ``a``."""

    def __init__(
        self,
        flow: Flow,
        name: str,
        task: Task,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        mapped: bool,
        explicit: bool,
        location: str,
    ) -> None:
        self.flow = flow
        self.name = name
        self.task = task
        self.args = args
        self.kwargs = kwargs
        self.mapped = mapped
        self.explicit = explicit
        self.location = location
        self.upstream: list[Node] = []
        self.downstream: list[Node] = []

    @property
    def options(self) -> TaskOptions:
        return self.task.options

    def __repr__(self) -> str:
        return f"<Node {self.flow.name}.{self.name}>"

    # -- ordering operators ------------------------------------------------------------------
    def __rshift__(self, other: Node | Sequence[Node]) -> Node | Sequence[Node]:
        for n in _as_nodes(other, self):
            self.flow.add_edge(self, n)
        return other

    def __lshift__(self, other: Node | Sequence[Node]) -> Node | Sequence[Node]:
        for n in _as_nodes(other, self):
            self.flow.add_edge(n, self)
        return other

    def __rrshift__(self, other: Sequence[Node]) -> Node:
        for n in _as_nodes(other, self):
            self.flow.add_edge(n, self)
        return self

    def __rlshift__(self, other: Sequence[Node]) -> Node:
        for n in _as_nodes(other, self):
            self.flow.add_edge(self, n)
        return self

    def set_upstream(self, other: Node | Sequence[Node]) -> None:
        self << other

    def set_downstream(self, other: Node | Sequence[Node]) -> None:
        self >> other

    def refs(self) -> Iterator[Node]:
        """Nodes whose results this node takes as arguments."""
        for v in (*self.args, *self.kwargs.values()):
            inner = v.value if isinstance(v, unmapped) else v
            if isinstance(inner, Node):
                yield inner


def _as_nodes(other: object, origin: Node) -> list[Node]:
    items = list(other) if isinstance(other, list | tuple) else [other]
    for it in items:
        if not isinstance(it, Node):
            raise FlowDefinitionError(
                f"flow {origin.flow.name!r}: cannot order task {origin.name!r} against "
                f"{it!r}, which is not a task of a flow",
                flow=origin.flow.name,
                task=origin.name,
                location=caller_location(),
            )
    return items  # type: ignore[return-value]


class Builder:
    """Collects nodes while a flow is being defined (the active ``with`` block or ``@flow``)."""

    def __init__(self, flow: Flow, *, explicit: bool) -> None:
        self.flow = flow
        self.explicit = explicit

    def add_call(
        self, t: Task, args: tuple[Any, ...], kwargs: dict[str, Any], *, mapped: bool
    ) -> Node:
        fl = self.flow
        base = t.name
        name = base
        i = 2
        while name in fl.nodes:
            name = f"{base}_{i}"
            i += 1
        node = Node(
            fl, name, t, args, kwargs, mapped=mapped, explicit=False, location=caller_location()
        )
        fl._add_node(node)
        for ref in node.refs():
            fl.add_edge(ref, node)
        return node


BUILDER: contextvars.ContextVar[Builder | None] = contextvars.ContextVar(
    "evflow_flow_builder", default=None
)


class Flow:
    """A named DAG of tasks.

    ``version`` is a hash of the definition (task names, code, options and edges), recorded
    with every run so each run is traceable to the code that ran it.
    """

    def __init__(
        self,
        name: str,
        *,
        schedule: Any = None,
        max_active_runs: int | None = None,
        params: Mapping[str, Any] | None = None,
        description: str = "",
        misfire: str = "latest",
        sla_s: float | None = None,
        on_failure: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        on_retry: Callable[..., Any] | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        self.location = caller_location()
        if not isinstance(name, str) or not name.strip():
            raise FlowDefinitionError("a flow needs a non-empty name", location=self.location)
        self.name = name
        self.description = description
        self.nodes: dict[str, Node] = {}
        self.max_active_runs = max_active_runs
        if max_active_runs is not None and max_active_runs < 1:
            raise FlowDefinitionError(
                f"flow {name!r}: max_active_runs must be >= 1", flow=name, location=self.location
            )
        self.defaults: dict[str, Any] = dict(params or {})
        self.required: set[str] = set()
        self.open_params = params is None  # explicit flows without params= accept any
        self.misfire = misfire
        self.sla_s = sla_s
        self.on_failure = on_failure
        self.on_success = on_success
        self.on_retry = on_retry
        self.tags = tuple(tags)
        self.schedule = _parse_schedule(schedule, self)
        self._token: contextvars.Token[Builder | None] | None = None
        self._version: str | None = None
        self._order: list[Node] | None = None

    def __repr__(self) -> str:
        return f"<Flow {self.name} ({len(self.nodes)} tasks)>"

    # -- explicit style ----------------------------------------------------------------------
    def __enter__(self) -> Flow:
        self._token = BUILDER.set(Builder(self, explicit=True))
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._token is not None
        BUILDER.reset(self._token)
        self._token = None
        if exc_type is None:
            self.validate()

    def _add_node(self, node: Node) -> None:
        if node.name in self.nodes:
            raise DuplicateTaskError(
                f"flow {self.name!r}: duplicate task name {node.name!r} "
                f"(first defined at {self.nodes[node.name].location})",
                flow=self.name,
                task=node.name,
                location=node.location,
            )
        self.nodes[node.name] = node
        self._version = None
        self._order = None

    def add_edge(self, up: Node, down: Node) -> None:
        """Declare that ``down`` runs after ``up``; both must belong to this flow."""
        for n in (up, down):
            if n.flow is not self or self.nodes.get(n.name) is not n:
                raise FlowDefinitionError(
                    f"flow {self.name!r}: task {n.name!r} belongs to flow {n.flow.name!r}, "
                    "not to this one",
                    flow=self.name,
                    task=n.name,
                    location=caller_location(),
                )
        if up is down or self._reaches(down, up):
            raise CycleError(
                f"flow {self.name!r}: {up.name} >> {down.name} would make a cycle "
                f"({' -> '.join([*self._path(down, up), down.name])})",
                flow=self.name,
                task=down.name,
                location=caller_location(),
            )
        if down not in up.downstream:
            up.downstream.append(down)
            down.upstream.append(up)
        self._version = None
        self._order = None

    def _reaches(self, start: Node, goal: Node) -> bool:
        return bool(self._path(start, goal))

    def _path(self, start: Node, goal: Node) -> list[str]:
        stack: list[tuple[Node, list[str]]] = [(start, [start.name])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            if node is goal:
                return path
            if node.name in seen:
                continue
            seen.add(node.name)
            stack.extend((d, [*path, d.name]) for d in node.downstream)
        return []

    def add_task(
        self, fn: Callable[..., Any] | Task, *, name: str | None = None, **options: Any
    ) -> Node:
        """Add ``fn`` as a task of this flow (what ``task(fn)`` does inside ``with Flow``)."""
        location = caller_location()
        if isinstance(fn, Task):
            t = fn.with_options(**options) if options or name else fn
        else:
            if not callable(fn):
                raise FlowDefinitionError(
                    f"flow {self.name!r}: task {name or repr(fn)} is not callable "
                    f"(got {type(fn).__name__})",
                    flow=self.name,
                    task=name or repr(fn),
                    location=location,
                )
            t = make_task(fn, name=name, **options)
        node = Node(self, name or t.name, t, (), {}, mapped=False, explicit=True, location=location)
        self._add_node(node)
        return node

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the whole graph: options, foreign references, acyclicity."""
        if not self.nodes:
            raise FlowDefinitionError(
                f"flow {self.name!r} has no tasks", flow=self.name, location=self.location
            )
        for node in self.nodes.values():
            node.options.check(f"flow {self.name!r}, task {node.name!r}")
            for ref in node.refs():
                if ref.flow is not self:
                    raise FlowDefinitionError(
                        f"flow {self.name!r}: task {node.name!r} uses the result of task "
                        f"{ref.name!r} of flow {ref.flow.name!r}",
                        flow=self.name,
                        task=node.name,
                        location=node.location,
                    )
        self.order()  # raises on a cycle

    def order(self) -> list[Node]:
        """The nodes in a topological order (Kahn's algorithm; kept until the graph changes)."""
        if self._order is not None:
            return self._order
        indeg = {n: len(node.upstream) for n, node in self.nodes.items()}
        ready = [n for n, d in indeg.items() if d == 0]
        out: list[Node] = []
        while ready:
            name = ready.pop(0)
            node = self.nodes[name]
            out.append(node)
            for d in node.downstream:
                indeg[d.name] -= 1
                if indeg[d.name] == 0:
                    ready.append(d.name)
        if len(out) != len(self.nodes):
            stuck = sorted(n for n, d in indeg.items() if d > 0)
            raise CycleError(
                f"flow {self.name!r} has a cycle through tasks {', '.join(stuck)}",
                flow=self.name,
                task=stuck[0],
                location=self.location,
            )
        self._order = out
        return out

    @property
    def version(self) -> str:
        """A short hash of the definition: names, code, options, edges."""
        if self._version is None:
            h = hashlib.sha256(self.name.encode())
            for node in self.order():
                h.update(node.name.encode())
                h.update(_code_digest(node.task.fn))
                h.update(repr(node.options).encode())
                h.update(",".join(u.name for u in node.upstream).encode())
                h.update(repr((node.mapped, _arg_shape(node.args), sorted(node.kwargs))).encode())
            self._version = h.hexdigest()[:16]
        return self._version

    # -- parameters --------------------------------------------------------------------------
    def bind_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in; a missing or unknown parameter is a :class:`ParamError`."""
        if not self.open_params:
            unknown = sorted(set(params) - set(self.defaults) - self.required)
            if unknown:
                known = sorted(set(self.defaults) | self.required)
                raise ParamError(
                    f"flow {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                    f"its parameters are: {', '.join(known) or '(none)'}"
                )
        missing = sorted(self.required - set(params))
        if missing:
            raise ParamError(f"flow {self.name!r} needs parameter {', '.join(map(repr, missing))}")
        return {**self.defaults, **params}

    def describe(self) -> dict[str, Any]:
        """The DAG as plain data (for the API, the UI and ``evflow flows``)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "location": self.location,
            "schedule": self.schedule.describe() if self.schedule is not None else None,
            "max_active_runs": self.max_active_runs,
            "params": {
                "required": sorted(self.required),
                "defaults": self.defaults,
                "open": self.open_params,
            },
            "tasks": [
                {
                    "name": n.name,
                    "upstream": [u.name for u in n.upstream],
                    "mapped": n.mapped,
                    "pool": n.options.pool,
                    "retries": n.options.retries,
                    "trigger_rule": n.options.trigger_rule,
                    "is_async": n.task.is_async,
                }
                for n in self.order()
            ],
        }


def _arg_shape(args: Iterable[Any]) -> list[str]:
    return [f"node:{a.name}" if isinstance(a, Node) else type(a).__name__ for a in args]


def _code_digest(fn: Callable[..., Any]) -> bytes:
    """A digest of a function's code that is the same in every process running that code."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(getattr(fn, "__qualname__", type(fn).__qualname__)).encode()
    h = hashlib.sha256()
    _hash_code(code, h)
    return h.digest()


def _hash_code(code: Any, h: Any) -> None:
    # Nested code objects (comprehensions, lambdas, inner functions) are hashed recursively:
    # their repr holds a memory address, which differs between processes.
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            _hash_code(const, h)
        elif isinstance(const, frozenset):
            h.update(repr(sorted(map(repr, const))).encode())
        else:
            h.update(repr(const).encode())


def _parse_schedule(value: Any, fl: Flow) -> Any:
    if value is None:
        return None
    from ..triggers import parse_schedule  # the time layer is optional for pure DAG users

    try:
        return parse_schedule(value)
    except Exception as exc:
        raise FlowDefinitionError(
            f"flow {fl.name!r}: bad schedule: {exc}", flow=fl.name, location=fl.location
        ) from None


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
