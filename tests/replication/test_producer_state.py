"""The dedupe table as a story: a producer's batches, its retries, gaps and a new epoch."""
import pytest

from raftlog.codec import batch
from raftlog.errors import (DuplicateSequenceNumberError, InvalidProducerEpochError,
                            OutOfOrderSequenceNumberError, UnknownProducerIdError)
from raftlog.replication.producer_state import BATCHES_PER_PRODUCER, ProducerStateTable


def hdr(seq, n=2, epoch=0, pid=7, base=0):
    b = bytearray(batch.encode([(None, b"v", None, 1)] * n, producer_id=pid,
                               producer_epoch=epoch, base_sequence=seq))
    batch.stamp(b, base, 0)
    return batch.peek(b)


def test_retries_are_found_and_gaps_refused():
    t = ProducerStateTable()
    assert t.check(hdr(0)) is None
    t.update(hdr(0, base=10))                       # offsets 10-11, seq 0-1
    assert t.check(hdr(2)) is None
    t.update(hdr(2, base=20))                       # offsets 20-21, seq 2-3
    dup = t.check(hdr(0))
    assert (dup.base_offset, dup.last_offset) == (10, 11)
    assert t.check(hdr(2)).base_offset == 20
    with pytest.raises(OutOfOrderSequenceNumberError):
        t.check(hdr(6))
    with pytest.raises(UnknownProducerIdError):
        t.check(hdr(4, pid=8))
    # only the last five batches are remembered; older sequences are DUPLICATE_SEQUENCE_NUMBER
    for i in range(BATCHES_PER_PRODUCER):
        t.update(hdr(4 + 2 * i, base=30 + 2 * i))
    with pytest.raises(DuplicateSequenceNumberError):
        t.check(hdr(0))


def test_new_epoch_restarts_at_zero_and_fences_the_old():
    t = ProducerStateTable()
    t.update(hdr(0, base=0))
    with pytest.raises(OutOfOrderSequenceNumberError):
        t.check(hdr(5, epoch=1))
    assert t.check(hdr(0, epoch=1)) is None
    t.update(hdr(0, epoch=1, base=5))
    with pytest.raises(InvalidProducerEpochError):
        t.check(hdr(2, epoch=0))


def test_rebuild_from_headers_gives_the_same_answers():
    headers = [hdr(0, base=0), hdr(2, base=2), hdr(4, base=4)]
    t = ProducerStateTable()
    t.rebuild(headers)
    assert t.check(hdr(2)).base_offset == 2
    assert t.check(hdr(6)) is None
