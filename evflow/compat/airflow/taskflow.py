"""The TaskFlow API: ``@dag`` and ``@task`` (with ``.branch``, ``.short_circuit``, mapping).

Calling a ``@task`` function inside a DAG adds a task and returns its :class:`XComArg`;
passing that to another ``@task`` call adds the edge and hands over the result at run time.
``multiple_outputs=True`` (or a ``-> dict`` annotation) stores each key of a returned dict as
its own XCom, so ``result["key"]`` reads it. ``fn.expand(x=[...])`` or
``fn.partial(y=1).expand(x=other())`` makes one task instance per item. A ``@dag`` function
builds its DAG when called; its parameters are the DAG's params, read at run time.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, overload

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location
from .dag import DAG, current_dag
from .mapping import OperatorPartial
from .params import param_default
from .python import PythonOperator, branch_names
from .task_group import current_group
from .xcom import DagParam, XComArg

__all__ = ["dag", "task"]


class _TaskFlowOperator(PythonOperator):
    """The operator a ``@task`` call makes."""


class _BranchTaskFlowOperator(_TaskFlowOperator):
    is_branch = True

    def result(self, value: Any, pushed: dict[str, Any]) -> Any:
        return branch_names(self.name, value)


class _ShortCircuitTaskFlowOperator(_TaskFlowOperator):
    is_branch = True

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        super().__init__(**kwargs)
        if ignore_downstream_trigger_rules:
            self.dag.register_short_circuit(self.name)

    def result(self, value: Any, pushed: dict[str, Any]) -> Any:
        return [d.name for d in self.downstream] if value else []


_KINDS: dict[str, type[_TaskFlowOperator]] = {
    "python": _TaskFlowOperator,
    "branch": _BranchTaskFlowOperator,
    "short_circuit": _ShortCircuitTaskFlowOperator,
}


def _returns_dict(fn: Callable[..., Any]) -> bool:
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return False
    return hint is dict or typing.get_origin(hint) is dict


def _free_task_id(base: str) -> str:
    """``base``, or ``base__1``, ``base__2``... when the DAG already has it (as Airflow)."""
    owner = current_dag()
    group = current_group()
    if owner is None and group is not None:
        owner = group.dag
    if owner is None:
        return base

    def full(t: str) -> str:
        return group.child_id(t) if group is not None else t

    candidate, i = base, 0
    while full(candidate) in owner.nodes:
        i += 1
        candidate = f"{base}__{i}"
    return candidate


class TaskDecorator:
    """What ``@task`` makes of a function: call it inside a DAG to add a task."""

    def __init__(self, fn: Callable[..., Any], kind: str, kwargs: dict[str, Any]) -> None:
        if not callable(fn):
            raise FlowDefinitionError(
                f"@task needs a function, not {fn!r}", location=caller_location()
            )
        self.function = fn
        self.kind = kind
        self.kwargs = kwargs
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<@task {self.function.__name__}>"

    def override(self, **kwargs: Any) -> TaskDecorator:
        """The same task with other operator arguments (``task_id=``, ``retries=``, ...)."""
        return TaskDecorator(self.function, self.kind, {**self.kwargs, **kwargs})

    def _operator_args(self, extra: dict[str, Any]) -> dict[str, Any]:
        kw = {**self.kwargs, **extra}
        if current_dag() is None and current_group() is None and "dag" not in kw:
            raise FlowDefinitionError(
                f"task {self.function.__name__!r} is called outside a DAG: call it inside a "
                "@dag function or a `with DAG(...):` block (its .function is the plain function)",
                location=caller_location(),
            )
        multiple = kw.pop("multiple_outputs", None)
        kw["multiple_outputs"] = _returns_dict(self.function) if multiple is None else multiple
        kw["task_id"] = _free_task_id(kw.get("task_id") or self.function.__name__)
        return kw

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        cls = _KINDS[self.kind]
        op = cls(
            python_callable=self.function,
            op_args=args,
            op_kwargs=kwargs,
            **self._operator_args({}),
        )
        return XComArg(op)

    def partial(self, **kwargs: Any) -> _TaskPartial:
        """Arguments shared by every mapped instance; finish with ``.expand(...)``."""
        return _TaskPartial(self, kwargs)

    def expand(self, **mapped: Any) -> XComArg:
        """One task instance per item of each mapped argument (zipped, equal lengths)."""
        return _TaskPartial(self, {}).expand(**mapped)


class _TaskPartial:
    def __init__(self, deco: TaskDecorator, fixed: dict[str, Any]) -> None:
        self.deco = deco
        self.fixed = fixed

    def expand(self, **mapped: Any) -> XComArg:
        if not mapped:
            raise FlowDefinitionError(
                f"task {self.deco.function.__name__!r}: .expand() needs an argument to map",
                location=caller_location(),
            )
        both = sorted(set(mapped) & set(self.fixed))
        if both:
            raise FlowDefinitionError(
                f"task {self.deco.function.__name__!r}: {', '.join(both)} given to both "
                "partial() and expand()",
                location=caller_location(),
            )
        fixed = self.fixed
        cls = _KINDS[self.deco.kind]
        if cls is not _TaskFlowOperator:
            raise FlowDefinitionError(
                f"task {self.deco.function.__name__!r}: a mapped branch or short-circuit task "
                "is not supported",
                location=caller_location(),
            )
        return OperatorPartial(
            _MappedTaskFlowOperator,
            {
                "python_callable": self.deco.function,
                "op_kwargs": fixed,
                **self.deco._operator_args({}),
            },
            arguments=False,
        ).expand(**mapped)


class _MappedTaskFlowOperator(_TaskFlowOperator):
    """A mapped ``@task``: each instance gets its item(s) as keyword arguments."""

    def set_mapped(self, items: Mapping[str, Any]) -> None:
        self.op_kwargs = {**self.op_kwargs, **items}


def _split_task_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any] | None:
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return typing.cast(Callable[..., Any], args[0])
    if args:
        raise FlowDefinitionError(
            "@task takes keyword arguments only (task_id=, retries=, ...)",
            location=caller_location(),
        )
    return None


_Wrap = Callable[[Callable[..., Any]], TaskDecorator]


class _TaskNamespace:
    """``@task``, ``@task(...)``, ``@task.python``, ``@task.branch``, ``@task.short_circuit``."""

    def _make(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = _split_task_args(args, kwargs)
        if fn is not None:
            return TaskDecorator(fn, kind, {})
        return lambda f: TaskDecorator(f, kind, dict(kwargs))

    @overload
    def __call__(self, fn: Callable[..., Any], /) -> TaskDecorator: ...
    @overload
    def __call__(self, **kwargs: Any) -> _Wrap: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._make("python", args, kwargs)

    @overload
    def python(self, fn: Callable[..., Any], /) -> TaskDecorator: ...
    @overload
    def python(self, **kwargs: Any) -> _Wrap: ...
    def python(self, *args: Any, **kwargs: Any) -> Any:
        return self._make("python", args, kwargs)

    @overload
    def branch(self, fn: Callable[..., Any], /) -> TaskDecorator: ...
    @overload
    def branch(self, **kwargs: Any) -> _Wrap: ...
    def branch(self, *args: Any, **kwargs: Any) -> Any:
        return self._make("branch", args, kwargs)

    @overload
    def short_circuit(self, fn: Callable[..., Any], /) -> TaskDecorator: ...
    @overload
    def short_circuit(self, **kwargs: Any) -> _Wrap: ...
    def short_circuit(self, *args: Any, **kwargs: Any) -> Any:
        return self._make("short_circuit", args, kwargs)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"@task.{name} is not supported by evflow; supported: @task, @task.python, "
            "@task.branch, @task.short_circuit"
        )


task = _TaskNamespace()


@overload
def dag(fn: Callable[..., Any], /) -> Callable[..., DAG]: ...
@overload
def dag(
    dag_id: str | None = None, /, **dag_kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., DAG]]: ...
def dag(*args: Any, **dag_kwargs: Any) -> Any:
    """``@dag(...)``: the decorated function, when called, builds and returns its DAG."""

    def wrap(f: Callable[..., Any]) -> Callable[..., DAG]:
        sig = inspect.signature(f)

        @functools.wraps(f)
        def factory(*call_args: Any, **call_kwargs: Any) -> DAG:
            bound = sig.bind_partial(*call_args, **call_kwargs)
            params = dict(dag_kwargs.get("params") or {})
            for p in sig.parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    continue
                if p.name in bound.arguments:
                    params[p.name] = bound.arguments[p.name]
                elif p.default is not p.empty:
                    params[p.name] = p.default
                else:
                    raise FlowDefinitionError(
                        f"@dag {f.__name__!r}: parameter {p.name!r} needs a default (it is a "
                        "DAG param, overridable per run)",
                        location=caller_location(),
                    )
            kw = {**dag_kwargs, "params": params}
            dag_id = kw.pop("dag_id", None) or f.__name__
            if not kw.get("doc_md") and f.__doc__:
                kw["doc_md"] = inspect.cleandoc(f.__doc__)
            built = DAG(dag_id, **kw)
            with built:
                f(
                    **{
                        name: DagParam(name, param_default(params[name]))
                        for name in params
                        if name in sig.parameters
                    }
                )
            return built

        return factory

    if len(args) == 1 and callable(args[0]) and not dag_kwargs:
        return wrap(args[0])
    if args:
        dag_kwargs = {"dag_id": args[0], **dag_kwargs}
    return wrap
