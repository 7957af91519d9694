"""The ``@task`` and ``@flow`` decorators: the two ways user code declares tasks and flows.

Two styles build the same :class:`~evflow.flows.dag.Flow`:

* decorator style — ``@task`` functions called inside an ``@flow`` function; passing one task's
  result to another is a dependency and the flow function's parameters become run parameters;
* explicit style — ``with Flow("name") as dag:`` then ``task(fn)`` wraps a plain function and
  ``a >> b``, ``a >> [b, c] >> d``, ``[a, b] >> c`` declare the order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, overload

from ..errors import FlowDefinitionError
from .dag import Builder, Flow
from .tasks import BUILDER, Param, Task, make_task

__all__ = ["flow", "task"]


@overload
def task(fn: Callable[..., Any], /, *, name: str | None = None, **options: Any) -> Any: ...
@overload
def task(*, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Any]: ...
def task(fn: Any = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Make a task of ``fn``.

    As a decorator (``@task`` or ``@task(retries=3, pool="db")``) it returns a :class:`Task`.
    Inside a ``with Flow(...)`` block, ``task(fn)`` adds ``fn`` to that flow and returns its
    :class:`Node`, ready for ``>>``.

    Options: ``retries``, ``retry_delay`` (seconds), ``retry_backoff`` (factor),
    ``retry_jitter`` (fraction), ``timeout`` (seconds), ``pool``, ``slots``, ``priority``,
    ``trigger_rule`` and ``branch`` (the task returns the name(s) of the downstream tasks to
    follow; the others are skipped). Callbacks ``on_failure``, ``on_retry`` and ``on_success``
    (sync or async, given a :class:`~evflow.flows.callbacks.CallbackContext`) are not options:
    they do not change the flow's version.
    """

    def wrap(f: Any) -> Any:
        builder = BUILDER.get()
        if builder is not None and builder.explicit:
            return builder.flow.add_task(f, name=name, **options)
        if isinstance(f, Task):
            return f.with_options(name=name or f.name, **options)
        return make_task(f, name=name, **options)

    if fn is None:
        return wrap
    return wrap(fn)


@overload
def flow(fn: Callable[..., Any], /, *, name: str | None = None, **flow_options: Any) -> Flow: ...
@overload
def flow(
    *, name: str | None = None, **flow_options: Any
) -> Callable[[Callable[..., Any]], Flow]: ...
def flow(fn: Any = None, /, *, name: str | None = None, **flow_options: Any) -> Any:
    """Define a flow from a function whose body calls tasks.

    The body runs once, now, with placeholders for its parameters; each task call adds a node
    and passing a task's result to another task is a dependency. Returns the :class:`Flow`.
    """

    def build(f: Callable[..., Any]) -> Flow:
        fl = Flow(name or f.__name__, **flow_options)
        fl.location = f"{f.__code__.co_filename}:{f.__code__.co_firstlineno}"
        fl.description = fl.description or inspect.getdoc(f) or ""
        sig = inspect.signature(f)
        placeholders: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise FlowDefinitionError(
                    f"flow {fl.name!r}: *args/**kwargs parameters are not supported",
                    flow=fl.name,
                    location=fl.location,
                )
            if p.default is p.empty:
                fl.required.add(p.name)
            else:
                fl.defaults[p.name] = p.default
            placeholders[p.name] = Param(p.name)
        fl.open_params = False
        token = BUILDER.set(Builder(fl, explicit=False))
        try:
            f(**placeholders)
        finally:
            BUILDER.reset(token)
        fl.validate()
        return fl

    if fn is None:
        return build
    return build(fn)
