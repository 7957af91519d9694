"""What a running operator sees: Airflow's context, ``ti`` with XCom, ``dag_run``.

A callable gets the keyword arguments it names (all of them with ``**kwargs``) out of
:data:`~evflow.compat.airflow.templates.CONTEXT_NAMES`; ``get_current_context()`` returns the
same mapping from anywhere inside the task.

XCom: a task's return value is its stored result. ``ti.xcom_pull(task_ids=...)`` reads the
results of the task's upstream tasks (direct or not), which evflow hands to each task; a task
that is not upstream is an error that says which edge to add. Values pushed with
``ti.xcom_push(key, value)`` are stored with the result as ``{"__airflow_xcom__": {key: value,
"return_value": ...}}`` and pulled by key the same way.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import FlowDefinitionError
from ...frozen import record

if TYPE_CHECKING:
    from .dag import DAG

__all__ = [
    "RETURN_KEY",
    "XCOM_MARKER",
    "Context",
    "DagRun",
    "TaskInstance",
    "current_dag_file",
    "get_current_context",
    "unwrap",
]

Context = dict[str, Any]
XCOM_MARKER = "__airflow_xcom__"
RETURN_KEY = "return_value"

CURRENT_CONTEXT: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "evflow_airflow_context", default=None
)


def unwrap(value: Any, key: str, default: Any) -> Any:
    """The XCom ``key`` of a stored task result."""
    if isinstance(value, dict) and set(value) == {XCOM_MARKER}:
        return value[XCOM_MARKER].get(key, default)
    if key != RETURN_KEY:
        return default
    return default if value is None else value


@record
class DagRun:
    """The run an operator belongs to (the fields Airflow callables use most)."""

    dag_id: str
    run_id: str
    conf: dict[str, Any]
    logical_date: datetime
    data_interval_start: datetime
    data_interval_end: datetime
    run_type: str

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
    mapped_upstream: frozenset[str] = frozenset()
    pushed: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> Any:
        """A logger whose lines are stored with this task attempt (Airflow's ``ti.log``)."""
        from ...run.context import get_logger

        return get_logger()

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
        map_indexes: int | Iterable[int] | None = None,
        *,
        default: Any = None,
    ) -> Any:
        """The XCom ``key`` of an upstream task (a list for a list of ``task_ids``); for a
        mapped task, the list of its instances' values, or those of ``map_indexes``."""
        if task_ids is None:
            raise ValueError(
                f"task {self.task_id!r}: xcom_pull needs task_ids (the upstream task to read)"
            )
        if dag_id not in (None, self.dag_id) or include_prior_dates:
            raise NotImplementedError(
                f"task {self.task_id!r}: xcom_pull reads this run of this DAG only"
            )
        if isinstance(task_ids, str):
            return _pick(self.pull(task_ids, key, default), map_indexes)
        return [_pick(self.pull(t, key, default), map_indexes) for t in task_ids]

    def pull(self, task_id: str, key: str = RETURN_KEY, default: Any = None) -> Any:
        """One upstream task's XCom (a list, one per instance, for a mapped task)."""
        if task_id not in self.upstream:
            if task_id not in self.all_task_ids:
                return default
            ups = ", ".join(sorted(self.upstream)) or "none"
            raise FlowDefinitionError(
                f"DAG {self.dag_id!r}: task {self.task_id!r} pulls the XCom of task "
                f"{task_id!r}, which is not upstream of it (its result may not exist yet); add "
                f"{task_id} >> {self.task_id} (upstream: {ups})",
                flow=self.dag_id,
                task=self.task_id,
            )
        value = self.upstream[task_id]
        if task_id in self.mapped_upstream and isinstance(value, list):
            return [unwrap(v, key, default) for v in value]
        return unwrap(value, key, default)


def _pick(value: Any, map_indexes: int | Iterable[int] | None) -> Any:
    if map_indexes is None or not isinstance(value, list):
        return value
    if isinstance(map_indexes, int):
        return value[map_indexes]
    return [value[i] for i in map_indexes]


def get_current_context() -> Context:
    """The Airflow context of the operator running here."""
    ctx = CURRENT_CONTEXT.get()
    if ctx is None:
        raise RuntimeError("get_current_context() is only available while an operator runs")
    return ctx


def current_dag_file() -> str | None:
    """The file of the DAG running or being defined here, if any."""
    ctx = CURRENT_CONTEXT.get()
    dag: DAG | None = ctx.get("dag") if ctx is not None else None
    if dag is None:
        from .dag import current_dag

        dag = current_dag()
    if dag is None:
        from ...flows.tasks import caller_location

        where = caller_location()
        return None if where == "<unknown>" else where.rsplit(":", 1)[0]
    return dag.location.rsplit(":", 1)[0]


def build_context(dag: DAG, op: Any, ti: TaskInstance, params: Mapping[str, Any]) -> Context:
    """The context of one execution of ``op`` in run ``ti.run_id`` with ``params``."""
    from . import macros
    from .dates import SLOT_PARAM
    from .variables import VariableAccessor

    conf = {k: v for k, v in params.items() if k != SLOT_PARAM}
    interval = dag.interval(ti.run_id, params)
    logical = interval.logical_date
    ds = logical.strftime("%Y-%m-%d")
    run_params = {**dag.params, **getattr(op, "params", {}), **conf}
    run_params.pop("logical_date", None)
    dag_run = DagRun(
        dag.name, ti.run_id, conf, logical, interval.start, interval.end, interval.run_type
    )
    return {
        "dag": dag,
        "dag_run": dag_run,
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": logical.isoformat(),
        "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": logical.strftime("%Y%m%dT%H%M%S%z"),
        "logical_date": logical,
        "execution_date": logical,
        "data_interval_start": interval.start,
        "data_interval_end": interval.end,
        "run_id": ti.run_id,
        "run_type": interval.run_type,
        "params": run_params,
        "task": op,
        "ti": ti,
        "task_instance": ti,
        "map_index": ti.map_index,
        "templates_dict": getattr(op, "templates_dict", None),
        "macros": macros,
        "var": VariableAccessor(),
        "conf": {},
    }
