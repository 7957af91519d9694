"""KafkaSensor: turns records on Kafka topics into events, at least once and never doubled.

Delivery
    The sensor joins a consumer group (``group_id``, default ``evflow.<name>``) with auto-commit
    off. Each batch from ``getmany`` is submitted to the durable intake; only after
    :meth:`~evflow.abc.Intake.submit` has returned (the events are committed in the store) are the
    offsets of exactly those records committed to Kafka. The next offset of each partition is
    also kept in the store, as the cursor ``kafka:<group>:<topic>:<partition>`` committed in the
    same transaction as the events: records below it that the broker hands out again (a crash
    before the Kafka commit, committed offsets the broker lost or reset) are skipped, and the
    store's dedup key ``kafka:<topic>/<partition>/<offset>`` drops any repeat that gets past it.
    When partitions are revoked in a rebalance, what has been stored is committed first.

Back-pressure
    If the intake raises :class:`~evflow.errors.Saturated`, every assigned partition is paused
    (buffered records are dropped, so memory stays flat), the sensor waits for
    :meth:`~evflow.abc.Intake.wait_not_saturated` while still polling so the group keeps it as a
    live member, then seeks each partition back to its first unstored offset and resumes.

Decoding
    See :mod:`evflow.sensors.kafka_records` (``format="json"`` or ``"raw"``).

Bad records
    A record that cannot become an event is recorded with :meth:`~evflow.abc.Intake.dead_letter`
    (reason naming topic, partition, offset and the error; the raw value as payload); with
    ``dlq_topic`` it is also produced there with an ``evflow-dlq-reason`` header. Consumption goes
    on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from anyio.abc import TaskStatus

from ..abc import Intake
from ..errors import Saturated, SensorError
from ..events import Event
from .kafka_records import Undecodable, dedup_key, headers_of, record_to_event

__all__ = ["KafkaSensor"]

_Undecodable = Undecodable  # the name tests and older code import

logger = logging.getLogger("evflow.sensors.kafka")

#: Options of ``security`` passed through to aiokafka's consumer and producer.
SECURITY_OPTIONS = frozenset(
    {
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "sasl_kerberos_domain_name",
        "sasl_oauth_token_provider",
        "ssl_context",
    }
)

_POLL_MS = 1000  # how long one getmany waits when nothing arrives (the fetcher runs regardless)
_STOP_TIMEOUT_S = 10.0
_COMMIT_TIMEOUT_S = 30.0
_DLQ_REASON_HEADER = "evflow-dlq-reason"


@dataclass(slots=True)
class _State:
    """What one ``run`` knows beyond the consumer itself."""

    consumer: Any
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    #: next offset to commit per partition, for records stored but not yet committed
    stored: dict[Any, int] = field(default_factory=dict)
    #: while backing off: first unstored offset per partition, to seek back to
    rewind: dict[Any, int] = field(default_factory=dict)
    backing_off: bool = False
    #: per partition, the next offset the store has (read once per assignment): records below
    #: it are stored already, so a group whose committed offsets the broker lost does not
    #: replay them
    floors: dict[Any, int | None] = field(default_factory=dict)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what has been stored before partitions go to another member."""

    def __init__(self, sensor: KafkaSensor, state: _State) -> None:
        self._sensor = sensor
        self._state = state

    async def on_partitions_revoked(self, revoked: Any) -> None:
        state = self._state
        revoked = set(revoked)
        async with state.lock:  # wait for an in-flight submit + commit to finish
            offsets = {tp: o for tp, o in state.stored.items() if tp in revoked}
            if offsets:
                await self._sensor._commit(state.consumer, offsets)
            for tp in revoked:
                state.stored.pop(tp, None)
                state.rewind.pop(tp, None)
        if revoked:
            logger.info("kafka sensor %r: partitions revoked: %s", self._sensor.name, _tps(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        assigned = set(assigned)
        for tp in assigned:  # another member may have stored more since: read it again
            self._state.floors.pop(tp, None)
        if self._state.backing_off and assigned:
            self._state.consumer.pause(*assigned)
        if assigned:
            logger.info(
                "kafka sensor %r: partitions assigned: %s", self._sensor.name, _tps(assigned)
            )


def _tps(tps: set[Any]) -> str:
    return ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in tps))


