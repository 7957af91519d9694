"""Airflow's ``on_failure_callback``, ``on_success_callback`` and ``on_retry_callback``.

They become evflow's task and flow callbacks: each Airflow callable (or list of them) is
called with an Airflow context (``ti``, ``ds``, ``params``, ``dag_run``, ... and
``exception``: the error's text) after the task or run ended, in a worker thread. One that
raises is logged and never changes the outcome, as in Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import FlowDefinitionError
from ...flows.callbacks import CallbackContext
from ...flows.tasks import caller_location
from .context import TaskInstance, build_context

if TYPE_CHECKING:
    from .dag import DAG

__all__ = ["CALLBACK_ARGS", "airflow_callback"]

#: The Airflow callback arguments, and the evflow callback each one becomes.
CALLBACK_ARGS = {
    "on_failure_callback": "on_failure",
    "on_success_callback": "on_success",
    "on_retry_callback": "on_retry",
}


def _callables(value: Any, what: str, where: str) -> list[Callable[..., Any]]:
    fns = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    for fn in fns:
        if not callable(fn):
            raise FlowDefinitionError(
                f"{where}: {what} must be a callable or a list of them, not {fn!r}",
                location=caller_location(),
            )
    return fns


def airflow_callback(
    value: Any, what: str, where: str, dag: DAG, op: Any = None
) -> Callable[[CallbackContext], None] | None:
    """The evflow callback that calls the Airflow callback(s) ``value`` with a context."""
    if not value:
        return None
    fns = _callables(value, what, where)

    def call(ctx: CallbackContext) -> None:
        ti = TaskInstance(
            task_id=op.task_id if op is not None else (ctx.task or ""),
            dag_id=dag.name,
            run_id=ctx.run_id,
            try_number=ctx.attempt or 1,
            upstream={},
            all_task_ids=frozenset(dag.nodes),
        )
        context = build_context(dag, op, ti, dict(ctx.params))
        context["exception"] = ctx.error
        context["reason"] = ctx.error
        for fn in fns:
            fn(context)

    call.__qualname__ = f"{what}({', '.join(getattr(f, '__qualname__', repr(f)) for f in fns)})"
    return call
