"""Goal: the accumulator batches per partition by batch_size and linger_ms, drains one batch
per partition into one request per leader, keeps retries ahead of newer batches, expires
batches past their delivery deadline and accounts memory. Method: drive it with a fake clock,
no network."""
import asyncio

import pytest

from raftlog.client.accumulator import Accumulator


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(clock, **kw):
    cfg = dict(batch_size=100, linger_ms=5, delivery_timeout_ms=1000, max_in_flight=2)
    cfg.update(kw)
    closed = []
    acc = Accumulator(clock=clock, on_batch_closed=lambda t, p: closed.append((t, p)), **cfg)
    return acc, closed


def leaders(mapping):
    return lambda topic, partition: mapping.get((topic, partition), -1)


def room(node):
    return True


async def test_records_fill_batches_up_to_batch_size():
    clock = Clock()
    acc, closed = make(clock)
    handles = [acc.append(("t", 0), None, b"x" * 22, None, 1, 30) for _ in range(7)]
    # 30-byte records into 100-byte batches: 3 per batch, the 4th opens a new one.
    assert [h.index for h in handles] == [0, 1, 2, 0, 1, 2, 0]
    assert handles[0].batch is handles[2].batch is not handles[3].batch
    assert closed == [("t", 0), ("t", 0)]
    assert acc.memory_used == 7 * 30
    assert [len(b.records) for b in acc.queues[("t", 0)].batches] == [3, 3, 1]
    assert handles[0].batch.records[1] == (0, None, b"x" * 22, None)  # wire shape: ts delta first


async def test_oversized_record_gets_its_own_batch():
    acc, _ = make(Clock())
    a = acc.append(("t", 0), None, b"a", None, 1, 10)
    big = acc.append(("t", 0), None, b"b", None, 1, 500)
    c = acc.append(("t", 0), None, b"c", None, 1, 10)
    assert a.batch is not big.batch is not c.batch
    assert big.batch.closed and len(big.batch.records) == 1


async def test_linger_holds_an_open_batch_until_due_or_flush():
    clock = Clock()
    acc, _ = make(clock)
    acc.append(("t", 0), None, b"x", None, 1, 10)
    out, next_s, _ = acc.drain(clock.now, leaders({("t", 0): 1}), room, 1 << 20)
    assert out == {} and next_s == pytest.approx(clock.now + 0.005)
    clock.now += 0.006
    out, _, _ = acc.drain(clock.now, leaders({("t", 0): 1}), room, 1 << 20)
    assert [len(b.records) for b in out[1]] == [1]
    acc.append(("t", 0), None, b"y", None, 1, 10)
    acc.flushing += 1
    out, _, _ = acc.drain(clock.now, leaders({("t", 0): 1}), room, 1 << 20)
    assert [b.records[0][2] for b in out[1]] == [b"y"]  # wire shape: value third


async def test_drain_groups_partitions_by_leader_one_batch_each():
    clock = Clock()
    acc, _ = make(clock)
    for p in range(4):
        for _ in range(6):  # 50-byte records: three full 100-byte batches per partition
            acc.append(("t", p), None, b"x", None, 1, 50)
    lead = leaders({("t", 0): 1, ("t", 1): 2, ("t", 2): 1, ("t", 3): -1})
    out, _, no_leader = acc.drain(clock.now, lead, room, 1 << 20)
    assert no_leader
    assert sorted((b.topic, b.partition) for b in out[1]) == [("t", 0), ("t", 2)]
    assert [(b.topic, b.partition) for b in out[2]] == [("t", 1)]
    # max_in_flight=2 per partition: a second drain sends the next batch, a third nothing full.
    out2, _, _ = acc.drain(clock.now, lead, room, 1 << 20)
    assert sorted(b.partition for b in out2[1]) == [0, 2]
    out3, _, _ = acc.drain(clock.now, lead, room, 1 << 20)
    assert out3 == {}  # the third batches wait: max_in_flight=2 per partition
    acc.sent_done(out[1][0])
    out4, _, _ = acc.drain(clock.now, lead, room, 1 << 20)
    assert [(b.partition, b.serial > out2[1][0].serial) for b in out4[1]] == [(0, True)]