class KafkaSensor:
    """Events from Kafka topics (or a topic ``pattern``), committed to Kafka after they are stored.

    ``topics`` is one topic, a comma-separated list or a sequence; ``pattern`` a regex instead.
    ``security`` holds aiokafka connection options (``security_protocol``, ``sasl_mechanism``,
    ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_context``, ...). See the module doc
    for decoding, dead letters and back-pressure.
    """

    def __init__(
        self,
        name: str,
        topics: str | Sequence[str] | None = None,
        *,
        pattern: str | None = None,
        bootstrap_servers: str | None = None,
        group_id: str | None = None,
        format: Literal["json", "raw"] = "json",
        event_type: str | None = None,
        dlq_topic: str | None = None,
        fetch_max_wait_ms: int = 100,
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 3000,
        batch_max: int = 500,
        security: Mapping[str, Any] | None = None,
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise SensorError("kafka sensor: name must be a non-empty string")
        where = f"kafka sensor {name!r}"
        if isinstance(topics, str):
            topic_list = [t.strip() for t in topics.split(",") if t.strip()]
        else:
            topic_list = [t for t in (topics or ()) if t]
        if bool(topic_list) == (pattern is not None):
            raise SensorError(f"{where}: give either topics or a pattern (exactly one)")
        if format not in ("json", "raw"):
            raise SensorError(f"{where}: format must be 'json' or 'raw', not {format!r}")
        if auto_offset_reset not in ("earliest", "latest"):
            raise SensorError(
                f"{where}: auto_offset_reset must be 'earliest' or 'latest', "
                f"not {auto_offset_reset!r}"
            )
        if fetch_max_wait_ms < 1:
            raise SensorError(f"{where}: fetch_max_wait_ms must be at least 1")
        if batch_max < 1:
            raise SensorError(f"{where}: batch_max must be at least 1")
        if not 0 < heartbeat_interval_ms < session_timeout_ms:
            raise SensorError(
                f"{where}: heartbeat_interval_ms must be positive and below session_timeout_ms"
            )
        unknown = set(security or {}) - SECURITY_OPTIONS
        if unknown:
            raise SensorError(
                f"{where}: unknown security option(s) {sorted(unknown)}; "
                f"known: {sorted(SECURITY_OPTIONS)}"
            )
        self.name = name
        self.topics: tuple[str, ...] = tuple(topic_list)
        self.pattern = pattern
        self.bootstrap_servers = bootstrap_servers or None
        self.group_id = group_id or f"evflow.{name}"
        self.format: Literal["json", "raw"] = format
        self.event_type = event_type or None
        self.dlq_topic = dlq_topic or None
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.batch_max = batch_max
        self.security: dict[str, Any] = dict(security or {})
        self.auto_offset_reset = auto_offset_reset

    # -- Sensor protocol ---------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The ``source`` of every event this sensor emits."""
        return f"kafka/{self.name}"

    def describe(self) -> str:
        """One line for the startup summary."""
        what = ", ".join(self.topics) if self.topics else f"topics matching /{self.pattern}/"
        where = self.bootstrap_servers or "(no bootstrap servers configured)"
        return f"consuming {what} from {where} as group {self.group_id} ({self.format})"

    def __repr__(self) -> str:
        return f"KafkaSensor({self.name!r}, {self.describe()})"

    async def run(self, intake: Intake, *, task_status: TaskStatus[None]) -> None:
        """Consume until cancelled; ``task_status.started()`` once subscribed and assigned."""
        if not self.bootstrap_servers:
            raise SensorError(
                f"kafka sensor {self.name!r}: no bootstrap servers configured "
                "(set [kafka] bootstrap in evflow.toml or EVFLOW_KAFKA_BOOTSTRAP)"
            )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            client_id=f"evflow-{self.name}",
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_records=self.batch_max,
            **self.security,
        )
        producer: Any = None
        state = _State(consumer)
        try:
            if self.dlq_topic:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=f"evflow-{self.name}-dlq",
                    acks="all",
                    **self.security,
                )
                await self._start_client(producer, "dead-letter producer")
            listener = _Rebalance(self, state)
            if self.topics:
                consumer.subscribe(topics=list(self.topics), listener=listener)
            else:
                consumer.subscribe(pattern=self.pattern, listener=listener)
            await self._start_client(consumer, "consumer")
            logger.info("kafka sensor %r: %s", self.name, self.describe())
            task_status.started()
            await self._consume(intake, state, producer)
        finally:
            with anyio.move_on_after(_STOP_TIMEOUT_S, shield=True):
                await consumer.stop()
                if producer is not None:
                    await producer.stop()

    # -- internals ---------------------------------------------------------------------------

    async def _start_client(self, client: Any, what: str) -> None:
        try:
            await client.start()
        except KafkaError as exc:
            raise SensorError(
                f"kafka sensor {self.name!r}: cannot start the {what} "
                f"(bootstrap {self.bootstrap_servers}): {exc}"
            ) from exc

    async def _consume(self, intake: Intake, state: _State, producer: Any) -> None:
        consumer = state.consumer
        while True:
            batch: dict[Any, list[Any]] = await consumer.getmany(
                timeout_ms=_POLL_MS, max_records=self.batch_max
            )
            if not batch:
                continue
            try:
                await self._handle(intake, state, batch, producer)
            except Saturated:
                first = {tp: recs[0].offset for tp, recs in batch.items() if recs}
                await self._back_off(intake, state, first)

    async def _handle(
        self, intake: Intake, state: _State, batch: dict[Any, list[Any]], producer: Any
    ) -> None:
        """Store one batch (events, then dead letters), then commit exactly its offsets."""
        async with state.lock:
            assigned = state.consumer.assignment()
            events: list[Event] = []
            bad: list[tuple[Any, str]] = []
            offsets: dict[Any, int] = {}
            for tp, records in batch.items():
                if not records or tp not in assigned:  # revoked meanwhile: the new owner reads it
                    continue
                records = await self._above_floor(intake, state, tp, records)
                if not records:
                    continue
                for record in records:
                    try:
                        events.append(self._to_event(record))
                    except Undecodable as exc:
                        bad.append((record, str(exc)))
                offsets[tp] = records[-1].offset + 1
            if not offsets:
                return
            if events:
                cursors = {self.cursor(tp): str(o) for tp, o in offsets.items()}
                accepted = await intake.submit(events, cursors=cursors)
                repeats = sum(1 for a in accepted if a.duplicate)
                if repeats:
                    logger.info(
                        "kafka sensor %r: %d record(s) were already stored", self.name, repeats
                    )
            for record, reason in bad:
                await self._dead_letter(intake, producer, record, reason)
            state.stored.update(offsets)
            # commit this batch with anything an earlier failed commit left (if still ours)
            assigned = state.consumer.assignment()
            pending = {tp: o for tp, o in state.stored.items() if tp in assigned}
            state.stored = dict(pending)
            if await self._commit(state.consumer, pending):
                for tp, off in pending.items():
                    if state.stored.get(tp) == off:
                        del state.stored[tp]

    def cursor(self, tp: Any) -> str:
        """The store's cursor of a partition: the next offset to read, kept with the events."""
        return f"kafka:{self.group_id}:{tp.topic}:{tp.partition}"

    async def _above_floor(
        self, intake: Intake, state: _State, tp: Any, records: list[Any]
    ) -> list[Any]:
        """``records`` the store does not have yet. Below the store's cursor they are stored
        already: the broker forgot the group's committed offset (it expired, or the group was
        reset), so the partition skips to the cursor instead of replaying them."""
        if tp not in state.floors:
            stored = await intake.get_cursor(self.cursor(tp))
            state.floors[tp] = int(stored) if stored is not None and stored.isdigit() else None
        floor = state.floors[tp]
        if floor is None or records[0].offset >= floor:
            return records
        logger.warning(
            "kafka sensor %r: %s-%d: read from offset %d, but the store has the records up to "
            "%d (the group's committed offset was lost); skipping to %d",
            self.name,
            tp.topic,
            tp.partition,
            records[0].offset,
            floor,
            floor,
        )
        above = [r for r in records if r.offset >= floor]
        if not above:
            state.consumer.seek(tp, floor)
        return above

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> bool:
        """Commit ``{tp: next offset}`` to Kafka for records already stored; True on success.

        This is the single step between "stored" and "committed" (tests interrupt it to
        simulate a crash there). A failed commit is logged, not raised: the records will be
        re-delivered and the store drops them as repeats.
        """
        try:
            with anyio.fail_after(_COMMIT_TIMEOUT_S, shield=True):
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            logger.info(
                "kafka sensor %r: offsets not committed (group rebalanced): %s", self.name, exc
            )
        except (KafkaError, TimeoutError) as exc:
            logger.warning(
                "kafka sensor %r: offset commit failed, records will be re-read "
                "and dropped as repeats: %r",
                self.name,
                exc,
            )
        else:
            return True
        return False

    async def _back_off(self, intake: Intake, state: _State, first: dict[Any, int]) -> None:
        """Pause everything until the intake has room, then re-read from the first unstored."""
        consumer = state.consumer
        state.backing_off = True
        state.rewind = dict(first)
        logger.info("kafka sensor %r: intake saturated, pausing consumption", self.name)
        try:
            consumer.pause(*consumer.assignment())

            async def keep_polling() -> None:
                # getmany keeps the member alive (max_poll_interval) while every partition is
                # paused; anything it returns came from a partition assigned meanwhile.
                while True:
                    got: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=_POLL_MS)
                    for tp, recs in got.items():
                        if recs:
                            known = state.rewind.get(tp)
                            first_offset: int = recs[0].offset
                            if known is None or first_offset < known:
                                state.rewind[tp] = first_offset
                            consumer.pause(tp)

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_polling)
                await intake.wait_not_saturated()
                tg.cancel_scope.cancel()
        finally:
            state.backing_off = False
        assigned = consumer.assignment()
        for tp, offset in state.rewind.items():
            if tp in assigned:
                consumer.seek(tp, offset)
        state.rewind = {}
        consumer.resume(*assigned)
        logger.info("kafka sensor %r: intake has room again, resuming", self.name)

    async def _dead_letter(self, intake: Intake, producer: Any, record: Any, reason: str) -> None:
        headers = headers_of(record.headers)
        payload: bytes = record.value or b""
        await intake.dead_letter(
            source=self.source,
            reason=reason,
            payload=payload,
            headers=headers,
            dedup_key=dedup_key(record),
        )
        logger.warning("kafka sensor %r: dead letter: %s", self.name, reason)
        if producer is None:
            return
        dlq_headers = [
            *((k, v) for k, v in record.headers if k != _DLQ_REASON_HEADER),
            (_DLQ_REASON_HEADER, reason.encode()),
        ]
        try:
            await producer.send_and_wait(
                self.dlq_topic, value=record.value, key=record.key, headers=dlq_headers
            )
        except KafkaError as exc:
            logger.error(
                "kafka sensor %r: cannot produce to dead-letter topic %r "
                "(the dead letter is in the store): %r",
                self.name,
                self.dlq_topic,
                exc,
            )

    # -- decoding ----------------------------------------------------------------------------

    def _to_event(self, record: Any) -> Event:
        """The event for one record; raises :class:`Undecodable` with the reason."""
        return record_to_event(
            record, source=self.source, format=self.format, event_type=self.event_type
        )
