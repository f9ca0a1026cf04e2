"""Wakeup: a background task's sleep that other code can cut short.

Owns one small pattern the sender and the fetcher share: the task sleeps until a deadline (or
forever) and `wake()` ends the sleep early; a wake that comes while the task is busy is kept, so
the next sleep returns at once and no event is lost. Imports asyncio only.
"""
from __future__ import annotations

import asyncio


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Wakeup:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False

    def wake(self) -> None:
        self._woken = True
        if self._waiter is not None:
            _resolve(self._waiter)

    async def sleep_until(self, when_s: float | None) -> None:
        """Until loop time `when_s` (None: until woken), or at once if woken meanwhile."""
        if self._woken:
            self._woken = False
            return
        fut = self._waiter = self._loop.create_future()
        handle = self._loop.call_at(when_s, _resolve, fut) if when_s is not None else None
        try:
            await fut
        finally:
            self._waiter = None
            self._woken = False
            if handle is not None:
                handle.cancel()
