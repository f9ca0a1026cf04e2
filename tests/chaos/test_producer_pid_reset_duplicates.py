"""Found by the chaos harness (`--nemesis loss --seed 1`: 9 values written twice, at two offsets,
by one idempotent producer): when a sequence breaks on one partition, the producer takes a new
producer id and re-sequences *every* pending batch (Sender._reset_producer_id), including
batches of other partitions that were already sent and written but whose answers were lost.
Sent again under the new producer id, the broker cannot recognise them: duplicates.

Minimal reproduction on the in-process FakeCluster: partition 1's batch is applied but its
answer is lost (retry pending), then partition 0's next batch is answered
OUT_OF_ORDER_SEQUENCE_NUMBER; after the reset, partition 1's batch is written a second time.

Fixed: a reset re-sequences only the partitions whose sequence broke; batches already sent on
other partitions keep their producer id and sequence, so their retries are recognised.
"""
import asyncio


from raftlog import Producer
from raftlog.errors import ErrorCode
from raftlog.testing.cluster import eventually
from raftlog.testing.fake_broker import FakeCluster


async def test_pid_reset_does_not_duplicate_a_written_batch_of_another_partition():
    async with FakeCluster(nodes=2) as fc:
        fc.create_topic("t", partitions=2)          # p0 led by node 1, p1 by node 2
        async with Producer(fc.bootstrap, acks="all", linger_ms=0, retry_backoff_ms=400,
                            delivery_timeout_ms=10_000) as p:
            await p.send("t", b"a0", partition=0)
            await p.send("t", b"b0", partition=1)
            fc.lose_responses("produce", 1)
            b1 = p.send("t", b"b1", partition=1)     # applied on node 2, answer lost: retry
            await eventually(lambda: b"b1" in [r.value for r in fc.records("t", 1)], 5,
                             "b1 written on node 2 (its answer lost)")
            fc.fail_next("produce", ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, topic="t",
                         partition=0)
            a1 = p.send("t", b"a1", partition=0)     # the sequence breaks on partition 0
            await asyncio.gather(a1, b1, return_exceptions=True)
            values = [r.value for r in fc.records("t", 1)]
            assert values.count(b"b1") == 1, f"partition 1 holds {values}"
