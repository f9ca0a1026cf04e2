"""GroupMember: a consumer's membership in a consumer group (the client half of docs/groups.md).

Owns: finding the group's coordinator (and following it when it moves), joining, the background
heartbeat task that reports the partitions this consumer owns and applies the assignment the
coordinator answers with (revoking, then assigning, with the rebalance listener's callbacks),
committed-offset commits (generation-fenced) and fetches, which, like the heartbeats, are
coalesced with the process's others to the same coordinator node
(raftlog/client/commit_batcher.py; each member still heartbeats on its own schedule and gets
its own answer), auto-commit, leaving the
group when the application stops calling getmany() for `max_poll_interval_ms`, and leaving
cleanly on stop.

It drives `SubscriptionState.assign_from_group()`; the fetcher does not know groups exist.
Imports the client's modules and `errors`; never raftlog.server/meta/storage/replication.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
from typing import Any, Callable, Iterable

from raftlog.aio import wait_event
from raftlog.client import commit_batcher
from raftlog.client.client import Client
from raftlog.client.structs import TopicPartition
from raftlog.client.subscription import SubscriptionState
from raftlog.errors import ErrorCode, RaftlogError, error, for_code

log = logging.getLogger("raftlog.client.group")

# Errors that mean "ask again, perhaps elsewhere".
_RETRY = {ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
          ErrorCode.BROKER_NOT_AVAILABLE, ErrorCode.REQUEST_TIMED_OUT, ErrorCode.NO_QUORUM,
          ErrorCode.NOT_CONTROLLER, ErrorCode.LEADER_NOT_AVAILABLE,
          ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.NOT_ENOUGH_REPLICAS,
          ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND}
_FENCED = {ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.ILLEGAL_GENERATION}
# While a rebalance is in progress, heartbeat at least this often (handovers are two-phase).
RECONCILE_HEARTBEAT_MS = 100
PATTERN_REFRESH_MS = 3_000


class ConsumerRebalanceListener:
    """Subclass and pass to `subscribe(listener=...)`; methods may be plain or async."""

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> Any:
        pass

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> Any:
        pass


class CommitFailedError(for_code(ErrorCode.ILLEGAL_GENERATION)):  # type: ignore[misc]
    """A commit the group refused: this consumer is no longer the owner (the group rebalanced).
    `code` is ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID."""

    def __init__(self, code: ErrorCode, message: str, hint: dict[str, Any] | None = None):
        super().__init__(message, hint)
        self.code = code


async def _call(fn: Callable[..., Any] | None, arg: Any) -> None:
    if fn is None:
        return
    r = fn(arg)
    if inspect.isawaitable(r):
        await r


class GroupMember:
    def __init__(self, client: Client, subscription: SubscriptionState, group_id: str, *,
                 forget: Callable[[set[TopicPartition]], None],
                 group_instance_id: str | None = None,
                 session_timeout_ms: int = 10_000,
                 heartbeat_interval_ms: int = 3_000,
                 rebalance_timeout_ms: int | None = None,
                 max_poll_interval_ms: int = 300_000,
                 strategy: str = "range",
                 enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5_000,
                 client_id: str = "raftlog-consumer") -> None:
        if not group_id:
            raise ValueError("group_id must be a non-empty string")
        if heartbeat_interval_ms >= session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")
        self.client = client
        self.subscription = subscription
        self.group_id = group_id
        self.instance_id = group_instance_id
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms or max_poll_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.fenced_instance: RaftlogError | None = None   # set once replaced (static member)
        self.strategy = strategy
        self.auto_commit = enable_auto_commit
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.client_id = client_id
        self._forget = forget
        self.topics: tuple[str, ...] = ()
        self.pattern: re.Pattern[str] | None = None
        self.listener: Any = None
        self.member_id: str | None = None
        self.generation = -1
        self.owned: set[TopicPartition] = set()
        self.coordinator_url: str | None = None
        self.last_poll = time.monotonic()
        self.left_for_poll = False
        self.assigned_event = asyncio.Event()      # set whenever an assignment was applied
        self._lock = asyncio.Lock()                 # one coordinator request at a time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._last_auto_commit = time.monotonic()
        self._last_pattern = 0.0
        self._closing = False
        self._batcher: commit_batcher.GroupBatchers | None = None   # shared, see _batchers()
        self._released = False                      # stop() gave the batchers back

    # -- subscription -----------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None,
                  listener: Any = None) -> None:
        if pattern is not None:
            self.pattern = re.compile(pattern)
            self.topics = ()
            self._last_pattern = 0.0
        else:
            self.pattern = None
            self.topics = tuple(sorted(set(topics)))
            for t in self.topics:
                self.client.add_topic(t)
        self.listener = listener
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def polled(self) -> None:
        self.last_poll = time.monotonic()
        if self.left_for_poll:
            self.left_for_poll = False
            self.wake()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="raftlog-group")

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            if self.member_id is None:
                return
            try:
                if self.auto_commit:
                    await self.commit_positions(self.owned)
            except RaftlogError as exc:
                log.info("group %s: final commit failed: %s", self.group_id, exc)
            try:
                await self._revoke(set(self.owned))
            except Exception:
                log.exception("group %s: on_partitions_revoked failed", self.group_id)
            await self._leave()
        finally:
            self._released = True
            if self._batcher is not None:
                batcher, self._batcher = self._batcher, None
                await commit_batcher.release(batcher)

    async def _leave(self) -> None:
        if self.member_id is None:
            return
        try:
            await self._request("/v1/groups/leave", {
                "group": self.group_id, "member_id": self.member_id,
                "group_instance_id": self.instance_id or ""}, timeout_ms=3_000)
        except RaftlogError as exc:
            log.info("group %s: leave failed (the session will expire): %s", self.group_id, exc)
        self.member_id = None
        self.generation = -1

    # -- coordinator requests ---------------------------------------------------------------
    async def _find(self, timeout_ms: float) -> str:
        res = await self.client.send_any("/v1/groups/find-coordinator", {"group": self.group_id},
                                         timeout_ms)
        return str(res["url"])

    async def _request(self, path: str, body: dict[str, Any],
                       timeout_ms: float | None = None) -> Any:
        return await self._with_coordinator(
            lambda url, t: self.client.transport.post_msgpack(url, path, body, t), timeout_ms)

    async def _with_coordinator(self, call: Callable[[str, float], Any],
                                timeout_ms: float | None = None) -> Any:
        """`call(coordinator_url, timeout_ms)`, finding the coordinator first and following it
        (NOT_COORDINATOR) or retrying (other retriable errors) until the timeout."""
        total = self.client.request_timeout_ms if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + total / 1000
        backoff = self.client.retry_backoff_ms / 1000
        while True:
            left_ms = (deadline - time.monotonic()) * 1000
            try:
                if left_ms <= 0:
                    raise error(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                                f"group {self.group_id}: no coordinator answered within "
                                f"{total:.0f} ms")
                if self.coordinator_url is None:
                    self.coordinator_url = await self._find(left_ms)
                left_ms = max(1.0, (deadline - time.monotonic()) * 1000)
                return await call(self.coordinator_url, min(left_ms, self.session_timeout_ms))
            except RaftlogError as exc:
                if exc.code not in _RETRY or time.monotonic() >= deadline:
                    raise
                url = exc.hint.get("url") if exc.code is ErrorCode.NOT_COORDINATOR else None
                self.coordinator_url = str(url) if url else None
                if not url:
                    await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))

    # -- the heartbeat task -----------------------------------------------------------------
    async def _run(self) -> None:
        delay = 0.0
        while True:
            if delay > 0:
                await wait_event(self._wake, delay)
            self._wake.clear()
            try:
                delay = await self._round()
            except asyncio.CancelledError:
                raise
            except RaftlogError as exc:
                log.info("group %s: %s", self.group_id, exc)
                delay = self.client.retry_backoff_ms / 1000
            except Exception:
                log.exception("group %s: heartbeat round failed", self.group_id)
                delay = 1.0

    async def _round(self) -> float:
        """One join or heartbeat; returns how long to wait before the next."""
        now = time.monotonic()
        if self.pattern is not None and now - self._last_pattern > PATTERN_REFRESH_MS / 1000:
            await self._refresh_pattern()
        if not self.topics:
            return self.heartbeat_interval_ms / 1000
        if self.member_id is not None and \
                (now - self.last_poll) * 1000 > self.max_poll_interval_ms:
            log.warning("group %s: getmany() not called for %d ms (max_poll_interval_ms): "
                        "leaving the group", self.group_id, self.max_poll_interval_ms)
            self.left_for_poll = True
            await self._revoke(set(self.owned))
            await self._leave()
            return self.heartbeat_interval_ms / 1000
        if self.left_for_poll or self.fenced_instance is not None:
            return self.heartbeat_interval_ms / 1000
        owned = [[tp.topic, tp.partition] for tp in sorted(self.owned)]
        try:
            async with self._lock:
                if self.member_id is None:
                    ans = await self._request("/v1/groups/join", {
                        "group": self.group_id, "group_instance_id": self.instance_id or "",
                        "topics": list(self.topics), "owned": owned,
                        "session_timeout_ms": self.session_timeout_ms,
                        "rebalance_timeout_ms": self.rebalance_timeout_ms,
                        "strategy": self.strategy, "client_id": self.client_id})
                else:
                    body = {"group": self.group_id, "member_id": self.member_id,
                            "generation": self.generation, "owned": owned,
                            "topics": list(self.topics),
                            # for a coordinator that restored us from Raft after a move
                            "session_timeout_ms": self.session_timeout_ms,
                            "rebalance_timeout_ms": self.rebalance_timeout_ms}
                    hbs = (await self._batchers()).heartbeats
                    # Coalesced with the process's other heartbeats to the same coordinator
                    # node (their own lane: never behind a commit batch).
                    ans = await self._with_coordinator(
                        lambda url, t: hbs.submit(url, body, t),
                        timeout_ms=self.session_timeout_ms)
                self.member_id = ans["member_id"]
        except RaftlogError as exc:
            if exc.code is ErrorCode.FENCED_INSTANCE_ID:
                # A newer process took our group_instance_id: stop consuming for good (Kafka
                # raises FencedInstanceIdException); rejoining would fence it in turn.
                log.error("group %s: %s: no longer a member", self.group_id, exc.message)
                await self._revoke(set(self.owned))
                self.member_id = None
                self.fenced_instance = exc
                return self.heartbeat_interval_ms / 1000
            if exc.code not in _FENCED:
                raise
            log.info("group %s: fenced (%s): rejoining", self.group_id, exc.code.name)
            await self._revoke(set(self.owned))
            self.member_id = None
            self.generation = -1
            return 0.0
        changed = await self._apply(ans)
        if self.auto_commit and time.monotonic() - self._last_auto_commit > \
                self.auto_commit_interval_ms / 1000:
            self._last_auto_commit = time.monotonic()
            try:
                await self.commit_positions(self.owned)
            except RaftlogError as exc:
                log.info("group %s: auto-commit failed: %s", self.group_id, exc)
        if changed:
            return 0.0                              # report the new ownership at once
        if ans.get("rebalance_in_progress"):
            return min(self.heartbeat_interval_ms, RECONCILE_HEARTBEAT_MS) / 1000
        return self.heartbeat_interval_ms / 1000

    async def _apply(self, ans: dict[str, Any]) -> bool:
        new = {TopicPartition(t, p) for t, p in ans.get("assignment") or ()}
        revoked = self.owned - new
        added = new - self.owned
        if revoked:
            if self.auto_commit:
                try:
                    await self.commit_positions(revoked, generation=ans["generation"])
                except RaftlogError as exc:
                    log.info("group %s: commit of revoked partitions failed: %s",
                             self.group_id, exc)
            await self._revoke(revoked)
        self.generation = ans["generation"]
        if added:
            committed = await self.fetch_committed(added)
            self.owned |= added
            self.subscription.assign_from_group(self.owned)
            self._forget(set(self.owned))
            for tp in added:
                off = committed.get(tp, -1)
                if off >= 0:
                    self.subscription.seek(tp, off)
                    self._committed[tp] = off
            await _call(getattr(self.listener, "on_partitions_assigned", None), set(added))
        if revoked or added:
            log.info("group %s: generation %d, %d partitions (-%d +%d)", self.group_id,
                     self.generation, len(self.owned), len(revoked), len(added))
        self.assigned_event.set()
        return bool(revoked or added)

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        try:
            await _call(getattr(self.listener, "on_partitions_revoked", None), set(revoked))
        finally:
            self.owned -= revoked
            for tp in revoked:
                self._committed.pop(tp, None)
            self.subscription.assign_from_group(self.owned)
            self._forget(set(self.owned))

    async def _refresh_pattern(self) -> None:
        assert self.pattern is not None
        self._last_pattern = time.monotonic()
        res = await self.client.admin("GET", "/v1/topics")
        names = tuple(sorted(t["name"] for t in res.get("topics", [])
                             if not t.get("internal") and self.pattern.fullmatch(t["name"])))
        if names != self.topics:
            self.topics = names
            for t in names:
                self.client.add_topic(t)

    # -- offsets ----------------------------------------------------------------------------
    async def _batchers(self) -> commit_batcher.GroupBatchers:
        """The process's commit, fetch and heartbeat batchers (acquired on first use, released
        by stop())."""
        if self._batcher is None:
            if self._released:
                raise error(ErrorCode.INVALID_REQUEST, f"group {self.group_id}: the consumer "
                            "is stopped")
            self._batcher = await commit_batcher.acquire()
        return self._batcher

    async def commit(self, offsets: dict[TopicPartition, int | tuple[int, str]],
                     generation: int | None = None) -> None:
        """Commit `offsets` (the next offset to read, per partition) for this group."""
        if not offsets:
            return
        entries = []
        for tp, v in offsets.items():
            off, md = (v if isinstance(v, tuple) else (v, ""))
            entries.append({"topic": tp.topic, "partition": tp.partition, "offset": int(off),
                            "metadata": md})
        async with self._lock:
            if self.member_id is None:
                raise CommitFailedError(ErrorCode.UNKNOWN_MEMBER_ID,
                                        f"not a member of group {self.group_id} right now "
                                        "(joining or rebalanced): commit refused")
            body = {"group": self.group_id, "member_id": self.member_id,
                    "generation": self.generation if generation is None else generation,
                    "group_instance_id": self.instance_id or "", "offsets": entries}
            commits = (await self._batchers()).commits
            try:
                # Coalesced with the process's other commits to the same coordinator node.
                await self._with_coordinator(lambda url, t: commits.submit(url, body, t))
            except RaftlogError as exc:
                if exc.code in _FENCED:
                    self.wake()
                    raise CommitFailedError(exc.code, f"commit refused: {exc.message}",
                                            exc.hint) from None
                raise
        for tp, v in offsets.items():
            self._committed[tp] = int(v[0] if isinstance(v, tuple) else v)

    async def commit_positions(self, tps: Iterable[TopicPartition],
                               generation: int | None = None, force: bool = False) -> None:
        """Commit the current position of each of `tps` that moved since its last commit."""
        out = {}
        for tp in tps:
            if not self.subscription.is_assigned(tp):
                continue
            pos = self.subscription.state(tp).position
            if pos is not None and (force or self._committed.get(tp) != pos):
                out[tp] = pos
        await self.commit(out, generation)

    async def fetch_committed(self, tps: Iterable[TopicPartition] | None = None
                              ) -> dict[TopicPartition, int]:
        body: dict[str, Any] = {"group": self.group_id}
        if tps is not None:
            body["partitions"] = [[tp.topic, tp.partition] for tp in tps]
        fetches = (await self._batchers()).fetches
        # Coalesced with the process's other fetches from the same coordinator node.
        res = await self._with_coordinator(lambda url, t: fetches.submit(url, body, t))
        return {TopicPartition(e["topic"], e["partition"]): int(e["offset"])
                for e in res.get("offsets", [])}
