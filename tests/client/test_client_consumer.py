"""Goal: the Consumer returns exactly the records in the log, at their offsets, from where it is
told to start; moves positions only past what it returned; resets per auto_offset_reset; follows
leader moves; skips records below its position in a batch. Method: produce with the Producer
(or the fake's log), read back with the Consumer, compare offsets and bytes."""
import asyncio

import pytest

from raftlog.client.consumer import Consumer
from raftlog.client.errors import IllegalStateError, NoOffsetForPartitionError
from raftlog.client.fetcher import FetchResult, decode_records
from raftlog.client.producer import Producer
from raftlog.client.structs import ConsumerRecord, TopicPartition as TP
from raftlog.codec import batch as codec
from raftlog.errors import OffsetOutOfRangeError

T0, T1, T2 = TP("t", 0), TP("t", 1), TP("t", 2)


async def produce(fc, partition, values, **kw):
    """Each call is one batch (send_batch), so batch boundaries are known to the test."""
    async with Producer(fc.bootstrap, **kw) as p:
        return await p.send_batch("t", partition, [(None, v) for v in values])


async def drain(c, want, *tps, timeout_s=5.0):
    """getmany until `want` records came back (fails after timeout_s)."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(out) < want:
        assert loop.time() < deadline, f"got {len(out)} of {want} records"
        got = await c.getmany(*tps, timeout_ms=200)
        for recs in got.values():
            out.extend(recs)
    return out


def consumer(fc, **kw):
    kw.setdefault("fetch_max_wait_ms", 100)
    return Consumer(bootstrap_servers=fc.bootstrap, **kw)


async def test_round_trip_offsets_keys_values_headers(fake):
    async with Producer(fake.bootstrap, linger_ms=1) as p:
        sent = [p.send("t", b"value-%d" % i, key=b"k%d" % i, partition=1,
                       headers=[("n", b"%d" % i)], timestamp_ms=1_000 + i) for i in range(100)]
        await p.flush()
    async with consumer(fake, auto_offset_reset="earliest") as c:
        c.assign([T1])
        assert c.assignment() == {T1}
        recs = await drain(c, 100)
        assert recs == [ConsumerRecord("t", 1, i, 1_000 + i, b"k%d" % i, b"value-%d" % i,
                                       (("n", b"%d" % i),)) for i in range(100)]
        assert [s.result().offset for s in sent] == [r.offset for r in recs]
        assert await c.position(T1) == 100
        assert c.highwater(T1) == 100
        assert await c.getmany(timeout_ms=50) == {}


async def test_default_reset_is_latest_and_seek_moves(fake):
    await produce(fake, 0, [b"a", b"b", b"c"])
    async with consumer(fake) as c:
        c.assign([T0])
        assert await c.position(T0) == 3  # latest
        await produce(fake, 0, [b"d"])
        assert [r.value for r in await drain(c, 1)] == [b"d"]
        c.seek(T0, 1)
        assert await c.position(T0) == 1
        assert [(r.offset, r.value) for r in await drain(c, 3)] == \
            [(1, b"b"), (2, b"c"), (3, b"d")]
        await c.seek_to_beginning(T0)
        assert await c.position(T0) == 0
        assert (await c.getone()).value == b"a"
        await c.seek_to_end()
        assert await c.position(T0) == 4
        assert await c.beginning_offsets([T0]) == {T0: 0}
        assert await c.end_offsets([T0, T1]) == {T0: 4, T1: 0}


async def test_fetch_starting_mid_batch_skips_earlier_records(fake):
    await produce(fake, 2, [b"r%d" % i for i in range(10)])  # one batch, offsets 0..9
    async with consumer(fake) as c:
        c.assign([T2])
        c.seek(T2, 7)
        recs = await drain(c, 3)
        assert [(r.offset, r.value) for r in recs] == [(7, b"r7"), (8, b"r8"), (9, b"r9")]


async def test_max_records_moves_position_only_past_returned_records(fake):
    await produce(fake, 0, [b"%d" % i for i in range(10)])
    async with consumer(fake, auto_offset_reset="earliest") as c:
        c.assign([T0])
        first = await drain(c, 1)  # getmany without max_records returns all it has...
        c.seek(T0, 0)
        got = await c.getmany(timeout_ms=2000, max_records=4)
        assert [r.offset for r in got[T0]] == [0, 1, 2, 3]
        assert await c.position(T0) == 4
        got = await c.getmany(timeout_ms=2000, max_records=100)
        assert [r.offset for r in got[T0]] == list(range(4, 10))
        assert first[0].offset == 0


async def test_offsets_for_times(fake):
    async with Producer(fake.bootstrap, linger_ms=0) as p:
        for i, ts in enumerate([1000, 2000, 3000]):
            await p.send("t", b"%d" % i, partition=0, timestamp_ms=ts)
    async with consumer(fake) as c:
        c.assign([T0])
        got = await c.offsets_for_times({T0: 1500})
        assert got[T0].offset == 1 and got[T0].timestamp == 2000
        assert (await c.offsets_for_times({T0: 3000}))[T0].offset == 2
        assert (await c.offsets_for_times({T0: 9999}))[T0] is None
        with pytest.raises(ValueError):
            await c.offsets_for_times({T0: -5})


async def test_out_of_range_resets_to_earliest(fake):
    await produce(fake, 0, [b"old%d" % i for i in range(5)])
    await produce(fake, 0, [b"new%d" % i for i in range(5)])
    fake.truncate_before("t", 0, 5)  # retention removed the first batch
    async with consumer(fake, auto_offset_reset="earliest") as c:
        c.assign([T0])
        c.seek(T0, 2)  # now below the log start
        recs = await drain(c, 5)
        assert [(r.offset, r.value) for r in recs] == [(5 + i, b"new%d" % i) for i in range(5)]


async def test_out_of_range_resets_to_latest(fake):
    await produce(fake, 0, [b"x"] * 3)
    async with consumer(fake, auto_offset_reset="latest") as c:
        c.assign([T0])
        c.seek(T0, 50)  # beyond the end
        await asyncio.wait_for(_until_position(c, T0, 3), 5)
        await produce(fake, 0, [b"fresh"])
        assert [(r.offset, r.value) for r in await drain(c, 1)] == [(3, b"fresh")]


async def _until_position(c, tp, want):
    while await c.position(tp) != want:
        await c.getmany(timeout_ms=20)


async def test_reset_none_raises(fake):
    await produce(fake, 0, [b"x"] * 3)
    async with consumer(fake, auto_offset_reset="none") as c:
        c.assign([T0])
        with pytest.raises(NoOffsetForPartitionError):
            await c.position(T0)
        with pytest.raises(NoOffsetForPartitionError):
            await c.getmany(timeout_ms=2000)
        c.seek(T0, 99)
        with pytest.raises(OffsetOutOfRangeError, match=r"offset 99 is out of range \[0, 3\]"):
            await c.getmany(timeout_ms=2000)
        assert await c.position(T0) == 99  # an error moves nothing
        c.seek(T0, 1)
        assert [r.offset for r in await drain(c, 2)] == [1, 2]


async def test_follows_leader_move(fake2):
    async with Producer(fake2.bootstrap, linger_ms=0) as p:
        await p.send("t", b"a", partition=0)
        async with consumer(fake2, auto_offset_reset="earliest", retry_backoff_ms=10) as c:
            c.assign([T0])
            assert [r.value for r in await drain(c, 1)] == [b"a"]
            fake2.move_leader("t", 0, 2)
            fake2.requests.clear()
            await p.send("t", b"b", partition=0)
            assert [(r.offset, r.value) for r in await drain(c, 1)] == [(1, b"b")]
    fetch_nodes = {n for n, path in fake2.requests if path == "fetch"}
    assert 2 in fetch_nodes


async def test_topics_without_group_read_every_partition_and_iterate(fake):
    for p in range(3):
        await produce(fake, p, [b"p%d" % p])
    async with Consumer("t", bootstrap_servers=fake.bootstrap, auto_offset_reset="earliest",
                        fetch_max_wait_ms=50) as c:
        assert c.assignment() == {T0, T1, T2}
        seen = []
        async for r in c:
            seen.append((r.partition, r.value))
            if len(seen) == 3:
                break
        assert sorted(seen) == [(0, b"p0"), (1, b"p1"), (2, b"p2")]


async def test_prefetch_keeps_a_fetch_in_flight_while_caller_holds_records(fake, eventually):
    await produce(fake, 0, [b"x" * 100] * 50)
    async with consumer(fake, auto_offset_reset="earliest", fetch_max_wait_ms=2000) as c:
        c.assign([T0])
        await drain(c, 50)
        n = sum(1 for _, path in fake.requests if path == "fetch")
        # No getmany call now: the fetcher must already be long-polling for more.
        await eventually(lambda: sum(1 for _, p in fake.requests if p == "fetch") > n,
                         what="a prefetch request")
        await produce(fake, 0, [b"y"])
        got = await c.getmany(timeout_ms=2000)
        assert [r.value for r in got[T0]] == [b"y"]


async def test_pause_resume_and_misuse(fake):
    await produce(fake, 0, [b"a"])
    c = consumer(fake, auto_offset_reset="earliest")
    with pytest.raises(IllegalStateError):
        c.assign([T0])
    with pytest.raises(IllegalStateError):      # groups: subscribe needs a started consumer
        Consumer(group_id="g").subscribe(["t"])
    with pytest.raises(IllegalStateError):      # and commit needs a group
        await c.commit()
    async with c:
        c.assign([T0])
        c.pause(T0)
        assert c.paused() == {T0}
        assert await c.getmany(timeout_ms=200) == {}
        c.resume(T0)
        assert [r.value for r in await drain(c, 1)] == [b"a"]
        with pytest.raises(IllegalStateError):
            c.seek(T1, 0)


def test_decoder_matches_codec_and_skips_below_position():
    recs = [(b"k%d" % i if i % 2 else None, b"v%d" % i, [("h", b"x")] if i == 3 else None,
             5_000 + i) for i in range(6)]
    # Two batches as a broker stores them: offsets 10..12 and 13..15.
    raw = _stamped(codec.encode(recs[:3]), 10) + _stamped(codec.encode(recs[3:]), 13)
    ref = codec.decode(raw)
    mine = decode_records("t", 4, raw, 0)
    assert [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in ref] == \
        [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in mine]
    assert mine[3] == ConsumerRecord("t", 4, 13, 5_003, b"k3", b"v3", (("h", b"x"),))
    assert [r.offset for r in decode_records("t", 4, raw, 12)] == [12, 13, 14, 15]
    gz = _stamped(codec.encode(recs, codec=codec.CODEC_GZIP), 0)
    assert [r.value for r in decode_records("t", 4, gz, 0)] == [r[1] for r in recs]
    bad = bytearray(raw)
    bad[-1] ^= 0xFF
    with pytest.raises(codec.CorruptBatchError, match="CRC"):
        decode_records("t", 4, bytes(bad), 0)


def _stamped(raw: bytes, base: int) -> bytes:
    buf = bytearray(raw)
    codec.stamp(buf, base, 0)
    return bytes(buf)


def test_fetch_result_unpacks_one_whole_batch_at_a_time_skipping_control():
    def batch(base, values, control=False):
        raw = bytearray(codec.encode([(None, v, None, 7_000) for v in values],
                                     attributes=codec.CONTROL if control else 0))
        codec.stamp(raw, base, 0)
        return bytes(raw)

    raw = (batch(0, [b"a", b"b", b"c"]) + batch(3, [b"m"], control=True)
           + batch(4, [b"d", b"e"]) + batch(6, [b"f"]))
    res = FetchResult(0, raw + raw[:20], 7)  # a trailing partial batch is ignored
    res.unpack_next("t", 0, 1)  # from offset 1: b, c
    assert (res.offset, res.index, [r[2] for r in res.body]) == (0, 1, [b"a", b"b", b"c"])
    res.unpack_next("t", 0, 3)  # the control batch is skipped
    assert (res.offset, res.index, res.timestamp) == (4, 0, 7_000)
    res.unpack_next("t", 0, 6)
    assert res.offset == 6 and res.raw is not None
    res.unpack_next("t", 0, 7)
    assert res.raw is None and res.body == ()
    assert [(r.offset, r.value) for r in decode_records("t", 0, raw, 2)] == \
        [(2, b"c"), (4, b"d"), (5, b"e"), (6, b"f")]


async def test_small_max_records_walk_a_multi_batch_answer_in_order(fake):
    for b in range(3):
        await produce(fake, 0, [b"%d-%d" % (b, i) for i in range(5)])
    async with consumer(fake, auto_offset_reset="earliest") as c:
        c.assign([T0])
        c.seek(T0, 2)
        seen = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while len(seen) < 13:
            assert loop.time() < deadline
            got = await c.getmany(timeout_ms=200, max_records=3)
            assert len(got.get(T0, [])) <= 3
            seen += got.get(T0, [])
            if got:
                assert await c.position(T0) == seen[-1].offset + 1
        assert [r.offset for r in seen] == list(range(2, 15))
        assert [r.value for r in seen][:4] == [b"0-2", b"0-3", b"0-4", b"1-0"]
        assert await c.getmany(timeout_ms=100) == {}


async def test_async_for_ends_when_the_consumer_stops(fake):
    c = consumer(fake, auto_offset_reset="earliest")
    await c.start()
    c.assign([T0])
    seen = []

    async def read():
        async for r in c:
            seen.append(r)
        return "ended"

    task = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    await c.stop()
    assert await asyncio.wait_for(task, 5) == "ended" and seen == []
