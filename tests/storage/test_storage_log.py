"""PartitionLog unit tests: every public call, with exact offsets and bytes.

Goal: pin the contract the replication and server layers rely on (offsets, stamping, read
boundaries, truncation to batch boundaries, log start, time lookup, flush, checkpoints).
Method: small segments and index intervals so a few batches cross segment and index
boundaries; every assertion compares bytes or offsets against values computed independently.
"""
from __future__ import annotations

import os
import threading

import pytest

from raftlog.codec import batch as B
from raftlog.errors import ConfigError, CorruptBatchError, ErrorCode
from raftlog.storage import checkpoint
from raftlog.storage import (EpochOrderError, LogClosedError, LogOptions, MessageTooLargeError,
                             OffsetOutOfRangeError, PartitionLog, UnexpectedAppendOffsetError)
from storagetest_util import make_batch, restamp

SMALL = LogOptions(segment_bytes=1024, index_interval_bytes=128)


def open_log(path, options: LogOptions = SMALL, now_ms: int = 0) -> PartitionLog:
    return PartitionLog.open(str(path), options, now_ms)


def fill(log: PartitionLog, n: int, records: int = 3, epoch: int = 0, ts: int = 1000,
         now_ms: int = 0) -> list[bytes]:
    """Append n batches; returns their stamped bytes."""
    out = []
    for i in range(n):
        buf = bytearray(make_batch(records, ts=ts + i, seed=i))
        log.append(buf, epoch, now_ms)
        out.append(bytes(buf))
    return out


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"segment_bytes": 10}, {"segment_bytes": 1 << 31}, {"index_interval_bytes": 0},
    {"flush_policy": "never"}, {"max_batch_bytes": 10}, {"segment_ms": 0},
    {"flush_interval_ms": -1}, {"segment_bytes": 1.5},
])
def test_options_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError) as info:
        LogOptions(**kwargs)
    assert info.value.hint["key"] == next(iter(kwargs))


def test_option_defaults_are_kafkas() -> None:
    o = LogOptions()
    assert (o.segment_bytes, o.segment_ms, o.index_interval_bytes, o.max_batch_bytes) == (
        1 << 30, 7 * 24 * 3600 * 1000, 4096, 1 << 20)
    assert o.flush_policy == "fsync"


# -- leader append ------------------------------------------------------------------------------
def test_append_stamps_in_place_and_stores_verbatim(tmp_path) -> None:
    log = open_log(tmp_path)
    first = bytearray(make_batch(3))
    r1 = log.append(first, 4, now_ms=10)
    assert (r1.base_offset, r1.last_offset, r1.log_end_offset, r1.position) == (0, 2, 3, 0)
    assert B.peek(first).base_offset == 0 and B.peek(first).leader_epoch == 4
    second = make_batch(2, seed=1)  # immutable input: stored stamped, caller's bytes untouched
    r2 = log.append(second, 4, now_ms=11)
    assert (r2.base_offset, r2.last_offset, r2.log_end_offset, r2.position) == (3, 4, 5, len(first))
    assert B.peek(second).base_offset == 0
    assert bytes(log.read(0, 1 << 20)) == bytes(first) + restamp(second, 3, 4)
    assert [r.offset for r in B.decode(log.read(0, 1 << 20))] == [0, 1, 2, 3, 4]
    assert log.log_end_offset == 5 and log.epoch_entries == ((4, 0),)


def test_append_buffer_of_several_batches(tmp_path) -> None:
    log = open_log(tmp_path)
    parts = [make_batch(n, seed=n) for n in (1, 4, 2)]
    buf = bytearray(b"".join(parts))
    r = log.append(buf, 1, 0)
    assert (r.base_offset, r.last_offset, r.batch_count, r.size_bytes) == (0, 6, 3, len(buf))
    assert [(p, h.base_offset, h.leader_epoch) for p, h in B.iter_batches(buf)] == [
        (0, 0, 1), (len(parts[0]), 1, 1), (len(parts[0]) + len(parts[1]), 5, 1)]
    assert bytes(log.read(5, 1 << 20)) == bytes(buf[len(parts[0]) + len(parts[1]):])


