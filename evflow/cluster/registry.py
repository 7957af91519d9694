"""What a store offers for several instances to share it: a registry of instances."""

from __future__ import annotations

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
