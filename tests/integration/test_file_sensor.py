"""FileSensor against real files under tmp_path."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import pytest

from evflow.abc import Intake
from evflow.errors import SensorError
from evflow.intake import StoreIntake
from evflow.sensors.file import FileSensor
from evflow.store import Store, connect
from tests.postgres import store_for

SETTLE = 0.2
Backend = tuple[StoreIntake, Store]


@asynccontextmanager
async def open_backend(tmp_path: Path, **intake_options: Any) -> AsyncIterator[Backend]:
    """A real SQLite store and the durable intake over it."""
    async with connect(store_for(tmp_path)) as store:
        yield StoreIntake(store, **intake_options), store


@asynccontextmanager
async def running(sensor: FileSensor, intake: Intake) -> AsyncIterator[None]:
    """Run ``sensor`` until the block ends; the block starts once it is listening."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(partial(sensor.run, intake))
        yield
        tg.cancel_scope.cancel()


async def events_of(store: Store) -> list[Any]:
    return list(await store.list_events(limit=1000))


async def wait_for(store: Store, pred: Any, within_s: float = 10) -> list[Any]:
    """Poll the store until ``pred(events)`` holds."""
    with anyio.fail_after(within_s):
        while True:
            evs = await events_of(store)
            if pred(evs):
                return evs
            await anyio.sleep(0.02)


async def wait_duplicates(store: Store, at_least: int, within_s: float = 10) -> None:
    """Poll the store until it has counted ``at_least`` repeats."""
    with anyio.fail_after(within_s):
        while True:
            if await store.count_duplicates() >= at_least:
                return
            await anyio.sleep(0.02)


def real(path: Path) -> str:
    return os.path.realpath(path)


def subjects(evs: Sequence[Any]) -> list[str]:
    return sorted(e.subject for e in evs)


_barriers = count()


async def barrier(store: Store, folder: Path, suffix: str = ".csv") -> list[Any]:
    """Write a fresh file and wait for its event: everything written before has been seen."""
    name = f"zz-barrier-{next(_barriers)}{suffix}"
    (folder / name).write_text("b")
    return await wait_for(store, lambda evs: any(e.data["path"].endswith(name) for e in evs))


def no_barriers(evs: Sequence[Any]) -> list[Any]:
    return [e for e in evs if "zz-barrier" not in e.data["path"]]


async def test_file_written_in_chunks_is_one_event_after_it_settles(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(inbox, "*.csv", settle_s=SETTLE)
        async with running(sensor, intake):
            target = inbox / "big.csv"
            with target.open("wb") as fh:
                for _ in range(6):
                    fh.write(b"x" * 1000)
                    fh.flush()
                    os.fsync(fh.fileno())
                    last_write = anyio.current_time()
                    await anyio.sleep(SETTLE / 3)  # a writer pausing less than settle_s
            evs = await wait_for(store, lambda evs: len(evs) >= 1)
            assert anyio.current_time() - last_write >= SETTLE * 0.9
            evs = no_barriers(await barrier(store, inbox))
    assert len(evs) == 1
    (ev,) = evs
    st = target.stat()
    assert ev.subject == "big.csv"
    assert ev.data["path"] == "big.csv"
    assert ev.data["size"] == 6000 == st.st_size
    assert ev.data["mtime_ns"] == st.st_mtime_ns
    assert ev.data["abs_path"] == os.path.join(real(inbox), "big.csv")
    assert ev.data["root"] == real(inbox)
    assert ev.data["mtime"].endswith("+00:00")
    assert ev.dedup_key == f"file:{ev.data['abs_path']}:6000:{st.st_mtime_ns}"


async def test_pattern_filters_names_and_relative_paths(tmp_path: Path) -> None:
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(tmp_path / "in", ["*.csv", "*.json"], settle_s=SETTLE)
        async with running(sensor, intake):
            for name in ("a.csv", "b.txt", "c.json", "d.CSV.bak"):
                (tmp_path / "in" / name).write_text(name)
            evs = no_barriers(await barrier(store, tmp_path / "in"))
        assert subjects(evs) == ["a.csv", "c.json"]

    root = tmp_path / "tree"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "other").mkdir()
    async with open_backend(tmp_path / "second") as (intake, store):
        sensor = FileSensor(root, "sub/**/*.csv", recursive=True, settle_s=SETTLE)
        async with running(sensor, intake):
            for rel in ("top.csv", "sub/a.csv", "sub/deep/b.csv", "other/c.csv", "sub/x.txt"):
                (root / rel).write_text(rel)
            evs = no_barriers(await barrier(store, root / "sub"))
        assert subjects(evs) == ["sub/a.csv", "sub/deep/b.csv"]