@pytest.mark.parametrize("bad", [
    lambda b: b + b[:20],                                                  # torn trailing batch
    lambda b: b[:-1],                                                      # short
    lambda b: bytes(b[:16]) + b"\x07" + bytes(b[17:]),                     # bad magic
    lambda b: bytes(b[:57]) + (9).to_bytes(4, "big") + bytes(b[61:]),     # count mismatch
    lambda b: b"",                                                         # empty
])
def test_append_refuses_malformed_buffers_and_writes_nothing(tmp_path, bad) -> None:
    log = open_log(tmp_path)
    fill(log, 2)
    before = bytes(log.read(0, 1 << 20))
    with pytest.raises(CorruptBatchError):
        log.append(bad(make_batch(3)), 0, 0)
    assert log.log_end_offset == 6 and bytes(log.read(0, 1 << 20)) == before


def test_append_over_size_limit(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions(max_batch_bytes=200))
    with pytest.raises(MessageTooLargeError):
        log.append(make_batch(3, value_bytes=200), 0, 0)
    assert log.log_end_offset == 0


def test_append_with_older_epoch_is_refused(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 1, epoch=5)
    with pytest.raises(EpochOrderError) as info:
        log.append(make_batch(), 4, 0)
    assert info.value.code == ErrorCode.FENCED_LEADER_EPOCH and info.value.hint == {
        "latest_epoch": 5}
    assert log.log_end_offset == 3
    log.append(make_batch(), 7, 0)
    assert log.epoch_entries == ((5, 0), (7, 3))


# -- follower append ----------------------------------------------------------------------------
def test_append_replica_keeps_offsets_and_records_epochs(tmp_path) -> None:
    log = open_log(tmp_path)
    a, b, c = (restamp(make_batch(2, seed=i), base, ep)
               for i, (base, ep) in enumerate([(0, 1), (2, 1), (4, 3)]))
    r = log.append_replica(a + b + c, now_ms=0)
    assert (r.base_offset, r.last_offset, r.log_end_offset, r.batch_count) == (0, 5, 6, 3)
    assert bytes(log.read(0, 1 << 20)) == a + b + c
    assert log.epoch_entries == ((1, 0), (3, 4))
    assert log.append_replica(b"", 0).batch_count == 0


def test_append_replica_refuses_wrong_offsets(tmp_path) -> None:
    log = open_log(tmp_path)
    log.append_replica(restamp(make_batch(2), 0, 1), 0)
    with pytest.raises(UnexpectedAppendOffsetError) as info:
        log.append_replica(restamp(make_batch(2), 3, 1), 0)  # gap
    assert info.value.hint == {"expected_offset": 2, "got_offset": 3}
    with pytest.raises(UnexpectedAppendOffsetError):
        log.append_replica(restamp(make_batch(2), 0, 1), 0)  # backwards
    ok, backwards = restamp(make_batch(2), 2, 1), restamp(make_batch(2), 1, 1)
    with pytest.raises(UnexpectedAppendOffsetError):
        log.append_replica(ok + backwards, 0)  # second batch goes back: nothing written
    assert log.log_end_offset == 2


def test_append_replica_checks_crc_and_epoch_order(tmp_path) -> None:
    log = open_log(tmp_path)
    log.append_replica(restamp(make_batch(2), 0, 3), 0)
    flipped = bytearray(restamp(make_batch(2), 2, 3))
    flipped[-1] ^= 1
    with pytest.raises(CorruptBatchError, match="CRC"):
        log.append_replica(bytes(flipped), 0)
    with pytest.raises(EpochOrderError):
        log.append_replica(restamp(make_batch(2), 2, 2), 0)
    assert log.log_end_offset == 2 and log.epoch_entries == ((3, 0),)


# -- reads --------------------------------------------------------------------------------------
def test_read_boundaries(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions(index_interval_bytes=64))
    bs = fill(log, 6)                     # offsets 0..17, three per batch
    size = len(bs[0])
    assert bytes(log.read(4, 1)) == bs[1]                   # first batch even over max_bytes
    assert bytes(log.read(4, size * 2)) == bs[1] + bs[2]    # exactly two fit
    assert bytes(log.read(4, size * 2 - 1)) == bs[1]        # the second does not fit
    assert bytes(log.read(3, 1 << 20)) == b"".join(bs[1:])
    assert bytes(log.read(4, 1 << 20, upper_bound=9)) == bs[1] + bs[2]   # 9 = base of bs[3]
    assert bytes(log.read(4, 1 << 20, upper_bound=8)) == bs[1]           # bs[2] ends at 8
    assert bytes(log.read(4, 1 << 20, upper_bound=5)) == b""             # bs[1] ends at 5
    assert bytes(log.read(4, 1 << 20, upper_bound=4)) == b""
    assert log.read(18, 100) == b""
    for bad in (-1, 19):
        with pytest.raises(OffsetOutOfRangeError) as info:
            log.read(bad, 100)
        assert info.value.hint == {"log_start_offset": 0, "log_end_offset": 18}
        assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE


