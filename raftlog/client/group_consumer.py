"""The consumer-group half of `Consumer`'s API: subscribe, commit, committed (a mixin).

Kept apart from consumer.py so the fetch path and the group path change independently. The
Consumer calls `_group_init` in its constructor, `_group_start` / `_group_stop` around its
fetcher, and `_group_polled` from getmany/getone; everything else is here and in
group_coordinator.py.
"""
from __future__ import annotations

from typing import Any, Iterable

from raftlog.aio import within
from raftlog.client.errors import IllegalStateError
from raftlog.client.group_coordinator import ConsumerRebalanceListener, GroupMember
from raftlog.client.structs import TopicPartition


class GroupConsumerMixin:
    _group: GroupMember | None
    subscription: Any
    client: Any
    _topics: tuple[str, ...]

    def _group_init(self, group_id: str | None, **kw: Any) -> None:
        self._group = None
        self._group_kw = kw
        self.group_id = group_id

    def _group_start(self) -> None:
        if self.group_id is None:
            return
        fetcher = self._running()          # type: ignore[attr-defined]
        self._group = GroupMember(self.client, self.subscription, self.group_id,
                                  forget=fetcher.forget, **self._group_kw)
        if self._topics:
            self._group.subscribe(self._topics)
        self._group.start()

    async def _group_stop(self) -> None:
        if self._group is not None:
            await self._group.stop()

    def _group_polled(self) -> None:
        if self._group is not None:
            self._group.polled()

    def _require_group(self) -> GroupMember:
        if self.group_id is None:
            raise IllegalStateError("this consumer has no group_id: subscribe/commit/committed "
                                    "need Consumer(group_id=...)")
        if self._group is None:
            raise IllegalStateError("consumer is not running: use `async with Consumer(...)` or "
                                    "`await consumer.start()` first")
        return self._group

    # -- public API -------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[str] = (), pattern: str | None = None,
                  listener: ConsumerRebalanceListener | Any = None) -> None:
        """Join the group for `topics` (or every topic matching the regex `pattern`); the
        group coordinator assigns partitions, `listener` hears about every change."""
        g = self._require_group()
        if isinstance(topics, str):
            topics = [topics]
        topics = list(topics)
        if not topics and pattern is None:
            raise ValueError("subscribe() needs topics or pattern=")
        if self.subscription.source == "user":
            raise IllegalStateError("subscribe() after assign(): unsubscribe() first")
        g.subscribe(topics, pattern, listener)

    async def commit(self, offsets: dict[TopicPartition, Any] | None = None) -> None:
        """Commit `offsets` ({tp: offset} or {tp: (offset, metadata)}: the next offset to read),
        or the current position of every owned partition. Raises CommitFailedError when the
        group has rebalanced without this consumer (a stale generation)."""
        g = self._require_group()
        if offsets is None:
            await g.commit_positions(set(g.owned), force=True)
        else:
            await g.commit({TopicPartition(*tp): v for tp, v in offsets.items()})

    async def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset of `partition`, None when it has none."""
        g = self._require_group()
        tp = TopicPartition(*partition)
        off = (await g.fetch_committed([tp])).get(tp, -1)
        return off if off >= 0 else None

    async def wait_for_assignment(self, timeout_ms: float = 30_000) -> set[TopicPartition]:
        """Until the group has answered this member at least once; the assignment then."""
        g = self._require_group()
        await within(g.assigned_event.wait(), timeout_ms / 1000)
        return set(g.owned)
