"""Run Airflow DAG files on evflow by changing only their imports.

::

    from evflow.compat.airflow import DAG, BashOperator, PythonOperator, dag, task, chain

A :class:`DAG` is an evflow :class:`~evflow.flows.Flow` named after its ``dag_id`` and every
operator is a :class:`~evflow.flows.Node` of it, so ``engine.run(dag)``, ``evflow run
file.py:dag_id``, ``evflow backfill``, ``>>``/``<<`` and lists work as usual. One module per
concept:

* :mod:`.dag` — ``DAG`` (schedule, ``catchup``, ``max_active_runs``, ``default_args``);
  :mod:`.params` — ``Param``;
* :mod:`.base`, :mod:`.python`, :mod:`.bash`, :mod:`.empty` — the operators;
* :mod:`.taskflow` — ``@dag``, ``@task`` (``.branch``, ``.short_circuit``);
  :mod:`.mapping` — ``.partial(...).expand(...)``;
* :mod:`.context`, :mod:`.dates`, :mod:`.xcom` — what a callable receives: the context, logical
  dates and data intervals, XCom;
* :mod:`.templates`, :mod:`.macros` — Jinja in templated fields, from the author's text only;
* :mod:`.task_group`, :mod:`.relations` — ``TaskGroup``, ``chain``, ``Label``;
* :mod:`.variables` — ``Variable.get`` from the environment or ``evflow.toml``;
* :mod:`.arguments`, :mod:`.trigger_rules` — which Airflow arguments are accepted;
* :mod:`.pendulum` — the few ``pendulum`` calls DAG files make.

An Airflow name this package does not provide is an ``ImportError`` naming it, at load.
"""

from __future__ import annotations

from typing import Any

from .arguments import AirflowCompatWarning
from .base import BaseOperator
from .bash import BashCommandFailed, BashOperator
from .context import XCOM_MARKER, DagRun, TaskInstance, get_current_context
from .dag import DAG
from .dates import days_ago
from .empty import DummyOperator, EmptyOperator
from .params import Param
from .python import BranchPythonOperator, PythonOperator, ShortCircuitOperator
from .relations import Label, chain, cross_downstream
from .task_group import TaskGroup, task_group
from .taskflow import dag, task
from .trigger_rules import TriggerRule
from .variables import Variable
from .xcom import XComArg

__all__ = [
    "DAG",
    "XCOM_MARKER",
    "AirflowCompatWarning",
    "BaseOperator",
    "BashCommandFailed",
    "BashOperator",
    "BranchPythonOperator",
    "DagRun",
    "DummyOperator",
    "EmptyOperator",
    "Label",
    "Param",
    "PythonOperator",
    "ShortCircuitOperator",
    "TaskGroup",
    "TaskInstance",
    "TriggerRule",
    "Variable",
    "XComArg",
    "chain",
    "cross_downstream",
    "dag",
    "days_ago",
    "get_current_context",
    "task",
    "task_group",
]


def __getattr__(name: str) -> Any:
    """An Airflow name evflow does not provide fails at import, naming it."""
    if name.startswith("__") or not name[:1].isupper():
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    raise ImportError(
        f"evflow.compat.airflow does not provide {name}: evflow runs Airflow DAGs that use "
        f"{', '.join(n for n in __all__ if n[:1].isupper() and n != 'XCOM_MARKER')}, "
        "@dag and @task; rewrite this task with PythonOperator or @task",
        name=__name__,
    )
