"""Logical dates and data intervals, as Airflow gives them to a run.

* A scheduled run fires when its data interval ends: the run the schedule starts at slot
  ``T`` covers ``[previous slot, T]`` and its ``logical_date`` (``ds``) is the previous slot,
  as in Airflow (the ``@daily`` run that starts at midnight on the 29th has ``ds`` the 28th).
* A backfill run of slot ``S`` covers ``[S, next slot]``: ``evflow backfill`` over the 28th
  gives ``ds`` the 28th, like ``airflow dags backfill -s`` that day.
* A run given ``logical_date`` (ISO 8601) as a parameter, or by ``dag.test(execution_date)``,
  covers ``[logical_date, next slot]``.
* Any other run (manual, or started by an event) has ``logical_date`` the time its first task
  started, and an empty interval at that instant, as Airflow's manual runs.

Pure time logic apart from that first-start memo.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ...frozen import record
from ...run.queue import run_id_for
from ...schedules import Schedule

__all__ = ["SLOT_PARAM", "Interval", "RunDates", "days_ago", "previous_slot"]

#: The run parameter through which evflow hands a scheduled or backfill run its slot.
SLOT_PARAM = "scheduled_time"


@record
class Interval:
    """A run's logical date and data interval, and what kind of run it is."""

    logical_date: datetime
    start: datetime
    end: datetime
    run_type: str  # "scheduled", "backfill" or "manual"


def days_ago(n: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """Midnight UTC ``n`` days ago (Airflow's ``airflow.utils.dates.days_ago``)."""
    today = datetime.now(UTC).replace(hour=hour, minute=minute, second=second, microsecond=0)
    return today - timedelta(days=n)


def previous_slot(schedule: Schedule, t: datetime) -> datetime:
    """The last fire time of ``schedule`` strictly before ``t``.

    Schedules only walk forward, so look back by doubling steps until a fire time lies
    before ``t``, then walk forward to the last one.
    """
    step = timedelta(minutes=1)
    for _ in range(40):  # 2**40 minutes is two million years
        probe = schedule.next_after(t - step)
        if probe < t:
            while (after := schedule.next_after(probe)) < t:
                probe = after
            return probe
        step *= 2
    raise ValueError(f"schedule {schedule.describe()} has no fire time before {t.isoformat()}")


def _parse(raw: Any, what: str, dag_id: str) -> datetime:
    try:
        value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    except ValueError:
        raise ValueError(f"DAG {dag_id!r}: run parameter {what}={raw!r} is not ISO 8601") from None
    # Airflow's dates (and so ds) are in UTC
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


class RunDates:
    """Works out each run's :class:`Interval` for one DAG."""

    def __init__(self, dag_id: str, schedule: Schedule | None) -> None:
        self.dag_id = dag_id
        self.schedule = schedule
        self._first_start: OrderedDict[str, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def interval(self, run_id: str, params: Mapping[str, Any]) -> Interval:
        """The interval of run ``run_id`` started with ``params``."""
        sched = self.schedule
        if params.get("logical_date") is not None:
            logical = _parse(params["logical_date"], "logical_date", self.dag_id)
            end = sched.next_after(logical) if sched is not None else logical
            return Interval(logical, logical, end, "manual")
        slot_raw = params.get(SLOT_PARAM)
        if slot_raw is not None and sched is not None:
            slot = _parse(slot_raw, SLOT_PARAM, self.dag_id)
            if run_id == run_id_for(f"backfill:{self.dag_id}:{slot_raw}"):
                return Interval(slot, slot, sched.next_after(slot), "backfill")
            start = previous_slot(sched, slot)
            return Interval(start, start, slot, "scheduled")
        now = self._started(run_id)
        return Interval(now, now, now, "manual")

    def _started(self, run_id: str) -> datetime:
        with self._lock:
            found = self._first_start.get(run_id)
            if found is None:
                found = self._first_start[run_id] = datetime.now(UTC).replace(microsecond=0)
                while len(self._first_start) > 1024:
                    self._first_start.popitem(last=False)
            return found
