"""Compatibility layers that let flows written for other orchestrators run on evflow.

``evflow.compat.airflow`` runs Airflow DAG files (classic operators and the TaskFlow API) whose
imports point at it instead of ``airflow``.
"""
