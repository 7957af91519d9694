"""What ``evflow cluster`` and ``GET /api/cluster`` show: the instances on a store and the
leases they hold, as one JSON shape."""

from __future__ import annotations

from typing import Any

from ..ownership import ENGINE_LEASE
from ..records import InstanceRecord, LeaseRecord
from ..store.base import Store
from .registry import InstanceRegistry

__all__ = ["cluster_status", "jsonable_instance", "jsonable_lease"]


def jsonable_instance(i: InstanceRecord, runs: int = 0) -> dict[str, Any]:
    return {
        "id": i.id,
        "state": i.state,
        "host": i.host,
        "pid": i.pid,
        "version": i.version,
        "http": i.http,
        "started_at": i.started_at,
        "heartbeat_at": i.heartbeat_at,
        "heartbeat_age_s": round(max(0.0, i.now - i.heartbeat_at), 3),
        "ttl_s": i.ttl_s,
        "stopped_at": i.stopped_at,
        "taken_over_by": i.taken_over_by,
        "runs": runs,
    }


def jsonable_lease(lease: LeaseRecord) -> dict[str, Any]:
    return {
        "name": lease.name,
        "owner": lease.owner,
        "host": lease.host,
        "pid": lease.pid,
        "epoch": lease.epoch,
        "acquired_at": lease.acquired_at,
        "renewed_at": lease.renewed_at,
        "expires_at": lease.expires_at,
    }


async def cluster_status(store: Store, this: str | None = None) -> dict[str, Any]:
    """The cluster as ``store`` records it; ``this`` is the asking instance's id, if any.
    Each instance shows how many unfinished runs it drives; ``unclaimed_runs`` are runs handed
    back and not yet claimed.

    ``mode`` is ``cluster`` on a store where instances register (PostgreSQL), ``single`` where
    one instance runs the work under the ``engine`` lease (SQLite, or PostgreSQL with
    ``[cluster] enabled = false``).
    """
    registry = isinstance(store, InstanceRegistry)
    instances, owned, places = [], {}, []
    if isinstance(store, InstanceRegistry):
        instances = await store.list_instances()
        owned = await store.runs_by_owner()
        places = await store.slots_held()
    leases = await store.list_leases()
    sole = any(lease.name == ENGINE_LEASE for lease in leases)  # an instance outside the cluster
    return {
        "mode": "cluster" if registry and not sole else "single",
        "store": store.describe(),
        "this": this,
        "alive": sum(1 for i in instances if i.alive),
        "unclaimed_runs": owned.get(None, 0),
        "instances": [jsonable_instance(i, owned.get(i.id, 0)) for i in instances],
        "leases": [jsonable_lease(lease) for lease in leases],
        "places": [
            {"name": name, "place": place, "instance": instance, "holder": holder}
            for name, place, instance, holder in places
        ],
    }
