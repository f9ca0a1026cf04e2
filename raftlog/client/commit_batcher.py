"""Offset commits, offset fetches and heartbeats of one process coalesced per coordinator node
(Kafka amortises per-request cost over one connection the same way).

Owns: the queue of entries waiting for each coordinator node, the one batch request in flight
per node, and handing each caller its own entry's answer. Commits issued in the same event-loop
turn, or while a batch to that node is in flight, go out as ONE `POST
/v1/groups/offset-commit-batch` `{commits: [{group, member_id, generation, group_instance_id,
offsets}]}`; the broker validates and applies each entry independently and answers
`{results: [{committed} or {error, message, hint}]}` once the high watermark passes each entry.
Offset fetches go the same way through `POST /v1/groups/offset-fetch-batch` `{fetches: [{group,
partitions?}]}` -> `{results: [{group, offsets} or error]}`, and heartbeats through `POST
/v1/groups/heartbeat-batch` `{heartbeats: [{group, member_id, generation, owned, topics}]}` ->
`{results: [{member_id, generation, assignment, rebalance_in_progress, ...} or error]}`.
Each kind is its own RequestBatcher, so its own lane: a heartbeat never waits behind a commit
batch held up by replication, only (at most) behind the previous heartbeat batch to that node,
which the broker answers without any append.
A refused entry (stale generation, moved coordinator) fails only its caller; a failed request
(connection lost, timeout) fails every caller of that batch, and callers retry as they would a
single request (raftlog/client/group_coordinator.py). At most `max_batch_entries` entries
per request; the rest form the next batch.

Every GroupMember of the process (one per Consumer, whatever its Client) shares the batchers of
its event loop (`acquire` / `release`), which send over their own Transport, closed with the
last member. Imports the client's transport and `errors`; never raftlog.server.
"""
from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Awaitable, Callable

from raftlog.client.transport import Transport
from raftlog.errors import ErrorCode, RaftlogError, error, from_wire

COMMIT_BATCH_PATH = "/v1/groups/offset-commit-batch"
FETCH_BATCH_PATH = "/v1/groups/offset-fetch-batch"
HEARTBEAT_BATCH_PATH = "/v1/groups/heartbeat-batch"
# Entries per batch request at most: bounds the request (a 50-offset commit is ~2.5 KB) and the
# broker's work per request; the broker accepts up to 10,000.
MAX_COMMIT_BATCH_ENTRIES = 200
MAX_FETCH_BATCH_ENTRIES = 200
MAX_HEARTBEAT_BATCH_ENTRIES = 200

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]


def _expire(fut: asyncio.Future[Any], where: str, timeout_ms: float) -> None:
    if not fut.done():
        fut.set_exception(error(ErrorCode.REQUEST_TIMED_OUT,
                                f"no answer from {where} within {timeout_ms:.0f} ms"))


class _Waiter:
    __slots__ = ("entry", "future", "deadline")

    def __init__(self, entry: dict[str, Any], future: asyncio.Future[Any], deadline: float):
        self.entry = entry
        self.future = future
        self.deadline = deadline


class RequestBatcher:
    """Entries for `path` coalesced per node into `{key: [entry, ...]}` requests answered
    `{results: [...]}`. `send(url, path, body, timeout_ms)` posts one request and returns its
    decoded answer (Transport.post_msgpack; a fake in tests)."""

    def __init__(self, send: Send, path: str = COMMIT_BATCH_PATH, key: str = "commits", *,
                 max_batch_entries: int = MAX_COMMIT_BATCH_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch_entries < 1:
            raise ValueError("max_batch_entries must be >= 1")
        self._send = send
        self.path = path
        self.key = key
        self.max_entries = max_batch_entries
        self._clock = clock
        self._queues: dict[str, list[_Waiter]] = {}
        self._in_flight: set[str] = set()          # nodes with a batch on the wire (or due)
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0                           # batch requests sent (for tests, benches)

    async def submit(self, url: str, entry: dict[str, Any], timeout_ms: float) -> Any:
        """One entry (one group's commit or fetch, as in the batch request) through the
        coordinator at `url`; its own answer or its own error as a RaftlogError."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        timeout_s = max(timeout_ms, 1) / 1000
        self._queues.setdefault(url, []).append(_Waiter(entry, fut, self._clock() + timeout_s))
        if url not in self._in_flight:
            self._in_flight.add(url)
            loop.call_soon(self._flush, url)     # after every entry of this loop turn
        # The deadline fails this caller's own future only: the batch carries on, and a
        # cancelled caller cancels only its own future too. A bare timer rather than
        # asyncio.timeout: this runs once per commit, heartbeat and fetch of every member.
        timer = loop.call_later(timeout_s, _expire, fut, url + self.path, timeout_ms)
        try:
            res = await fut
        finally:
            timer.cancel()
        if isinstance(res, dict) and isinstance(res.get("error"), str):
            raise from_wire(res)
        return res

    def _flush(self, url: str) -> None:
        """Send the waiting entries of `url` (up to max_entries) as one request, or note that
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
                                                      name="raftlog-group-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, url: str, batch: list[_Waiter]) -> None:
        timeout_ms = max(1.0, (max(w.deadline for w in batch) - self._clock()) * 1000)
        self.requests += 1
        try:
            ans = await self._send(url, self.path, {self.key: [w.entry for w in batch]},
                                   timeout_ms)
            results = ans.get("results") if isinstance(ans, dict) else None
            if not isinstance(results, list) or len(results) != len(batch):
                raise error(ErrorCode.UNKNOWN_SERVER_ERROR,
                            f"{url}{self.path} answered {len(batch)} entries with "
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
                        error(ErrorCode.UNKNOWN_SERVER_ERROR, f"{self.path} batch failed: "
                              f"{type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            # Entries queued meanwhile go out now as the next batch.
            asyncio.get_running_loop().call_soon(self._flush, url)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# -- one set of batchers per event loop, shared by every GroupMember of the process -------------
class GroupBatchers:
    """The commit, fetch and heartbeat batchers of one event loop (one lane each), over one
    transport."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.commits = RequestBatcher(self.transport.post_msgpack, COMMIT_BATCH_PATH, "commits",
                                      max_batch_entries=MAX_COMMIT_BATCH_ENTRIES)
        self.fetches = RequestBatcher(self.transport.post_msgpack, FETCH_BATCH_PATH, "fetches",
                                      max_batch_entries=MAX_FETCH_BATCH_ENTRIES)
        self.heartbeats = RequestBatcher(self.transport.post_msgpack, HEARTBEAT_BATCH_PATH,
                                         "heartbeats",
                                         max_batch_entries=MAX_HEARTBEAT_BATCH_ENTRIES)
        self.users = 0


_shared: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupBatchers]" = \
    weakref.WeakKeyDictionary()


async def acquire() -> GroupBatchers:
    """The running loop's batchers (their transport started); pair with `release`."""
    loop = asyncio.get_running_loop()
    s = _shared.get(loop)
    if s is None:
        s = _shared[loop] = GroupBatchers()
    s.users += 1
    await s.transport.start()
    return s


async def release(batchers: GroupBatchers) -> None:
    """One user fewer; the last one closes the batchers' transport."""
    loop = asyncio.get_running_loop()
    if _shared.get(loop) is not batchers:
        return
    batchers.users -= 1
    if batchers.users <= 0:
        del _shared[loop]
        await batchers.commits.close()
        await batchers.fetches.close()
        await batchers.heartbeats.close()
        await batchers.transport.close()
