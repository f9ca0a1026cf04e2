"""OffsetAppender: offset-commit records appended to `__consumer_offsets` partitions, one append
in flight per partition, each acknowledged once the high watermark passes it (like acks=all).

Owns the per-partition queue of waiting records and the waiters' futures. Commits arriving
while an append waits for the high watermark queue up and go out together as the next batch
when it is acknowledged, so N concurrent committers cost about one append and one replication
round per round trip instead of one each; a lone committer still appends at once. Works on the
broker's Partition objects through their leader-side calls; imports codec and errors, never
HTTP or Raft.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from raftlog.codec import batch as batch_codec
from raftlog.errors import ErrorCode, RaftlogError, error

if TYPE_CHECKING:
    from raftlog.replication.partition import Partition

COMMIT_TIMEOUT_S = 15.0
# Offset records per append at most: a queue of big commits is cut into several batches,
# each well under the offsets topic's max.message.bytes (~100 bytes a record).
COMMIT_BATCH_MAX_RECORDS = 2000

Record = tuple[Any, Any, Any, int]


class OffsetAppender:
    def __init__(self, durable: Callable[[Partition, int], Awaitable[None]],
                 spawn: Callable[..., asyncio.Task[Any]], wall_clock: Callable[[], int]):
        self._durable = durable          # ReplicaManager.durable: the flush policy's wait
        self._spawn = spawn
        self._wall_clock = wall_clock
        # offsets partition -> records waiting for its next append, with their waiters
        self._pending: dict[tuple[str, int], list[tuple[list[Record], asyncio.Future[None]]]] = {}
        # offsets partitions whose append is waiting for the high watermark
        self._in_flight: set[tuple[str, int]] = set()

    def enqueue(self, p: Partition, records: list[Record]) -> asyncio.Future[None]:
        """Queue records for the next append of `p`; the future resolves once they are
        committed. One future per waiter: a waiter whose request is cancelled cancels only its
        own."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(p.key, []).append((records, fut))
        if p.key not in self._in_flight:
            self._in_flight.add(p.key)
            asyncio.get_running_loop().call_soon(self._flush, p)
        return fut

    def _flush(self, p: Partition) -> None:
        """Append the queued commits of `p` (up to COMMIT_BATCH_MAX_RECORDS) as one batch."""
        queue = self._pending.get(p.key)
        if not queue:
            self._pending.pop(p.key, None)
            self._in_flight.discard(p.key)
            return
        records: list[Record] = []
        waiters: list[asyncio.Future[None]] = []
        while queue and (not records
                         or len(records) + len(queue[0][0]) <= COMMIT_BATCH_MAX_RECORDS):
            recs, fut = queue.pop(0)
            if not fut.done():           # its request was cancelled: nothing to write
                records += recs
                waiters.append(fut)
        if not records:
            self._flush(p)
            return
        now = self._wall_clock()

        def finish(exc: BaseException | None) -> None:
            for f in waiters:
                if not f.done():
                    if exc is None:
                        f.set_result(None)
                    else:
                        f.set_exception(exc)
            # the next batch (commits queued meanwhile) goes out now
            asyncio.get_running_loop().call_soon(self._flush, p)
        try:
            res = p.append_leader(bytearray(batch_codec.encode(records)), -1, now)
        except RaftlogError as exc:
            finish(exc)
            return
        nxt = res.last_offset + 1
        epoch = p.leader_epoch

        async def acked() -> None:
            try:
                await self._durable(p, nxt)
                await p.wait_committed(nxt, epoch)
                p.check_isr_after_append()
            except asyncio.CancelledError:
                finish(error(ErrorCode.REQUEST_TIMED_OUT, "offset commit not replicated "
                             f"within {COMMIT_TIMEOUT_S:.0f} s"))
                raise
            except Exception as exc:
                finish(exc)
                return
            finish(None)
        task = self._spawn(acked(), "offset-commit")
        # Bound the wait: a lost leadership fails the waiters; a stuck ISR times them out.
        asyncio.get_running_loop().call_later(COMMIT_TIMEOUT_S, task.cancel)
