"""The event envelope: what every source turns the world into.

CloudEvents-shaped (``id, source, type, subject, time, data``) plus ``dedup_key``, the key under
which the store drops repeats. Serialised with orjson.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import field
from datetime import UTC, datetime
from time import time_ns
from typing import Any

import orjson

from .errors import EventError
from .frozen import record

__all__ = ["Event", "body_hash", "parse_json", "utcnow"]

_INT64 = (-(2**63), 2**64 - 1)  # what orjson (and so the store) keeps exactly


def utcnow() -> datetime:
    return datetime.now(UTC)


def body_hash(body: bytes) -> str:
    """A short stable hash of raw bytes, used as a dedup key when the sender gives none."""
    return hashlib.sha256(body).hexdigest()[:32]


def new_id() -> str:
    """A time-ordered UUID (version 7, RFC 9562) as 32 hex digits: the Unix time in
    milliseconds (48 bits), then 74 random bits.

    One is made for every event and every run, and they key the store's largest indexes (runs,
    tasks, attempts, the audit trail's subjects, events). Ids made later sort later, so each
    insert lands at the right-hand edge of those indexes, on pages already in cache, instead of
    anywhere in them: random ids cost a third of the throughput once the store held a few
    hundred thousand tasks (see ``benchmarks/RESULTS.md``)."""
    raw = bytearray((time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 9562 variant
    return raw.hex()


@record
class Event:
    """Something that happened, as evflow records it.

    ``id`` and ``source`` are the sender's: CloudEvents makes only the pair unique. ``uid`` is
    evflow's own identity of the event, given when the event is made and kept by the store;
    rule decisions, run ids and the audit trail are keyed on it. ``dedup_key`` defaults to
    ``source + "/" + id``; sources with a natural key (Kafka offset, file path+size+mtime, cron
    fire time) set it.
    """

    type: str
    source: str = "evflow.emit"
    data: Any = None
    subject: str | None = None
    id: str = field(default_factory=new_id)
    time: datetime = field(default_factory=utcnow)
    dedup_key: str = ""
    extensions: Mapping[str, Any] = field(default_factory=dict)
    uid: str = field(default_factory=new_id, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise EventError("event type must be a non-empty string")
        if not isinstance(self.source, str) or not self.source:
            raise EventError(f"event {self.type!r}: source must be a non-empty string")
        if self.time.tzinfo is None:
            raise EventError(f"event {self.type!r}: time must be timezone-aware")
        for attr in ("type", "source", "id", "subject", "dedup_key"):
            value = getattr(self, attr)
            if isinstance(value, str) and "\x00" in value:
                raise EventError(
                    f"event {attr} contains a NUL character (\\u0000); send it without one"
                )
        if not self.dedup_key:
            object.__setattr__(self, "dedup_key", f"{self.source}/{self.id}")

    # -- (de)serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents structured form (``specversion`` 1.0) plus ``dedupkey``."""
        out: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat(),
            "dedupkey": self.dedup_key,
        }
        if self.subject is not None:
            out["subject"] = self.subject
        if self.data is not None:
            out["datacontenttype"] = "application/json"
            out["data"] = self.data
        for k, v in self.extensions.items():
            out.setdefault(k, v)
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, default_source: str = "evflow.emit") -> Event:
        """Build an event from a CloudEvents structured dict (or a looser dict with ``type``).

        Raises :class:`EventError` naming the field that is wrong.
        """
        if not isinstance(d, Mapping):
            raise EventError(f"an event must be a JSON object, not {type(d).__name__}")
        spec = d.get("specversion", "1.0")
        if spec != "1.0":
            raise EventError(
                f"unsupported CloudEvents specversion {spec!r}; evflow accepts version 1.0"
            )
        etype = d.get("type")
        if not isinstance(etype, str) or not etype:
            raise EventError("event field 'type' is missing or not a string")
        source = d.get("source", default_source)
        if not isinstance(source, str) or not source:
            raise EventError("event field 'source' must be a non-empty string")
        subject = d.get("subject")
        if subject is not None and not isinstance(subject, str):
            raise EventError("event field 'subject' must be a string")
        eid = d.get("id")
        if eid is not None and not isinstance(eid, str):
            raise EventError("event field 'id' must be a string")
        eid = eid or new_id()
        time = parse_time(d.get("time"))
        known = {
            "specversion",
            "id",
            "source",
            "type",
            "subject",
            "time",
            "data",
            "datacontenttype",
            "dedupkey",
            "data_base64",
            "dataschema",
        }
        ext = {k: v for k, v in d.items() if k not in known}
        dedup = d.get("dedupkey")
        if dedup is not None and not isinstance(dedup, str):
            raise EventError("event field 'dedupkey' must be a string")
        dedup = dedup or ""
        return cls(
            type=etype,
            source=source,
            data=d.get("data"),
            subject=subject,
            id=eid,
            time=time,
            dedup_key=dedup,
            extensions=ext,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        try:
            d = parse_json(raw)
        except orjson.JSONDecodeError as exc:
            raise EventError(f"event is not valid JSON: {exc}") from None
        return cls.from_dict(d)


def parse_json(raw: bytes | str) -> Any:
    """JSON from a sender, with every number kept exact.

    orjson reads an integer beyond 64 bits as a float (10**30 would become 1e+30) and cannot
    write one back, so such an integer is refused with :class:`EventError` naming where it is,
    rather than stored changed. Raises ``orjson.JSONDecodeError`` for text that is not JSON.
    """
    value = orjson.loads(raw)
    if _has_float(value):  # only then can a big integer hide among the values
        exact = json.loads(raw)
        where = _big_int(exact, "")
        if where is not None:
            raise EventError(
                f"the integer at {where or 'the top level'} does not fit in 64 bits; "
                "send it as a string to keep it exact"
            )
    return value


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _big_int(value: Any, path: str) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _big_int(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp (or None → now) as an aware datetime."""
    if value is None or value == "":
        return utcnow()
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise EventError("event field 'time' must be an RFC 3339 string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise EventError(f"event field 'time' is not an RFC 3339 timestamp: {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
