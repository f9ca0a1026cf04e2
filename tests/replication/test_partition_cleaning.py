"""A follower never deletes or truncates segments its cleaner is rewriting.

The cleaner swaps its rewritten files over the originals' names from a worker thread; a log
start moved (or a tail truncated) under it meanwhile would have the swap recreate removed files.
So while `cleaning_end` is set the follower defers both, and catches up on the next fetch.
"""
from raftlog.codec import batch as batch_codec
from raftlog.replication.partition import Partition
from raftlog.storage.log import PartitionLog
from raftlog.storage.options import LogOptions


def follower_with_segments(tmp_path, n=4):
    plog = PartitionLog.open(str(tmp_path / "t-0"), LogOptions(segment_bytes=64))
    p = Partition("t", 0, plog, broker_id=2)
    p.become_follower(1, 0, (1, 2), (1, 2), partition_epoch=0)
    for i in range(n):      # one batch per segment: each batch is over 64 bytes
        b = batch_codec.encode([(b"k%d" % i, b"v%d" % i, None, 0)], base_offset=i, leader_epoch=0)
        p.append_follower(b, leader_hw=i + 1, leader_log_start=0, now_ms=0)
    return p


def test_log_start_move_waits_for_the_clean(tmp_path):
    p = follower_with_segments(tmp_path)
    assert p.log_end_offset == 4 and len(p.log.segments()) >= 4
    p.cleaning_end = 3
    p.append_follower(b"", leader_hw=4, leader_log_start=2, now_ms=0)
    assert p.log_start_offset == 0                 # deferred while the cleaner holds [0, 3)
    p.cleaning_end = None
    p.append_follower(b"", leader_hw=4, leader_log_start=2, now_ms=0)
    assert p.log_start_offset == 2
    p.log.finish_deletes()
    p.close()


def test_divergence_truncation_into_the_cleaned_range_waits(tmp_path):
    p = follower_with_segments(tmp_path)
    p.cleaning_end = 3
    assert p.truncate_for_divergence(0, 2) is None  # would cut [2, 3): not now
    assert p.log_end_offset == 4
    assert p.truncate_for_divergence(0, 3) == 3     # above the cleaned range: at once
    assert p.log_end_offset == 3
    p.cleaning_end = None
    assert p.truncate_for_divergence(0, 2) == 2
    assert p.log_end_offset == 2
    p.close()
