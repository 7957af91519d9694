"""Run simple Airflow DAG files on evflow by changing only their imports.

::

    from evflow.compat.airflow import DAG, PythonOperator, EmptyOperator, TriggerRule, chain

A :class:`DAG` is an evflow :class:`~evflow.flows.Flow` named after its ``dag_id``, and every
operator is a :class:`~evflow.flows.Node` of it, so ``engine.run(dag)``, ``evflow run
file.py:dag_id``, ``>>``/``<<``, lists, ``set_upstream``/``set_downstream`` and :func:`chain`
work as usual. ``schedule``/``schedule_interval`` (cron, ``"@daily"``, timedelta) become the
flow's schedule, in the time zone of ``start_date`` when it has a named one; a timedelta counts
from ``start_date``. ``catchup=True`` is the ``catchup`` misfire policy, otherwise ``latest``.
``default_args`` fill the operator arguments not given: ``retries``, ``retry_delay`` (Airflow's
default: 5 minutes), ``retry_exponential_backoff``, ``max_retry_delay``, ``execution_timeout``,
``pool`` (``default_pool`` is no pool), ``pool_slots``, ``priority_weight``, ``trigger_rule``,
``owner`` and ``start_date`` (recorded). Custom operators subclass :class:`BaseOperator` and
implement ``execute(context)``; ``dag.test()`` runs a DAG once on a throwaway engine.

A callable gets Airflow's context: the keyword arguments it names (all with ``**kwargs``) out
of ``ds``, ``ds_nodash``, ``ts``, ``ts_nodash``, ``logical_date``, ``execution_date``,
``run_id``, ``params`` (DAG params and run parameters), ``dag``, ``dag_run`` (``run_id``,
``conf``, ``logical_date``), ``task``, ``ti``/``task_instance`` and ``templates_dict``; explicit
``op_kwargs`` come on top. The logical date is the run parameter ``logical_date`` (ISO 8601)
when given, else the time the run's first operator started in this process.

XCom: a callable's return value is the task's stored result. ``ti.xcom_pull(task_ids=...)``
reads the results of the task's *direct* upstream tasks, which evflow hands to each task; a
task that is not directly upstream is an error that says which edge to add. Values pushed with
``ti.xcom_push(key, value)`` are stored with the result as ``{"__airflow_xcom__": {key: value,
"return_value": ...}}`` and pulled by key the same way.

Differences to know about: Jinja templates in ``op_args``/``op_kwargs`` are not rendered (a
warning says so); a DAG without a schedule has none (Airflow 2 defaulted to daily); ``catchup``
defaults to False; ``all_success`` after a branch runs the join when the taken path succeeded
(evflow leaves skipped upstreams out of the count), which is what ``none_failed_min_one_success``
asks for in Airflow; ``always`` is ``all_done``; ``none_skipped``, ``all_skipped`` and
``one_done`` are refused. Airflow arguments that change nothing here (docs, UI, e-mail address)
are accepted; ones whose behaviour evflow does not provide (``depends_on_past=True``, callbacks,
SLAs, ``end_date``) are accepted with an :class:`AirflowCompatWarning`; unknown DAG or operator
arguments are errors, unknown ``default_args`` keys are ignored, both as in Airflow.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import itertools
import os
import sys
import threading
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Self, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import FlowDefinitionError
from ..flows import Flow, Node, Task, TaskOptions
from ..flows import TriggerRule as FlowTriggerRule
from ..flows.tasks import caller_location
from ..run.context import current_task
from ..schedules import parse_schedule

if TYPE_CHECKING:
    from ..engine import RunResult

__all__ = [
    "DAG",
    "XCOM_MARKER",
    "AirflowCompatWarning",
    "BaseOperator",
    "BranchPythonOperator",
    "DagRun",
    "DummyOperator",
    "EmptyOperator",
    "PythonOperator",
    "TaskInstance",
    "TriggerRule",
    "chain",
    "cross_downstream",
    "days_ago",
    "get_current_context",
]

Context = dict[str, Any]
XCOM_MARKER = "__airflow_xcom__"
RETURN_KEY = "return_value"
_DEFAULT_RETRY_DELAY = timedelta(minutes=5)
_MAX_RETRY_DELAY = timedelta(hours=24)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AirflowCompatWarning(UserWarning):
    """An Airflow argument was accepted but has no effect in evflow."""


class TriggerRule(StrEnum):
    """Airflow's trigger rule names (see the module docstring for how each maps)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_OR_SKIPPED = "none_failed_or_skipped"
    NONE_SKIPPED = "none_skipped"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    ALL_SKIPPED = "all_skipped"
    ALWAYS = "always"
    DUMMY = "dummy"


