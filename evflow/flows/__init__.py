"""How a flow is defined: the DAG of tasks, its validation, and the callbacks it declares.

``dag`` builds and validates the graph (both the decorator and the explicit style),
``callbacks`` runs the user's ``on_failure``/``on_retry``/``on_success`` code.
"""

from .dag import (
    TRIGGER_RULES,
    Flow,
    Node,
    Param,
    Task,
    TaskOptions,
    TriggerRule,
    flow,
    task,
    unmapped,
)

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
