"""CommitBatcher: offset commits of one process coalesced per coordinator node (Kafka amortises
per-request cost over one connection the same way).

Owns: the queue of commits waiting for each coordinator node, the one batch request in flight
per node, and handing each caller its own entry's answer. Commits issued in the same event-loop
turn, or while a batch to that node is in flight, go out as ONE `POST
/v1/groups/offset-commit-batch` `{commits: [{group, member_id, generation, group_instance_id,
offsets}]}`; the broker validates and applies each entry independently and answers
`{results: [{committed} or {error, message, hint}]}` once the high watermark passes each entry.
A refused entry (stale generation, moved coordinator) fails only its caller; a failed request
(connection lost, timeout) fails every caller of that batch, and callers retry as they would a
single request (raftlog/client/group_coordinator.py). At most `max_commit_batch_entries` entries
per request; the rest form the next batch.

Every GroupMember of the process (one per Consumer, whatever its Client) shares the batcher of
its event loop (`acquire` / `release`), which sends over its own Transport, closed with the
last member. Imports the client's transport and `errors`; never raftlog.server.
"""
from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Awaitable, Callable

from raftlog.client.transport import Transport
from raftlog.errors import ErrorCode, RaftlogError, error, from_wire

BATCH_PATH = "/v1/groups/offset-commit-batch"
# Commits per batch request at most: bounds the request (a 50-offset commit is ~2.5 KB) and the
# broker's work per request; the broker accepts up to 10,000.
MAX_COMMIT_BATCH_ENTRIES = 200

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]


class _Waiter:
    __slots__ = ("entry", "future", "deadline")

    def __init__(self, entry: dict[str, Any], future: asyncio.Future[Any], deadline: float):
        self.entry = entry
        self.future = future
        self.deadline = deadline


class CommitBatcher:
    """`send(url, path, body, timeout_ms)` posts one request and returns its decoded answer
    (Transport.post_msgpack; a fake in tests)."""

    def __init__(self, send: Send, *, max_commit_batch_entries: int = MAX_COMMIT_BATCH_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_commit_batch_entries < 1:
            raise ValueError("max_commit_batch_entries must be >= 1")
        self._send = send
        self.max_entries = max_commit_batch_entries
        self._clock = clock
        self._queues: dict[str, list[_Waiter]] = {}
        self._in_flight: set[str] = set()          # nodes with a batch on the wire (or due)
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0                           # batch requests sent (for tests, benches)

    async def commit(self, url: str, entry: dict[str, Any], timeout_ms: float) -> Any:
        """Commit one group's offsets (`entry` as in the batch request) through the coordinator
        at `url`; its own answer ({committed}) or its own error as a RaftlogError."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        timeout_s = max(timeout_ms, 1) / 1000
        self._queues.setdefault(url, []).append(_Waiter(entry, fut, self._clock() + timeout_s))
        if url not in self._in_flight:
            self._in_flight.add(url)
            loop.call_soon(self._flush, url)     # after every commit of this loop turn
        try:
            # A caller that gives up cancels only its own future: the batch carries on.
            res = await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise error(ErrorCode.REQUEST_TIMED_OUT,
                        f"no answer to the offset commit from {url} within "
                        f"{timeout_ms:.0f} ms") from None
        if isinstance(res, dict) and isinstance(res.get("error"), str):
            raise from_wire(res)
        return res

    def _flush(self, url: str) -> None:
        """Send the waiting commits of `url` (up to max_entries) as one request, or note that
        nothing is in flight to it any more."""
        queue = self._queues.get(url) or []
        batch: list[_Waiter] = []
        taken = 0
        while taken < len(queue) and len(batch) < self.max_entries:
            w = queue[taken]
            taken += 1
            if not w.future.done():              # its caller gave up: nothing to send
                batch.append(w)
        del queue[:taken]
        if not queue:
            self._queues.pop(url, None)
        if not batch:
            self._in_flight.discard(url)
            return
        task = asyncio.get_running_loop().create_task(self._send_batch(url, batch),
                                                      name="raftlog-commit-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, url: str, batch: list[_Waiter]) -> None:
        timeout_ms = max(1.0, (max(w.deadline for w in batch) - self._clock()) * 1000)
        self.requests += 1
        try:
            ans = await self._send(url, BATCH_PATH, {"commits": [w.entry for w in batch]},
                                   timeout_ms)
            results = ans.get("results") if isinstance(ans, dict) else None
            if not isinstance(results, list) or len(results) != len(batch):
                raise error(ErrorCode.UNKNOWN_SERVER_ERROR,
                            f"{url}{BATCH_PATH} answered {len(batch)} commits with "
                            f"{'no' if not isinstance(results, list) else len(results)} results")
            for w, r in zip(batch, results):
                if not w.future.done():
                    w.future.set_result(r)
        except RaftlogError as exc:
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(exc)
        except BaseException as exc:             # a bug or cancellation: never leave a waiter
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(
                        error(ErrorCode.UNKNOWN_SERVER_ERROR, f"offset commit batch failed: "
                              f"{type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            # Commits queued meanwhile go out now as the next batch.
            asyncio.get_running_loop().call_soon(self._flush, url)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- one batcher per event loop, shared by every GroupMember of the process -----------------------
class _Shared:
    def __init__(self) -> None:
        self.transport = Transport()
        self.batcher = CommitBatcher(self.transport.post_msgpack)
        self.users = 0


_shared: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared]" = \
    weakref.WeakKeyDictionary()


async def acquire() -> CommitBatcher:
    """The running loop's batcher (its transport started); pair with `release`."""
    loop = asyncio.get_running_loop()
    s = _shared.get(loop)
    if s is None:
        s = _shared[loop] = _Shared()
    s.users += 1
    await s.transport.start()
    return s.batcher


async def release(batcher: CommitBatcher) -> None:
    """One user fewer; the last one closes the batcher's transport."""
    loop = asyncio.get_running_loop()
    s = _shared.get(loop)
    if s is None or s.batcher is not batcher:
        return
    s.users -= 1
    if s.users <= 0:
        del _shared[loop]
        await s.batcher.close()
        await s.transport.close()