async def test_request_bytes_cap_and_node_room():
    clock = Clock()
    acc, _ = make(clock)
    for p in range(3):
        for _ in range(2):
            acc.append(("t", p), None, b"x", None, 1, 50)  # one full 100-byte batch each
    lead = leaders({("t", p): 1 for p in range(3)})
    out, _, _ = acc.drain(clock.now, lead, lambda n: False, 1 << 20)
    assert out == {}
    out, _, _ = acc.drain(clock.now, lead, room, 250)
    assert len(out[1]) == 2  # 100 + 100 fit under 250, the third waits
    out, _, _ = acc.drain(clock.now, lead, room, 250)
    assert len(out[1]) == 1


async def test_retried_batch_goes_first_and_alone():
    clock = Clock()
    acc, _ = make(clock, max_in_flight=5)
    for _ in range(6):
        acc.append(("t", 0), None, b"x", None, 1, 50)
    lead = leaders({("t", 0): 1})
    b1 = acc.drain(clock.now, lead, room, 1 << 20)[0][1][0]
    b2 = acc.drain(clock.now, lead, room, 1 << 20)[0][1][0]
    assert b1.serial < b2.serial
    acc.sent_done(b1)
    acc.requeue(b1, retry_at_s=clock.now + 0.1)
    # Backoff: nothing leaves before retry_at, and b2 (in flight) blocks the retry (rule 3).
    assert acc.drain(clock.now, lead, room, 1 << 20)[0] == {}
    clock.now += 0.2
    assert acc.drain(clock.now, lead, room, 1 << 20)[0] == {}
    acc.sent_done(b2)
    acc.requeue(b2, retry_at_s=clock.now)
    q = acc.queues[("t", 0)]
    assert [b.serial for b in q.batches][:2] == [b1.serial, b2.serial]
    out = acc.drain(clock.now, lead, room, 1 << 20)[0]
    assert out[1] == [b1]
    assert acc.drain(clock.now, lead, room, 1 << 20)[0] == {}  # one at a time while retrying
    acc.sent_done(b1)
    acc.complete(b1, 0, -1)
    assert acc.drain(clock.now, lead, room, 1 << 20)[0][1] == [b2]


async def test_expiry_and_memory_release():
    clock = Clock()
    acc, _ = make(clock)
    h = acc.append(("t", 0), None, b"x", None, 1, 40)
    acc.append(("t", 1), None, b"y", None, 1, 40)
    freed = []
    acc.on_freed = lambda: freed.append(acc.memory_used)
    clock.now += 2.0
    expired = acc.expired(clock.now)
    assert len(expired) == 2 and not acc.has_undrained()
    acc.fail(expired[0], RuntimeError("boom"))
    acc.complete(expired[1], 7, -1)
    assert acc.memory_used == 0 and freed == [40, 0]
    with pytest.raises(RuntimeError):
        await h
    assert acc.incomplete == set()


async def test_handle_metadata_offsets_and_timestamps():
    acc, _ = make(Clock())
    a = acc.append(("t", 0), b"k", b"a", None, 1000, 10)
    b = acc.append(("t", 0), None, b"b", None, 1005, 10)
    assert not a.done()
    acc.complete(a.batch, 40, -1)
    md_a, md_b = await a, await b
    assert (md_a.offset, md_a.timestamp) == (40, 1000)
    assert (md_b.offset, md_b.timestamp) == (41, 1005)
    assert b.result() == md_b and b.exception() is None
    c = acc.append(("t", 1), None, b"c", None, 1000, 10)
    acc.complete(c.batch, 3, 77)  # log-append time wins
    assert (await c).timestamp == 77


async def test_uniform_timestamp_batch_drops_records_after_delivery():
    acc, _ = make(Clock())
    h = acc.append(("t", 0), None, b"v" * 5, None, 1000, 10)
    acc.complete(h.batch, 0, -1)
    assert h.batch.records == []  # values freed; metadata still answers
    assert (await h).timestamp == 1000
    await asyncio.sleep(0)
