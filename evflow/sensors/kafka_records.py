"""Kafka record decoding: one consumed record into an :class:`~evflow.events.Event`.

With ``format="json"``:
    * a CloudEvents structured record (a JSON object with ``specversion`` and ``type``, or a
      ``content-type: application/cloudevents+json`` header) keeps its type, id, subject, time,
      data and extensions;
    * the CloudEvents Kafka binary binding (``ce_type``, ``ce_source``, ``ce_id``, ``ce_subject``,
      ``ce_time`` and other ``ce_*`` headers) likewise, with the value as data;
    * any other value becomes ``Event(type=event_type or "kafka.<topic>", data=<parsed JSON>)``.

    ``format="raw"`` never parses: data is the value as text, or ``{"value_b64": ...}`` when it
    is not UTF-8. A tombstone (null value) has ``data=None``.

    Every event's ``source`` is the sensor's (``kafka/<name>``) so that ``Rule(on=sensor)``
    matches it; a CloudEvent's own ``source`` is kept in the ``origin`` extension. Extensions
    also carry ``topic``, ``partition``, ``offset``, ``timestamp`` (ms), ``key`` and ``headers``
    (both decoded as UTF-8); ``subject`` is the CloudEvents subject, else the record key.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ..errors import EventError
from ..events import Event, parse_json

__all__ = ["Undecodable", "dedup_key", "headers_of", "record_to_event"]

_CE_STRUCTURED = "application/cloudevents"


class Undecodable(Exception):
    """A record that cannot become an event; the message is the dead letter's reason."""


def record_to_event(
    record: Any, *, source: str, format: Literal["json", "raw"], event_type: str | None
) -> Event:
    """The event for one record; raises :class:`Undecodable` with the reason."""
    topic: str = record.topic
    where = f"topic {topic} partition {record.partition} offset {record.offset}"
    headers = headers_of(record.headers)
    key = None if record.key is None else bytes(record.key).decode("utf-8", "replace")
    value: bytes | None = record.value
    extensions: dict[str, Any] = {
        "topic": topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": key,
        "headers": headers,
    }
    kafka_time = _record_time(record.timestamp)
    try:
        if format == "raw":
            data = None if value is None else _raw_data(value)
            return Event(
                type=event_type or f"kafka.{topic}",
                source=source,
                data=data,
                subject=key,
                time=kafka_time,
                dedup_key=dedup_key(record),
                extensions=extensions,
            )
        ce = _binary_cloudevent(headers)
        if ce is not None:
            ce["data"] = _binary_data(value, _content_type(headers))
            return _from_cloudevent(ce, record, key, kafka_time, extensions, source)
        parsed = None if value is None else parse_json(value)
        structured = (_content_type(headers) or "").startswith(_CE_STRUCTURED)
        if isinstance(parsed, dict) and (
            structured or ("specversion" in parsed and "type" in parsed)
        ):
            return _from_cloudevent(parsed, record, key, kafka_time, extensions, source)
        if structured:
            raise EventError("a structured CloudEvent must be a JSON object")
        return Event(
            type=event_type or f"kafka.{topic}",
            source=source,
            data=parsed,
            subject=key,
            time=kafka_time,
            dedup_key=dedup_key(record),
            extensions=extensions,
        )
    except orjson.JSONDecodeError as exc:
        raise Undecodable(f"{where}: value is not valid JSON: {exc}") from None
    except EventError as exc:
        raise Undecodable(f"{where}: not a valid event: {exc}") from None


def _from_cloudevent(
    ce: Mapping[str, Any],
    record: Any,
    key: str | None,
    kafka_time: datetime,
    extensions: dict[str, Any],
    source: str,
) -> Event:
    d = dict(ce)
    if d.get("data") is None and isinstance(d.get("data_base64"), str):
        d["data"] = {"value_b64": d["data_base64"]}
    if not d.get("time"):
        d["time"] = kafka_time.isoformat()
    event = Event.from_dict(d, default_source=source)
    return replace(
        event,
        source=source,
        subject=event.subject if event.subject is not None else key,
        dedup_key=dedup_key(record),
        extensions={**event.extensions, "origin": event.source, **extensions},
    )


def dedup_key(record: Any) -> str:
    """The store's dedup key of a record: its topic, partition and offset."""
    return f"kafka:{record.topic}/{record.partition}/{record.offset}"


def headers_of(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """A record's headers as text (UTF-8, bad bytes replaced)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in raw or ()}


def _content_type(headers: Mapping[str, str]) -> str | None:
    for k, v in headers.items():
        if k.lower() == "content-type":
            return v.strip().lower()
    return None


def _record_time(timestamp_ms: int | None) -> datetime:
    if timestamp_ms is None or timestamp_ms < 0:
        return datetime.now(UTC)
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC)


def _raw_data(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"value_b64": base64.b64encode(value).decode("ascii")}


def _binary_cloudevent(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The attributes of a CloudEvents Kafka binary-mode record, or None if it is not one."""
    if "ce_type" not in headers:
        return None
    return {k[3:]: v for k, v in headers.items() if k.startswith("ce_") and len(k) > 3}


def _binary_data(value: bytes | None, content_type: str | None) -> Any:
    """The data of a binary-mode CloudEvent: JSON unless the content type says otherwise."""
    if value is None:
        return None
    if content_type is None or "json" in content_type.lower():
        return parse_json(value)
    return _raw_data(value)
