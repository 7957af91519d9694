"""The Airflow ``DAG``: an evflow :class:`~evflow.flows.Flow` named after its ``dag_id``.

``schedule``/``schedule_interval`` (cron, ``"@daily"``, timedelta) become the flow's schedule,
in the time zone of ``start_date`` when it has a named one; a timedelta counts from
``start_date``. ``catchup=True`` is the ``catchup`` misfire policy (missed slots all run),
otherwise ``latest``; ``max_active_runs`` is the flow's. ``default_args`` fill the operator
arguments not given. A DAG created at a module's top level is found by the loader even when
it is not assigned to a name (a bare ``@dag`` call, ``with DAG(...):``), as in Airflow.
"""

from __future__ import annotations

import contextvars
import os
import sys
import types
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from ...errors import FlowDefinitionError
from ...flows import Flow, Node
from ...flows.tasks import caller_location
from ...schedules import parse_schedule
from .arguments import OPERATOR_ARGS, PACKAGE_DIR, aware, check_extra, zone_name
from .callbacks import airflow_callback
from .dates import SLOT_PARAM, Interval, RunDates
from .params import param_default

if TYPE_CHECKING:
    from ...engine import RunResult

__all__ = ["DAG", "UPSTREAM_PREFIX", "current_dag"]

# evflow trigger rules under which a skipped upstream always skips the task
_SKIP_FOLLOWING = frozenset({"all_success_strict", "all_failed", "none_skipped"})

#: The keyword through which an operator gets the result of an upstream task.
UPSTREAM_PREFIX = "_evflow_up_"

_CURRENT_DAG: contextvars.ContextVar[DAG | None] = contextvars.ContextVar(
    "evflow_airflow_dag", default=None
)


def current_dag() -> DAG | None:
    """The DAG whose ``with`` block (or ``@dag`` body) is running here."""
    return _CURRENT_DAG.get()


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
        auto_register: bool = True,
        on_failure_callback: Any = None,
        on_success_callback: Any = None,
        **kwargs: Any,
    ) -> None:
        where = f"DAG {dag_id!r}"
        check_extra(kwargs, where, strict=True)
        self.default_args: dict[str, Any] = dict(default_args or {})
        check_extra(
            {k: v for k, v in self.default_args.items() if k not in OPERATOR_ARGS},
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
        self.start_date = aware(
            start_date or self.default_args.get("start_date"), "start_date", where
        )
        zone = zone_name(self.start_date, where) if isinstance(raw, str) else "UTC"
        try:
            trigger = parse_schedule(raw, tz=zone, start=self.start_date)
        except Exception as exc:
            raise FlowDefinitionError(
                f"{where}: bad schedule {raw!r}: {exc}", flow=dag_id, location=caller_location()
            ) from None
        dag_params = {k: param_default(v) for k, v in (params or {}).items()}
        super().__init__(
            dag_id,
            schedule=trigger,
            max_active_runs=max_active_runs,
            # the slot parameter lets scheduled and backfill runs hand over their slot
            params={**dag_params, SLOT_PARAM: None},
            description=description or (doc_md or "").strip().split("\n")[0],
            misfire="catchup" if catchup else "latest",
            tags=tags or (),
        )
        self.open_params = True  # like dag_run.conf, a run may carry any parameter
        self.schedule_interval = raw
        self.catchup = catchup
        self.owner: str = str(self.default_args.get("owner", "airflow"))
        self.doc_md = doc_md
        self.dates = RunDates(dag_id, trigger)
        self.on_failure = airflow_callback(on_failure_callback, "on_failure_callback", where, self)
        self.on_success = airflow_callback(on_success_callback, "on_success_callback", where, self)
        self._dag_tokens: list[contextvars.Token[DAG | None]] = []
        self._short_circuits: set[str] = set()
        if auto_register:
            _register(self)

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
        return {k: v for k, v in self.defaults.items() if k != SLOT_PARAM}

    @property
    def tasks(self) -> list[Node]:
        return list(self.nodes.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.nodes)

    @property
    def task_dict(self) -> dict[str, Node]:
        return dict(self.nodes)

    def add_edge(self, up: Node, down: Node) -> None:
        """``up >> down``, checked against the short circuits of this DAG."""
        super().add_edge(up, down)
        if self._short_circuits:
            self._check_short_circuits()

    def register_short_circuit(self, task_id: str) -> None:
        """``task_id`` skips everything downstream when it is falsy, whatever their rules."""
        self._short_circuits.add(task_id)
        self._check_short_circuits()

    def _check_short_circuits(self) -> None:
        """A task beyond a short circuit's direct downstream must skip after a skipped
        upstream by its own rule, since evflow applies the skip to direct downstream tasks
        only: refuse, at load, a rule that could run it instead."""
        for name in self._short_circuits:
            sc = self.nodes[name]
            direct = {d.name for d in sc.downstream}
            seen: set[str] = set()
            stack = [d for first in sc.downstream for d in first.downstream]
            while stack:
                node = stack.pop()
                if node.name in seen:
                    continue
                seen.add(node.name)
                stack.extend(node.downstream)
                if node.name in direct or node.options.trigger_rule in _SKIP_FOLLOWING:
                    continue
                rule = getattr(node, "trigger_rule", node.options.trigger_rule)
                raise FlowDefinitionError(
                    f"DAG {self.name!r}: task {node.name!r} (trigger_rule {rule}) is downstream "
                    f"of short-circuit task {name!r}, which in Airflow skips it whatever its "
                    "rule; evflow skips only the direct downstream tasks and lets the others "
                    "follow their rules: pass ignore_downstream_trigger_rules=False to "
                    f"{name!r} to accept that",
                    flow=self.name,
                    task=node.name,
                    location=getattr(node, "location", None),
                )

    def get_task(self, task_id: str) -> Node:
        """The task named ``task_id``; a missing one is a :class:`KeyError` naming the DAG."""
        try:
            return self.nodes[task_id]
        except KeyError:
            raise KeyError(f"DAG {self.name!r} has no task {task_id!r}") from None

    def interval(self, run_id: str, params: Mapping[str, Any]) -> Interval:
        """The logical date and data interval of run ``run_id`` (see :mod:`.dates`)."""
        return self.dates.interval(run_id, params)

    def test(
        self, execution_date: datetime | None = None, run_conf: Mapping[str, Any] | None = None
    ) -> RunResult:
        """Run the DAG once, now, on a throwaway engine and return the result (like Airflow's
        ``dag.test()``). Call it from plain code, not from inside a running event loop."""
        import tempfile
        from pathlib import Path

        import anyio

        from ...engine import Engine

        params = dict(run_conf or {})
        if execution_date is not None:
            params["logical_date"] = aware(execution_date, "execution_date", "dag.test()")
        if isinstance(params.get("logical_date"), datetime):
            params["logical_date"] = params["logical_date"].isoformat()

        async def main() -> RunResult:
            with tempfile.TemporaryDirectory() as tmp:
                async with Engine(Path(tmp) / "dag-test.db") as engine:
                    return await engine.run(self, **params)

        return anyio.run(main)


def _register(dag: DAG) -> None:
    """Keep ``dag`` in the globals of the module creating it, so the loader finds it even
    when the file does not assign it to a name (Airflow registers such DAGs too)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE_DIR):
        frame = frame.f_back
    if frame is not None and frame.f_code.co_name == "<module>":
        frame.f_globals.setdefault(f"__airflow_dag_{dag.name}__", dag)
