"""Retention: the pure segment decisions (time, size, HW, active segment, quiet-topic roll) and
their effect on a real PartitionLog (delete_before, reads below the log start, reconfigure)."""
from __future__ import annotations

import pytest

from raftlog.codec import batch as B
from raftlog.storage import LogOptions, OffsetOutOfRangeError, PartitionLog
from raftlog.storage.retention import retention_cutoff, roll_due, segment_age_ts
from raftlog.storage.segment import SegmentInfo


def seg(base, nxt, size=100, max_ts=1000, active=False, created=1000, last=1000):
    return SegmentInfo(base, nxt, size, max_ts, created, last, active)


def test_time_retention_deletes_expired_prefix_only():
    segs = [seg(0, 10, max_ts=100), seg(10, 20, max_ts=5000, last=5000), seg(20, 30, max_ts=100),
            seg(30, 40, active=True, max_ts=100)]
    # first expired, second not: stop there even though the third is expired again
    assert retention_cutoff(segs, 0, 40, now_ms=6000, retention_ms=2000,
                            retention_bytes=-1) == 10
    assert retention_cutoff(segs, 0, 40, now_ms=8000, retention_ms=2000,
                            retention_bytes=-1) == 30  # never the active one
    assert retention_cutoff(segs, 0, 40, now_ms=8000, retention_ms=-1,
                            retention_bytes=-1) is None


def test_never_at_or_above_high_watermark():
    segs = [seg(0, 10, max_ts=0), seg(10, 20, max_ts=0), seg(20, 30, active=True)]
    assert retention_cutoff(segs, 0, 15, 10_000, 1, -1) == 10
    assert retention_cutoff(segs, 0, 9, 10_000, 1, -1) is None
    assert retention_cutoff(segs, 0, 20, 10_000, 1, -1) == 20


def test_size_retention_keeps_at_least_retention_bytes():
    segs = [seg(0, 10, 100), seg(10, 20, 100), seg(20, 30, 100), seg(30, 40, 50, active=True)]
    # total 350; limit 200: deleting the first leaves 250 >= 200, the second would leave 150
    assert retention_cutoff(segs, 0, 40, 0, -1, 200) == 10
    assert retention_cutoff(segs, 0, 40, 0, -1, 150) == 20
    assert retention_cutoff(segs, 0, 40, 0, -1, 0) == 30
    assert retention_cutoff(segs, 0, 40, 0, -1, 1000) is None
    # segments already below the log start do not count
    assert retention_cutoff(segs, 10, 40, 0, -1, 150) == 20


def test_empty_timestamp_falls_back_to_last_append():
    segs = [seg(0, 10, max_ts=-1, last=100), seg(10, 20, active=True)]
    assert retention_cutoff(segs, 0, 20, 1000, 500, -1) == 10
    assert retention_cutoff(segs, 0, 20, 500, 500, -1) is None


def test_future_stamped_segment_is_judged_by_its_last_append():
    # One record stamped ~3 years ahead must not pin its segment and every later one.
    now = 10_000_000
    segs = [seg(0, 10, max_ts=now + 10**11, last=1000), seg(10, 20, max_ts=1000, last=1000),
            seg(20, 30, max_ts=now, last=now), seg(30, 40, active=True, max_ts=now, last=now)]
    assert retention_cutoff(segs, 0, 40, now, 60_000, -1) == 20
    # a recent last append keeps the future-stamped segment (and what follows) until it ages
    segs[0] = seg(0, 10, max_ts=now + 10**11, last=now - 1000)
    assert retention_cutoff(segs, 0, 40, now, 60_000, -1) is None
    assert retention_cutoff(segs, 0, 40, now + 60_000, 60_000, -1) == 20


def test_segment_age_ts_uses_record_time_when_not_in_the_future():
    assert segment_age_ts(seg(0, 10, max_ts=500, last=1000)) == 500
    assert segment_age_ts(seg(0, 10, max_ts=1000, last=1000)) == 1000
    assert segment_age_ts(seg(0, 10, max_ts=1001, last=1000)) == 1000
    assert segment_age_ts(seg(0, 10, max_ts=-1, last=1000)) == 1000


def test_roll_due():
    assert roll_due(seg(0, 5, active=True, created=1000), 2001, 1000)
    assert not roll_due(seg(0, 5, active=True, created=1000), 2000, 1000)
    assert not roll_due(seg(0, 0, size=0, active=True, created=0), 10**9, 1000)


def _fill(log, n, ts):
    for i in range(n):
        log.append(bytearray(B.encode([(b"k", b"v" * 50, None, ts)])), 0, ts)


def test_log_retention_end_to_end(tmp_path):
    log = PartitionLog.open(str(tmp_path), LogOptions(segment_bytes=400), now_ms=0)
    _fill(log, 20, ts=1000)
    segs = log.segments()
    assert len(segs) > 3
    hw = log.log_end_offset
    cut = retention_cutoff(segs, log.log_start_offset, hw, 10_000, 5000, -1)
    assert cut == segs[-2].next_offset
    log.delete_before(cut)
    assert len(log.segments()) == 1 and log.log_start_offset == cut
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 1000)
    assert B.decode(log.read(cut, 1 << 20))[0].offset == cut
    log.close()
    # the new log start survives a reopen
    with PartitionLog.open(str(tmp_path), LogOptions(segment_bytes=400), now_ms=0) as again:
        assert again.log_start_offset == cut


def test_quiet_topic_roll_then_time_retention(tmp_path):
    log = PartitionLog.open(str(tmp_path), LogOptions(segment_bytes=1 << 20), now_ms=0)
    _fill(log, 3, ts=1000)
    assert len(log.segments()) == 1  # everything in the active segment: nothing can go
    assert retention_cutoff(log.segments(), 0, 3, 100_000, 10, -1) is None
    log.reconfigure(segment_ms=50)   # topic alter segment.ms at runtime
    assert log.options.segment_ms == 50
    assert roll_due(log.segments()[-1], 100_000, log.options.segment_ms)
    log.roll(100_000)
    cut = retention_cutoff(log.segments(), 0, 3, 100_000, 10, -1)
    assert cut == 3
    log.delete_before(cut)
    assert log.log_start_offset == 3 == log.log_end_offset
    log.close()
