"""Flows: how a DAG of tasks is defined, validated and versioned, how a task's arguments are
bound and its trigger rule evaluated, and the user's flow and task callbacks."""

from .dag import Flow, Node
from .decorators import flow, task
from .tasks import Param, Task, TaskOptions, unmapped
from .trigger_rules import TRIGGER_RULES, TriggerRule

__all__ = [
    "TRIGGER_RULES",
    "Flow",
    "Node",
    "Param",
    "Task",
    "TaskOptions",
    "TriggerRule",
    "flow",
    "task",
    "unmapped",
]
