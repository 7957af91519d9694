"""Event and run ids: time-ordered UUIDs (version 7, RFC 9562 variant) as 32 hex digits."""

from __future__ import annotations

import time
import uuid

from evflow import Event
from evflow.events import new_id
from evflow.run.new_runs import run_id_for


def test_ids_are_version_7_uuids_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(2_000)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        parsed = uuid.UUID(i)
        assert parsed.hex == i and len(i) == 32
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_an_id_begins_with_the_time_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(made[:12], 16) <= after


def test_ids_made_later_sort_later() -> None:
    first = [new_id() for _ in range(100)]
    time.sleep(0.002)  # the next millisecond at least: within one, ids are in random order
    later = [new_id() for _ in range(100)]
    assert max(first) < min(later)


def test_an_event_without_an_id_gets_one() -> None:
    a, b = Event(type="t", source="s"), Event(type="t", source="s")
    assert a.id != b.id and uuid.UUID(a.id).version == 7


def test_a_run_id_for_a_key_is_the_same_every_time_and_takes_its_time_from_since() -> None:
    key = "rule:some-event"
    assert run_id_for(key) == run_id_for(key) and len(run_id_for(key)) == 32
    assert run_id_for(key) != run_id_for("rule:another-event")
    since = new_id()
    stamped = run_id_for(key, since=since)
    assert stamped == run_id_for(key, since=since) and len(stamped) == 32
    assert stamped[:12] == since[:12]  # the event's time: runs of events sort in time order
    assert stamped[12:] == run_id_for(key)[12:]  # the rest still comes from the key
    assert run_id_for("rule:another-event", since=since) != stamped
