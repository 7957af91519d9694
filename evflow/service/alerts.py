"""Alerts: telling people that a run failed or is late.

* **Alert sinks** — :class:`AlertManager` observes an engine and POSTs ``run_failed`` (once per
  failed run) and ``sla_missed`` (once per run that outlives its flow's ``sla_s``) to generic
  JSON webhooks or Slack-compatible incoming webhooks. It queues alerts in a bounded memory
  stream and sends them from its own task, so a slow or broken sink never delays a run.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import orjson
from anyio.abc import TaskStatus

from ..errors import ConfigError
from ..flows import Flow
from ..flows.callbacks import CallbackContext, run_path
from ..frozen import record
from ..records import RunRecord
from ..signals import CorrelationTimedOut, RunStateChanged
from ..states import RunState, TaskState
from .config import AlertSink

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = [
    "ALERT_KINDS",
    "Alert",
    "AlertContext",
    "AlertManager",
    "CallbackContext",
    "slack_payload",
    "webhook_payload",
]

AlertContext = CallbackContext

log = logging.getLogger("evflow.alerts")

ALERT_KINDS: frozenset[str] = frozenset({"run_failed", "sla_missed", "correlation_timed_out"})


# -- alerts ------------------------------------------------------------------------------------
@record
class Alert:
    """One thing worth telling a human: a run failed, a run is past its SLA, or a correlated
    event's partner never came (``run_id`` is then empty and ``rule`` names the rule)."""

    kind: str
    flow: str
    run_id: str
    state: str
    error: str | None
    time: float
    started_at: float | None = None
    ended_at: float | None = None
    sla_s: float | None = None
    url: str | None = None
    failed_tasks: tuple[tuple[str, str], ...] = ()  # (task, error) of a failed run
    rule: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        return round((self.ended_at or self.time) - self.started_at, 3)

    @property
    def summary(self) -> str:
        if self.kind == "sla_missed":
            return (
                f"run {self.run_id} of flow {self.flow!r} missed its SLA of {self.sla_s:g}s "
                f"(running for {self.duration_s:g}s, {self.state})"
            )
        if self.kind == "correlation_timed_out":
            return f"rule {self.rule!r} of flow {self.flow!r}: {self.error}"
        return f"run {self.run_id} of flow {self.flow!r} failed: {self.error or 'no error given'}"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """The generic JSON body: one flat object per alert."""
    return {
        "kind": alert.kind,
        "flow": alert.flow,
        "run_id": alert.run_id,
        "state": alert.state,
        "error": alert.error,
        "time": _iso(alert.time),
        "started_at": _iso(alert.started_at),
        "ended_at": _iso(alert.ended_at),
        "duration_s": alert.duration_s,
        "sla_s": alert.sla_s,
        "url": alert.url,
        "message": alert.summary,
        "failed_tasks": [{"task": t, "error": e} for t, e in alert.failed_tasks],
        "rule": alert.rule,
    }


_SLACK_TASKS = 5


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (fallback and notifications) and ``blocks``."""
    flow, rid = _slack_escape(alert.flow), alert.run_id
    if alert.kind == "sla_missed":
        title = f":hourglass: SLA missed: flow *{flow}*"
        detail = (
            f"Run `{rid}` has been running for {alert.duration_s:g}s; "
            f"its SLA is {alert.sla_s:g}s. State: {alert.state}."
        )
    elif alert.kind == "correlation_timed_out":
        title = f":hourglass: Correlation timed out: flow *{flow}*"
        detail = _slack_escape(alert.summary)
    else:
        title = f":x: Run failed: flow *{flow}*"
        detail = f"Run `{rid}` failed: {_slack_escape(alert.error or 'no error given')}"
        for name, error in alert.failed_tasks[:_SLACK_TASKS]:
            detail += f"\n• `{_slack_escape(name)}`: {_slack_escape(_clip(error, 300))}"
        if len(alert.failed_tasks) > _SLACK_TASKS:
            detail += f"\n… and {len(alert.failed_tasks) - _SLACK_TASKS} more failed task(s)"
    link = f" <{alert.url}|open run>" if alert.url else ""
    return {
        "text": f"{title}\n{detail}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{title}\n{detail}"}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"evflow · {_iso(alert.time)}{link}"}],
            },
        ],
    }


class _Recent:
    """A bounded set of recent keys (oldest forgotten first)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)


