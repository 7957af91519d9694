"""The DAG: flows and their nodes, how they are built, validated and versioned.

A flow is a named DAG of :class:`Node` objects, each a :class:`~evflow.flows.tasks.Task` (a
function and its options) placed in that flow. The decorators in
:mod:`evflow.flows.decorators` and the ``with Flow(...)`` block build it through the active
:class:`Builder`.

Validation happens while the flow is defined, so a broken flow fails at import with its file
and line, never half-way through a run.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import CycleError, DuplicateTaskError, FlowDefinitionError, ParamError
from .tasks import BUILDER, Task, TaskOptions, caller_location, make_task, unmapped

__all__ = ["Builder", "Flow", "Node"]


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
        self._chain = False

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
        self._chain = sum(not n.upstream for n in out) == 1 and all(
            len(n.downstream) <= 1 for n in out
        )
        return out

    @property
    def is_chain(self) -> bool:
        """Whether the tasks form one line, each with at most one downstream task: then a
        run never has two tasks ready at once, and needs no task group of its own."""
        self.order()
        return self._chain

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
        for name, value in params.items():
            if _has_nul(value):
                raise ParamError(
                    f"flow {self.name!r}: parameter {name!r} contains a NUL character (\\u0000), "
                    "which no store keeps as text; send the value without it"
                )
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
    from ..schedules import parse_schedule  # the time layer is optional for pure DAG users

    try:
        return parse_schedule(value)
    except Exception as exc:
        raise FlowDefinitionError(
            f"flow {fl.name!r}: bad schedule: {exc}", flow=fl.name, location=fl.location
        ) from None


_NO_TEXT = frozenset({int, float, bool, type(None)})


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is in ``value`` or any string inside it (keys included)."""
    if type(value) in _NO_TEXT:  # most parameters: checked once per run, without an ABC test
        return False
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False
