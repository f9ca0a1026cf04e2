"""Walking batches in a segment file by their headers: the only loops storage runs over a log.

Owns two walks over an open file descriptor, both per batch (never per record):
- `iter_headers`: headers only, read in windows so a run of small batches costs one pread; used
  by lookups and header scans over data recovery already trusts;
- `scan_valid`: the recovery walk, which also checks length, counts, offset contiguity, epoch
  order and the CRC of every batch (one C call each) and stops at the first that fails.
Imports only the stdlib, crc32c-backed raftlog.codec.batch and storage.options; never asyncio,
aiohttp, pysyncobj or anything from raftlog.meta/server/replication.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, NamedTuple

from raftlog.codec.batch import HEADER_SIZE, BatchHeader, crc_ok, peek
from raftlog.errors import CorruptBatchError
from raftlog.storage.options import HEADER_SCAN_WINDOW_BYTES, RECOVERY_READ_BYTES


def iter_headers(fd: int, start: int, end: int,
                 window_bytes: int = HEADER_SCAN_WINDOW_BYTES) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each whole batch in [start, end) of the file.

    Stops before a batch that does not end by `end` (the caller compares positions to tell a
    clean end from a torn one); raises CorruptBatchError on a header that does not parse.
    """
    pos = start
    win = b""
    win_start = start
    while end - pos >= HEADER_SIZE:
        rel = pos - win_start
        if rel + HEADER_SIZE > len(win):
            win = os.pread(fd, min(window_bytes, end - pos), pos)
            win_start, rel = pos, 0
            if len(win) < HEADER_SIZE:
                return
        h = peek(win, rel)
        if pos + h.size > end:
            return
        yield pos, h
        pos += h.size


class ScanResult(NamedTuple):
    valid_bytes: int        # file position after the last valid batch
    next_offset: int        # offset after the last valid batch
    stop_reason: str | None  # why the walk stopped before the end, None if it reached it


# on_batch(position, header) is called for each valid batch, in order.
BatchCallback = Callable[[int, BatchHeader], None]
# epoch_ok(header) says whether the batch's leader epoch is plausible (recovery.py: it does not
# go backwards and matches what the epoch cache recorded).
EpochCheck = Callable[[BatchHeader], bool]


def scan_valid(fd: int, file_bytes: int, first_offset: int, on_batch: BatchCallback,
               epoch_ok: EpochCheck | None = None) -> ScanResult:
    """Walk the file from position 0 and stop at the first batch that is torn or corrupt.

    A batch is valid when its header parses (magic, length), it lies wholly inside the file, its
    base offset continues the previous batch exactly (the base offset field is outside the CRC),
    its leader epoch passes `epoch_ok` (the epoch is outside the CRC too), its record count matches its last offset delta, and its CRC matches.
    """
    pos, expected = 0, first_offset
    win = b""
    win_start = 0
    while pos < file_bytes:
        rel = pos - win_start
        if rel + HEADER_SIZE > len(win):
            win = os.pread(fd, RECOVERY_READ_BYTES, pos)
            win_start, rel = pos, 0
        if len(win) - rel < HEADER_SIZE:
            return ScanResult(pos, expected, "torn header at end of file")
        try:
            h = peek(win, rel)
        except CorruptBatchError as exc:
            return ScanResult(pos, expected, exc.message)
        if pos + h.size > file_bytes:
            return ScanResult(pos, expected,
                              f"torn batch: needs {h.size} bytes, {file_bytes - pos} left")
        if rel + h.size > len(win):
            win = os.pread(fd, max(RECOVERY_READ_BYTES, h.size), pos)
            win_start, rel = pos, 0
        reason = _invalid(h, expected, epoch_ok)
        if reason is None and not crc_ok(win, rel, h):
            reason = f"CRC mismatch in batch at offset {h.base_offset}"
        if reason is not None:
            return ScanResult(pos, expected, reason)
        on_batch(pos, h)
        pos += h.size
        expected = h.next_offset
    return ScanResult(pos, expected, None)


def _invalid(h: BatchHeader, expected: int, epoch_ok: EpochCheck | None) -> str | None:
    if h.base_offset != expected:
        return f"base offset {h.base_offset} where {expected} was expected"
    # A compacted batch (storage/cleaner.py) holds fewer records than offsets, maybe none.
    if h.last_offset_delta < 0 or not 0 <= h.record_count <= h.last_offset_delta + 1:
        return (f"record-count mismatch at offset {h.base_offset}: last_offset_delta "
                f"{h.last_offset_delta}, record_count {h.record_count}")
    if epoch_ok is not None and not epoch_ok(h):
        return f"leader epoch {h.leader_epoch} at offset {h.base_offset} is out of order or " \
            "unknown to the epoch cache"
    return None
