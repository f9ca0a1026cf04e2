"""GroupCommit: one fsync in a worker thread covers every append waiting on it; FlushSchedule:
which logs the interval flush loop flushes when.

Owns the async side of the `fsync` flush policy: callers await `durable(offset)`; while a flush
runs, new waiters queue, and the next flush covers all of them. And the timing of the
`interval` policy: each log is flushed every flush.ms of its own topic (the replica manager's loop does
the flushing). The storage engine provides the thread-safe `flush() -> flushed offset`; this
module never touches files itself.
"""
from __future__ import annotations

import asyncio
from typing import Any, Generic, Hashable, Mapping, TypeVar

from raftlog.replication.waiters import OffsetWaiters

K = TypeVar("K", bound=Hashable)
# The interval flush loop never sleeps less than this between rounds (flush.ms may be 1): each
# round walks every partition on the event loop, so a tiny flush.ms or a roll must not make it
# spin. A topic that needs every append on disk sooner uses flush.policy=fsync.
FLUSH_SLEEP_MIN_MS = 10.0


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


class FlushSchedule(Generic[K]):
    """When each log's interval flush is due: every log is flushed once its own interval
    (its topic's flush.ms, read fresh each round so `topic alter` applies) has passed since
    the last time it was due. Pure bookkeeping on a caller-supplied clock, so the choice of due
    logs is testable; the caller does the file work. The sleep it advises is capped at
    `max_sleep_ms` so logs that appear (or whose interval shrinks) while it sleeps are picked
    up that soon even if nobody wakes the loop."""

    def __init__(self, max_sleep_ms: float):
        self.max_sleep_ms = max_sleep_ms
        self._last: dict[K, float] = {}   # when each log was last due (its interval's start)

    def plan(self, intervals: Mapping[K, int], now_ms: float) -> tuple[list[K], float]:
        """(the logs due now, ms to sleep before the next one is due). A log seen for the
        first time starts its interval now; a due one starts its next interval now; logs no
        longer in `intervals` are forgotten."""
        last = self._last
        for gone in [k for k in last if k not in intervals]:
            del last[gone]
        due: list[K] = []
        wake = now_ms + self.max_sleep_ms
        for key, interval in intervals.items():
            start = last.setdefault(key, now_ms)
            if now_ms - start >= interval:
                due.append(key)
                last[key] = start = now_ms
            wake = min(wake, start + interval)
        return due, max(wake - now_ms, FLUSH_SLEEP_MIN_MS)
