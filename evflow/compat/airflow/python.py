"""``PythonOperator`` and its kin: ``BranchPythonOperator`` and ``ShortCircuitOperator``.

The callable gets ``*op_args``, ``**op_kwargs`` and the context arguments it names (all of
them with ``**kwargs``). ``op_args``, ``op_kwargs`` and ``templates_dict`` are templated; a
task's ``.output`` (an ``XComArg``) among them is that task's result, with an edge added.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location
from .base import BaseOperator
from .context import RETURN_KEY, XCOM_MARKER, Context
from .relations import link
from .versioning import code_fingerprint
from .xcom import find_xcom_args, resolve_xcom_args

__all__ = ["BranchPythonOperator", "PythonOperator", "ShortCircuitOperator"]


class PythonOperator(BaseOperator):
    """Calls ``python_callable(*op_args, **op_kwargs)`` plus the context arguments it names.

    ``multiple_outputs=True`` stores each key of a returned dict as an XCom of its own.
    """

    template_fields: ClassVar[Sequence[str]] = ("templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        *,
        task_id: str,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: Mapping[str, Any] | None = None,
        multiple_outputs: bool = False,
        **kwargs: Any,
    ) -> None:
        if not callable(python_callable):
            raise FlowDefinitionError(
                f"{type(self).__name__} {task_id!r}: python_callable must be callable, not "
                f"{python_callable!r}",
                task=task_id,
                location=caller_location(),
            )
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = dict(templates_dict) if templates_dict is not None else None
        self.multiple_outputs = multiple_outputs
        super().__init__(task_id=task_id, **kwargs)
        for ref in find_xcom_args([self.op_args, self.op_kwargs, self.templates_dict]):
            link(ref.operator, self)

    def fingerprint(self) -> str:
        return code_fingerprint([type(self).execute, self.python_callable])

    def result(self, value: Any, pushed: dict[str, Any]) -> Any:
        """With ``multiple_outputs``, each key of a returned dict is an XCom of its own."""
        if not self.multiple_outputs or value is None:
            return super().result(value, pushed)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeError(
                f"task {self.name!r} has multiple_outputs=True but returned {value!r}, "
                "not a dict with string keys"
            )
        return {XCOM_MARKER: {**pushed, **value, RETURN_KEY: value}}

    def execute(self, context: Context) -> Any:
        ti, params = context["ti"], context["params"]
        args = resolve_xcom_args(self.op_args, ti, params)
        kwargs = resolve_xcom_args(self.op_kwargs, ti, params)
        if self.templates_dict is not None:
            context["templates_dict"] = resolve_xcom_args(self.templates_dict, ti, params)
        return self.python_callable(*args, **self.call_kwargs(context, args, kwargs))

    def call_kwargs(
        self, context: Context, args: Sequence[Any], op_kwargs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``op_kwargs`` plus the context entries the callable names (all, with ``**``)."""
        try:
            sig = inspect.signature(self.python_callable)
        except (TypeError, ValueError):
            return dict(op_kwargs)
        params = list(sig.parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return {**context, **op_kwargs}
        positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        taken = set(positional[: len(args)])
        named = {p.name for p in params if p.kind is not p.VAR_POSITIONAL} - taken
        picked = {k: v for k, v in context.items() if k in named}
        return {**picked, **op_kwargs}


def branch_names(task_id: str, value: Any) -> list[str] | str:
    """A branch callable's answer, checked: a task_id or a list of them (None: none)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        chosen = list(value)
        if all(isinstance(v, str) for v in chosen):
            return chosen
    raise TypeError(
        f"branch task {task_id!r} must return a task_id or a list of task_ids, not {value!r}"
    )


class BranchPythonOperator(PythonOperator):
    """The callable returns the task_id(s) to follow; the other downstream tasks are skipped."""

    is_branch = True

    def result(self, value: Any, pushed: dict[str, Any]) -> Any:
        if pushed:
            raise NotImplementedError(
                f"branch task {self.name!r}: xcom_push is not available in a branch callable"
            )
        return branch_names(self.name, value)


class ShortCircuitOperator(PythonOperator):
    """A falsy return value skips every task downstream; a truthy one lets them run.

    ``ignore_downstream_trigger_rules=False`` skips only the direct downstream tasks and lets
    the others follow their trigger rules. With the default (True), a task further downstream
    whose rule could run it after a skip (``all_done``, ``one_success``, ...) is a load error:
    evflow cannot skip it whatever its rule, as Airflow does. The task's result is the list
    of tasks it let run.
    """

    is_branch = True

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        super().__init__(**kwargs)
        if ignore_downstream_trigger_rules:
            self.dag.register_short_circuit(self.name)

    def result(self, value: Any, pushed: dict[str, Any]) -> Any:
        return [d.name for d in self.downstream] if value else []
