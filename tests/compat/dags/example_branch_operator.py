# mypy: ignore-errors
# ruff: noqa
# fmt: off
# Airflow's branching example DAG (example_dags/example_branch_operator.py as of Airflow 2.5,
# Apache License 2.0), with only its import lines changed to evflow.compat.airflow.
"""Example DAG demonstrating the usage of the BranchPythonOperator."""
from __future__ import annotations

import random

from evflow.compat.airflow import pendulum

from evflow.compat.airflow import DAG
from evflow.compat.airflow import EmptyOperator
from evflow.compat.airflow import BranchPythonOperator
from evflow.compat.airflow import Label
from evflow.compat.airflow import TriggerRule

with DAG(
    dag_id="example_branch_operator",
    start_date=pendulum.datetime(2021, 1, 1, tz="UTC"),
    catchup=False,
    schedule="@daily",
    tags=["example", "example2"],
) as dag:
    run_this_first = EmptyOperator(
        task_id="run_this_first",
    )

    options = ["branch_a", "branch_b", "branch_c", "branch_d"]

    branching = BranchPythonOperator(
        task_id="branching",
        python_callable=lambda: random.choice(options),
    )
    run_this_first >> branching

    join = EmptyOperator(
        task_id="join",
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    )

    for option in options:
        t = EmptyOperator(
            task_id=option,
        )

        empty_follow = EmptyOperator(
            task_id="follow_" + option,
        )

        # Label is optional here, but it can help identify more complex branches
        branching >> Label(option) >> t >> empty_follow >> join
