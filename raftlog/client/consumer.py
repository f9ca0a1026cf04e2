"""Consumer: the user-facing API for reading records (aiokafka's AIOKafkaConsumer shape).

Owns: configuration, assignment and positions through `SubscriptionState`, offset lookups
(seek_to_*, position, offsets_for_times) and handing out records from the `Fetcher`. Manual
assignment only for now: `Consumer(*topics)` without a group assigns every partition of the
topics (as aiokafka does without group_id); consumer groups come with the groups issue and will
drive `subscription.assign_from_group()`. Imports the client's modules and `errors`; never
raftlog.server/meta/storage/replication.

    async with Consumer(bootstrap_servers="127.0.0.1:9091", auto_offset_reset="earliest") as c:
        c.assign([TopicPartition("events", 0)])
        batch = await c.getmany(timeout_ms=1000)       # {tp: [ConsumerRecord, ...]}
        async for record in c: ...
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterable

from msgspec.structs import replace

from raftlog.aio import wait_event
from raftlog.client.client import Client
from raftlog.client.errors import IllegalStateError, NoOffsetForPartitionError
from raftlog.client.fetcher import Fetcher
from raftlog.client.group_consumer import GroupConsumerMixin
from raftlog.client.structs import ConsumerRecord, OffsetAndTimestamp, TopicPartition
from raftlog.client.subscription import RESET_NONE, RESET_TIMESTAMP, SubscriptionState

KIB = 1024
MIB = 1024 * KIB


class Consumer(GroupConsumerMixin):
    def __init__(self, *topics: str,
                 bootstrap_servers: str | Iterable[str] = "127.0.0.1:9091",
                 group_id: str | None = None,
                 auto_offset_reset: str = "latest",
                 fetch_max_wait_ms: int = 500,
                 fetch_min_bytes: int = 1,
                 fetch_max_bytes: int = 50 * MIB,
                 max_partition_fetch_bytes: int = 1 * MIB,
                 max_poll_records: int | None = None,
                 request_timeout_ms: int = 30_000,
                 retry_backoff_ms: int = 100,
                 bootstrap_timeout_ms: int = 10_000,
                 metadata_max_age_ms: int = 300_000,
                 key_deserializer: Callable[[bytes | None], Any] | None = None,
                 value_deserializer: Callable[[bytes | None], Any] | None = None,
                 client_id: str = "raftlog-consumer",
                 # -- consumer groups (raftlog/client/group_consumer.py) --
                 group_instance_id: str | None = None,
                 enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5_000,
                 session_timeout_ms: int = 10_000,
                 heartbeat_interval_ms: int = 3_000,
                 max_poll_interval_ms: int = 300_000,
                 partition_assignment_strategy: str = "range") -> None:
        self._group_init(group_id, group_instance_id=group_instance_id,
                         enable_auto_commit=enable_auto_commit,
                         auto_commit_interval_ms=auto_commit_interval_ms,
                         session_timeout_ms=session_timeout_ms,
                         heartbeat_interval_ms=heartbeat_interval_ms,
                         max_poll_interval_ms=max_poll_interval_ms,
                         strategy=partition_assignment_strategy, client_id=client_id)
        if max_poll_records is not None and max_poll_records < 1:
            raise ValueError(f"max_poll_records must be >= 1, got {max_poll_records}")
        self.client_id = client_id
        self._topics = tuple(topics)
        self.subscription = SubscriptionState(auto_offset_reset)
        self.client = Client(bootstrap_servers, request_timeout_ms=request_timeout_ms,
                             bootstrap_timeout_ms=bootstrap_timeout_ms,
                             metadata_max_age_ms=metadata_max_age_ms,
                             retry_backoff_ms=retry_backoff_ms)
        self._fetch_cfg = dict(fetch_max_wait_ms=fetch_max_wait_ms,
                               fetch_min_bytes=fetch_min_bytes, fetch_max_bytes=fetch_max_bytes,
                               max_partition_fetch_bytes=max_partition_fetch_bytes,
                               request_timeout_ms=request_timeout_ms,
                               retry_backoff_ms=retry_backoff_ms)
        self.max_poll_records = max_poll_records
        self._key_deserializer = key_deserializer
        self._value_deserializer = value_deserializer
        self._fetcher: Fetcher | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if self._fetcher is not None:
            return
        if self._closed:
            raise IllegalStateError("a stopped consumer cannot be started again")
        await self.client.start()
        self._fetcher = Fetcher(self.client, self.subscription, **self._fetch_cfg)
        self._fetcher.start()
        if self.group_id is not None:      # the group assigns partitions: subscribe, not assign
            self._group_start()
            return
        if self._topics:
            try:
                tps = []
                for t in self._topics:
                    n = await self.client.wait_for_topic(t, self.client.request_timeout_ms)
                    tps += [TopicPartition(t, p) for p in range(n)]
                self.assign(tps)
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        if not self._closed:
            await self._group_stop()
        self._closed = True
        if self._fetcher is not None:
            self._fetcher.data_ready.set()  # wake getone()/async-for waiters so they end
            await self._fetcher.close()
        await self.client.close()

    async def __aenter__(self) -> "Consumer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def _running(self) -> Fetcher:
        if self._fetcher is None or self._closed:
            raise IllegalStateError("consumer is not running: use `async with Consumer(...)` or "
                                    "`await consumer.start()` first")
        return self._fetcher

    # -- assignment -------------------------------------------------------------------------
    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions (replaces the previous assignment; positions of
        partitions kept in it are kept)."""
        fetcher = self._running()
        tps = [TopicPartition(*tp) for tp in partitions]
        for tp in tps:
            self.client.add_topic(tp.topic)
        self.subscription.assign_from_user(tps)
        fetcher.forget(set(tps))

    def assignment(self) -> set[TopicPartition]:
        return set(self.subscription.assigned())

    def unsubscribe(self) -> None:
        self.subscription.unsubscribe()
        if self._fetcher is not None:
            self._fetcher.forget(set())

    def _assigned(self, tp: TopicPartition) -> TopicPartition:
        tp = TopicPartition(*tp)
        if not self.subscription.is_assigned(tp):
            raise IllegalStateError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        return tp

    # -- positions --------------------------------------------------------------------------
    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read `partition` from `offset` on the next fetch."""
        tp = self._assigned(partition)
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        self._running().clear_error(tp)
        self.subscription.seek(tp, offset)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        await self._seek_to(partitions, RESET_TIMESTAMP["earliest"])

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        await self._seek_to(partitions, RESET_TIMESTAMP["latest"])

    async def _seek_to(self, partitions: tuple[TopicPartition, ...], stamp: int) -> None:
        tps = [self._assigned(tp) for tp in partitions] or self.subscription.assigned()
        found = await self.client.list_offsets({(tp.topic, tp.partition): stamp for tp in tps})
        for tp in tps:
            self.seek(tp, found[(tp.topic, tp.partition)][0])

    async def position(self, partition: TopicPartition) -> int:
        """The offset of the next record to be returned; resolves it (auto_offset_reset) if the
        partition has none yet."""
        tp = self._assigned(partition)
        st = self.subscription.state(tp)
        if st.position is None:
            strategy = st.reset or self.subscription.default_reset
            if strategy == RESET_NONE:
                raise NoOffsetForPartitionError(
                    f"{tp.topic}-{tp.partition} has no position and auto_offset_reset='none'; "
                    "seek() first")
            found = await self.client.list_offsets(
                {(tp.topic, tp.partition): RESET_TIMESTAMP[strategy]})
            if st.position is None:
                self.subscription.seek(tp, found[(tp.topic, tp.partition)][0])
        assert st.position is not None
        return st.position

    def highwater(self, partition: TopicPartition) -> int:
        """The high watermark seen in the last fetch answer (-1 before any)."""
        return self.subscription.state(self._assigned(partition)).highwater

    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]
                                ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """Earliest offset whose timestamp >= the given one (ms), per partition; None when no
        record is that new."""
        for tp, ts in timestamps.items():
            if not isinstance(ts, int) or ts < 0:
                raise ValueError(f"timestamp for {tp} must be an int >= 0 (ms), got {ts!r}")
        found = await self.client.list_offsets(
            {(tp.topic, tp.partition): ts for tp, ts in timestamps.items()})
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp in timestamps:
            off, ts = found[(tp.topic, tp.partition)]
            out[TopicPartition(*tp)] = OffsetAndTimestamp(off, ts) if off >= 0 else None
        return out

    async def beginning_offsets(self, partitions: Iterable[TopicPartition]
                                ) -> dict[TopicPartition, int]:
        return await self._offsets(partitions, RESET_TIMESTAMP["earliest"])

    async def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermark of each partition (the offset the next record will get)."""
        return await self._offsets(partitions, RESET_TIMESTAMP["latest"])

    async def _offsets(self, partitions: Iterable[TopicPartition], stamp: int
                       ) -> dict[TopicPartition, int]:
        tps = [TopicPartition(*tp) for tp in partitions]
        found = await self.client.list_offsets({(tp.topic, tp.partition): stamp for tp in tps})
        return {tp: found[(tp.topic, tp.partition)][0] for tp in tps}

    def pause(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.subscription.pause(self._assigned(tp))

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.subscription.resume(self._assigned(tp))

    def paused(self) -> set[TopicPartition]:
        return {tp for tp, st in self.subscription.states() if st.paused}

    # -- reading ----------------------------------------------------------------------------
    async def getmany(self, *partitions: TopicPartition, timeout_ms: float = 0,
                      max_records: int | None = None
                      ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records fetched so far for `partitions` (all assigned when none given); waits up to
        `timeout_ms` when there are none. Positions move past what is returned."""
        fetcher = self._running()
        self._group_polled()
        tps = [self._assigned(tp) for tp in partitions] or self.subscription.assigned()
        tps = [tp for tp in tps if not self.subscription.state(tp).paused]
        if max_records is None:
            max_records = self.max_poll_records
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            fetcher.data_ready.clear()
            out = fetcher.fetched_records(tps, max_records)
            if out:
                return self._deserialize(out)
            remaining = deadline - loop.time()
            if remaining <= 0:
                return {}
            if not await wait_event(fetcher.data_ready, remaining):
                return {}

    async def getone(self, *partitions: TopicPartition) -> ConsumerRecord:
        """The next record of `partitions` (all assigned when none given), waiting as needed."""
        fetcher = self._running()
        tps = [self._assigned(tp) for tp in partitions] or self.subscription.assigned()
        while True:
            if self._closed:
                raise IllegalStateError("consumer stopped")
            fetcher.data_ready.clear()
            out = fetcher.fetched_records(
                [tp for tp in tps if not self.subscription.state(tp).paused], 1)
            for recs in out.values():
                return self._deserialize_one(recs[0])
            await fetcher.data_ready.wait()

    def __aiter__(self) -> "Consumer":
        return self

    async def __anext__(self) -> ConsumerRecord:
        """Iterate records one at a time until the consumer stops; each record moves its
        partition's position by one (getmany is the faster path for bulk reads)."""
        if self._closed:
            raise StopAsyncIteration
        try:
            return await self.getone()
        except IllegalStateError:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    def _deserialize(self, out: dict[TopicPartition, list[ConsumerRecord]]
                     ) -> dict[TopicPartition, list[ConsumerRecord]]:
        if self._key_deserializer is None and self._value_deserializer is None:
            return out
        return {tp: [self._deserialize_one(r) for r in recs] for tp, recs in out.items()}

    def _deserialize_one(self, r: ConsumerRecord) -> ConsumerRecord:
        if self._key_deserializer is not None and r.key is not None:
            r = replace(r, key=self._key_deserializer(r.key))
        if self._value_deserializer is not None and r.value is not None:
            r = replace(r, value=self._value_deserializer(r.value))
        return r
