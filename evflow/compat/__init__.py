"""Compatibility layers that let flows written for other orchestrators run on evflow.

``evflow.compat.airflow`` runs simple Airflow DAG files whose imports point at it instead of
``airflow``.
"""
