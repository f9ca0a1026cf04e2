"""acks=all waiters never outlive the leader epoch whose append they wait for.

Regression of chaos run pause-s14: a paused leader resumed, appended queued batches, flushed
(an await), lost leadership and truncated them, then led again in a later epoch whose high
watermark passed those offsets — and the produce answers said "committed" for records that no
longer existed (14 lost writes).
"""
import pytest

from raftlog.codec import batch as batch_codec
from raftlog.errors import RaftlogError
from raftlog.replication.partition import Partition
from raftlog.storage.log import PartitionLog


def make(tmp_path):
    p = Partition("t", 0, PartitionLog.open(str(tmp_path / "t-0")), broker_id=1)
    p.become_leader(0, (1,), (1,), partition_epoch=0, now_ms=0)
    return p


def append(p, value):
    b = bytearray(batch_codec.encode([(None, value, None, 0)]))
    return p.append_leader(b, -1, 0)


async def test_waiter_registered_after_a_role_change_fails_instead_of_passing(tmp_path):
    p = make(tmp_path)
    res = append(p, b"queued-during-pause")
    epoch = p.leader_epoch
    # (the handler awaits the flush here) leadership moves away, and comes back later
    p.become_follower(2, 1, (1, 2), (2,), partition_epoch=1)
    p.become_leader(2, (1,), (1,), partition_epoch=2, now_ms=0)
    assert p.hw >= res.last_offset + 1          # the new epoch's HW passes the old offsets
    with pytest.raises(RaftlogError) as exc:
        await p.wait_committed(res.last_offset + 1, epoch)
    assert exc.value.code.name == "NOT_LEADER_OR_FOLLOWER"
    p.close()


async def test_waiters_of_an_older_epoch_fail_when_leading_again_in_a_newer_one(tmp_path):
    p = make(tmp_path)
    p.update_membership((1, 2), (1, 2), 0)       # follower 2 in the ISR holds the HW back
    res = append(p, b"waiting")
    fut = p.wait_committed(res.last_offset + 1, p.leader_epoch)
    assert not fut.done()
    p.become_leader(3, (1,), (1,), partition_epoch=3, now_ms=0)   # straight to a newer epoch
    with pytest.raises(RaftlogError) as exc:
        await fut
    assert exc.value.code.name == "NOT_LEADER_OR_FOLLOWER"
    p.close()
