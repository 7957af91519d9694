"""Adoption: the runs of an instance that died go on elsewhere, and work spreads.

At every heartbeat, and when told (runs handed back, a cancel asked), each instance looks for
instances silent past their TTL (and, on its own host, instances whose
process has exited: no need to wait for a TTL there). It declares them taken over — from then
on the store refuses their writes, so one that was only stalled and wakes up writes nothing
more. Then it claims, up to its free capacity, the unfinished runs that no live instance
drives (``FOR UPDATE SKIP LOCKED``, highest priority first): those of dead instances, and
those another instance created beyond its own capacity and handed back. Each claim raises the
run's epoch. An adopted run resumes as after a restart: attempts that were running are
recorded interrupted and retried under their policy; finished tasks are never run again. The
same pass carries cancels asked on other instances to the runs this one drives.

When a run held here ends, room frees up: then only the claim is made, and only if the shared
queue may hold runs for this instance (a notification or a heartbeat said so, or the last claim
took all it asked for). An instance whose runs end by the thousand per second thus sends no
statement for it while nothing waits to be claimed.
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
        self.claims = 0  # claim statements sent, for metrics
        self._wake = anyio.Event()
        self._full = False  # the next pass looks at everything, not only for runs to claim
        self._queued = True  # the shared queue may hold runs for this instance

    def wake(self) -> None:
        """Look now, at everything: runs were handed back, or a cancel was asked."""
        self._full = self._queued = True
        self._wake.set()

    def freed(self) -> None:
        """A run held here ended: claim into the room it left, if there may be runs to claim."""
        if self._queued:
            self._wake.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """One pass at once (runs left by a previous process start now), then one per
        heartbeat."""
        await self.tick()
        task_status.started()
        while True:
            with anyio.move_on_after(self.membership.options.heartbeat_s) as beat:
                await self._wake.wait()
            self._wake = anyio.Event()
            full, self._full = self._full or beat.cancelled_caught, False
            try:
                if full:
                    await self.tick()
                else:
                    await self._claim()
            except (StoreUnavailable, StoreError) as exc:
                log.warning("could not look for runs to adopt: %s", exc)

    async def tick(self) -> None:
        """The full pass: take over the dead, claim, carry cancels over."""
        me = self.membership.id
        self._queued = True
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
        await self._claim()
        for run_id, reason in (await self.store.cancel_requests(me)).items():
            self.runs.cancel_here(run_id, reason)

    async def _claim(self) -> None:
        """Claim unheld runs, up to the room this instance has."""
        limit = min(CLAIM_BATCH, self.runs.room())
        if self.runs.stopping or limit == 0 or not self._queued:
            return
        self._queued = False  # until told otherwise (a wake during the claim says so again)
        self.claims += 1
        claimed = await self.store.claim_runs(self.membership.id, sorted(self.flows()), limit)
        if len(claimed) >= limit:
            self._queued = True  # took all it asked for: there may be more
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