def test_read_stays_within_one_segment(tmp_path) -> None:
    log = open_log(tmp_path)  # 1024-byte segments
    bs = fill(log, 30)
    seg = log.segments()[0]
    per_seg = (seg.next_offset - seg.base_offset) // 3
    assert len(log.segments()) > 3
    assert bytes(log.read(0, 1 << 20)) == b"".join(bs[:per_seg])
    assert bytes(log.read(seg.next_offset, 1 << 20)) == b"".join(bs[per_seg:2 * per_seg])


def test_every_offset_reads_its_batch(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions(segment_bytes=2000, index_interval_bytes=150))
    bs = []
    for i in range(40):  # uneven batch sizes so index entries fall irregularly
        buf = bytearray(make_batch(1 + i % 4, value_bytes=5 + 7 * (i % 5), seed=i))
        log.append(buf, 0, 0)
        bs.append(bytes(buf))
    for off in range(log.log_end_offset):
        got = bytes(log.read(off, 1))
        h = B.peek(got)
        assert h.base_offset <= off <= h.last_offset and got in bs


# -- rolling and segment info -------------------------------------------------------------------
def test_roll_on_size_names_files_by_base_offset(tmp_path) -> None:
    log = open_log(tmp_path)
    bs = fill(log, 30)
    infos = log.segments()
    assert [i.is_active for i in infos] == [False] * (len(infos) - 1) + [True]
    for a, b in zip(infos, infos[1:]):
        assert a.next_offset == b.base_offset and a.size_bytes <= 1024
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".log"))
    assert names == [f"{i.base_offset:020d}.log" for i in infos]
    assert all(os.path.getsize(tmp_path / n) == i.size_bytes for n, i in zip(names, infos))
    assert sum(i.size_bytes for i in infos) == sum(map(len, bs))


def test_batch_larger_than_segment_gets_its_own_segment(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions(segment_bytes=100))
    fill(log, 3)  # each batch is over 100 bytes
    assert [(s.base_offset, s.next_offset) for s in log.segments()] == [(0, 3), (3, 6), (6, 9)]


def test_roll_on_age_uses_caller_time(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions(segment_ms=1000), now_ms=0)
    fill(log, 1, now_ms=5000)                 # age counts from the first append
    fill(log, 1, now_ms=6000)                 # 1000 ms old: not more than segment_ms
    assert len(log.segments()) == 1
    fill(log, 1, now_ms=6001)
    assert [s.base_offset for s in log.segments()] == [0, 6]
    assert log.segments()[1].created_ms == 6001


def test_explicit_roll_and_segment_info(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions())
    assert log.roll(0) == 0  # empty active segment: no-op
    log.append(make_batch(2, ts=500, ts_step=10), 0, now_ms=100)
    log.append(make_batch(2, ts=400), 0, now_ms=200)
    assert log.roll(300) == 4
    first = log.segments()[0]
    assert (first.base_offset, first.next_offset, first.max_timestamp_ms, first.created_ms,
            first.last_append_ms, first.is_active) == (0, 4, 510, 100, 200, False)
    assert log.segments()[1][:4] == (4, 4, 0, -1)


# -- truncation ---------------------------------------------------------------------------------
def test_truncate_to_rounds_down_to_batch_and_drops_segments(tmp_path) -> None:
    log = open_log(tmp_path)
    bs = fill(log, 30, epoch=1)
    log.append(make_batch(3), 2, 0)                        # offsets 90..92 in epoch 2
    assert log.truncate_to(91) == 90                       # inside a batch: whole batch goes
    assert log.epoch_entries == ((1, 0),)
    assert log.truncate_to(40) == 39                       # 40 is inside batch 39..41
    assert log.log_end_offset == 39 and log.segments()[-1].next_offset == 39
    logs = sorted(n for n in os.listdir(tmp_path) if n.endswith(".log"))
    assert logs == [f"{s.base_offset:020d}.log" for s in log.segments()]
    assert bytes(log.read(36, 1 << 20)) == bs[12]
    r = log.append(bytearray(make_batch(2, seed=99)), 3, 0)
    assert (r.base_offset, log.log_end_offset) == (39, 41)
    assert log.truncate_to(1000) == 41                     # at/after the end: no-op
    log.close()
    log = open_log(tmp_path)
    assert log.log_end_offset == 41 and log.epoch_entries == ((1, 0), (3, 39))
    assert bytes(log.read(33, 1 << 20))[: len(bs[11])] == bs[11]


