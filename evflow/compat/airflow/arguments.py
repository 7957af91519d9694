"""Checking and converting Airflow arguments: which are accepted, ignored, warned about or refused.

Airflow arguments that change nothing observable here (docs, UI, e-mail address) are accepted
quietly; ones whose behaviour evflow does not provide (``depends_on_past=True``,
``on_execute_callback``, SLAs, ``end_date``) are accepted with an
:class:`AirflowCompatWarning` when set; ones that would change what a task computes (native
or customised Jinja) are load errors when set, as are unknown DAG or operator arguments;
unknown ``default_args`` keys are ignored, as in Airflow.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location

__all__ = [
    "OPERATOR_ARGS",
    "PACKAGE_DIR",
    "AirflowCompatWarning",
    "aware",
    "check_extra",
    "seconds",
    "user_stacklevel",
    "zone_name",
]

# The evflow package: frames inside it are not the DAG author's code.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class AirflowCompatWarning(UserWarning):
    """An Airflow argument was accepted but has no effect in evflow."""


# Arguments every operator takes (and default_args may give).
OPERATOR_ARGS = frozenset(
    {
        "owner", "retries", "retry_delay", "retry_exponential_backoff", "max_retry_delay",
        "execution_timeout", "pool", "pool_slots", "priority_weight", "trigger_rule",
        "start_date", "do_xcom_push", "params", "task_group", "on_failure_callback",
        "on_success_callback", "on_retry_callback",
    }
)  # fmt: skip

# Arguments that change nothing observable here: accepted silently.
QUIET = frozenset(
    {
        "doc", "doc_md", "doc_rst", "doc_json", "doc_yaml", "email", "owner_links",
        "default_view", "orientation", "show_return_value_in_logs", "provide_context",
        "is_paused_upon_creation", "access_control", "template_searchpath", "queue",
        "weight_rule",
        "task_display_name", "dag_display_name", "executor_config", "resources", "run_as_user",
        "templates_exts", "logger_name", "inlets", "outlets", "full_filepath",
        "wait_for_past_depends_before_skipping", "ignore_first_depends_on_past",
        "allow_nested_operators", "label",
    }
)  # fmt: skip

# Airflow behaviour evflow does not provide: accepted, with a warning when set.
UNSUPPORTED = frozenset(
    {
        "depends_on_past", "wait_for_downstream", "email_on_failure", "email_on_retry", "sla",
        "on_execute_callback", "on_skipped_callback", "pre_execute", "post_execute",
        "end_date", "task_concurrency", "max_active_tis_per_dag",
        "max_active_tis_per_dagrun", "executor", "dagrun_timeout", "max_active_tasks",
        "concurrency", "sla_miss_callback", "max_consecutive_failed_dag_runs", "fail_stop",
        "timetable",
    }
)  # fmt: skip


# Airflow behaviour that would change results here: an error at load when set.
REFUSED = frozenset(
    {
        "render_template_as_native_obj", "user_defined_macros", "user_defined_filters",
        "jinja_environment_kwargs", "template_undefined",
    }
)  # fmt: skip


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside evflow."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def check_extra(extra: Mapping[str, Any], where: str, *, strict: bool) -> None:
    """Warn about set arguments evflow ignores; unknown ones are errors when ``strict``, and
    set ones whose absence would change results are errors always."""
    refused = sorted(k for k, v in extra.items() if k in REFUSED and v)
    if refused:
        raise FlowDefinitionError(
            f"{where}: {', '.join(refused)} is not supported by evflow; remove it",
            location=caller_location(),
        )
    unknown = sorted(
        k for k in extra if k not in QUIET and k not in UNSUPPORTED and k not in REFUSED
    )
    if unknown and strict:
        raise FlowDefinitionError(
            f"{where}: unknown argument(s) {', '.join(unknown)} "
            "(not an Airflow argument evflow supports)",
            location=caller_location(),
        )
    ignored = sorted(k for k, v in extra.items() if k in UNSUPPORTED and v)
    if ignored:
        warnings.warn(
            f"{where}: evflow has no equivalent of {', '.join(ignored)}; ignored",
            AirflowCompatWarning,
            stacklevel=user_stacklevel(),
        )


def seconds(value: Any, what: str, where: str) -> float | None:
    """A timedelta or a number of seconds, as seconds."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise FlowDefinitionError(
        f"{where}: {what} must be a timedelta or a number of seconds, not {value!r}",
        location=caller_location(),
    )


def aware(value: Any, what: str, where: str) -> datetime | None:
    """A start/end date, in UTC when naive (Airflow's default time zone)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise FlowDefinitionError(
            f"{where}: {what} must be a datetime, not {value!r}", location=caller_location()
        )
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def zone_name(start: datetime | None, where: str) -> str:
    """The IANA time zone of ``start`` (zoneinfo or pendulum) for cron schedules; else UTC."""
    tz: tzinfo | None = start.tzinfo if start is not None else None
    if tz is None:
        return "UTC"
    name = getattr(tz, "key", None) or getattr(tz, "name", None)
    if isinstance(name, str):
        try:
            ZoneInfo(name)
        except (ValueError, ZoneInfoNotFoundError):
            pass
        else:
            return name
    if start is not None and start.utcoffset() == timedelta(0):
        return "UTC"
    raise FlowDefinitionError(
        f"{where}: start_date has a fixed-offset time zone ({tz}); a cron schedule needs a "
        "named one, e.g. zoneinfo.ZoneInfo('Europe/Paris')",
        location=caller_location(),
    )
