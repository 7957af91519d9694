"""``BaseOperator``: an Airflow operator is a node of its DAG whose task calls ``execute``.

Custom operators subclass it and implement ``execute(context)``; the return value is the
task's result (its ``return_value`` XCom). ``template_fields`` name the attributes rendered
as templates before ``execute`` (:mod:`.templates`); mapping is :mod:`.mapping`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ClassVar

from ...errors import FlowDefinitionError
from ...flows import Node, Task, TaskOptions
from ...flows.tasks import caller_location, unmapped
from ...run.context import current_task
from .arguments import aware, check_extra, seconds
from .callbacks import CALLBACK_ARGS, airflow_callback
from .context import (
    CURRENT_CONTEXT,
    RETURN_KEY,
    XCOM_MARKER,
    Context,
    TaskInstance,
    build_context,
)
from .dag import DAG, UPSTREAM_PREFIX, current_dag
from .mapping import MAP_PREFIX, OperatorPartial, map_source
from .relations import Label, link
from .task_group import TaskGroup, current_group
from .templates import compile_value, render_value
from .trigger_rules import TriggerRule, evflow_rule
from .versioning import code_fingerprint
from .xcom import XComArg

__all__ = ["BaseOperator", "Context"]

_DEFAULT_RETRY_DELAY = timedelta(minutes=5)
_MAX_RETRY_DELAY = timedelta(hours=24)


class BaseOperator(Node):
    """An Airflow operator: a node of its DAG whose task calls :meth:`execute`."""

    is_branch: ClassVar[bool] = False
    template_fields: ClassVar[Sequence[str]] = ()

    def __init__(
        self,
        *,
        task_id: str,
        dag: DAG | None = None,
        owner: str | None = None,
        retries: int | None = None,
        retry_delay: timedelta | float | None = None,
        retry_exponential_backoff: bool | None = None,
        max_retry_delay: timedelta | float | None = None,
        execution_timeout: timedelta | float | None = None,
        pool: str | None = None,
        pool_slots: int | None = None,
        priority_weight: int | None = None,
        trigger_rule: str | None = None,
        start_date: Any = None,
        do_xcom_push: bool | None = None,
        on_failure_callback: Any = None,
        on_success_callback: Any = None,
        on_retry_callback: Any = None,
        params: Mapping[str, Any] | None = None,
        task_group: TaskGroup | None = None,
        **kwargs: Any,
    ) -> None:
        location = caller_location()
        name = type(self).__name__
        if not isinstance(task_id, str) or not task_id.strip():
            raise FlowDefinitionError(
                f"{name} needs a non-empty task_id, not {task_id!r}", location=location
            )
        group = task_group if task_group is not None else current_group()
        owner_dag = dag if dag is not None else current_dag()
        if owner_dag is None and group is not None:
            owner_dag = group.dag
        if owner_dag is None:
            raise FlowDefinitionError(
                f"{name} {task_id!r} has no DAG: create it inside `with DAG(...):` or pass dag=",
                task=task_id,
                location=location,
            )
        if not isinstance(owner_dag, DAG):
            raise FlowDefinitionError(
                f"{name} {task_id!r}: dag= must be a DAG, not {owner_dag!r}",
                task=task_id,
                location=location,
            )
        if group is not None:
            task_id = group.child_id(task_id)
        where = f"DAG {owner_dag.name!r}, task {task_id!r}"
        check_extra(kwargs, f"{where} ({name})", strict=True)
        defaults = {**owner_dag.default_args, **(group.default_args if group else {})}
        given: dict[str, Any] = {
            "owner": owner,
            "retries": retries,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": retry_exponential_backoff,
            "max_retry_delay": max_retry_delay,
            "execution_timeout": execution_timeout,
            "pool": pool,
            "pool_slots": pool_slots,
            "priority_weight": priority_weight,
            "trigger_rule": trigger_rule,
            "start_date": start_date,
            "do_xcom_push": do_xcom_push,
            "on_failure_callback": on_failure_callback,
            "on_success_callback": on_success_callback,
            "on_retry_callback": on_retry_callback,
        }
        args = {k: v if v is not None else defaults.get(k) for k, v in given.items()}
        self.owner: str = str(args["owner"] or owner_dag.owner)
        self.start_date = aware(args["start_date"], "start_date", where)
        self.trigger_rule: str = str(args["trigger_rule"] or TriggerRule.ALL_SUCCESS)
        self.do_xcom_push = args["do_xcom_push"] is not False
        self.params: dict[str, Any] = {**defaults.get("params", {}), **(params or {})}
        self.task_group = group
        exponential = bool(args["retry_exponential_backoff"])
        delay = seconds(args["retry_delay"], "retry_delay", where)
        max_delay = seconds(args["max_retry_delay"], "max_retry_delay", where)
        options = TaskOptions(
            retries=int(args["retries"] or 0),
            retry_delay_s=_DEFAULT_RETRY_DELAY.total_seconds() if delay is None else delay,
            retry_backoff=2.0 if exponential else 1.0,
            retry_jitter=0.1 if exponential else 0.0,
            max_retry_delay_s=_MAX_RETRY_DELAY.total_seconds() if max_delay is None else max_delay,
            timeout_s=seconds(args["execution_timeout"], "execution_timeout", where),
            pool=None if args["pool"] in (None, "default_pool") else str(args["pool"]),
            slots=int(args["pool_slots"] or 1),
            priority=int(args["priority_weight"] if args["priority_weight"] is not None else 1),
            trigger_rule=evflow_rule(self.trigger_rule, owner_dag.name, task_id),
            branch=self.is_branch,
        )
        try:
            options.check(where)
        except FlowDefinitionError as exc:
            raise FlowDefinitionError(
                str(exc), flow=owner_dag.name, task=task_id, location=location
            ) from None
        mapped: dict[str, Any] = getattr(self, "_evflow_mapped", {})
        for field_name in self.template_fields:
            if field_name not in mapped and hasattr(self, field_name):
                value = compile_value(getattr(self, field_name), f"{where}, field {field_name}")
                setattr(self, field_name, value)
        super().__init__(
            owner_dag,
            task_id,
            Task(
                _runner(self),
                task_id,
                options,
                **{
                    name: airflow_callback(args[arg], arg, where, owner_dag, self)
                    for arg, name in CALLBACK_ARGS.items()
                },
            ),
            (),
            {f"{MAP_PREFIX}{k}": map_source(v, where, k) for k, v in mapped.items()},
            mapped=bool(mapped),
            explicit=False,
            location=location,
        )
        self._dag = owner_dag
        owner_dag._add_node(self)
        if group is not None:
            group.add(self)
        for v in mapped.values():
            if isinstance(v, XComArg):
                link(v.operator, self)

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.name}>"

    # -- what evflow passes the task function ------------------------------------------------
    @property
    def kwargs(self) -> dict[str, Any]:
        """The mapped sources, and every upstream task's result (for ``xcom_pull``), as
        keyword arguments that evflow fills in when the task runs."""
        ups = {f"{UPSTREAM_PREFIX}{n.name}": unmapped(n) for n in self.ancestors()}
        return {**self._own_kwargs, **ups}

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self._own_kwargs = value

    def ancestors(self) -> list[Node]:
        """Every task upstream of this one, direct or not."""
        seen: dict[str, Node] = {}
        stack = list(self.upstream)
        while stack:
            node = stack.pop()
            if node.name not in seen:
                seen[node.name] = node
                stack.extend(node.upstream)
        return list(seen.values())

    # -- mapping -----------------------------------------------------------------------------
    @classmethod
    def partial(cls, **kwargs: Any) -> OperatorPartial:
        """The arguments every mapped instance shares; finish with ``.expand(arg=[...])``."""
        return OperatorPartial(cls, kwargs)

    # -- Airflow's names ---------------------------------------------------------------------
    @property
    def task_id(self) -> str:
        return self.name

    @property
    def dag(self) -> DAG:
        return self._dag

    @property
    def dag_id(self) -> str:
        return self._dag.name

    @property
    def output(self) -> XComArg:
        """This task's result, to pass to another task's arguments."""
        return XComArg(self)

    @property
    def upstream_task_ids(self) -> set[str]:
        return {n.name for n in self.upstream}

    @property
    def downstream_task_ids(self) -> set[str]:
        return {n.name for n in self.downstream}

    @property
    def upstream_list(self) -> list[Node]:
        return list(self.upstream)

    @property
    def downstream_list(self) -> list[Node]:
        return list(self.downstream)

    # -- ordering: tasks, lists, XComArgs, task groups and labels ----------------------------
    def __rshift__(self, other: Any) -> Any:
        if isinstance(other, Label):
            return other.after(self)
        link(self, other)
        return other

    def __lshift__(self, other: Any) -> Any:
        link(other, self)
        return other

    def __rrshift__(self, other: Any) -> Any:
        link(other, self)
        return self

    def __rlshift__(self, other: Any) -> Any:
        link(self, other)
        return self

    # -- running -----------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        """Do the work; the return value is the task's result."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def set_mapped(self, items: Mapping[str, Any]) -> None:
        """Give this copy of a mapped operator one instance's items."""
        for k, v in items.items():
            setattr(self, k, v)

    def fingerprint(self) -> str:
        """A hash of the code this operator runs (part of the flow's version)."""
        return code_fingerprint([type(self).execute])

    def run_once(
        self,
        upstream: Mapping[str, Any],
        run_params: Mapping[str, Any],
        mapped: Mapping[str, Any] | None = None,
    ) -> Any:
        """One execution: the context built, templates rendered, ``execute`` called."""
        ctx = current_task()
        run_id = ctx.run_id if ctx is not None else "manual"
        params = dict(ctx.params if ctx is not None else run_params)
        map_index = -1
        if ctx is not None and ctx.task.endswith("]") and "[" in ctx.task:
            map_index = int(ctx.task.rsplit("[", 1)[1][:-1])
        op = copy.copy(self)
        if mapped:
            op.set_mapped(mapped)
        ti = TaskInstance(
            task_id=self.name,
            dag_id=self._dag.name,
            run_id=run_id,
            try_number=ctx.attempt if ctx is not None else 1,
            upstream=upstream,
            all_task_ids=frozenset(self._dag.nodes),
            map_index=map_index,
            mapped_upstream=frozenset(n for n, node in self._dag.nodes.items() if node.mapped),
        )
        context = build_context(self._dag, op, ti, params)
        token = CURRENT_CONTEXT.set(context)
        try:
            for field_name in self.template_fields:
                if hasattr(op, field_name) and field_name not in (mapped or {}):
                    setattr(op, field_name, render_value(getattr(op, field_name), context))
            context["templates_dict"] = getattr(op, "templates_dict", None)
            value = op.execute(context)
        finally:
            CURRENT_CONTEXT.reset(token)
        return self.result(value, ti.pushed)

    def result(self, value: Any, pushed: dict[str, Any]) -> Any:
        """The stored result: the return value, with pushed XComs when there are some."""
        if not pushed:
            return value if self.do_xcom_push else None
        stored = dict(pushed)
        if self.do_xcom_push and value is not None:
            stored[RETURN_KEY] = value
        return {XCOM_MARKER: stored}


def _runner(op: BaseOperator) -> Callable[..., Any]:
    """The evflow task function of ``op``: the results of its upstream tasks (all of them,
    not only the direct ones) and, for one instance of a mapped task, its items come as
    keywords (see :attr:`BaseOperator.kwargs`)."""

    def run(**kwargs: Any) -> Any:
        items = {k[len(MAP_PREFIX) :]: v for k, v in kwargs.items() if k.startswith(MAP_PREFIX)}
        upstream = {
            k[len(UPSTREAM_PREFIX) :]: v for k, v in kwargs.items() if k.startswith(UPSTREAM_PREFIX)
        }
        return op.run_once(upstream, {}, items or None)

    return _fold_fingerprint(run, op)


def _fold_fingerprint(run: Callable[..., Any], op: BaseOperator) -> Callable[..., Any]:
    # The flow's version hashes each task function's code; fold in the operator's own code so
    # a changed callable makes a new version.
    code = run.__code__
    run.__code__ = code.replace(co_consts=(*code.co_consts, op.fingerprint()))
    return run
