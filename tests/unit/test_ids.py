"""Event and run ids: random UUIDs (version 4, RFC 4122 variant) as 32 hex digits."""

from __future__ import annotations

import uuid

from evflow import Event
from evflow.events import new_id


def test_ids_are_version_4_uuids_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        parsed = uuid.UUID(i)
        assert parsed.hex == i and len(i) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_an_event_without_an_id_gets_one() -> None:
    a, b = Event(type="t", source="s"), Event(type="t", source="s")
    assert a.id != b.id and uuid.UUID(a.id).version == 4
