"""Log compaction: the property (latest value per key, original offsets, order, tombstones),
the dirty-ratio / lag / active-segment decisions, producer state across compaction, and a crash
injected at every step boundary of the swap followed by a reopen."""
from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftlog.codec import batch as B
from raftlog.replication.producer_state import ProducerStateTable
from raftlog.storage import LogOptions, PartitionLog
from raftlog.storage.cleaner import (CLEANED_SUFFIX, SWAP_MARKER, CleanConfig, CleanerState,
                                     clean, plan_clean, read_state)
from raftlog.storage.segment import SegmentInfo

OPTS = LogOptions(segment_bytes=600, index_interval_bytes=128)
CFG = CleanConfig(delete_retention_ms=1000, min_cleanable_dirty_ratio=0.0,
                  min_compaction_lag_ms=0)


def write_log(d, batches, producer=False):
    """batches: list of (timestamp, [(key, value), ...]); returns the open log."""
    log = PartitionLog.open(d, OPTS, now_ms=0)
    seq = 0
    for ts, recs in batches:
        kw = {}
        if producer:
            kw = dict(producer_id=7, producer_epoch=0, base_sequence=seq)
            seq += len(recs)
        log.append(bytearray(B.encode([(k, v, None, ts) for k, v in recs], **kw)), 0, ts)
    log.roll(10**6)
    return log


def read_all(log):
    out, off = [], log.log_start_offset
    while off < log.log_end_offset:
        data = log.read(off, 1 << 20)
        recs = [r for r in B.decode(data) if r.offset >= off]
        out.extend((r.offset, r.key, r.value) for r in recs)
        last = None
        for _p, h in B.iter_batches(data):
            last = h
        off = last.next_offset
    return out


def expected(batches, now, cfg=CFG):
    latest = {}
    off = 0
    for ts, recs in batches:
        for k, v in recs:
            latest[k] = (off, k, v, ts)
            off += 1
    keep = [(o, k, v) for o, k, v, ts in latest.values()
            if not (v is None and ts < now - cfg.delete_retention_ms)]
    return sorted(keep)


def run_clean(log, now, cfg=CFG, step=None):
    segs = log.segments()
    plan = plan_clean(segs, log.log_start_offset, log.log_end_offset,
                      read_state(log.directory), now, cfg)
    if plan is None:
        return None
    kw = {} if step is None else {"step": step}
    new, stats = clean(log.directory, plan, now, cfg, log.options, **kw)
    log.install_cleaned(new)
    return stats


batch_st = st.tuples(
    st.integers(0, 5000),
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"]),
                       st.one_of(st.none(), st.binary(min_size=1, max_size=40))),
             min_size=1, max_size=8))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(batch_st, min_size=1, max_size=30), now=st.integers(0, 8000))
def test_compaction_keeps_latest_per_key_at_original_offsets(tmp_path_factory, batches, now):
    d = str(tmp_path_factory.mktemp("c"))
    log = write_log(d, batches, producer=True)
    before_producers = ProducerStateTable()
    before_producers.rebuild(log.iter_batch_headers())
    run_clean(log, now)
    want = expected(batches, now)
    assert read_all(log) == want
    after = ProducerStateTable()
    after.rebuild(log.iter_batch_headers())
    assert after.producers == before_producers.producers  # sequence ranges survive
    end = log.log_end_offset
    log.close()
    with PartitionLog.open(d, OPTS, now_ms=0) as again:   # recovery accepts cleaned segments
        assert again.log_end_offset == end
        assert read_all(again) == want
        assert again.recovery_report.truncated_bytes == 0


def test_decisions_active_hw_lag_ratio():
    def s(base, nxt, size=100, ts=0, active=False):
        return SegmentInfo(base, nxt, size, ts, 0, ts, active)   # appended when stamped

    def at(first_dirty):
        return CleanerState(first_dirty, None)
    segs = [s(0, 10), s(10, 20), s(20, 30, ts=900), s(30, 40, active=True)]
    p = plan_clean(segs, 0, 40, at(0), 1000, CFG)
    assert [x.base_offset for x in p.segments] == [0, 10, 20] and p.end_offset == 30
    assert plan_clean(segs, 0, 15, at(0), 1000, CFG).end_offset == 10           # below the HW
    lag = CFG._replace(min_compaction_lag_ms=500)
    assert plan_clean(segs, 0, 40, at(0), 1000, lag).end_offset == 20           # too young
    ratio = CFG._replace(min_cleanable_dirty_ratio=0.5)
    assert plan_clean(segs, 0, 40, at(20), 1000, ratio) is None                 # 1/3 dirty
    assert plan_clean(segs, 0, 40, at(10), 1000, ratio).dirty_ratio == pytest.approx(2 / 3)
    assert plan_clean(segs, 0, 40, at(30), 1000, CFG) is None                   # all clean


