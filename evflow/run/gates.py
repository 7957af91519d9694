"""Run gates: ``max_active_runs`` per flow, excess runs waiting in (priority, arrival) order."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from types import TracebackType

from .pools import OnWait, PoolUsage, SlotPool

__all__ = ["RunGate"]


class _Admission:
    """The context manager returned by :meth:`RunGate.admit`."""

    __slots__ = ("_flow", "_gate", "_max", "_on_wait", "_pool", "_priority")

    def __init__(
        self, gate: RunGate, flow: str, max_active: int, priority: int, on_wait: OnWait | None
    ) -> None:
        self._gate = gate
        self._flow = flow
        self._max = max_active
        self._priority = priority
        self._on_wait = on_wait
        self._pool: SlotPool | None = None

    async def __aenter__(self) -> None:
        pool = self._gate._pool_for(self._flow, self._max)
        if not pool.try_acquire(1, self._priority):
            try:
                if self._on_wait is not None:
                    self._on_wait(
                        f"waiting for flow {self._flow!r} (max_active_runs="
                        f"{pool.capacity}, {pool.in_use} active, {pool.waiting} waiting)"
                    )
                await pool.acquire(1, self._priority)
            except BaseException:
                self._gate._forget_if_idle(self._flow, pool)
                raise
        self._pool = pool

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.release(1)
            self._gate._forget_if_idle(self._flow, pool)


#: What an unlimited gate returns: one shared null context (it holds no state), so a run
#: admitted without a limit allocates nothing that lives as long as the run.
OPEN: AbstractAsyncContextManager[None] = nullcontext()


class RunGate:
    """Enforces ``max_active_runs`` per flow: excess runs wait in (priority, arrival) order.

    One :class:`SlotPool` per flow, created when a run first needs it and dropped when the flow
    is idle, so memory follows the number of flows that are busy, not ever seen.
    """

    def __init__(self) -> None:
        self._pools: dict[str, SlotPool] = {}

    def admit(
        self,
        flow_name: str,
        max_active: int | None,
        priority: int = 0,
        on_wait: OnWait | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Hold one active-run place of ``flow_name`` for the ``async with`` body.

        ``max_active=None`` means unlimited (nothing is counted). If the flow's limit changed
        since the last run, the new value applies from now on.
        """
        if max_active is None:
            return OPEN
        if max_active < 1:
            raise ValueError(
                f"max_active_runs of flow {flow_name!r} must be at least 1 or None, "
                f"got {max_active}"
            )
        return _Admission(self, flow_name, max_active, priority, on_wait)

    def active(self, flow_name: str) -> int:
        """The number of runs of the flow holding a place."""
        pool = self._pools.get(flow_name)
        return pool.in_use if pool is not None else 0

    def waiting(self, flow_name: str) -> int:
        """The number of runs of the flow waiting for a place."""
        pool = self._pools.get(flow_name)
        return pool.waiting if pool is not None else 0

    def snapshot(self) -> list[PoolUsage]:
        """Usage per busy flow (name is the flow name, capacity its ``max_active_runs``)."""
        return [p.usage() for p in self._pools.values()]

    def _pool_for(self, flow: str, max_active: int) -> SlotPool:
        pool = self._pools.get(flow)
        if pool is None:
            pool = self._pools[flow] = SlotPool(flow, max_active)
        elif pool.capacity != max_active:
            pool.set_capacity(max_active)
        return pool

    def _forget_if_idle(self, flow: str, pool: SlotPool) -> None:
        if pool.in_use == 0 and pool.waiting == 0 and self._pools.get(flow) is pool:
            del self._pools[flow]
