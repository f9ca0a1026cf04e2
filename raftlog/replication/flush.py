"""GroupCommit: one fsync in a worker thread covers every append waiting on it.

Owns the async side of the `fsync` flush policy: callers await `durable(offset)`; while a flush
runs, new waiters queue, and the next flush covers all of them. The storage engine provides the
thread-safe `flush() -> flushed offset`; this module never touches files itself.
"""
from __future__ import annotations

import asyncio
from typing import Any

from raftlog.replication.waiters import OffsetWaiters


class GroupCommit:
    def __init__(self, plog: Any):
        self.log = plog
        self._waiters = OffsetWaiters()
        self._task: asyncio.Task[None] | None = None

    async def durable(self, offset: int) -> None:
        """Return once everything below `offset` is on disk."""
        if self.log.flushed_offset >= offset:
            return
        fut = self._waiters.wait(offset)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")
        await fut

    async def _run(self) -> None:
        try:
            while len(self._waiters):
                flushed = await asyncio.to_thread(self.log.flush)
                self._waiters.notify(flushed)
        except Exception as exc:  # a failed fsync fails every write waiting on it
            self._waiters.fail_all(exc)
        finally:
            self._task = None

    def close(self, exc: BaseException) -> None:
        if self._task is not None:
            self._task.cancel()
        self._waiters.fail_all(exc)
