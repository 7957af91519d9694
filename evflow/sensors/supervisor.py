"""Sensor supervision: each sensor runs in the intake task group, is watched and restarted.

A sensor reports ``listening`` through ``task_status.started()``. One that raises
:class:`~evflow.errors.SensorError` (misconfigured: no broker address, a folder that does not
exist) is reported ``off`` and not restarted; any other failure restarts it with an
exponential backoff (1 s, doubling, at most 60 s). Every status change is published as a
:class:`~evflow.signals.SensorStatusChanged` signal.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskGroup

from ..abc import Intake, Sensor
from ..errors import SensorError
from ..signals import SensorStatusChanged, Signals

__all__ = ["SensorSupervisor"]

log = logging.getLogger("evflow.engine")


class _Started:
    """The ``task_status`` a sensor reports to: marks it listening."""

    def __init__(self, supervisor: SensorSupervisor, sensor: Sensor) -> None:
        self.supervisor = supervisor
        self.sensor = sensor
        self.listening = False

    def started(self, value: None = None) -> None:
        self.listening = True
        self.supervisor.set_status(self.sensor.name, "listening")
        log.info("sensor %s: %s", self.sensor.name, self.sensor.describe())


def _sensor_error(exc: BaseException) -> SensorError | None:
    """The SensorError behind ``exc`` (also inside exception groups), if that is all it is."""
    if isinstance(exc, SensorError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_sensor_error(e) for e in exc.exceptions]
        if leaves and all(leaf is not None for leaf in leaves):
            return leaves[0]
    return None


class SensorSupervisor:
    """The registered sensors, their status, and the task group they run in once started."""

    def __init__(self, signals: Signals) -> None:
        self.signals = signals
        self.sensors: dict[str, Sensor] = {}
        self.status: dict[str, str] = {}
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._intake: Intake | None = None
        # In a cluster: set once this instance leads; sensors marked ``singleton`` (schedules,
        # watched folders) wait for it, so that they run on one instance at a time.
        self.leader: anyio.Event | None = None

    def add(self, sensor: Sensor) -> None:
        """Register a sensor; it starts with the others, or at once if they are running."""
        known = self.sensors.get(sensor.name)
        if known is sensor:
            return
        if known is not None:
            raise SensorError(f"two different sensors are named {sensor.name!r}")
        self.sensors[sensor.name] = sensor
        self.set_status(sensor.name, "starting")
        if self._tg is not None and self._intake is not None:
            self._tg.start_soon(self._run, sensor, self._intake)

    def start_all(self, tg: TaskGroup, intake: Intake) -> None:
        """Start every registered sensor in ``tg``; sensors added later start there too."""
        self._tg, self._intake = tg, intake
        for sensor in list(self.sensors.values()):
            tg.start_soon(self._run, sensor, intake)

    def stopped(self) -> None:
        self._tg = None

    async def _run(self, sensor: Sensor, intake: Intake) -> None:
        """Run one sensor; a misconfigured one is reported off, a crashed one restarted."""
        delay = 1.0
        leader = self.leader
        if leader is not None and getattr(sensor, "singleton", False) and not leader.is_set():
            self.set_status(sensor.name, "standby: runs on the leader instance")
            await leader.wait()
        while True:
            status = _Started(self, sensor)
            try:
                self.set_status(sensor.name, "starting")
                await sensor.run(intake, task_status=status)
                return
            except Exception as exc:
                off = _sensor_error(exc)
                if off is not None:
                    self.set_status(sensor.name, f"off: {off}")
                    log.warning("sensor %s is off: %s", sensor.name, off)
                    return
                if status.listening:
                    delay = 1.0  # it ran for a while: start over with a short pause
                self.set_status(sensor.name, f"failed: {exc}; restarting in {delay:.0f}s")
                log.error(
                    "sensor %s failed (%s: %s); restarting in %.0fs",
                    sensor.name,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=True,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def set_status(self, sensor: str, status: str) -> None:
        self.status[sensor] = status
        self._changed.set()
        self._changed = anyio.Event()
        self.signals.publish(SensorStatusChanged(sensor, status))

    async def settled(self) -> None:
        """Return once no sensor is still starting (each is listening, off or failed)."""
        while any(s == "starting" for s in self.status.values()):
            await self._changed.wait()

    def describe(self) -> list[dict[str, str]]:
        return [
            {
                "name": n,
                "source": s.source,
                "describe": s.describe(),
                "status": self.status.get(n, ""),
            }
            for n, s in self.sensors.items()
        ]