async def test_temporary_names_are_ignored_until_renamed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(inbox, settle_s=SETTLE)
        async with running(sensor, intake):
            part = inbox / "x.csv.part"
            with part.open("wb") as fh:
                for _ in range(3):
                    fh.write(b"y" * 100)
                    fh.flush()
                    await anyio.sleep(SETTLE * 1.5)  # settles as .part: must still not count
            (inbox / ".hidden.csv").write_text("h")
            (inbox / "y.csv.tmp").write_text("t")
            (inbox / "z.csv~").write_text("z")
            part.rename(inbox / "x.csv")
            evs = await wait_for(store, lambda evs: len(evs) >= 1)
            evs = no_barriers(await barrier(store, inbox))
    assert subjects(evs) == ["x.csv"]
    assert evs[0].data["size"] == 300


async def test_existing_files_are_emitted_once_across_restarts(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"old-{i}.csv").write_text(f"old {i}")
    (inbox / "old.part").write_text("partial")
    async with open_backend(tmp_path) as (intake, store):
        async with running(FileSensor(inbox, "*.csv", settle_s=SETTLE), intake):
            evs = await wait_for(store, lambda evs: len(evs) >= 3)
            evs = no_barriers(await barrier(store, inbox))
        assert subjects(evs) == ["old-0.csv", "old-1.csv", "old-2.csv"]
        before = len(await events_of(store))
        dups_before = await store.count_duplicates()

        # A restart: a new sensor on the same folder and store sees every file again.
        (inbox / "new.csv").write_text("arrived while down")
        async with running(FileSensor(inbox, "*.csv", settle_s=SETTLE), intake):
            evs = await wait_for(store, lambda evs: len(evs) >= before + 1)
            # every file present at start (3 old + the first barrier) comes back as a repeat
            await wait_duplicates(store, dups_before + 4)
            evs = await barrier(store, inbox)
        assert len(evs) == before + 2
        assert subjects(no_barriers(evs)) == ["new.csv", "old-0.csv", "old-1.csv", "old-2.csv"]
        assert len({e.dedup_key for e in evs}) == len(evs)