def test_truncate_to_segment_base_and_to_zero(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 30)
    second = log.segments()[1].base_offset
    assert log.truncate_to(second) == second
    assert log.segments()[-1].base_offset == second and log.segments()[-1].size_bytes == 0
    assert log.truncate_to(0) == 0
    assert [(s.base_offset, s.size_bytes) for s in log.segments()] == [(0, 0)]
    assert log.epoch_entries == () and log.read(0, 10) == b""


def test_truncate_fully_and_start_at(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 10, epoch=2)
    log.truncate_fully_and_start_at(500)
    assert (log.log_start_offset, log.log_end_offset, log.epoch_entries) == (500, 500, ())
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 10)
    log.append_replica(restamp(make_batch(2), 500, 3), 0)
    log.close()
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset, log.epoch_entries) == (500, 502, ((3, 500),))


# -- log start and deletion ---------------------------------------------------------------------
def test_delete_before_moves_start_and_deletes_whole_segments(tmp_path) -> None:
    log = open_log(tmp_path)
    bs = fill(log, 30, epoch=1)
    log.append(make_batch(3), 2, 0)
    segs = log.segments()
    cut = segs[2].base_offset + 1                   # inside the third segment
    assert log.delete_before(cut) == 2
    assert [s.base_offset for s in log.segments()] == [s.base_offset for s in segs[2:]]
    assert not os.path.exists(tmp_path / f"{segs[0].base_offset:020d}.log")
    assert log.log_start_offset == cut
    with pytest.raises(OffsetOutOfRangeError) as info:
        log.read(cut - 1, 10)
    assert info.value.hint["log_start_offset"] == cut
    # the batch holding the log start is returned whole (the consumer skips the older records)
    assert bytes(log.read(cut, 1))[: len(bs[cut // 3])] == bs[cut // 3]
    assert log.epoch_entries == ((1, cut), (2, 90))
    assert log.delete_before(cut - 5) == 0 and log.log_start_offset == cut
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_before(log.log_end_offset + 1)
    log.close()
    log = open_log(tmp_path)
    assert log.log_start_offset == cut and log.epoch_entries == ((1, cut), (2, 90))


def names(path, suffix: str) -> set[str]:
    return {n for n in os.listdir(path) if n.endswith(suffix)}


def test_deletion_renames_at_once_and_finish_unlinks(tmp_path) -> None:
    """delete_before / truncate_to do only the quick half (the doomed files are renamed away at
    once); finish_deletes() (a worker thread in the broker) persists and unlinks them."""
    log = open_log(tmp_path)
    fill(log, 60, epoch=1)
    segs = log.segments()
    assert len(segs) >= 6
    doomed_low = {f"{s.base_offset:020d}.log" for s in segs[:2]}
    doomed_high = {f"{s.base_offset:020d}.log" for s in segs[-2:]}
    cut, end = segs[2].base_offset + 1, segs[-3].base_offset + 1
    assert log.delete_before(cut) == 2
    assert log.truncate_to(end) == segs[-3].base_offset
    assert log.deletes_pending
    logs = names(tmp_path, ".log")
    assert not logs & (doomed_low | doomed_high)
    assert {n[: -len(".deleted")] for n in names(tmp_path, ".log.deleted")} == \
        doomed_low | doomed_high
    # not persisted yet: the checkpoint still has the old log start
    assert checkpoint.read_values(str(tmp_path / checkpoint.RECOVERY_FILE))[
        "log_start_offset"] == 0
    assert log.finish_deletes() == 3 * 4    # .log, .index, .timeindex of 4 segments
    assert not log.deletes_pending and names(tmp_path, ".deleted") == set()
    assert names(tmp_path, ".log") == logs
    assert checkpoint.read_values(str(tmp_path / checkpoint.RECOVERY_FILE))[
        "log_start_offset"] == cut
    assert log.finish_deletes() == 0        # nothing pending: a no-op
    state = (log.log_start_offset, log.log_end_offset, log.epoch_entries)
    log.close()
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset, log.epoch_entries) == state


def test_finish_deletes_in_a_thread_while_the_writer_appends(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 30, epoch=1)
    cut = log.segments()[3].base_offset
    log.delete_before(cut)
    t = threading.Thread(target=log.finish_deletes)
    t.start()
    more = fill(log, 10, epoch=2)
    t.join()
    log.flush()
    assert names(tmp_path, ".deleted") == set()
    end = log.log_end_offset
    assert bytes(log.read(end - 3, 1 << 20)) == more[-1]
    log.close()
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset) == (cut, end)
    assert log.epoch_entries[-1] == (2, end - 30)


def test_delete_everything_rolls_first(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 5)
    assert log.delete_before(15) == 1
    assert [(s.base_offset, s.size_bytes) for s in log.segments()] == [(15, 0)]
    assert (log.log_start_offset, log.log_end_offset) == (15, 15)
    assert log.read(15, 10) == b""
    r = log.append(make_batch(1), 0, 0)
    assert r.base_offset == 15


# -- time lookup --------------------------------------------------------------------------------
def test_offset_for_timestamp_matches_brute_force(tmp_path) -> None:
    log = open_log(tmp_path, LogOptions(segment_bytes=600, index_interval_bytes=100))
    # timestamps mostly rising, with dips (CreateTime can go backwards)
    stamps = [1000 + 10 * i - (35 if i % 7 == 3 else 0) for i in range(40)]
    heads = []
    for i, ts in enumerate(stamps):
        buf = bytearray(make_batch(2, ts=ts, ts_step=3, seed=i))
        log.append(buf, 0, 0)
        heads.append(B.peek(buf))
    assert len(log.segments()) > 3

    def brute(ts: int, start: int) -> int | None:
        for h in heads:
            if h.next_offset > start and h.max_timestamp >= ts:
                return max(h.base_offset, start)
        return None

    for ts in range(900, 1450, 7):
        assert log.offset_for_timestamp(ts) == brute(ts, 0), ts
    log.delete_before(25)
    for ts in range(900, 1450, 7):
        assert log.offset_for_timestamp(ts) == brute(ts, 25), ts
    assert log.offset_for_timestamp(10**15) is None
    log.close()
    log = open_log(tmp_path, LogOptions(segment_bytes=600, index_interval_bytes=100))
    for ts in range(900, 1450, 7):
        assert log.offset_for_timestamp(ts) == brute(ts, 25), ts


# -- headers ------------------------------------------------------------------------------------
def test_iter_batch_headers_and_last_batch_header(tmp_path) -> None:
    log = open_log(tmp_path)
    assert log.last_batch_header() is None and list(log.iter_batch_headers()) == []
    fill(log, 20)
    assert [h.base_offset for h in log.iter_batch_headers()] == list(range(0, 60, 3))
    assert [h.base_offset for h in log.iter_batch_headers(31)] == list(range(30, 60, 3))
    assert log.last_batch_header().base_offset == 57
    log.truncate_to(50)
    assert log.last_batch_header().base_offset == 45
    log.delete_before(46)                                  # inside batch 45..47
    assert [h.base_offset for h in log.iter_batch_headers()] == [45]
    assert log.last_batch_header().base_offset == 45
    log.delete_before(48)                                  # the whole log: nothing left
    assert list(log.iter_batch_headers()) == [] and log.last_batch_header() is None


# -- epochs via the log -------------------------------------------------------------------------
def test_end_offset_for_epoch_through_the_log(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 2, epoch=1)
    fill(log, 2, epoch=3)
    assert log.latest_epoch == 3
    assert log.end_offset_for_epoch(1) == (1, 6)
    assert log.end_offset_for_epoch(2) == (1, 6)
    assert log.end_offset_for_epoch(3) == (3, 12)
    assert log.end_offset_for_epoch(4) == (-1, -1)
    assert log.end_offset_for_epoch(0) == (0, 0)
    assert log.end_offset_for_epoch(-1) == (-1, -1)


# -- flush, checkpoints, lifecycle --------------------------------------------------------------
def test_flush_advances_flushed_offset(tmp_path) -> None:
    log = open_log(tmp_path)
    assert log.flushed_offset == 0
    fill(log, 2)
    assert log.flushed_offset == 0
    assert log.flush() == 6 and log.flushed_offset == 6


def test_roll_does_not_fsync_but_the_next_flush_persists_the_recovery_point(
        tmp_path, monkeypatch) -> None:
    import shutil
    log = open_log(tmp_path / "live")
    calls: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    fill(log, 30)                            # rolls several times
    assert calls == [] and log.flushed_offset == 0
    assert log.flush() == 90 and len(calls) == len(log.segments())
    values = checkpoint.read_values(str(tmp_path / "live" / checkpoint.RECOVERY_FILE))
    assert values == {"recovery_point": 90, "log_start_offset": 0}
    fill(log, 1)                             # not flushed
    # a crash now: every sealed segment is below the persisted recovery point, so only the
    # active one, which grew past it, is validated on open
    shutil.copytree(tmp_path / "live", tmp_path / "crash")
    rec = open_log(tmp_path / "crash")
    assert rec.recovery_report.validated_from == log.segments()[-1].base_offset
    assert rec.log_end_offset == 93


def test_concurrent_flushes_share_one_fsync_round(tmp_path, monkeypatch) -> None:
    log = open_log(tmp_path, LogOptions())
    fill(log, 3)
    calls = []
    gate = threading.Event()
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        calls.append(fd)
        gate.wait(5)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(log.flush())) for _ in range(5)]
    for t in threads:
        t.start()
    while not calls:
        threading.Event().wait(0.001)
    fill(log, 1)  # the writer keeps appending while the fsync runs outside the lock
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 2  # one round for offsets < 9, one for the batch appended meanwhile
    assert sorted(results) == [9, 12, 12, 12, 12] and log.flushed_offset == 12


