"""Per-topic flush.ms, and flush.policy / flush.ms / max.message.bytes altered at runtime, on a
real ReplicaManager with real partition logs (the broker around it is a stub).

The flush loop flushes each log on its own topic's interval (FlushSchedule decides which, on a
fake clock here); an altered topic config reaches the open log at the next metadata view:
interval -> fsync makes acks wait for fsync, fsync -> interval strands no waiter, and a raised
max.message.bytes admits a batch over the old limit."""
from __future__ import annotations

import asyncio

import pytest

from raftlog.codec import batch as batch_codec
from raftlog.meta.view import BrokerInfo, MetadataView, PartitionInfo, TopicInfo
from raftlog.replication.flush import FLUSH_SLEEP_MIN_MS, FlushSchedule
from raftlog.testing.cluster import eventually

from raftlog.storage.errors import MessageTooLargeError

from manager_stub import stub_manager

NODE = 1
EPOCH = 7
HOUR_MS = 3_600_000


# -- FlushSchedule on a fake clock ------------------------------------------------------------
def test_schedule_flushes_each_log_on_its_own_interval():
    s = FlushSchedule(max_sleep_ms=1000)
    intervals = {"fast": 100, "slow": 5000}
    assert s.plan(intervals, 0) == ([], 100)           # both start their interval now
    assert s.plan(intervals, 95) == ([], FLUSH_SLEEP_MIN_MS)  # never a busy loop
    assert s.plan(intervals, 100) == (["fast"], 100)
    assert s.plan(intervals, 150) == ([], 50)
    due = [s.plan(intervals, t)[0] for t in range(200, 5001, 100)]
    assert all(d == ["fast"] for d in due[:-1]) and sorted(due[-1]) == ["fast", "slow"]


def test_schedule_caps_its_sleep_and_follows_altered_intervals():
    s = FlushSchedule(max_sleep_ms=1000)
    assert s.plan({"a": HOUR_MS}, 0) == ([], 1000)     # capped: new logs are seen within 1 s
    # flush.ms shortened at runtime: due at once, counted from the start of the interval
    assert s.plan({"a": 200}, 500) == (["a"], 200)
    # a new log starts its own interval; a gone log is forgotten (and not due later)
    assert s.plan({"a": 200, "b": 300}, 600) == ([], 100)
    assert s.plan({"b": 300}, 900) == (["b"], 300)
    assert s.plan({"a": 200, "b": 300}, 950) == ([], 200)


def test_schedule_never_sleeps_less_than_its_floor():
    s = FlushSchedule(max_sleep_ms=1000)
    s.plan({"a": 1}, 0)
    due, sleep_ms = s.plan({"a": 1}, 1)
    assert due == ["a"] and sleep_ms == FLUSH_SLEEP_MIN_MS


# -- a ReplicaManager on a stub broker -----------------------------------------------------------
def make_manager(tmp_path, **log_defaults):
    m, _broker, tasks = stub_manager(tmp_path, NODE, EPOCH, log_defaults=log_defaults)
    return m, tasks


def view_of(topics: dict[str, tuple[str, dict]], version: int = 1) -> MetadataView:
    """One-broker view: each topic one partition, led by this node."""
    return MetadataView(
        version=version,
        brokers={NODE: BrokerInfo(NODE, "127.0.0.1", 9001, "inc", EPOCH, False, 0)},
        topics={name: TopicInfo(name, tid, cfg,
                                (PartitionInfo(name, 0, (NODE,), NODE, 0, (NODE,), 0),))
                for name, (tid, cfg) in topics.items()})


async def open_topics(m, topics, version=1):
    m.on_view(view_of(topics, version))
    await eventually(lambda: all((n, 0) in m.partitions and m.partitions[(n, 0)].role == "leader"
                                 for n in topics), 10, "partitions opened as leaders")
    return [m.partitions[(n, 0)] for n in topics]


def append(p, value=b"v" * 100):
    return p.append_leader(bytearray(batch_codec.encode([(None, value, None, 0)])), 1, 0)


async def close_all(m, tasks):
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await m.stop()


