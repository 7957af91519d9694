"""``EmptyOperator`` (``DummyOperator`` before Airflow 2.4): does nothing."""

from __future__ import annotations

from .base import BaseOperator
from .context import Context

__all__ = ["DummyOperator", "EmptyOperator"]


class EmptyOperator(BaseOperator):
    """Does nothing; useful to group or join branches."""

    def execute(self, context: Context) -> None:
        return None


DummyOperator = EmptyOperator
