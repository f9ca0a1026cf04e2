"""OffsetWaiters: futures that complete when a partition's high watermark passes an offset.

Owns the waiting side of acks=all (Redpanda's offset_monitor, Kafka's produce purgatory). Waiters
are kept in a heap by offset, so a high-watermark move wakes exactly the ones it satisfies, and a
role change fails them all at once. Imports asyncio and heapq only.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools


class OffsetWaiters:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[int]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def wait(self, offset: int) -> asyncio.Future[int]:
        """A future resolved with the high watermark once it is >= `offset`."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (offset, next(self._seq), fut))
        return fut

    def notify(self, high_watermark: int) -> None:
        while self._heap and self._heap[0][0] <= high_watermark:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(high_watermark)

    def fail_all(self, exc: BaseException) -> None:
        heap, self._heap = self._heap, []
        for _, _, fut in heap:
            if not fut.done():
                fut.set_exception(exc)
