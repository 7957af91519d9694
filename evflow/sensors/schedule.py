"""Schedules as a source of events.

A :class:`ScheduleSensor` turns a flow's :class:`~evflow.schedules.Schedule` into events, one per
fire time, through the same durable intake as every other source. The last fire time is a
cursor committed in the same transaction as the fire's event, and the event's dedup key is the
trigger and fire time, so a restart neither fires twice nor forgets; slots missed while nothing
ran are handled by the flow's misfire policy (``catchup``, ``latest`` or ``skip``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from anyio.abc import TaskStatus

from ..abc import Intake
from ..clock import Clock, SystemClock
from ..errors import Saturated, ScheduleError
from ..events import Event
from ..schedules import Misfire, Schedule, due_fires, next_fire

__all__ = ["SCHEDULE_EVENT_TYPE", "ScheduleSensor"]

SCHEDULE_EVENT_TYPE = "evflow.schedule.fired"
log = logging.getLogger("evflow.scheduler")
_MISFIRE = ("catchup", "latest", "skip")


class ScheduleSensor:
    """Emits an event at each fire time of ``trigger`` for flow ``flow``."""

    singleton = True  # in a cluster, one instance ticks the schedule: the leader

    def __init__(
        self, flow: str, trigger: Schedule, *, misfire: str = "latest", clock: Clock | None = None
    ) -> None:
        if misfire not in _MISFIRE:
            raise ScheduleError(
                f"flow {flow!r}: misfire policy must be one of "
                f"{', '.join(_MISFIRE)}, not {misfire!r}"
            )
        self.flow = flow
        self.trigger = trigger
        self.misfire: Misfire = misfire  # type: ignore[assignment]
        self.clock = clock or SystemClock()
        self.name = f"schedule:{flow}"
        self.cursor = f"schedule:{flow}:{trigger.key}"

    @property
    def source(self) -> str:
        return f"schedule/{self.flow}"

    def describe(self) -> str:
        return f"{self.trigger.describe()} (misfire: {self.misfire})"

    def event_for(self, slot: datetime) -> Event:
        iso = slot.isoformat()
        return Event(
            type=SCHEDULE_EVENT_TYPE,
            source=self.source,
            subject=self.flow,
            time=slot,
            data={"flow": self.flow, "scheduled_time": iso, "schedule": self.trigger.describe()},
            dedup_key=f"{self.cursor}@{iso}",
        )

    async def run(self, intake: Intake, *, task_status: TaskStatus[None]) -> None:
        raw = await intake.get_cursor(self.cursor)
        last = datetime.fromisoformat(raw) if raw else None
        started = self.clock.now()
        task_status.started()
        while True:
            now = self.clock.now()
            slots = due_fires(
                self.trigger, last, now, self.misfire, first_start=None if last else started
            )
            if slots:
                events = [self.event_for(s) for s in slots]
                while True:
                    try:
                        await intake.submit(events, cursors={self.cursor: slots[-1].isoformat()})
                        break
                    except Saturated:
                        await intake.wait_not_saturated()
                if len(slots) > 1:
                    log.info(
                        "schedule of flow %r: %d missed fire(s) caught up", self.flow, len(slots)
                    )
                last = slots[-1]
            elif last is None:
                # Never fired: count from now, so a first start does not fire for the past.
                last = None
            await self.clock.sleep_until(next_fire(self.trigger, last, now))
