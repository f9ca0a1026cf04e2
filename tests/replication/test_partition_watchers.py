"""Long-poll watch futures never outlive their poll.

Regression of an audit finding: fetch long polls on idle partitions left their timed-out or
cancelled futures in `Partition._watchers`; only `wake()` cleared the list and an idle partition
never wakes, so every follower fetch round added one future per idle partition (a leak).
"""
import asyncio

from raftlog.codec import batch as batch_codec
from raftlog.replication.partition import Partition
from raftlog.server.handlers_data import _wait_any
from raftlog.storage.log import PartitionLog


def make(tmp_path, name="t"):
    p = Partition(name, 0, PartitionLog.open(str(tmp_path / f"{name}-0")), broker_id=1)
    p.become_leader(0, (1,), (1,), partition_epoch=0, now_ms=0)
    return p


async def test_timed_out_polls_on_idle_partitions_leave_no_futures(tmp_path):
    a, b = make(tmp_path, "a"), make(tmp_path, "b")
    for _ in range(500):
        await _wait_any([a, b], 0.0001)
    assert len(a._watchers) == 0 and len(b._watchers) == 0
    a.close()
    b.close()


async def test_cancelled_poll_leaves_no_future(tmp_path):
    p = make(tmp_path)
    task = asyncio.ensure_future(_wait_any([p], 60))
    while not p._watchers:                 # the poll has registered its future
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and len(p._watchers) == 0
    p.close()


async def test_a_wake_on_one_partition_unregisters_the_others(tmp_path):
    busy, idle = make(tmp_path, "busy"), make(tmp_path, "idle")
    task = asyncio.ensure_future(_wait_any([busy, idle], 60))
    while not (busy._watchers and idle._watchers):
        await asyncio.sleep(0)
    busy.append_leader(bytearray(batch_codec.encode([(None, b"v", None, 0)])), 1, 0)
    await asyncio.wait_for(task, 5)        # woken by the append, not by the 60 s timeout
    assert len(busy._watchers) == 0 and len(idle._watchers) == 0
    busy.close()
    idle.close()