_RULES: dict[str, str] = {
    # Airflow's all_success skips a task when an upstream was skipped; evflow's native one
    # leaves skipped upstreams out (a friendlier join after a branch): use the strict one here.
    "all_success": "all_success_strict",
    "all_failed": "all_failed",
    "all_done": "all_done",
    "all_done_min_one_success": "all_done_min_one_success",
    "all_skipped": "all_skipped",
    "one_success": "one_success",
    "one_failed": "one_failed",
    "one_done": "one_done",
    "none_failed": "none_failed",
    "none_failed_min_one_success": "none_failed_min_one_success",
    "none_failed_or_skipped": "none_failed_min_one_success",  # its old name
    "none_skipped": "none_skipped",
    "always": "always",
    "dummy": "always",  # its old name
}

# Arguments that change nothing observable here: accepted silently.
_QUIET = frozenset(
    {
        "doc", "doc_md", "doc_rst", "doc_json", "doc_yaml", "email", "owner_links",
        "default_view", "orientation", "show_return_value_in_logs", "provide_context",
        "is_paused_upon_creation", "access_control", "template_searchpath",
        "template_undefined", "user_defined_macros", "user_defined_filters",
        "jinja_environment_kwargs", "render_template_as_native_obj", "queue", "weight_rule",
        "task_display_name", "dag_display_name", "executor_config", "resources", "run_as_user",
        "templates_exts", "logger_name", "inlets", "outlets", "auto_register", "full_filepath",
        "wait_for_past_depends_before_skipping", "ignore_first_depends_on_past",
        "allow_nested_operators",
    }
)  # fmt: skip
# Airflow behaviour evflow does not provide: accepted, with a warning when set.
_UNSUPPORTED = frozenset(
    {
        "depends_on_past", "wait_for_downstream", "email_on_failure", "email_on_retry", "sla",
        "on_failure_callback", "on_success_callback", "on_retry_callback",
        "on_execute_callback", "on_skipped_callback", "pre_execute", "post_execute",
        "end_date", "params", "task_concurrency", "max_active_tis_per_dag",
        "max_active_tis_per_dagrun", "executor", "multiple_outputs", "task_group",
        "dagrun_timeout", "max_active_tasks", "concurrency", "sla_miss_callback",
        "max_consecutive_failed_dag_runs", "fail_stop", "timetable",
    }
)  # fmt: skip

_CURRENT_DAG: contextvars.ContextVar[DAG | None] = contextvars.ContextVar(
    "evflow_airflow_dag", default=None
)
_CURRENT_CONTEXT: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "evflow_airflow_context", default=None
)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside evflow."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def _check_extra(extra: Mapping[str, Any], where: str, *, strict: bool) -> None:
    """Warn about set arguments evflow ignores; unknown ones are errors when ``strict``."""
    unknown = sorted(k for k in extra if k not in _QUIET and k not in _UNSUPPORTED)
    if unknown and strict:
        raise FlowDefinitionError(
            f"{where}: unknown argument(s) {', '.join(unknown)}", location=caller_location()
        )
    ignored = sorted(k for k, v in extra.items() if k in _UNSUPPORTED and v)
    if ignored:
        warnings.warn(
            f"{where}: evflow has no equivalent of {', '.join(ignored)}; ignored",
            AirflowCompatWarning,
            stacklevel=_user_stacklevel(),
        )


