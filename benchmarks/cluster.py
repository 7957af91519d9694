"""cluster: what being in a cluster costs one instance, on PostgreSQL.

Method: the throughput workload's closed loop (1,000 drivers, each submitting a 3-task etl run
and waiting for its end) on one instance, twice: in cluster mode (the default on PostgreSQL:
registered, heartbeating, every write transaction fenced, runs past ``[cluster] max_runs``
handed back and claimed again), and alone on the store (``[cluster] enabled = false``: the
``engine`` lease, as on SQLite). The "floor" column is the instance alone; the target is the
cluster's overhead per task within 1.3 times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evflow.cluster import ClusterOptions

from . import throughput
from .common import Figures, Metric, Target, Workload

__all__ = ["WORKLOAD"]


async def run_cluster(p: Mapping[str, Any]) -> Figures:
    return await throughput.run_evflow(p, cluster=ClusterOptions())


async def run_alone(p: Mapping[str, Any]) -> Figures:
    return await throughput.run_evflow(p, cluster=ClusterOptions(enabled=False))


WORKLOAD = Workload(
    name="cluster",
    title="cluster overhead (one instance in cluster mode against the same instance alone)",
    method=(
        "the throughput closed loop on PostgreSQL, in cluster mode (evflow column) and with "
        "[cluster] enabled = false (floor column); CPU per task compared"
    ),
    params=throughput.WORKLOAD.params,
    evflow=run_cluster,
    floor=run_alone,
    metrics=(
        Metric(
            "cpu_per_task_us", "CPU per task", "µs", Target("ratio_max", 1.3, "≤ 1.3x alone"), 0
        ),
        Metric("tasks_per_s", "tasks/s sustained", "1/s", digits=0),
        Metric("drain_s", "store drain after", "s", digits=2),
        Metric("peak_rss_mb", "peak RSS", "MiB", digits=0),
    ),
    stores=("postgresql",),
)