class AlertManager:
    """Sends ``run_failed`` and ``sla_missed`` alerts to ``sinks``; an engine observer.

    ``manager.attach(engine)`` before the engine starts, then run :meth:`run` in a task group
    (``await tg.start(manager.run)``). Observer callbacks only queue alerts (at most
    ``max_pending``; more are dropped and logged); :meth:`run` posts them, each sink within
    ``timeout_s``. A sink that is down, slow or answers an error is logged with its name and
    the reason, and nothing else happens. SLA deadlines sit in a heap watched by one timer.
    """

    def __init__(
        self,
        sinks: Sequence[AlertSink],
        *,
        timeout_s: float = 5.0,
        base_url: str | None = None,
        max_pending: int = 1000,
    ) -> None:
        for sink in sinks:
            if sink.kind not in ("webhook", "slack"):
                raise ConfigError(
                    f"alert sink {sink.name!r}: kind must be 'webhook' or 'slack', "
                    f"not {sink.kind!r}"
                )
            unknown = set(sink.events) - ALERT_KINDS
            if unknown:
                raise ConfigError(
                    f"alert sink {sink.name!r}: unknown event(s) {sorted(unknown)}; "
                    f"known: {sorted(ALERT_KINDS)}"
                )
            if not sink.url.startswith(("http://", "https://")):
                raise ConfigError(f"alert sink {sink.name!r}: url must be http:// or https://")
        self.sinks = list(sinks)
        self.timeout_s = timeout_s
        self.base_url = base_url
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._flows: Mapping[str, Flow] = {}
        self._engine: Engine | None = None
        self._send, self._receive = anyio.create_memory_object_stream[Alert](max_pending)
        self._failed_runs = _Recent()
        self._sla_sent = _Recent()
        self._sla_live: dict[str, tuple[float, float, RunRecord]] = {}  # id → deadline, sla, run
        self._sla_heap: list[tuple[float, str]] = []
        self._wake: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._closed = False

    def attach(self, engine: Engine) -> AlertManager:
        """Observe ``engine`` (its runs and its registered flows' ``sla_s``)."""
        self._flows = engine.flows
        self._engine = engine
        engine.signals.subscribe(RunStateChanged, self._on_run_state)
        engine.signals.subscribe(CorrelationTimedOut, self._on_correlation_timed_out)
        return self

    # -- the subscriber side (synchronous, on the event loop) --------------------------------
    def _on_run_state(self, signal: RunStateChanged) -> None:
        self.run_state(signal.run)

    def _on_correlation_timed_out(self, signal: CorrelationTimedOut) -> None:
        if signal.action != "alert":
            return
        self._queue(
            Alert(
                kind="correlation_timed_out",
                flow=signal.flow,
                run_id="",
                state="timed_out",
                error=signal.reason,
                time=time.time(),
                rule=signal.rule,
            )
        )

    def run_state(self, run: RunRecord) -> None:
        """A run changed state: arm its SLA when it starts, raise alerts when it ends."""
        if run.state is RunState.RUNNING:
            self._failed_runs.discard(run.id)  # a retried run may fail (and alert) again
            self._arm_sla(run)
        elif run.state.finished:
            entry = self._sla_live.pop(run.id, None)
            if entry is not None and run.ended_at is not None and run.ended_at >= entry[0]:
                self._sla_missed(run, entry[1], run.ended_at)
            if run.state is RunState.FAILED and run.id not in self._failed_runs:
                self._failed_runs.add(run.id)
                self._queue(
                    Alert(
                        kind="run_failed",
                        flow=run.flow,
                        run_id=run.id,
                        state=str(run.state),
                        error=run.error,
                        time=time.time(),
                        started_at=run.started_at,
                        ended_at=run.ended_at,
                        url=self._url(run.id),
                    )
                )

    def _arm_sla(self, run: RunRecord) -> None:
        fl = self._flows.get(run.flow)
        if fl is None or fl.sla_s is None or run.id in self._sla_sent or run.id in self._sla_live:
            return
        deadline = (run.started_at or run.created_at) + fl.sla_s
        self._sla_live[run.id] = (deadline, fl.sla_s, run)
        heapq.heappush(self._sla_heap, (deadline, run.id))
        if len(self._sla_heap) > 2 * len(self._sla_live) + 64:  # drop entries of ended runs
            self._sla_heap = [(d, r) for d, r in self._sla_heap if r in self._sla_live]
            heapq.heapify(self._sla_heap)
        if self._sla_heap[0][1] == run.id and self._wake is not None:
            self._wake.set()  # a new earliest deadline: the timer sleeps too long

    def _sla_missed(self, run: RunRecord, sla_s: float, now: float) -> None:
        if run.id in self._sla_sent:
            return
        self._sla_sent.add(run.id)
        self._queue(
            Alert(
                kind="sla_missed",
                flow=run.flow,
                run_id=run.id,
                state=str(run.state),
                error=run.error,
                time=now,
                started_at=run.started_at or run.created_at,
                ended_at=run.ended_at,
                sla_s=sla_s,
                url=self._url(run.id),
            )
        )

    def _url(self, run_id: str) -> str | None:
        return f"{self.base_url.rstrip('/')}{run_path(run_id)}" if self.base_url else None

    def _queue(self, alert: Alert) -> None:
        if not any(alert.kind in s.events for s in self.sinks):
            return
        try:
            self._send.send_nowait(alert)
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning("alert queue full: dropped %s alert: %s", alert.kind, alert.summary)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped += 1
            log.warning("alerts are stopped: dropped %s alert: %s", alert.kind, alert.summary)

    # -- the sending side --------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send queued alerts and watch SLA deadlines until cancelled or :meth:`close`\\ d."""
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout_s) as client,
                anyio.create_task_group() as tg,
            ):
                self._wake = anyio.Event()
                tg.start_soon(self._sla_timer)
                task_status.started()
                if not self._closed:
                    with anyio.CancelScope() as self._scope:
                        async for alert in self._receive:
                            await self._deliver(client, alert)
                tg.cancel_scope.cancel()
        finally:
            self._scope = None
            self._send.close()
            self._receive.close()

    def close(self) -> None:
        """Take no more alerts; :meth:`run` sends those queued (for ``timeout_s`` at most)."""
        self._closed = True
        self._send.close()
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + self.timeout_s)

    async def _sla_timer(self) -> None:
        """One timer for every SLA: sleep until the earliest deadline or a new earlier one."""
        while True:
            self._wake = wake = anyio.Event()
            heap = self._sla_heap
            now = time.time()
            while heap and heap[0][0] <= now:
                deadline, rid = heapq.heappop(heap)
                entry = self._sla_live.get(rid)
                if entry is not None and entry[0] == deadline:
                    del self._sla_live[rid]
                    self._sla_missed(entry[2], entry[1], now)
            delay = heap[0][0] - now if heap else None
            with anyio.move_on_after(delay):
                await wake.wait()

    async def _deliver(self, client: httpx.AsyncClient, alert: Alert) -> None:
        if alert.kind == "run_failed":
            alert = await self._with_task_errors(alert)
        async with anyio.create_task_group() as tg:
            for sink in self.sinks:
                if alert.kind in sink.events:
                    tg.start_soon(self._post, client, sink, alert)

    async def _with_task_errors(self, alert: Alert) -> Alert:
        """``alert`` with the errors of the run's failed tasks, read from the store."""
        if self._engine is None:
            return alert
        try:
            with anyio.fail_after(self.timeout_s):
                run = await self._engine.store.get_run(alert.run_id)
        except Exception as exc:  # the store is closed, or the read failed: send what we have
            log.debug("alert for run %s: no task errors (%s)", alert.run_id, exc)
            return alert
        failed = tuple(
            (t.name, t.error or str(t.state))
            for t in run.tasks
            if t.state is TaskState.FAILED and t.error
        )
        return replace(alert, failed_tasks=failed)

    async def _post(self, client: httpx.AsyncClient, sink: AlertSink, alert: Alert) -> None:
        """POST ``alert`` to ``sink``; never raises (the URL may hold a secret: never logged)."""
        body = slack_payload(alert) if sink.kind == "slack" else webhook_payload(alert)
        try:
            with anyio.fail_after(self.timeout_s):
                resp = await client.post(
                    sink.url,
                    content=orjson.dumps(body),
                    headers={"Content-Type": "application/json", "User-Agent": "evflow"},
                )
        except TimeoutError:
            reason = f"no answer within {self.timeout_s:g}s"
        except anyio.get_cancelled_exc_class():
            log.warning(
                "alert sink %r: gave up sending the %s alert for run %s (shutting down)",
                sink.name,
                alert.kind,
                alert.run_id,
            )
            raise
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.exception("alert sink %r: unexpected error", sink.name)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if resp.status_code < 300:
                self.sent += 1
                log.debug(
                    "alert sink %r took %s alert for run %s", sink.name, alert.kind, alert.run_id
                )
                return
            reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
        self.failed += 1
        log.warning(
            "alert sink %r failed to take the %s alert for run %s of flow %r: %s",
            sink.name,
            alert.kind,
            alert.run_id,
            alert.flow,
            reason,
        )