async def test_symlink_escaping_the_root_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="evflow.sensors.file")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret")
    (outside / "also.csv").write_text("also secret")
    (outside / "dir").mkdir()
    (outside / "dir" / "deep.csv").write_text("deep secret")
    (inbox / "before.csv").symlink_to(outside / "secret.csv")
    (inbox / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(inbox, "*.csv", recursive=True, settle_s=SETTLE)
        async with running(sensor, intake):
            (inbox / "after.csv").symlink_to(outside / "also.csv")
            (inbox / "normal.csv").write_text("fine")
            (inbox / "inner-link.csv").symlink_to(inbox / "normal.csv")
            evs = await wait_for(store, lambda evs: len(evs) >= 2)
            evs = no_barriers(await barrier(store, inbox))
    assert subjects(evs) == ["inner-link.csv", "normal.csv"]
    refused = [r.getMessage() for r in caplog.records if r.name == "evflow.sensors.file"]
    for link, target in [
        ("before.csv", outside / "secret.csv"),
        ("after.csv", outside / "also.csv"),
        ("linked-dir", outside / "dir"),
    ]:
        assert any(os.path.join(real(inbox), link) in m and real(target) in m for m in refused), (
            link,
            refused,
        )


async def test_marker_mode_emits_the_folder_when_the_marker_appears(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    root.mkdir()
    (root / "done").mkdir()
    (root / "done" / "part-0.csv").write_text("already complete")
    (root / "done" / "_SUCCESS").write_text("")
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(root, "*.csv", recursive=True, marker="_SUCCESS", settle_s=30)
        async with running(sensor, intake):
            # a folder complete before start is emitted by the start-up scan
            evs = await wait_for(store, lambda evs: len(evs) >= 1)
            assert subjects(evs) == ["done/part-0.csv"]

            batch = root / "batch-1"
            batch.mkdir()
            (batch / "part-0.csv").write_text("a")
            (batch / "part-1.csv").write_text("bb")
            (batch / "part-2.csv.tmp").write_text("ccc")
            (batch / "notes.txt").write_text("not matched")
            # probe: another folder completed later is emitted while batch-1 still waits
            probe = root / "probe"
            probe.mkdir()
            (probe / "p.csv").write_text("p")
            (probe / "_SUCCESS").write_text("")
            evs = await wait_for(store, lambda evs: len(evs) >= 2)
            assert subjects(evs) == ["done/part-0.csv", "probe/p.csv"]

            (batch / "_SUCCESS").write_text("")
            evs = await wait_for(store, lambda evs: len(evs) >= 4)
            (probe / "q.csv").write_text("q")  # added after the marker: waits for a rewrite
            (probe / "_SUCCESS").write_text("again")
            evs = await wait_for(store, lambda evs: len(evs) >= 5)
    assert subjects(evs) == [
        "batch-1/part-0.csv",
        "batch-1/part-1.csv",
        "done/part-0.csv",
        "probe/p.csv",
        "probe/q.csv",
    ]
    sizes = {e.subject: e.data["size"] for e in evs}
    assert sizes["batch-1/part-1.csv"] == 2


async def test_recursive_mode_and_folders_moved_in(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    staged = tmp_path / "staged"
    (staged / "inner").mkdir(parents=True)
    (staged / "one.csv").write_text("1")
    (staged / "inner" / "two.csv").write_text("22")
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(root, "*.csv", recursive=True, settle_s=SETTLE)
        async with running(sensor, intake):
            (root / "top.csv").write_text("t")
            (root / "sub" / "a.csv").write_text("a")
            (root / "new" / "deeper").mkdir(parents=True)
            (root / "new" / "deeper" / "b.csv").write_text("b")
            (root / ".hidden").mkdir()
            (root / ".hidden" / "c.csv").write_text("c")
            shutil.move(staged, root / "moved")  # one rename: its files raise no events
            evs = await wait_for(store, lambda evs: len(evs) >= 5)
            evs = no_barriers(await barrier(store, root / "sub"))
        assert subjects(evs) == [
            "moved/inner/two.csv",
            "moved/one.csv",
            "new/deeper/b.csv",
            "sub/a.csv",
            "top.csv",
        ]

    # the same tree without recursive=True: only the top level
    async with open_backend(tmp_path / "second") as (intake, store):
        async with running(FileSensor(root, "*.csv", settle_s=SETTLE), intake):
            (root / "sub" / "later.csv").write_text("x")
            evs = no_barriers(await barrier(store, root))
        assert subjects(evs) == ["top.csv"]


async def test_polling_mode(tmp_path: Path) -> None:
    inbox = tmp_path / "share"
    async with open_backend(tmp_path) as (intake, store):
        sensor = FileSensor(inbox, "*.csv", polling=True, poll_interval_s=0.05, settle_s=SETTLE)
        async with running(sensor, intake):
            (inbox / "a.csv").write_text("polled")
            (inbox / "b.txt").write_text("ignored")
            evs = await wait_for(store, lambda evs: len(evs) >= 1)
            evs = no_barriers(await barrier(store, inbox))
    assert subjects(evs) == ["a.csv"]
    assert evs[0].data["size"] == 6


async def test_saturated_intake_holds_files_until_there_is_room(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    waiting = [5]
    asked = anyio.Event()

    def backlog() -> int:  # the engine's count of events not yet handled by its rules
        asked.set()
        return waiting[0]

    async with (
        open_backend(tmp_path, max_backlog=1, backlog=backlog) as (intake, store),
        running(FileSensor(inbox, settle_s=SETTLE), intake),
    ):
        (inbox / "a.csv").write_text("a")
        with anyio.fail_after(10):
            await asked.wait()  # the sensor tried to submit and was told to back off
        assert await store.count_events() == 0
        waiting[0] = 0
        intake.capacity_changed()
        evs = await wait_for(store, lambda evs: len(evs) >= 1)
    assert subjects(evs) == ["a.csv"]


async def test_identity_describe_and_folder_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sensor = FileSensor("data/inbox/", "*.csv", marker="_SUCCESS")
    assert sensor.name == "data-inbox"
    assert sensor.source == "file/data-inbox"
    assert sensor.path == tmp_path / "data" / "inbox"
    assert "missing" in sensor.describe()
    assert "*.csv" in sensor.describe() and "_SUCCESS" in sensor.describe()
    monkeypatch.chdir(tmp_path.parent)  # resolved at construction, not at start
    async with open_backend(tmp_path) as (intake, _store), running(sensor, intake):
        assert (tmp_path / "data" / "inbox").is_dir()
        assert "(folder created)" in sensor.describe()
    assert FileSensor(tmp_path, name="custom").source == "file/custom"


async def test_cancellation_is_prompt(tmp_path: Path) -> None:
    async with open_backend(tmp_path) as (intake, _store):
        with anyio.fail_after(2):  # does not wait for the watcher thread's timeout
            async with anyio.create_task_group() as tg:
                await tg.start(partial(FileSensor(tmp_path / "x", settle_s=SETTLE).run, intake))
                tg.cancel_scope.cancel()


async def test_removing_the_watched_folder_stops_the_sensor_loudly(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    sensor = FileSensor(inbox, settle_s=SETTLE)
    async with open_backend(tmp_path) as (intake, _store):
        with (
            pytest.RaisesGroup(pytest.RaisesExc(SensorError, match="was removed")),
            anyio.fail_after(10),
        ):
            async with anyio.create_task_group() as tg:
                await tg.start(partial(sensor.run, intake))
                shutil.rmtree(inbox)
                await anyio.sleep_forever()


async def test_a_file_where_the_folder_should_be_is_a_sensor_error(tmp_path: Path) -> None:
    (tmp_path / "inbox").write_text("not a folder")
    async with open_backend(tmp_path) as (intake, _store):
        with anyio.fail_after(10), pytest.raises(SensorError, match="not a folder"):
            await FileSensor(tmp_path / "inbox").run(intake)
