"""Many instances, one state: what lets several ``evflow serve`` share one PostgreSQL store.

:mod:`~evflow.cluster.membership` registers an instance and heartbeats it from a thread of its
own; :mod:`~evflow.cluster.registry` is what a store offers for that (PostgreSQL does; SQLite,
one machine's store, does not).
"""

from .membership import ClusterOptions, Membership
from .registry import InstanceRegistry

__all__ = ["ClusterOptions", "InstanceRegistry", "Membership"]
