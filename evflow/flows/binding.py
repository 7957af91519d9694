"""How a task's arguments are bound when it runs, for both flow styles. Pure functions.

* Decorator style: the node keeps the call's arguments; a :class:`~evflow.flows.dag.Node` among
  them stands for that task's result, a :class:`~evflow.flows.dag.Param` for a run parameter.
* Explicit style (``task(fn)`` and ``>>``): arguments are matched to the function's signature
  by :func:`bind_explicit`.

``result_of(name)`` gives the result of the upstream task ``name`` (``None`` if it has none).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .dag import Node
from .tasks import Param, unmapped

__all__ = ["Call", "ResultOf", "bind", "bind_explicit", "expand", "value"]

ResultOf = Callable[[str], Any]
Call = tuple[list[Any], dict[str, Any]]


def value(v: Any, result_of: ResultOf, params: Mapping[str, Any]) -> Any:
    """The runtime value of one argument as the flow body wrote it."""
    if isinstance(v, unmapped):
        return value(v.value, result_of, params)
    if isinstance(v, Node):
        return result_of(v.name)
    if isinstance(v, Param):
        return params.get(v.name)
    return v


def bind(node: Node, result_of: ResultOf, params: Mapping[str, Any]) -> Call:
    """The positional and keyword arguments of one call of ``node``'s function."""
    if not node.explicit:
        return [value(a, result_of, params) for a in node.args], {
            k: value(v, result_of, params) for k, v in node.kwargs.items()
        }
    return bind_explicit(node, params, {u.name: result_of(u.name) for u in node.upstream})


def expand(node: Node, result_of: ResultOf, params: Mapping[str, Any]) -> list[Call]:
    """The calls of a mapped node, one per item (mapped arguments zipped, equal length)."""

    def items(v: Any) -> list[Any] | None:
        if isinstance(v, unmapped):
            return None
        val = value(v, result_of, params)
        if isinstance(v, Node | Param) or isinstance(val, list | tuple):
            if not isinstance(val, list | tuple):
                raise TypeError(
                    f"task {node.name!r} maps over {type(val).__name__}, which is not a list"
                )
            return list(val)
        return None

    pos = [(a, items(a)) for a in node.args]
    kw = {k: (v, items(v)) for k, v in node.kwargs.items()}
    lengths = {len(it) for _, it in [*pos, *kw.values()] if it is not None}
    if len(lengths) > 1:
        raise ValueError(
            f"task {node.name!r}: mapped arguments have different lengths {sorted(lengths)}"
        )
    n = lengths.pop() if lengths else 0
    calls: list[Call] = []
    for i in range(n):
        args = [it[i] if it is not None else value(a, result_of, params) for a, it in pos]
        kwargs = {
            k: it[i] if it is not None else value(v, result_of, params) for k, (v, it) in kw.items()
        }
        calls.append((args, kwargs))
    return calls


def bind_explicit(node: Node, params: Mapping[str, Any], upstream: Mapping[str, Any]) -> Call:
    """Arguments of an explicit-style task (``task(fn)`` and ``>>``).

    A parameter named like an upstream task gets its result; one named like a run parameter
    gets that value; remaining positional parameters without a default take the remaining
    upstream results in order; ``**kwargs`` receives the run parameters not used.
    """
    try:
        sig = inspect.signature(node.task.fn)
    except (TypeError, ValueError):
        return list(upstream.values()), {}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    named = {
        p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    rest = [v for k, v in upstream.items() if k not in named]
    has_var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            has_var_kw = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            args.extend(rest)
            rest = []
            continue
        if p.name in upstream:
            v = upstream[p.name]
        elif p.name in params:
            v = params[p.name]
        elif rest and p.default is p.empty:
            v = rest.pop(0)
        else:
            continue
        if p.kind is p.POSITIONAL_ONLY:
            args.append(v)
        else:
            kwargs[p.name] = v
    if has_var_kw:
        for k, val in params.items():
            kwargs.setdefault(k, val)
    return args, kwargs