async def test_flush_loop_uses_each_topics_flush_ms(tmp_path):
    # The node default is an hour: only the topic's own flush.ms can flush "fast" in time.
    m, tasks = make_manager(tmp_path, flush_interval_ms=HOUR_MS, flush_policy="interval")
    topics = {"fast": ("id-f", {"flush.ms": 50}), "slow": ("id-s", {})}
    fast, slow = await open_topics(m, topics)
    loop = asyncio.ensure_future(m._flush_loop())
    tasks.append(loop)
    try:
        append(fast)
        append(slow)
        await eventually(lambda: fast.log.flushed_offset == fast.log.log_end_offset, 5,
                         "fast flushed on its 50 ms flush.ms")
        assert slow.log.flushed_offset < slow.log.log_end_offset
        # flush.ms altered at runtime: the open log follows it
        topics["slow"] = ("id-s", {"flush.ms": 50})
        m.on_view(view_of(topics, 2))
        assert slow.log.options.flush_interval_ms == 50
        await eventually(lambda: slow.log.flushed_offset == slow.log.log_end_offset, 5,
                         "slow flushed once its flush.ms was altered to 50 ms")
    finally:
        await close_all(m, tasks)


async def test_interval_policy_flushes_a_rolled_segment_at_once(tmp_path):
    # "fsync every N ms and on roll": a roll makes the log due before its hour-long flush.ms.
    m, tasks = make_manager(tmp_path, flush_interval_ms=HOUR_MS, flush_policy="interval")
    (p,) = await open_topics(m, {"t": ("id-t", {})})
    loop = asyncio.ensure_future(m._flush_loop())
    tasks.append(loop)
    try:
        append(p)
        await asyncio.sleep(0)
        assert p.log.flushed_offset < p.log.log_end_offset
        p.log.roll(10**12)
        assert p.log.rolled_since_flush
        await eventually(lambda: p.log.flushed_offset == p.log.log_end_offset
                         and not p.log.rolled_since_flush, 5, "rolled segment flushed")
        p.log.roll(2 * 10**12)            # a roll with nothing new: only the directory entry
        await eventually(lambda: not p.log.rolled_since_flush, 5, "new file's entry synced")
    finally:
        await close_all(m, tasks)


async def test_flush_policy_altered_at_runtime_applies_to_the_open_log(tmp_path):
    m, tasks = make_manager(tmp_path, flush_interval_ms=HOUR_MS, flush_policy="interval")
    topics = {"t": ("id-t", {})}
    (p,) = await open_topics(m, topics)
    try:
        res = append(p)
        await m.durable(p, (res.last_offset + 1))          # interval: no wait, nothing flushed
        assert p.log.flushed_offset < (res.last_offset + 1)
        topics["t"] = ("id-t", {"flush.policy": "fsync"})
        m.on_view(view_of(topics, 2))
        assert p.log.options.flush_policy == "fsync"
        res = append(p)
        await asyncio.wait_for(m.durable(p, (res.last_offset + 1)), 10)
        assert p.log.flushed_offset >= (res.last_offset + 1)   # the ack waited for fsync
        # fsync -> interval while an ack waits on the group commit: it is still answered
        res = append(p)
        waiting = asyncio.ensure_future(m.durable(p, (res.last_offset + 1)))
        await asyncio.sleep(0)
        topics["t"] = ("id-t", {"flush.policy": "interval"})
        m.on_view(view_of(topics, 3))
        assert p.log.options.flush_policy == "interval"
        await asyncio.wait_for(waiting, 10)
        assert p.log.flushed_offset >= (res.last_offset + 1)
    finally:
        await close_all(m, tasks)


async def test_raised_max_message_bytes_admits_a_larger_batch_without_reopen(tmp_path):
    m, tasks = make_manager(tmp_path)
    topics = {"mm": ("id-mm", {})}
    (p,) = await open_topics(m, topics)
    big = 10_000_000
    try:
        with pytest.raises(MessageTooLargeError):
            append(p, b"x" * big)
        topics["mm"] = ("id-mm", {"max.message.bytes": 20_000_000})
        m.on_view(view_of(topics, 2))
        assert p.max_message_bytes == 20_000_000
        assert p.log.options.max_batch_bytes >= 20_000_000
        res = append(p, b"x" * big)
        assert res.last_offset == res.base_offset
        # the whole batch reads back in one piece even with a smaller max_bytes (as Kafka)
        data = p.log.read(res.base_offset, 1 << 20)
        (rec,) = [r for r in batch_codec.decode(data) if r.offset == res.base_offset]
        assert rec.value == b"x" * big
    finally:
        await close_all(m, tasks)
