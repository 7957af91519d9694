"""Runs: the queue that holds them (``queue``; each held run is ``active``) and the tasks that
drive them (``drivers``), one run's execution (the DAG walk), its task attempts, the resource
limits they run under (``limits`` on ``pools``; per-flow ``gates``), the ledger of what they
record, and what a running task knows about itself."""

from .context import TaskContext, current_task, get_logger
from .executor import RunExecution
from .ledger import Ledger
from .limits import Limits, RunGate

__all__ = [
    "Ledger",
    "Limits",
    "RunExecution",
    "RunGate",
    "TaskContext",
    "current_task",
    "get_logger",
]
