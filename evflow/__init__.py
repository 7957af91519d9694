"""evflow: event-driven asynchronous orchestration.

Events in (files, Kafka, webhooks, clocks), rules decide, DAGs of coroutines run under resource
limits, everything durable in an embedded store.
"""

from .engine import Engine, RunResult, TaskResult
from .errors import EvflowError
from .events import Event
from .flows import Flow, flow, task, unmapped
from .rules import Batch, Correlate, Rule
from .run.context import get_logger
from .run.limits import Pool
from .schedules import Cron, Interval
from .states import RunState, TaskState

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Correlate",
    "Cron",
    "Engine",
    "Event",
    "EvflowError",
    "Flow",
    "Interval",
    "Pool",
    "Rule",
    "RunResult",
    "RunState",
    "TaskResult",
    "TaskState",
    "flow",
    "get_logger",
    "task",
    "unmapped",
]
