"""What a store offers for several instances to share it: a registry of instances, and runs
owned by one instance at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..records import InstanceRecord

__all__ = ["InstanceRegistry"]


@runtime_checkable
class InstanceRegistry(Protocol):
    """A store on which instances register and heartbeat (the PostgreSQL store).

    ``url`` is the store's connection URL: the heartbeat thread opens a connection of its own
    with it, so that a busy pool or event loop never delays a heartbeat.
    """

    url: str

    def describe(self) -> str: ...

    async def register_instance(
        self,
        instance_id: str,
        *,
        host: str,
        pid: int,
        version: str,
        http: str | None,
        ttl_s: float,
    ) -> InstanceRecord: ...

    async def set_instance_http(self, instance_id: str, http: str) -> None: ...

    async def instance_stopped(self, instance_id: str) -> None: ...

    async def list_instances(self) -> list[InstanceRecord]: ...

    def fence_as(self, instance_id: str) -> None: ...

    async def take_over_dead(
        self, me: str, gone: Sequence[str] = ()
    ) -> list[tuple[str, str, int, float]]: ...

    async def claim_runs(self, me: str, flows: Sequence[str], limit: int) -> dict[str, int]: ...

    async def claim_run(self, me: str, run_id: str) -> int: ...

    async def hand_back_runs(self, me: str, run_ids: Sequence[str] | None = None) -> int: ...

    async def runs_by_owner(self) -> dict[str | None, int]: ...

    async def take_slots(
        self, name: str, places: int, me: str, holder: str, n: int = 1
    ) -> list[int]: ...

    async def give_slots(self, name: str, slots: Sequence[int], me: str, holder: str) -> None: ...

    async def slots_held(self) -> list[tuple[str, int, str, str]]: ...

    async def run_owner(self, run_id: str) -> tuple[str | None, bool]: ...

    async def request_cancel(self, run_id: str, reason: str) -> None: ...

    async def cancel_requests(self, me: str) -> dict[str, str]: ...
