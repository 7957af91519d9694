"""A latch: set once, awaited by any number of tasks.

Plain asyncio, for the engine's hot paths: an anyio event looks up the running async library
when made and the running loop at every wait, and one is awaited for every state change of
every task (its commit) and made for every run (its end). Each waiter waits on a future of its
own, so a waiter cancelled cancels only its own; :meth:`Latch.set` resolves them all.
"""

from __future__ import annotations

import asyncio

__all__ = ["Latch"]


class Latch:
    """Set once; :meth:`wait` returns at once after that."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if not self._set:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            await future

    def set(self) -> None:
        self._set = True
        for future in self._waiters:
            if not future.done():
                future.set_result(None)
        self._waiters.clear()
