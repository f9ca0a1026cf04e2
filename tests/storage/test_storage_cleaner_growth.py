"""A compacted log does not grow with the number of batches ever written: runs of emptied
batches fold into one filler header per segment, producer state keeps its last batches, offsets
stay contiguous and the cleaned log reopens and replicates as it is."""
from __future__ import annotations

import pytest

from raftlog.codec import batch as B
from raftlog.replication.producer_state import ProducerStateTable
from raftlog.storage import PartitionLog
from raftlog.storage.cleaner import PRODUCER_BATCHES_KEPT

from test_storage_cleaner import OPTS, read_all, run_clean, write_log

BATCHES = 2000


def _log_bytes(log):
    return sum(s.size_bytes for s in log.segments())


def _headers(log):
    return list(log.iter_batch_headers())


@pytest.mark.parametrize("producer", [False, True])
def test_emptied_batches_fold_into_one_filler_per_segment(tmp_path, producer):
    d = str(tmp_path / "log")
    log = write_log(d, [(1000 + i, [(b"k", b"v%d" % i)]) for i in range(BATCHES)], producer)
    before = ProducerStateTable()
    before.rebuild(log.iter_batch_headers())
    run_clean(log, 10_000)
    assert read_all(log) == [(BATCHES - 1, b"k", b"v%d" % (BATCHES - 1))]
    heads = _headers(log)
    for a, b in zip(heads, heads[1:]):                       # contiguous, no gaps
        assert b.base_offset == a.next_offset
    assert heads[0].base_offset == 0 and heads[-1].next_offset == BATCHES
    sealed = len(log.segments()) - 1                         # the empty active one is last
    # one filler per segment, plus the batches producer state needs and the survivor
    assert len(heads) <= sealed + (PRODUCER_BATCHES_KEPT if producer else 0) + 1
    assert _log_bytes(log) < len(heads) * (B.HEADER_SIZE + 40)
    after = ProducerStateTable()
    after.rebuild(log.iter_batch_headers())
    assert after.producers == before.producers
    fillers = [h for h in heads if h.record_count == 0 and h.producer_id == B.NO_PRODUCER_ID]
    assert fillers and all(h.last_offset_delta >= 0 for h in fillers)

    # a replica fetching the cleaned log from scratch appends it unchanged
    rep = PartitionLog.open(str(tmp_path / "replica"), OPTS, now_ms=0)
    off = 0
    while off < log.log_end_offset:
        data = log.read(off, 1 << 20)
        rep.append_replica(bytearray(data), 10_000)
        off = [h for _p, h in B.iter_batches(data)][-1].next_offset
    end = log.log_end_offset
    log.close()
    with PartitionLog.open(d, OPTS, now_ms=0) as again:      # recovery accepts the fillers
        assert again.log_end_offset == end
        assert again.recovery_report.truncated_bytes == 0
        read_all_again = read_all(again)
        assert read_all_again == [(BATCHES - 1, b"k", b"v%d" % (BATCHES - 1))]
    assert rep.log_end_offset == end and read_all(rep) == read_all_again
    rep.close()


def test_cleaning_again_folds_fillers_with_newly_emptied_batches(tmp_path):
    d = str(tmp_path / "log")
    log = write_log(d, [(1000 + i, [(b"k", b"v%d" % i)]) for i in range(400)])
    run_clean(log, 10_000)
    first = len(_headers(log))
    for i in range(400, 800):
        log.append(bytearray(B.encode([(b"k", b"v%d" % i, None, 1000 + i)])), 0, 1000 + i)
    log.roll(10**6)
    run_clean(log, 10_000)
    assert read_all(log) == [(799, b"k", b"v799")]
    assert len(_headers(log)) <= len(log.segments())
    assert first <= len(log.segments())


def test_the_cleaner_keeps_as_many_batches_per_producer_as_producer_state_remembers():
    from raftlog.replication.producer_state import BATCHES_PER_PRODUCER
    assert PRODUCER_BATCHES_KEPT == BATCHES_PER_PRODUCER