def _seconds(value: Any, what: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise FlowDefinitionError(
        f"{where}: {what} must be a timedelta or a number of seconds, not {value!r}",
        location=caller_location(),
    )


def _aware(value: Any, what: str, where: str) -> datetime | None:
    """A start/end date in UTC when naive (Airflow's default time zone)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise FlowDefinitionError(
            f"{where}: {what} must be a datetime, not {value!r}", location=caller_location()
        )
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _zone_name(start: datetime | None, where: str) -> str:
    """The IANA time zone of ``start`` (zoneinfo or pendulum) for cron schedules; else UTC."""
    tz: tzinfo | None = start.tzinfo if start is not None else None
    if tz is None:
        return "UTC"
    name = getattr(tz, "key", None) or getattr(tz, "name", None)
    if isinstance(name, str):
        try:
            ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            pass
        else:
            return name
    if start is not None and start.utcoffset() == timedelta(0):
        return "UTC"
    raise FlowDefinitionError(
        f"{where}: start_date has a fixed-offset time zone ({tz}); a cron schedule needs a "
        "named one, e.g. zoneinfo.ZoneInfo('Europe/Paris')",
        location=caller_location(),
    )


def days_ago(n: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """Midnight UTC ``n`` days ago (Airflow's ``airflow.utils.dates.days_ago``)."""
    today = datetime.now(UTC).replace(hour=hour, minute=minute, second=second, microsecond=0)
    return today - timedelta(days=n)


# -- the DAG -----------------------------------------------------------------------------------
class DAG(Flow):
    """An Airflow-style DAG: an evflow flow named ``dag_id``.

    Use it as ``with DAG(...) as dag:`` or pass ``dag=dag`` to each operator. The graph is
    validated when the ``with`` block ends; edges are checked for cycles as they are added.
    """

    def __init__(
        self,
        dag_id: str,
        description: str | None = None,
        *,
        schedule: Any = None,
        schedule_interval: Any = None,
        start_date: datetime | None = None,
        default_args: Mapping[str, Any] | None = None,
        catchup: bool = False,
        max_active_runs: int | None = None,
        tags: Sequence[str] | None = None,
        params: Mapping[str, Any] | None = None,
        doc_md: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = f"DAG {dag_id!r}"
        _check_extra(kwargs, where, strict=True)
        self.default_args: dict[str, Any] = dict(default_args or {})
        _check_extra(
            {k: v for k, v in self.default_args.items() if k not in _OPERATOR_ARGS},
            f"{where} default_args",
            strict=False,
        )
        if schedule is not None and schedule_interval is not None:
            raise FlowDefinitionError(
                f"{where}: give schedule or schedule_interval, not both",
                flow=dag_id,
                location=caller_location(),
            )
        raw = schedule if schedule is not None else schedule_interval
        self.start_date = _aware(
            start_date or self.default_args.get("start_date"), "start_date", where
        )
        zone = _zone_name(self.start_date, where) if isinstance(raw, str) else "UTC"
        try:
            trigger = parse_schedule(raw, tz=zone, start=self.start_date)
        except Exception as exc:
            raise FlowDefinitionError(
                f"{where}: bad schedule {raw!r}: {exc}", flow=dag_id, location=caller_location()
            ) from None
        super().__init__(
            dag_id,
            schedule=trigger,
            max_active_runs=max_active_runs,
            params=params,
            description=description or (doc_md or "").strip().split("\n")[0],
            misfire="catchup" if catchup else "latest",
            tags=tags or (),
        )
        self.open_params = True  # like dag_run.conf, a run may carry any parameter
        self.schedule_interval = raw
        self.catchup = catchup
        self.owner: str = str(self.default_args.get("owner", "airflow"))
        self.doc_md = doc_md
        self._dag_tokens: list[contextvars.Token[DAG | None]] = []
        self._run_dates: OrderedDict[str, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DAG: {self.name}>"

    def __enter__(self) -> Self:
        super().__enter__()
        self._dag_tokens.append(_CURRENT_DAG.set(self))
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        _CURRENT_DAG.reset(self._dag_tokens.pop())
        super().__exit__(exc_type, exc, tb)

    @property
    def dag_id(self) -> str:
        return self.name

    @property
    def params(self) -> dict[str, Any]:
        """The DAG's parameter defaults."""
        return dict(self.defaults)

    @property
    def tasks(self) -> list[Node]:
        return list(self.nodes.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.nodes)

    @property
    def task_dict(self) -> dict[str, Node]:
        return dict(self.nodes)

    def get_task(self, task_id: str) -> Node:
        """The task named ``task_id``; a missing one is a :class:`KeyError` naming the DAG."""
        try:
            return self.nodes[task_id]
        except KeyError:
            raise KeyError(f"DAG {self.name!r} has no task {task_id!r}") from None

    def test(
        self, execution_date: datetime | None = None, run_conf: Mapping[str, Any] | None = None
    ) -> RunResult:
        """Run the DAG once, now, on a throwaway engine and return the result (like Airflow's
        ``dag.test()``). Call it from plain code, not from inside a running event loop."""
        import tempfile
        from pathlib import Path

        import anyio

        from ..engine import Engine

        params = dict(run_conf or {})
        if execution_date is not None:
            params["logical_date"] = _aware(execution_date, "execution_date", "dag.test()")
        if isinstance(params.get("logical_date"), datetime):
            params["logical_date"] = params["logical_date"].isoformat()

        async def main() -> RunResult:
            with tempfile.TemporaryDirectory() as tmp:
                async with Engine(Path(tmp) / "dag-test.db") as engine:
                    return await engine.run(self, **params)

        return anyio.run(main)

    def _logical_date(self, run_id: str, params: Mapping[str, Any]) -> datetime:
        raw = params.get("logical_date")
        if raw is not None:
            try:
                value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
            except ValueError:
                raise ValueError(
                    f"DAG {self.name!r}: run parameter logical_date={raw!r} is not ISO 8601"
                ) from None
            return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        with self._lock:
            found = self._run_dates.get(run_id)
            if found is None:
                found = self._run_dates[run_id] = datetime.now(UTC).replace(microsecond=0)
                while len(self._run_dates) > 1024:
                    self._run_dates.popitem(last=False)
            return found


# -- what a running operator sees --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DagRun:
    """The run an operator belongs to (the fields Airflow callables use most)."""

    dag_id: str
    run_id: str
    conf: dict[str, Any]
    logical_date: datetime

    @property
    def execution_date(self) -> datetime:
        return self.logical_date


@dataclass(slots=True)
class TaskInstance:
    """``ti`` in the context: identity, attempt number and XCom access."""

    task_id: str
    dag_id: str
    run_id: str
    try_number: int
    upstream: Mapping[str, Any]
    all_task_ids: frozenset[str]
    map_index: int = -1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` with this task's result (JSON values only)."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"task {self.task_id!r}: an XCom key must be a non-empty string")
        self.pushed[key] = value

    def xcom_pull(
        self,
        task_ids: str | Iterable[str] | None = None,
        dag_id: str | None = None,
        key: str = RETURN_KEY,
        include_prior_dates: bool = False,
        *,
        default: Any = None,
    ) -> Any:
        """The XCom ``key`` of an upstream task (a list for a list of ``task_ids``)."""
        if task_ids is None:
            raise ValueError(
                f"task {self.task_id!r}: xcom_pull needs task_ids (the upstream task to read)"
            )
        if dag_id not in (None, self.dag_id) or include_prior_dates:
            raise NotImplementedError(
                f"task {self.task_id!r}: xcom_pull reads this run of this DAG only"
            )
        if isinstance(task_ids, str):
            return self._pull(task_ids, key, default)
        return [self._pull(t, key, default) for t in task_ids]

    def _pull(self, task_id: str, key: str, default: Any) -> Any:
        if task_id not in self.upstream:
            if task_id not in self.all_task_ids:
                return default
            raise FlowDefinitionError(
                f"DAG {self.dag_id!r}: task {self.task_id!r} pulls the XCom of task "
                f"{task_id!r}, which is not directly upstream of it; add "
                f"{task_id} >> {self.task_id} (upstream: {', '.join(self.upstream) or 'none'})",
                flow=self.dag_id,
                task=self.task_id,
            )
        value = self.upstream[task_id]
        if isinstance(value, dict) and set(value) == {XCOM_MARKER}:
            return value[XCOM_MARKER].get(key, default)
        if key != RETURN_KEY:
            return default
        return default if value is None else value


def get_current_context() -> Context:
    """The Airflow context of the operator running here."""
    ctx = _CURRENT_CONTEXT.get()
    if ctx is None:
        raise RuntimeError("get_current_context() is only available while an operator runs")
    return ctx


# -- operators ---------------------------------------------------------------------------------
_OPERATOR_ARGS = frozenset(
    {
        "owner", "retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay",
        "execution_timeout", "pool", "pool_slots", "priority_weight", "trigger_rule",
        "start_date", "do_xcom_push",
    }
)  # fmt: skip


def _trigger_rule(value: Any, dag: DAG, task_id: str) -> FlowTriggerRule:
    rule = str(value.value if isinstance(value, TriggerRule) else value)
    mapped = _RULES.get(rule)
    if mapped is None:
        known = sorted(_RULES) if rule not in {r.value for r in TriggerRule} else None
        reason = (
            f"unknown trigger_rule {rule!r}; expected one of {', '.join(known)}"
            if known
            else f"trigger_rule {rule!r} has no evflow equivalent"
        )
        raise FlowDefinitionError(
            f"DAG {dag.name!r}, task {task_id!r}: {reason}",
            flow=dag.name,
            task=task_id,
            location=caller_location(),
        )
    return cast(FlowTriggerRule, mapped)


def _code_fingerprint(objs: Iterable[Any]) -> str:
    """A hash of the code of ``objs`` that is stable across processes."""
    h = hashlib.sha256()

    def add(code: types.CodeType) -> None:
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                add(c)
            elif isinstance(c, frozenset):
                h.update(repr(sorted(map(repr, c))).encode())
            else:
                h.update(repr(c).encode())

    for obj in objs:
        code = getattr(obj, "__code__", None)
        if isinstance(code, types.CodeType):
            add(code)
        else:
            h.update(type(obj).__qualname__.encode())
    return h.hexdigest()[:16]


def _make_runner(op: BaseOperator) -> Callable[..., Any]:
    """The evflow task function of ``op``.

    evflow passes an explicit task the results of its upstream tasks positionally, in the
    order of ``node.upstream``, and the run parameters as keywords.
    """

    def run(*_evflow_upstream_results: Any, **_evflow_run_params: Any) -> Any:
        return op._run(_evflow_upstream_results, _evflow_run_params)

    # The flow's version hashes each task function's code; fold in the operator's own code so
    # a changed callable makes a new version.
    code = run.__code__
    run.__code__ = code.replace(co_consts=(*code.co_consts, op._fingerprint()))
    return run


class BaseOperator(Node):
    """An Airflow operator: a node of its DAG whose task calls :meth:`execute`.

    Subclasses implement ``execute(self, context)``; its return value is the task's result.
    """

    is_branch = False

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
        start_date: datetime | None = None,
        do_xcom_push: bool | None = None,
        **kwargs: Any,
    ) -> None:
        location = caller_location()
        if not isinstance(task_id, str) or not task_id.strip():
            raise FlowDefinitionError(
                f"{type(self).__name__} needs a non-empty task_id, not {task_id!r}",
                location=location,
            )
        owner_dag = dag if dag is not None else _CURRENT_DAG.get()
        if owner_dag is None:
            raise FlowDefinitionError(
                f"{type(self).__name__} {task_id!r} has no DAG: create it inside "
                "`with DAG(...):` or pass dag=",
                task=task_id,
                location=location,
            )
        if not isinstance(owner_dag, DAG):
            raise FlowDefinitionError(
                f"{type(self).__name__} {task_id!r}: dag= must be a DAG, not {owner_dag!r}",
                task=task_id,
                location=location,
            )
        where = f"DAG {owner_dag.name!r}, task {task_id!r}"
        _check_extra(kwargs, where, strict=True)
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
        }
        args = {k: v if v is not None else owner_dag.default_args.get(k) for k, v in given.items()}
        self.owner: str = str(args["owner"] or owner_dag.owner)
        self.start_date = _aware(args["start_date"], "start_date", where)
        self.trigger_rule: str = str(args["trigger_rule"] or TriggerRule.ALL_SUCCESS)
        self.do_xcom_push = args["do_xcom_push"] is not False
        exponential = bool(args["retry_exponential_backoff"])
        delay = _seconds(args["retry_delay"], "retry_delay", where)
        max_delay = _seconds(args["max_retry_delay"], "max_retry_delay", where)
        options = TaskOptions(
            retries=int(args["retries"] or 0),
            retry_delay_s=_DEFAULT_RETRY_DELAY.total_seconds() if delay is None else delay,
            retry_backoff=2.0 if exponential else 1.0,
            retry_jitter=0.1 if exponential else 0.0,
            max_retry_delay_s=_MAX_RETRY_DELAY.total_seconds() if max_delay is None else max_delay,
            timeout_s=_seconds(args["execution_timeout"], "execution_timeout", where),
            pool=None if args["pool"] in (None, "default_pool") else str(args["pool"]),
            slots=int(args["pool_slots"] or 1),
            priority=int(args["priority_weight"] if args["priority_weight"] is not None else 1),
            trigger_rule=_trigger_rule(self.trigger_rule, owner_dag, task_id),
            branch=self.is_branch,
        )
        try:
            options.check(where)
        except FlowDefinitionError as exc:
            raise FlowDefinitionError(
                str(exc), flow=owner_dag.name, task=task_id, location=location
            ) from None
        super().__init__(
            owner_dag,
            task_id,
            Task(_make_runner(self), task_id, options),
            (),
            {},
            mapped=False,
            explicit=True,
            location=location,
        )
        self._dag = owner_dag
        owner_dag._add_node(self)

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.name}>"

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

    # -- running -----------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        """Do the work; the return value is the task's result."""
        raise NotImplementedError(f"{type(self).__name__} does not implement execute()")

    def _fingerprint(self) -> str:
        return _code_fingerprint([type(self).execute])

    def _run(self, upstream_values: Sequence[Any], run_params: Mapping[str, Any]) -> Any:
        names = [n.name for n in self.upstream]
        if len(names) != len(upstream_values):
            raise RuntimeError(
                f"task {self.name!r} got {len(upstream_values)} upstream result(s) for "
                f"{len(names)} upstream task(s)"
            )
        ctx = current_task()
        run_id = ctx.run_id if ctx is not None else "manual"
        params = dict(ctx.params if ctx is not None else run_params)
        logical = self._dag._logical_date(run_id, params)
        ti = TaskInstance(
            task_id=self.name,
            dag_id=self._dag.name,
            run_id=run_id,
            try_number=ctx.attempt if ctx is not None else 1,
            upstream=dict(zip(names, upstream_values, strict=True)),
            all_task_ids=frozenset(self._dag.nodes),
        )
        context: Context = {
            "dag": self._dag,
            "dag_run": DagRun(self._dag.name, run_id, dict(params), logical),
            "ds": logical.strftime("%Y-%m-%d"),
            "ds_nodash": logical.strftime("%Y%m%d"),
            "ts": logical.isoformat(),
            "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
            "logical_date": logical,
            "execution_date": logical,
            "run_id": run_id,
            "params": params,
            "task": self,
            "ti": ti,
            "task_instance": ti,
            "templates_dict": getattr(self, "templates_dict", None),
        }
        token = _CURRENT_CONTEXT.set(context)
        try:
            value = self.execute(context)
        finally:
            _CURRENT_CONTEXT.reset(token)
        return self._result(value, ti.pushed)

    def _result(self, value: Any, pushed: dict[str, Any]) -> Any:
        if not pushed:
            return value if self.do_xcom_push else None
        stored = dict(pushed)
        if self.do_xcom_push and value is not None:
            stored[RETURN_KEY] = value
        return {XCOM_MARKER: stored}


class PythonOperator(BaseOperator):
    """Calls ``python_callable(*op_args, **op_kwargs)`` plus the context arguments it names."""

    def __init__(
        self,
        *,
        task_id: str,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: Mapping[str, Any] | None = None,
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
        super().__init__(task_id=task_id, **kwargs)
        if _has_template([self.op_args, self.op_kwargs, self.templates_dict]):
            warnings.warn(
                f"DAG {self.dag_id!r}, task {task_id!r}: Jinja templates in op_args, "
                "op_kwargs and templates_dict are not rendered by evflow; read the context "
                "(ds, params, ...) in the callable instead",
                AirflowCompatWarning,
                stacklevel=_user_stacklevel(),
            )

    def _fingerprint(self) -> str:
        return _code_fingerprint([type(self).execute, self.python_callable])

    def execute(self, context: Context) -> Any:
        return self.python_callable(*self.op_args, **self._kwargs(context))

    def _kwargs(self, context: Context) -> dict[str, Any]:
        try:
            sig = inspect.signature(self.python_callable)
        except (TypeError, ValueError):
            return dict(self.op_kwargs)
        params = list(sig.parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return {**context, **self.op_kwargs}
        positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        taken = set(positional[: len(self.op_args)])
        named = {p.name for p in params if p.kind is not p.VAR_POSITIONAL} - taken
        picked = {k: v for k, v in context.items() if k in named}
        return {**picked, **self.op_kwargs}


class BranchPythonOperator(PythonOperator):
    """The callable returns the task_id(s) to follow; the other downstream tasks are skipped."""

    is_branch = True

    def _result(self, value: Any, pushed: dict[str, Any]) -> Any:
        if pushed:
            raise NotImplementedError(
                f"branch task {self.name!r}: xcom_push is not available in a branch callable"
            )
        if value is None:
            return []
        if isinstance(value, str):
            return value
        if isinstance(value, Iterable):
            chosen = list(value)
            if all(isinstance(v, str) for v in chosen):
                return chosen
        raise TypeError(
            f"branch task {self.name!r} must return a task_id or a list of task_ids, not {value!r}"
        )


class EmptyOperator(BaseOperator):
    """Does nothing; useful to group or join branches."""

    def execute(self, context: Context) -> None:
        return None


DummyOperator = EmptyOperator  # the name before Airflow 2.4


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_template(v) for v in value)
    return False


# -- relationships -----------------------------------------------------------------------------
def _node_list(value: Node | Sequence[Node]) -> list[Node]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    for it in items:
        if not isinstance(it, Node):
            raise FlowDefinitionError(
                f"chain() takes tasks or lists of tasks, not {it!r}", location=caller_location()
            )
    return items  # type: ignore[return-value]


def chain(*tasks: Node | Sequence[Node]) -> None:
    """``chain(a, [b, c], d)`` is ``a >> [b, c] >> d``; two adjacent lists pair up one to one."""
    for up, down in itertools.pairwise(tasks):
        ups, downs = _node_list(up), _node_list(down)
        if isinstance(up, list | tuple) and isinstance(down, list | tuple):
            if len(ups) != len(downs):
                raise FlowDefinitionError(
                    f"chain(): adjacent lists must have the same length, not {len(ups)} "
                    f"and {len(downs)}",
                    location=caller_location(),
                )
            pairs: Iterable[tuple[Node, Node]] = zip(ups, downs, strict=True)
        else:
            pairs = itertools.product(ups, downs)
        for u, d in pairs:
            u >> d


def cross_downstream(from_tasks: Sequence[Node], to_tasks: Node | Sequence[Node]) -> None:
    """Every task of ``from_tasks`` runs before every task of ``to_tasks``."""
    for u, d in itertools.product(_node_list(from_tasks), _node_list(to_tasks)):
        u >> d
