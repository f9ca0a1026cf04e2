"""The producer's wait line: back-pressure without blocking the event loop.

Owns: the FIFO of records (or bulk batches) that could not enter the accumulator when sent
(no room in buffer_memory, or their topic not in the metadata yet), the one task that admits
them in order as room or metadata appear, their expiry after max_block_ms, and `drain()`.
It knows nothing of batches or partitions: the Producer hands in what "fits", how to admit and
what error an expired entry gets. Imports asyncio, errors and the client's accumulator
(PendingRecordFuture) only.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Iterator

from raftlog.client.accumulator import PendingRecordFuture, mark_retrieved
from raftlog.errors import RaftlogError


class Waiting:
    """A record (or bulk batch) in the wait line, with the future its handle awaits."""

    __slots__ = ("deadline_s", "topic", "partition", "args", "size", "handle", "bulk")

    def __init__(self, deadline_s: float, topic: str, partition: int | None, args: tuple,
                 size: int, handle: PendingRecordFuture, bulk: bool) -> None:
        self.deadline_s = deadline_s
        self.topic = topic
        self.partition = partition
        self.args = args
        self.size = size
        self.handle = handle
        self.bulk = bulk


class WaitLine:
    def __init__(self, max_block_ms: int, *,
                 partition_count: Callable[[str], int | None],
                 fits: Callable[[int], bool],
                 admit: Callable[[Waiting, int], None],
                 expired_error: Callable[[Waiting, int | None], RaftlogError],
                 want_topic: Callable[[str], None],
                 request_update: Callable[[], Any]) -> None:
        self.max_block_ms = max_block_ms
        self._partition_count = partition_count
        self._fits = fits
        self._admit = admit
        self._expired_error = expired_error
        self._want_topic = want_topic
        self._request_update = request_update
        self._line: deque[Waiting] = deque()
        self._task: asyncio.Task[None] | None = None   # owned here; cancelled by close()
        self._room = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._line)

    def join(self, topic: str, partition: int | None, args: tuple, size: int,
             bulk: bool) -> PendingRecordFuture:
        """Queue one entry behind everything already waiting; returns its handle."""
        loop = asyncio.get_running_loop()
        admitted: asyncio.Future[None] = loop.create_future()
        admitted.add_done_callback(mark_retrieved)
        handle = PendingRecordFuture(admitted)
        deadline = loop.time() + self.max_block_ms / 1000
        self._line.append(Waiting(deadline, topic, partition, args, size, handle, bulk))
        self._want_topic(topic)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve(), name="raftlog-send-line")
        return handle

    def freed(self) -> None:
        """Buffer memory was freed: the head may fit now."""
        if self._line:
            self._room.set()

    def admitted_futures(self) -> Iterator[asyncio.Future[None]]:
        return (w.handle.admitted for w in self._line if w.handle.admitted is not None)

    async def _serve(self) -> None:
        """Admits waiting entries in order as room/metadata appear, expires them after
        max_block_ms."""
        loop = asyncio.get_running_loop()
        while self._line:
            w = self._line[0]
            now = loop.time()
            n = self._partition_count(w.topic)
            if n is not None and self._fits(w.size):
                self._line.popleft()
                self._admit(w, n)
                continue
            if now >= w.deadline_s:
                self._line.popleft()
                assert w.handle.admitted is not None
                w.handle.admitted.set_exception(self._expired_error(w, n))
                continue
            self._room.clear()
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._room.wait())]
            if n is None:
                waits.append(self._request_update())
            try:
                await asyncio.wait(waits, timeout=w.deadline_s - now,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waits[0].cancel()  # this task owns the room waiter, even when cancelled

    async def drain(self) -> None:
        """Wait until every entry in line is admitted; raises the error of the newest one if
        it could not get in."""
        while self._line:
            last = self._line[-1].handle.admitted
            assert last is not None
            await asyncio.wait([last])
            exc = last.exception()
            if exc is not None:
                raise exc

    async def close(self, exc: BaseException) -> None:
        """Stop serving and fail every entry still in line with `exc`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        while self._line:
            w = self._line.popleft()
            if w.handle.admitted is not None and not w.handle.admitted.done():
                w.handle.admitted.set_exception(exc)

