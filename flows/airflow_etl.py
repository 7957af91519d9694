"""An Airflow tutorial-style ETL DAG, run by evflow.

Only the import lines differ from the Airflow version (``from airflow import DAG`` and
``from airflow.operators.python import PythonOperator``). Run it once with::

    evflow run flows/airflow_etl.py:airflow_etl

and ``evflow serve`` runs it every day at midnight UTC.
"""

import json
import logging
from datetime import datetime, timedelta

from evflow.compat.airflow import DAG, PythonOperator

log = logging.getLogger(__name__)

default_args = {
    "owner": "data-engineering",
    "depends_on_past": False,
    "start_date": datetime(2024, 1, 1),
    "email_on_failure": False,
    "email_on_retry": False,
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
}

dag = DAG(
    "airflow_etl",
    default_args=default_args,
    description="Extract the day's orders, total them, load the total",
    schedule_interval="@daily",
    catchup=False,
    tags=["example"],
)


def extract(**kwargs):
    """Read the day's orders: order id -> amount."""
    data_string = '{"1001": 301.27, "1002": 433.21, "1003": 502.22}'
    return json.loads(data_string)


def transform(**kwargs):
    """Sum the orders pulled from the extract task."""
    ti = kwargs["ti"]
    order_data = ti.xcom_pull(task_ids="extract")
    total_order_value = 0
    for value in order_data.values():
        total_order_value += value
    return {"total_order_value": round(total_order_value, 2), "orders": len(order_data)}


def load(ds, **kwargs):
    """Report the total for the day."""
    summary = kwargs["ti"].xcom_pull(task_ids="transform")
    log.info("%s: %d orders, total %.2f", ds, summary["orders"], summary["total_order_value"])
    print(f"Total order value for {ds}: {summary['total_order_value']:.2f}")
    return summary["total_order_value"]


extract_task = PythonOperator(task_id="extract", python_callable=extract, dag=dag)
transform_task = PythonOperator(task_id="transform", python_callable=transform, dag=dag)
load_task = PythonOperator(task_id="load", python_callable=load, dag=dag)

extract_task >> transform_task >> load_task