def test_expired_tombstone_goes_from_a_quiet_log_below_the_dirty_ratio(tmp_path):
    """The first pass keeps a fresh tombstone and records its timestamp; with no new writes the
    log never gets dirty again, yet once delete.retention.ms has passed it is cleaned again and
    the tombstone goes."""
    d = str(tmp_path)
    cfg = CFG._replace(min_cleanable_dirty_ratio=0.5)       # delete.retention.ms = 1000
    batches = [(100, [(b"a", b"1"), (b"b", b"2")]), (1000, [(b"a", None)]),
               (1200, [(b"c", b"3")])]
    log = write_log(d, batches)
    assert run_clean(log, 1500, cfg) is not None           # dirty: cleaned, tombstone kept
    assert read_all(log) == [(1, b"b", b"2"), (2, b"a", None), (3, b"c", b"3")]
    assert read_state(d) == CleanerState(4, 1000)
    assert run_clean(log, 2000, cfg) is None               # not dirty, tombstone not expired
    stats = run_clean(log, 2001, cfg)                      # 1000 < 2001 - 1000: expired
    assert stats is not None and stats.oldest_tombstone_ms is None
    assert read_all(log) == [(1, b"b", b"2"), (3, b"c", b"3")]
    assert read_state(d) == CleanerState(4, None)
    assert run_clean(log, 10**6, cfg) is None              # nothing left to trigger a pass
    log.close()


def test_decision_expired_tombstone_overrides_the_dirty_ratio():
    segs = [SegmentInfo(0, 10, 100, 0, 0, 0, False), SegmentInfo(10, 20, 100, 0, 0, 0, True)]
    ratio = CFG._replace(min_cleanable_dirty_ratio=0.5)    # delete.retention.ms = 1000
    assert plan_clean(segs, 0, 20, CleanerState(10, 500), 1500, ratio) is None
    p = plan_clean(segs, 0, 20, CleanerState(10, 499), 1500, ratio)
    assert p is not None and p.end_offset == 10 and p.dirty_ratio == 0


def test_active_segment_untouched_and_dirty_ratio_checkpoint(tmp_path):
    d = str(tmp_path)
    batches = [(0, [(b"k", b"v%d" % i)]) for i in range(40)]
    log = write_log(d, batches)
    log.append(bytearray(B.encode([(b"k", b"active", None, 0), (b"k", b"active2", None, 0)])),
               0, 0)
    assert run_clean(log, 100) is not None
    assert read_all(log) == [(39, b"k", b"v39"), (40, b"k", b"active"), (41, b"k", b"active2")]
    assert read_state(d) == CleanerState(40, None)
    assert run_clean(log, 100) is None       # nothing dirty any more
    log.close()


def test_keyless_records_survive(tmp_path):
    log = write_log(str(tmp_path), [(0, [(None, b"x"), (b"k", b"1")]), (0, [(b"k", b"2")])])
    run_clean(log, 0)
    assert read_all(log) == [(0, None, b"x"), (2, b"k", b"2")]
    log.close()


class Crash(Exception):
    pass


def _contents(d):
    with PartitionLog.open(d, OPTS, now_ms=0) as log:
        assert not [n for n in os.listdir(d) if n.endswith(CLEANED_SUFFIX)]
        assert not os.path.exists(os.path.join(d, SWAP_MARKER))
        return read_all(log)


def test_crash_at_every_step_leaves_old_or_new(tmp_path):
    src = str(tmp_path / "src")
    batches = [(0, [(b"k%d" % (i % 5), b"v%d" % i), (b"k%d" % (i % 3), None)]) for i in range(60)]
    write_log(src, batches).close()
    original = _contents(src)
    steps: list[str] = []
    probe = str(tmp_path / "probe")
    shutil.copytree(src, probe)
    log = PartitionLog.open(probe, OPTS, now_ms=0)
    run_clean(log, 10**9, step=steps.append)
    cleaned = read_all(log)
    log.close()
    assert cleaned == expected(batches, 10**9) and cleaned != original
    assert "committed" in steps and len(steps) > 6
    commit_at = steps.index("committed")
    for i, name in enumerate(steps):
        d = str(tmp_path / f"crash-{i}")
        shutil.copytree(src, d)
        log = PartitionLog.open(d, OPTS, now_ms=0)

        def boom(s, name=name):
            if s == name:
                raise Crash(s)
        with pytest.raises(Crash):
            run_clean(log, 10**9, step=boom)
        for seg in log._segments:      # a crash: no orderly close, just the fds gone
            if seg.fd >= 0:
                os.close(seg.fd)
                seg.fd = -1
        got = _contents(d)
        assert got == (cleaned if i >= commit_at else original), f"crash at {name}"


def test_clients_read_compacted_batches_at_original_offsets():
    from raftlog.client.fetcher import decode_records
    from raftlog.storage.cleaner import rewrite_batch
    data = B.encode([(b"a", b"1", None, 5), (b"b", b"2", None, 5), (b"a", b"3", None, 6),
                     (b"c", None, None, 6)], base_offset=10, producer_id=3, producer_epoch=0,
                    base_sequence=0)
    h = B.peek(data)
    new, n, kept, tomb = rewrite_batch(h, data, {b"a": 12, b"b": 11, b"c": 13},
                                       tombstone_horizon_ms=0)
    assert (n, kept, tomb) == (4, 3, True)
    nh = B.peek(new)
    assert (nh.base_offset, nh.last_offset_delta, nh.record_count, nh.base_sequence) == \
        (10, 3, 3, 0)
    assert [(r.offset, r.value) for r in B.decode(new)] == [(11, b"2"), (12, b"3"), (13, None)]
    got = decode_records("t", 0, new, 12)
    assert [(r.offset, r.value, r.timestamp) for r in got] == [(12, b"3", 6), (13, None, 6)]
    got = decode_records("t", 0, new, 0)
    assert [r.offset for r in got] == [11, 12, 13]
