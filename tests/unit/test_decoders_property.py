"""Property tests for the event decoders: any input becomes an event or a clear refusal
(``EventError``, or a dead letter for Kafka), never another exception."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from evflow.errors import EventError
from evflow.events import Event, parse_json
from evflow.sensors import KafkaSensor
from evflow.sensors.kafka import _Undecodable

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# stdlib json writes integers of any size, so refusals of those beyond 64 bits are exercised
JSON_BYTES = JSON.map(lambda v: json.dumps(v).encode())
CE_KEYS = st.sampled_from(
    ["specversion", "type", "source", "id", "time", "subject", "data", "dedupkey", "x"]
)
CE_VALUES = JSON | st.sampled_from(["1.0", "0.1", "2024-05-01T12:00:00Z", "yesterday", ""])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(CE_KEYS, CE_VALUES, max_size=9) | JSON)
def test_a_cloudevent_dict_decodes_or_is_refused_with_event_error(d: Any) -> None:
    try:
        event = Event.from_dict(d)
    except EventError:
        return
    assert event.type and event.source and event.uid


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | JSON_BYTES)
def test_json_bodies_decode_exactly_or_are_refused(raw: bytes) -> None:
    try:
        value = parse_json(raw)
    except (orjson.JSONDecodeError, EventError):
        return
    assert orjson.loads(orjson.dumps(value)) == value  # what is kept round-trips exactly


HEADER_NAMES = st.sampled_from(
    ["ce_specversion", "ce_type", "ce_source", "ce_id", "ce_time", "content-type", "traceparent"]
)
HEADER_VALUES = (
    st.none()
    | st.binary(max_size=30)
    | st.sampled_from(
        [
            b"1.0",
            b"order.created",
            b"application/json",
            b"text/plain",
            b"application/cloudevents+json",
        ]
    )
)


@settings(max_examples=300, deadline=None)
@given(
    value=st.none() | st.binary(max_size=120) | JSON_BYTES,
    key=st.none() | st.binary(max_size=10),
    headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6),
)
def test_a_kafka_record_decodes_or_becomes_a_dead_letter(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    sensor = KafkaSensor("k", "t", bootstrap_servers="127.0.0.1:9")
    record = ConsumerRecord(
        topic="t",
        partition=0,
        offset=7,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers,
    )
    try:
        event = sensor._to_event(record)
    except _Undecodable as exc:
        assert "topic t partition 0 offset 7" in str(exc)
        return
    assert event.dedup_key == "kafka:t/0/7"
