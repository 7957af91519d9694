"""Adoption: the runs of an instance that died go on elsewhere, and work spreads.

At every heartbeat, and when told (runs handed back, a cancel asked, a held run ended), each
instance looks for instances silent past their TTL (and, on its own host, instances whose
process has exited: no need to wait for a TTL there). It declares them taken over — from then
on the store refuses their writes, so one that was only stalled and wakes up writes nothing
more. Then it claims, up to its free capacity, the unfinished runs that no live instance
drives (``FOR UPDATE SKIP LOCKED``, highest priority first): those of dead instances, and
those another instance created beyond its own capacity and handed back. Each claim raises the
run's epoch. An adopted run resumes as after a restart: attempts that were running are
recorded interrupted and retried under their policy; finished tasks are never run again. The
same pass carries cancels asked on other instances to the runs this one drives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection

import anyio
import anyio.abc

from ..errors import StoreError, StoreUnavailable
from ..run.queue import RunQueue
from .membership import Membership
from .registry import InstanceRegistry

__all__ = ["Adoption"]

log = logging.getLogger("evflow.cluster")

CLAIM_BATCH = 500


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Adoption:
    """Takes over dead instances and claims their runs for this one, until cancelled."""

    def __init__(
        self,
        store: InstanceRegistry,
        membership: Membership,
        runs: RunQueue,
        flows: Callable[[], Collection[str]],
    ) -> None:
        self.store = store
        self.membership = membership
        self.runs = runs
        self.flows = flows
        self.adopted = 0  # runs claimed from others, for metrics
        self.taken_over = 0  # instances declared dead by this one
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Look now: runs were handed back, a cancel was asked, or a held run ended."""
        self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """One pass at once (runs left by a previous process start now), then one per
        heartbeat."""
        await self.tick()
        task_status.started()
        while True:
            with anyio.move_on_after(self.membership.options.heartbeat_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.tick()
            except (StoreUnavailable, StoreError) as exc:
                log.warning("could not look for runs to adopt: %s", exc)

    async def tick(self) -> None:
        me = self.membership.id
        instances = await self.store.list_instances()
        gone = [
            i.id
            for i in instances
            if i.id != me
            and i.stopped_at is None
            and i.host == self.membership.host
            and _process_gone(i.pid)
        ]
        # Most passes find no one to take over: then the takeover's statements are not sent.
        silent = any(i.id != me and i.stopped_at is None and not i.alive for i in instances)
        taken = await self.store.take_over_dead(me, gone) if gone or silent else []
        for inst_id, host, pid, _ in taken:
            self.taken_over += 1
            log.warning(
                "instance %s (host %s, pid %d) is dead: %s takes its runs over",
                inst_id,
                host,
                pid,
                me,
            )
        if self.runs.stopping:
            return
        claimed = await self.store.claim_runs(
            me, sorted(self.flows()), min(CLAIM_BATCH, self.runs.room())
        )
        runs, own = [], set()
        for rid, epoch in claimed.items():
            if self.runs.is_active(rid):
                continue
            kept = self.runs.reclaimed(rid, epoch)  # its own overflow: no need to read it
            if kept is not None:
                own.add(rid)
            runs.append(kept or await self.runs.store.get_run(rid))
        # In the order they were queued, highest priority first: the run gates admit them so.
        for run in sorted(runs, key=lambda r: (-r.priority, r.created_at)):
            self.adopted += 1
            if run.id in own:
                self.runs.start(run)  # never started: nothing to resume
                continue
            log.info("adopting run %s of flow %r (epoch %d)", run.id, run.flow, claimed[run.id])
            await self.runs.adopt(run)
        for run_id, reason in (await self.store.cancel_requests(me)).items():
            self.runs.cancel_here(run_id, reason)
