"""The service's retention: soon after start, then every hour, prune what is older than
``[store] keep_runs_days``.

One instance prunes at a time, whatever shares the store: each pass holds the ``retention``
lease. A pass that fails (the database away, a store altered by hand) is logged and the next
one tries again; the service goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from ..errors import EvflowError
from ..store import Store
from ..store.retention import PruneReport, prune

__all__ = ["Pruner"]

log = logging.getLogger("evflow.retention")

LEASE = "retention"


class Pruner:
    """Prunes ``store`` every ``every_s`` seconds (the first pass ``first_s`` after start),
    keeping ``keep_days`` days."""

    def __init__(
        self, store: Store, keep_days: float, *, every_s: float = 3600.0, first_s: float = 1.0
    ) -> None:
        self.store = store
        self.keep_days = keep_days
        self.every_s = every_s
        self.first_s = first_s
        self.owner = f"pruner-{uuid.uuid4().hex[:12]}"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep(self.first_s)
        while True:
            await self.prune_once()
            await anyio.sleep(self.every_s)

    async def prune_once(self) -> PruneReport | None:
        """One pass under the lease; None when another instance holds it or the pass failed."""
        started = time.monotonic()
        try:
            taken, lease = await self.store.acquire_lease(
                LEASE, self.owner, socket.gethostname(), os.getpid(), ttl_s=max(600.0, self.every_s)
            )
            if not taken:
                log.debug("retention: another instance (%s) is pruning", lease.owner)
                return None
            try:
                report = await prune(self.store, self.keep_days)
            finally:
                # Given back even when the service stops mid-pass, or the next start would
                # wait out the lease before pruning.
                with anyio.move_on_after(5, shield=True):
                    await self.store.release_lease(lease)
        except Exception as exc:  # the store's or a bug's: logged, and the next pass tries again
            log.error(
                "retention: pruning failed, to be tried again in %.0fs: %s",
                self.every_s,
                exc,
                exc_info=not isinstance(exc, EvflowError),
            )
            return None
        if report.runs or report.records:
            log.info(
                "retention: pruned %d run(s) and %d audit record(s) from before %s (keeping %g "
                "days) in %.1fs",
                report.runs,
                report.records,
                datetime.fromtimestamp(report.before, UTC).isoformat(timespec="seconds"),
                self.keep_days,
                time.monotonic() - started,
            )
        return report