def test_truncation_during_fsync_never_leaves_flushed_above_end(tmp_path, monkeypatch) -> None:
    log = open_log(tmp_path, LogOptions())
    fill(log, 4)
    real = os.fdatasync
    state = {"done": False}

    def truncating_fdatasync(fd: int) -> None:
        if not state["done"]:
            state["done"] = True
            log.truncate_to(3)  # the writer truncates while a flush thread is in fsync
        real(fd)

    monkeypatch.setattr(os, "fdatasync", truncating_fdatasync)
    assert log.flush() <= 3
    assert log.flushed_offset <= log.log_end_offset == 3


def test_high_watermark_checkpoint_round_trip(tmp_path) -> None:
    log = open_log(tmp_path)
    assert log.high_watermark_checkpoint == 0
    fill(log, 3)
    log.write_high_watermark(6)
    assert log.high_watermark_checkpoint == 6
    log.close()
    assert open_log(tmp_path).high_watermark_checkpoint == 6


def test_clean_reopen_trusts_everything(tmp_path) -> None:
    log = open_log(tmp_path)
    bs = fill(log, 30)
    log.close()
    log.close()  # idempotent
    log = open_log(tmp_path)
    assert log.recovery_report == (None, 0)
    assert log.flushed_offset == log.log_end_offset == 90
    assert bytes(log.read(0, 1 << 20)).startswith(bs[0])
    assert b"".join(bytes(log.read(s.base_offset, 1 << 20)) for s in log.segments()) == \
        b"".join(bs)


