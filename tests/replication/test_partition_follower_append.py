"""A follower appends what its leader's log holds, checking framing and CRC only.

The produce path validates a client's batch fully (codec/batch.validate: records payload
included); the replica path must accept every batch a leader may legitimately hold, or the
follower stalls on it forever and drops out of the ISR: the leader's epoch-start control
batches, the log cleaner's compacted batches (fewer records than offsets, maybe none), and a
batch some older leader accepted before validate checked records. As Kafka's follower (which
does not run LogValidator), it refuses only what would corrupt its own log: a broken CRC, bad
framing, offsets that do not continue the log.
"""
import struct
import time

import pytest
from crc32c import crc32c

from raftlog.codec import batch as B
from raftlog.errors import CorruptBatchError
from raftlog.replication.partition import Partition, epoch_start_batch
from raftlog.storage.log import PartitionLog

NOW = int(time.time() * 1000)
EPOCH = 3


def follower(tmp_path):
    p = Partition("t", 0, PartitionLog.open(str(tmp_path / "t-0")), broker_id=1)
    p.become_follower(2, EPOCH, (1, 2), (1, 2), partition_epoch=0)
    return p


def stamped(batch: bytes, base: int) -> bytes:
    b = bytearray(batch)
    B.stamp(b, base, EPOCH)
    return bytes(b)


def compacted(last_offset_delta: int, kept: list[tuple[int, bytes]]) -> bytes:
    """A cleaned batch: `kept` (offset delta, value) records of an original batch that spanned
    last_offset_delta + 1 offsets; records carry their offset delta as a 5th element."""
    payload = B.pack([(0, b"k", v, None, d) for d, v in kept])
    b = bytearray(B.encode_payload(payload, max(len(kept), 1), NOW, NOW))
    struct.pack_into(">i", b, 23, last_offset_delta)
    struct.pack_into(">i", b, 57, len(kept))
    struct.pack_into(">I", b, 17, crc32c(bytes(b[B.CRC_START:])))
    return bytes(b)


def test_follower_appends_control_compacted_and_legacy_batches_byte_for_byte(tmp_path):
    p = follower(tmp_path)
    legacy = B.encode_payload(B.pack([(0, None, b"x", None)]), 1000, NOW, NOW)  # says 1000
    with pytest.raises(CorruptBatchError):
        B.validate(legacy)                 # a leader refuses it from a client today
    parts = [stamped(bytes(epoch_start_batch(NOW)), 0),          # offset 0
             stamped(legacy, 1),                                  # offsets 1..1000
             stamped(compacted(4, [(1, b"a"), (4, b"b")]), 1001),  # offsets 1001..1005
             stamped(compacted(2, []), 1006)]                     # offsets 1006..1008, no record
    buf = b"".join(parts)
    p.append_follower(buf, leader_hw=1009, leader_log_start=0, now_ms=NOW)
    assert p.log_end_offset == 1009 and p.hw == 1009
    assert p.log.read(0, 1 << 20) == buf   # the leader's bytes, unchanged
    assert [(r.offset, r.value) for r in B.decode(p.log.read(1001, 1 << 20))] \
        == [(1002, b"a"), (1005, b"b")]
    p.close()


def test_follower_refuses_a_broken_crc_and_keeps_its_log(tmp_path):
    p = follower(tmp_path)
    good = stamped(B.encode([(None, b"v", None, NOW)]), 0)
    bad = bytearray(stamped(B.encode([(None, b"w", None, NOW)]), 1))
    bad[-2] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="CRC"):
        p.append_follower(good + bytes(bad), leader_hw=2, leader_log_start=0, now_ms=NOW)
    assert p.log_end_offset == 0
    p.append_follower(good, leader_hw=1, leader_log_start=0, now_ms=NOW)
    assert p.log_end_offset == 1
    p.close()
