"""Crash recovery: torn tails, flipped bytes, lost or corrupt indexes and checkpoints.

Goal: after a crash exactly the longest valid prefix of batches survives (files cut to it), no
batch failing its CRC is ever served, and rebuilt indexes serve every offset correctly.
Method: a crash image is a copy of the partition directory taken while the log is open (the
page cache survives a process crash; unwritten index buffers and a stale recovery checkpoint do
not), then damaged at seeded random positions and reopened; every offset is read back and
compared with the batches we know were written before the damage.
"""
from __future__ import annotations

import os
import random
import shutil

import pytest

from raftlog.codec import batch as B
from raftlog.storage import LogOptions, PartitionLog, checkpoint
from storagetest_util import make_batch

OPTS = LogOptions(segment_bytes=3000, index_interval_bytes=150)
SEED = 20241125


def crash_image(log: PartitionLog, dst) -> str:
    shutil.copytree(log.directory, dst)
    return str(dst)


def write_batches(path, n: int = 60, epochs=(1, 2, 3)) -> tuple[PartitionLog, list[bytes]]:
    log = PartitionLog.open(str(path), OPTS, 0)
    out = []
    for i in range(n):
        buf = bytearray(make_batch(1 + i % 4, ts=1000 + i, seed=i, value_bytes=5 + (i * 13) % 60))
        log.append(buf, epochs[i * len(epochs) // n], now_ms=i)
        out.append(bytes(buf))
    return log, out


def last_segment_path(directory: str) -> str:
    return os.path.join(directory, max(n for n in os.listdir(directory) if n.endswith(".log")))


def assert_serves_exactly(log: PartitionLog, batches: list[bytes]) -> None:
    """The log holds exactly `batches` (in order): end offset, every offset, all CRCs."""
    end = B.peek(batches[-1]).next_offset if batches else 0
    assert log.log_end_offset == end
    by_offset = {}
    for b in batches:
        h = B.peek(b)
        for off in range(h.base_offset, h.next_offset):
            by_offset[off] = b
    for off in range(end):
        got = bytes(log.read(off, 1))
        assert got == by_offset[off], f"offset {off}"
        B.decode(got)  # CRC checked again on the way out
    everything = b"".join(bytes(log.read(s.base_offset, 1 << 30))
                          for s in log.segments() if s.size_bytes)
    assert everything == b"".join(batches)
    assert sum(s.size_bytes for s in log.segments()) == len(everything)


def surviving_prefix(batches: list[bytes], last_base_pos: int, damaged_at: int,
                     last_seg_base_offset: int) -> list[bytes]:
    """Batches wholly before file position `damaged_at` of the last segment."""
    out, pos = [], 0
    for b in batches:
        h = B.peek(b)
        if h.base_offset < last_seg_base_offset:
            out.append(b)
            continue
        if pos + len(b) <= damaged_at:
            out.append(b)
        else:
            break
        pos += len(b)
    return out


@pytest.fixture(scope="module")
def crashed(tmp_path_factory) -> tuple[str, list[bytes]]:
    """One crash image (and the batches in it) that each damage case copies and mangles."""
    root = tmp_path_factory.mktemp("crashed")
    log, batches = write_batches(root / "live")
    image = crash_image(log, root / "image")
    log.close()
    return image, batches


def copy_of(crashed: tuple[str, list[bytes]], dst) -> tuple[str, list[bytes]]:
    shutil.copytree(crashed[0], dst)
    return str(dst), crashed[1]


@pytest.mark.parametrize("case", range(25))
def test_torn_tail_keeps_longest_whole_prefix(tmp_path, crashed, case: int) -> None:
    image, batches = copy_of(crashed, tmp_path / "crash")
    rng = random.Random(SEED + case)
    path = last_segment_path(image)
    size = os.path.getsize(path)
    cut = rng.randrange(0, size)
    os.truncate(path, cut)
    seg_base = int(os.path.basename(path)[:20])
    expected = surviving_prefix(batches, 0, cut, seg_base)
    rec = PartitionLog.open(image, OPTS, 0)
    assert_serves_exactly(rec, expected)
    assert os.path.getsize(path) == sum(len(b) for b in expected
                                        if B.peek(b).base_offset >= seg_base)
    assert rec.recovery_report.truncated_bytes == cut - os.path.getsize(path)
    # the log goes on from the recovered end with the next offset
    r = rec.append(make_batch(2), rec.latest_epoch if rec.latest_epoch >= 0 else 0, 0)
    assert r.base_offset == (B.peek(expected[-1]).next_offset if expected else 0)
    rec.close()


@pytest.mark.parametrize("case", range(40))
def test_flipped_byte_cuts_at_the_damaged_batch(tmp_path, crashed, case: int) -> None:
    image, batches = copy_of(crashed, tmp_path / "crash")
    rng = random.Random(SEED * 7 + case)
    path = last_segment_path(image)
    data = bytearray(open(path, "rb").read())
    at = rng.randrange(len(data))
    data[at] ^= rng.randrange(1, 256)     # any byte: header (in or out of the CRC) or records
    open(path, "wb").write(data)
    seg_base = int(os.path.basename(path)[:20])
    # the damaged batch is the one whose bytes hold position `at`: it and all after it go
    pos, keep_until = 0, None
    for b in batches:
        if B.peek(b).base_offset < seg_base:
            continue
        if pos <= at < pos + len(b):
            keep_until = pos
            break
        pos += len(b)
    expected = surviving_prefix(batches, 0, keep_until, seg_base)
    rec = PartitionLog.open(image, OPTS, 0)
    assert_serves_exactly(rec, expected)
    rec.close()


def test_corruption_in_a_middle_segment_drops_later_segments(tmp_path, crashed) -> None:
    """Without a recovery checkpoint every segment is validated; damage in the second one cuts
    it there and removes every later segment."""
    image, batches = copy_of(crashed, tmp_path / "crash")
    os.unlink(os.path.join(image, checkpoint.RECOVERY_FILE))
    logs = sorted(n for n in os.listdir(image) if n.endswith(".log"))
    assert len(logs) >= 4
    second = os.path.join(image, logs[1])
    data = bytearray(open(second, "rb").read())
    first_h = B.peek(data)
    data[first_h.size + 30] ^= 0xFF                 # inside the second batch of segment 2
    open(second, "wb").write(data)
    rec = PartitionLog.open(image, OPTS, 0)
    cut_offset = first_h.next_offset
    expected = [b for b in batches if B.peek(b).next_offset <= cut_offset]
    assert_serves_exactly(rec, expected)
    assert sorted(n for n in os.listdir(image) if n.endswith(".log")) == logs[:2]
    assert rec.recovery_report.validated_from == 0


def test_segment_missing_from_the_middle_ends_the_log_before_the_hole(tmp_path) -> None:
    log, batches = write_batches(tmp_path / "live")
    log.close()
    logs = sorted(n for n in os.listdir(tmp_path / "live") if n.endswith(".log"))
    os.unlink(tmp_path / "live" / logs[2])
    rec = PartitionLog.open(str(tmp_path / "live"), OPTS, 0)
    hole = int(logs[2][:20])
    assert_serves_exactly(rec, [b for b in batches if B.peek(b).next_offset <= hole])


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "zeros"])
def test_lost_or_corrupt_indexes_are_rebuilt(tmp_path, damage: str) -> None:
    log, batches = write_batches(tmp_path)
    log.close()
    rng = random.Random(SEED)
    for name in os.listdir(tmp_path):
        if not name.endswith(("index", "timeindex")):
            continue
        path = tmp_path / name
        size = path.stat().st_size
        if damage == "delete":
            path.unlink()
        elif damage == "garbage":
            path.write_bytes(rng.randbytes(size + 3))
        elif damage == "truncate":
            os.truncate(path, size // 2)
        else:
            path.write_bytes(b"\x00" * size)
    rec = PartitionLog.open(str(tmp_path), OPTS, 0)
    assert_serves_exactly(rec, batches)
    heads = [B.peek(b) for b in batches]
    for ts in range(990, 1070, 3):
        want = next((h.base_offset for h in heads if h.max_timestamp >= ts), None)
        assert rec.offset_for_timestamp(ts) == want


def test_missing_epoch_file_is_rebuilt_from_batch_headers(tmp_path) -> None:
    log, batches = write_batches(tmp_path)
    entries = log.epoch_entries
    log.close()
    os.unlink(tmp_path / checkpoint.EPOCH_FILE)
    rec = PartitionLog.open(str(tmp_path), OPTS, 0)
    assert rec.epoch_entries == entries and len(entries) == 3
    assert rec.recovery_report.validated_from == 0   # no trusted cache: validate everything
    assert_serves_exactly(rec, batches)


def test_epoch_written_ahead_of_a_lost_batch_is_dropped(tmp_path, crashed) -> None:
    """The epoch file is written before the batch; a crash between them leaves an entry at the
    log end that recovery must remove."""
    image, batches = copy_of(crashed, tmp_path / "crash")
    end = B.peek(batches[-1]).next_offset
    pairs = checkpoint.read_int_pairs(os.path.join(image, checkpoint.EPOCH_FILE))
    checkpoint.write_int_pairs(os.path.join(image, checkpoint.EPOCH_FILE), pairs + [(9, end)])
    rec = PartitionLog.open(image, OPTS, 0)
    assert rec.epoch_entries == tuple(tuple(p) for p in pairs) and rec.latest_epoch == 3
    assert_serves_exactly(rec, batches)


def test_log_start_past_the_recovered_end_restarts_the_log(tmp_path) -> None:
    log, batches = write_batches(tmp_path)
    log.close()
    checkpoint.write_values(str(tmp_path / checkpoint.RECOVERY_FILE),
                            {"recovery_point": 0, "log_start_offset": 10_000})
    rec = PartitionLog.open(str(tmp_path), OPTS, 0)
    assert (rec.log_start_offset, rec.log_end_offset, rec.epoch_entries) == (10_000, 10_000, ())
    assert [s.base_offset for s in rec.segments()] == [10_000]


def test_leftovers_are_tidied(tmp_path) -> None:
    log, batches = write_batches(tmp_path)
    log.close()
    (tmp_path / "recovery-checkpoint.tmp").write_bytes(b"half")
    (tmp_path / f"{99999:020d}.index").write_bytes(b"\x00" * 8)
    (tmp_path / "topic-id").write_text("keep me")   # not ours: left alone
    rec = PartitionLog.open(str(tmp_path), OPTS, 0)
    names = os.listdir(tmp_path)
    assert "recovery-checkpoint.tmp" not in names and f"{99999:020d}.index" not in names
    assert "topic-id" in names
    assert_serves_exactly(rec, batches)


def test_interrupted_delete_before_finishes_on_open(tmp_path) -> None:
    log, batches = write_batches(tmp_path)
    bases = [s.base_offset for s in log.segments()]
    log.close()
    # the checkpoint moved the log start past two segments, the files were not deleted yet
    checkpoint.write_values(str(tmp_path / checkpoint.RECOVERY_FILE),
                            {"recovery_point": bases[3], "log_start_offset": bases[2] + 1})
    rec = PartitionLog.open(str(tmp_path), OPTS, 0)
    assert [s.base_offset for s in rec.segments()] == bases[2:]
    assert rec.log_start_offset == bases[2] + 1


def read_from(log: PartitionLog, offset: int) -> bytes:
    out, end = b"", log.log_end_offset
    while offset < end:
        got = bytes(log.read(offset, 1 << 20))
        out += got
        for _pos, h in B.iter_batches(got):
            offset = h.next_offset
    return out


def test_crash_between_rename_and_unlink_of_retention(tmp_path) -> None:
    """delete_before renamed the doomed files; the process died before finish_deletes: the
    image has `*.deleted` files and the old checkpoint. Reopening removes them and serves the
    same data from the first surviving segment (the log start falls back to its base)."""
    log, batches = write_batches(tmp_path / "live")
    log.flush()
    segs = log.segments()
    cut = segs[2].base_offset + 1
    assert log.delete_before(cut) == 2
    image = crash_image(log, tmp_path / "crash")
    assert any(n.endswith(".deleted") for n in os.listdir(image))
    expected = read_from(log, cut)
    log.close()
    rec = PartitionLog.open(image, OPTS, 0)
    assert not any(n.endswith(".deleted") for n in os.listdir(image))
    assert [s.base_offset for s in rec.segments()] == [s.base_offset for s in segs[2:]]
    assert rec.log_start_offset == segs[2].base_offset
    assert rec.log_end_offset == segs[-1].next_offset
    assert read_from(rec, cut) == expected
    assert [b for b in batches if B.peek(b).base_offset >= segs[2].base_offset][0] == \
        bytes(rec.read(segs[2].base_offset, 1))  # the older data of that segment is back too
    rec.delete_before(cut)                   # retention simply deletes again
    rec.finish_deletes()
    rec.close()
    assert PartitionLog.open(image, OPTS, 0).log_start_offset == cut


def test_crash_between_rename_and_unlink_of_truncation(tmp_path) -> None:
    log, batches = write_batches(tmp_path / "live")
    log.flush()
    segs = log.segments()
    target = segs[-3].base_offset + 1          # inside the third-last segment: two go
    end = log.truncate_to(target)
    image = crash_image(log, tmp_path / "crash")
    assert sum(n.endswith(".log.deleted") for n in os.listdir(image)) == 2
    log.close()
    rec = PartitionLog.open(image, OPTS, 0)
    assert not any(n.endswith(".deleted") for n in os.listdir(image))
    kept = [b for b in batches if B.peek(b).next_offset <= end]
    assert_serves_exactly(rec, kept)
    assert rec.latest_epoch == B.peek(kept[-1]).leader_epoch


def test_crash_between_rename_and_unlink_of_full_truncation(tmp_path) -> None:
    log, batches = write_batches(tmp_path / "live")
    start = log.log_end_offset + 7
    log.truncate_fully_and_start_at(start)
    image = crash_image(log, tmp_path / "crash")
    log.close()
    rec = PartitionLog.open(image, OPTS, 0)
    assert not any(n.endswith(".deleted") for n in os.listdir(image))
    assert (rec.log_start_offset, rec.log_end_offset) == (start, start)
    assert [s.base_offset for s in rec.segments()] == [start]


def test_recovery_after_crash_then_clean_reopen_is_trusted(tmp_path, crashed) -> None:
    image, batches = copy_of(crashed, tmp_path / "crash")
    first = PartitionLog.open(image, OPTS, 0)
    assert first.recovery_report.validated_from is not None
    first.close()
    second = PartitionLog.open(image, OPTS, 0)
    assert second.recovery_report == (None, 0)
    assert_serves_exactly(second, batches)