def test_closed_log_refuses_calls(tmp_path) -> None:
    log = open_log(tmp_path)
    fill(log, 1)
    log.close()
    for call in (lambda: log.append(make_batch(), 0, 0), lambda: log.read(0, 10),
                 lambda: log.truncate_to(0), lambda: log.delete_before(1)):
        with pytest.raises(LogClosedError):
            call()
    assert log.flush() == 3


def test_reconfigure_flush_and_batch_limit_of_an_open_log(tmp_path):
    """Topic alter reaches an open log: flush policy and interval, and the batch size limit
    (a batch over the old limit is refused, then accepted once it is raised); a bad value is
    refused and leaves the options as they were."""
    big = bytearray(B.encode([(None, b"x" * 5000, None, 0)]))
    with PartitionLog.open(str(tmp_path), LogOptions(flush_policy="interval",
                                                     max_batch_bytes=4096)) as log:
        with pytest.raises(MessageTooLargeError):
            log.append(bytearray(big), 0, 0)
        log.reconfigure(flush_policy="fsync", flush_interval_ms=50, max_batch_bytes=1 << 20)
        o = log.options
        assert (o.flush_policy, o.flush_interval_ms, o.max_batch_bytes) == ("fsync", 50, 1 << 20)
        assert log.append(big, 0, 0).base_offset == 0
        with pytest.raises(ConfigError):
            log.reconfigure(flush_policy="sometimes")
        with pytest.raises(ConfigError):
            log.reconfigure(flush_interval_ms=0, segment_ms=5)
        assert log.options == o
