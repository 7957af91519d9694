"""The real KafkaSensor, observed at its one seam between "stored" and "committed".

Nothing is mocked: these subclasses run the sensor's own code and only report (or stop at)
the offset commit that follows a store commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
from aiokafka import TopicPartition

from evflow.sensors import KafkaSensor
from tests.observers import LIMIT_S

Offsets = dict[tuple[str, int], int]


class CommitLog:
    """The offsets sensors have committed to Kafka, with a way to wait for some."""

    def __init__(self) -> None:
        self.committed: Offsets = {}
        self._changed = anyio.Event()

    def record(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            key = (tp.topic, tp.partition)
            self.committed[key] = max(offset, self.committed.get(key, 0))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, targets: Offsets) -> None:
        with anyio.fail_after(LIMIT_S):
            while any(self.committed.get(k, 0) < v for k, v in targets.items()):
                await self._changed.wait()


class WatchedSensor(KafkaSensor):
    """The real sensor; its successful offset commits are reported to a :class:`CommitLog`."""

    def __init__(self, *args: Any, log: CommitLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> bool:
        ok = await super()._commit(consumer, offsets)
        if ok:
            self.log.record(offsets)
        return ok


class CrashBeforeCommit(KafkaSensor):
    """The real sensor, stopped dead between "stored" and "committed" (as by a crash)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored_not_committed = anyio.Event()

    async def _commit(self, consumer: Any, offsets: dict[Any, int]) -> bool:
        self.stored_not_committed.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")
