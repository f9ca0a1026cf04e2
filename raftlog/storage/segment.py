"""One log segment: `<base_offset:020d>.log` plus its `.index` and `.timeindex`.

Owns the segment's file descriptor, its size and next offset, its sparse indexes and the rules
for making index entries, and the per-segment operations: append whole batches, find the batch
holding an offset, read whole batches, cut the tail, seal, rebuild indexes (`load_trusted` /
`recover`). Knows nothing of other segments, epochs or checkpoints (log.py and recovery.py).
Imports only the stdlib, raftlog.codec.batch, raftlog.errors and raftlog.storage; never asyncio,
aiohttp, pysyncobj or anything from raftlog.meta/server/replication. Not thread-safe: the log's
single writer calls it (the flush thread only fsyncs a dup of `fd`).

Index rule (the same on append, rebuild and tail repair, so a rebuilt index equals the written
one): a batch starting at position p gets an offset-index entry when p is at least
`index_interval_bytes` past the last entry (or the segment start). Hence the batch holding any
offset starts less than one interval after its floor entry, and one pread of interval + header
bytes finds it. At each new offset-index entry, a time-index entry records the max timestamp of
all earlier batches if it grew. Sealing adds a final time entry at the next offset, so a sealed
segment's max timestamp is known without a scan.
"""
from __future__ import annotations

import bisect
import logging
import os
from typing import Callable, Iterator, NamedTuple

from raftlog.codec.batch import HEADER_SIZE, BatchHeader, peek
from raftlog.errors import CorruptBatchError
from raftlog.storage.errors import LogStorageError
from raftlog.storage.index import OffsetIndex, TimeIndex
from raftlog.storage.options import (HEADER_SCAN_WINDOW_BYTES, INDEX_WRITE_CHUNK_BYTES,
                                     LogOptions)
from raftlog.storage.scan import EpochCheck, ScanResult, iter_headers, scan_valid

log = logging.getLogger(__name__)

NO_TIMESTAMP = -1  # what SegmentInfo reports for a segment without batches (Kafka's NO_TIMESTAMP)
_NONE_YET = -(1 << 63)  # internal "no batch seen" maximum; below every real timestamp
LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX = ".log", ".index", ".timeindex"
DELETED_SUFFIX = ".deleted"  # a segment file renamed for deletion (Kafka's async delete)


def file_stem(base_offset: int) -> str:
    return f"{base_offset:020d}"


class SegmentInfo(NamedTuple):
    """What retention needs to judge a segment."""

    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp_ms: int   # largest batch max_timestamp, NO_TIMESTAMP (-1) when empty
    created_ms: int         # start of the segment's age for segment_ms (see Segment.open)
    last_append_ms: int     # now_ms of the last append (file mtime after a reopen)
    is_active: bool


class Segment:
    def __init__(self, directory: str, base_offset: int, fd: int, options: LogOptions,
                 size_bytes: int, created_ms: int | None, last_append_ms: int):
        stem = os.path.join(directory, file_stem(base_offset))
        self.log_path = stem + LOG_SUFFIX
        self.base_offset = base_offset
        self.fd = fd
        self._interval_bytes = options.index_interval_bytes
        self._scan_window_bytes = min(HEADER_SCAN_WINDOW_BYTES,
                                      options.index_interval_bytes + HEADER_SIZE)
        self.size_bytes = size_bytes
        self.next_offset = base_offset
        self.index = OffsetIndex(stem + INDEX_SUFFIX)
        self.time_index = TimeIndex(stem + TIMEINDEX_SUFFIX)
        self._max_ts = _NONE_YET
        self.created_ms = created_ms      # None until the first append (age counts from there)
        self.last_append_ms = last_append_ms
        self.sealed = False

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str, base_offset: int, options: LogOptions,
               now_ms: int) -> Segment:
        """A new empty segment; refuses to overwrite an existing log file (that is a bug)."""
        path = os.path.join(directory, file_stem(base_offset) + LOG_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        seg = cls(directory, base_offset, fd, options, 0, None, now_ms)
        seg.index.rewrite(b"")
        seg.time_index.rewrite(b"")
        return seg

    @classmethod
    def open(cls, directory: str, base_offset: int, options: LogOptions, now_ms: int) -> Segment:
        """An existing segment with empty in-memory indexes: call `load_trusted` or `recover`.

        Its age for segment_ms counts from the first batch's max timestamp (as Kafka), or from
        the file's mtime when that timestamp is in the future; an empty segment's age starts at
        its first append, as for a new one.
        """
        path = os.path.join(directory, file_stem(base_offset) + LOG_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        st = os.fstat(fd)
        mtime_ms = st.st_mtime_ns // 1_000_000
        created: int | None = mtime_ms if st.st_size else None
        if st.st_size >= HEADER_SIZE:
            try:
                first = next(iter_headers(fd, 0, st.st_size, HEADER_SIZE), None)
            except CorruptBatchError:
                first = None
            if first is not None and 0 <= first[1].max_timestamp <= now_ms:
                created = first[1].max_timestamp
        return cls(directory, base_offset, fd, options, st.st_size, created, mtime_ms)

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.index.write_pending()
            self.time_index.write_pending()
        finally:
            os.close(self.fd)
            self.fd = -1

    def rename_for_delete(self) -> list[str]:
        """Close the segment and rename its files to `*.deleted`: quick metadata work that frees
        the names at once; returns the new paths for a worker thread to unlink. Unwritten index
        entries are dropped (nobody reads this segment again)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        out = []
        for path in (self.log_path, self.index.path, self.time_index.path):
            try:
                os.rename(path, path + DELETED_SUFFIX)
            except FileNotFoundError:
                continue
            out.append(path + DELETED_SUFFIX)
        return out

    def delete(self) -> None:
        self.close()
        for path in (self.log_path, self.index.path, self.time_index.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- state --------------------------------------------------------------------------------
    @property
    def is_empty(self) -> bool:
        return self.size_bytes == 0

    @property
    def max_timestamp_ms(self) -> int:
        return NO_TIMESTAMP if self._max_ts == _NONE_YET else self._max_ts

    def info(self, is_active: bool) -> SegmentInfo:
        created = self.created_ms if self.created_ms is not None else self.last_append_ms
        return SegmentInfo(self.base_offset, self.next_offset, self.size_bytes,
                           self.max_timestamp_ms, created, self.last_append_ms, is_active)

    def fits(self, batch_bytes: int, next_offset: int, segment_bytes: int) -> bool:
        """Whether a batch ending before `next_offset` may go here (empty segments take any)."""
        if next_offset - self.base_offset > 0xFFFFFFFF:
            return False
        return self.size_bytes == 0 or self.size_bytes + batch_bytes <= segment_bytes

    # -- append -------------------------------------------------------------------------------
    def append(self, data: bytes | bytearray | memoryview, batches: list[tuple[int, int, int, int, int]],
               data_pos: int, now_ms: int) -> int:
        """Write whole batches verbatim. `batches` are (position in the caller's buffer, base
        offset, next offset, size, max timestamp), `data` starts at buffer position `data_pos`.

        Returns the file position of `data`. A failed write (ENOSPC) is cut back so the file
        never keeps a partial batch, then re-raised.
        """
        start = self.size_bytes
        try:
            written = os.write(self.fd, data)
            while written < len(data):  # short writes are rare on files; finish them
                written += os.write(self.fd, data[written:])
        except OSError:
            os.ftruncate(self.fd, start)
            raise
        shift = start - data_pos
        index, interval = self.index, self._interval_bytes
        for pos, base_offset, _, _, max_ts in batches:  # _note_batch, inlined: per batch
            if pos + shift - index.last_position >= interval:
                self._add_index_entry(pos + shift, base_offset)
            if max_ts > self._max_ts:
                self._max_ts = max_ts
        next_offset = batches[-1][2]
        assert next_offset > self.next_offset, "append must add offsets"
        self.size_bytes = start + len(data)
        self.next_offset = next_offset
        self.last_append_ms = now_ms
        if self.created_ms is None:
            self.created_ms = now_ms
        if self.index.pending_bytes >= INDEX_WRITE_CHUNK_BYTES:
            self.index.write_pending()
            self.time_index.write_pending()
        return start

    def _note_batch(self, pos: int, base_offset: int, max_ts: int) -> None:
        """Apply the index rule for a batch at `pos`, then fold in its max timestamp."""
        if pos - self.index.last_position >= self._interval_bytes:
            self._add_index_entry(pos, base_offset)
        if max_ts > self._max_ts:
            self._max_ts = max_ts

    def _add_index_entry(self, pos: int, base_offset: int) -> None:
        rel = base_offset - self.base_offset
        self.index.append(rel, pos)
        last = self.time_index.last
        if self._max_ts != _NONE_YET and (last is None or self._max_ts > last[0]):
            self.time_index.append(self._max_ts, rel)

    # -- lookups ------------------------------------------------------------------------------
    def locate(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch whose last offset >= `offset`, None if none."""
        if offset >= self.next_offset:
            return None
        rel, pos = self.index.floor(max(offset - self.base_offset, 0))
        return self._first_from(pos, self.base_offset + rel,
                                lambda h: h.last_offset >= offset)

    def _first_from(self, pos: int, pos_offset: int,
                    pred: Callable[[BatchHeader], bool]) -> tuple[int, BatchHeader] | None:
        for p, h in iter_headers(self.fd, pos, self.size_bytes, self._scan_window_bytes):
            if p == pos and h.base_offset != pos_offset:
                raise LogStorageError(f"{self.log_path}: index points at offset "
                                      f"{h.base_offset}, expected {pos_offset}")
            if pred(h):
                return p, h
        return None

    def first_with_timestamp(self, timestamp: int, min_offset: int) -> int | None:
        """Base offset (at least `min_offset`) of the first batch ending at or after
        `min_offset` whose max timestamp >= `timestamp`; a short header scan from the time index.
        """
        if self._max_ts < timestamp or min_offset >= self.next_offset:
            return None
        rel = max(self.time_index.start_for(timestamp), min_offset - self.base_offset, 0)
        floor_rel, pos = self.index.floor(rel)
        found = self._first_from(pos, self.base_offset + floor_rel,
                                 lambda h: h.last_offset >= min_offset
                                 and h.max_timestamp >= timestamp)
        return None if found is None else max(found[1].base_offset, min_offset)

    def read_batches(self, pos: int, first: BatchHeader, max_bytes: int,
                     upper_bound: int | None) -> bytes:
        """Whole batches from `pos` (where `first` starts): at least the first one, then as many
        as fit in `max_bytes`, none whose last offset >= `upper_bound`.

        The end is found before reading, so no byte is read twice or thrown away: the index
        gives the last batch start within reach (every index entry is a batch boundary), and
        one header window from there finds the unindexed small batches that still fit (by the
        index rule they all start within one interval of it). Then one pread of exactly that.
        """
        limit = min(pos + max_bytes, self.size_bytes)
        end = pos + first.size
        if end >= limit:
            return os.pread(self.fd, first.size, pos)
        if upper_bound is None and limit == self.size_bytes:
            return os.pread(self.fd, limit - pos, pos)  # to the segment end: a batch boundary
        positions = self.index.positions
        k = bisect.bisect_right(positions, limit) - 1
        if upper_bound is not None:  # the batch before entry k ends at its offset - 1
            k = min(k, bisect.bisect_right(self.index.rel_offsets,
                                           upper_bound - self.base_offset) - 1)
        if k >= 0 and positions[k] > end:
            end = positions[k]
        if limit - end >= HEADER_SIZE:
            # Every batch that may still fit starts within one interval of `end` (a later one
            # would have an index entry <= limit), so its header is in this one window.
            window = os.pread(self.fd, min(limit - end, self._scan_window_bytes), end)
            p = 0
            while len(window) - p >= HEADER_SIZE:
                h = peek(window, p)
                if end + p + h.size > limit or (upper_bound is not None
                                                and h.last_offset >= upper_bound):
                    break
                p += h.size
            end += p
        return os.pread(self.fd, end - pos, pos)

    def headers_from(self, offset: int) -> Iterator[BatchHeader]:
        """Headers of the batch holding `offset` and every later one in this segment."""
        found = self.locate(offset)
        if found is not None:
            for _, h in iter_headers(self.fd, found[0], self.size_bytes):
                yield h

    # -- truncation, sealing, index (re)building -----------------------------------------------
    def truncate_to(self, offset: int) -> None:
        """Cut the batch holding `offset` and everything after it (rounds down to a batch)."""
        found = self.locate(offset)
        if found is None:
            return
        pos, h = found
        os.ftruncate(self.fd, pos)
        self.size_bytes = pos
        self.index.truncate_to_position(pos)
        self.time_index.truncate_to_rel_offset(h.base_offset - self.base_offset)
        self.sealed = False
        if not self._complete_indexes(None):
            raise LogStorageError(f"{self.log_path}: headers before offset {offset} do not parse")
        assert self.next_offset == h.base_offset
        if self.is_empty:
            self.created_ms = None

    def seal(self) -> None:
        """Final time entry added and index files written: the segment is read-only now. Not
        fsynced: a lost or torn index is rebuilt at open, and data durability is flush()'s."""
        rel = self.next_offset - self.base_offset
        last = self.time_index.last
        if self._max_ts != _NONE_YET and (last is None or last[1] < rel):
            self.time_index.append(self._max_ts, rel)
        self.index.write_pending()
        self.time_index.write_pending()
        self.sealed = True

    def load_trusted(self, expected_next_offset: int | None) -> bool:
        """Load index files of a segment below the recovery point, repair their tail with a
        header walk and check them; False when anything is off (the caller then recovers)."""
        index, time_index = OffsetIndex.load(self.index.path), TimeIndex.load(self.time_index.path)
        if index is None or time_index is None:
            return False
        if not index.sane(1 << 32, self.size_bytes) or not time_index.sane(1 << 32):
            return False
        self.index, self.time_index = index, time_index
        try:
            ok = self._complete_indexes(expected_next_offset)
        except (CorruptBatchError, LogStorageError):
            return False
        return ok and index.sane(self.next_offset - self.base_offset, self.size_bytes) and \
            time_index.sane(self.next_offset - self.base_offset)

    def _complete_indexes(self, expected_next_offset: int | None) -> bool:
        """Recompute next offset and max timestamp from the last time entry on, adding index
        entries the files lack; True when the walk ends exactly at the file end."""
        last = self.time_index.last
        self._max_ts = last[0] if last else _NONE_YET
        rel, pos = self.index.floor(last[1] if last else 0)
        next_offset = self.base_offset + rel
        index_end = self.index.last_position
        for p, h in iter_headers(self.fd, pos, self.size_bytes):
            if h.base_offset != next_offset:
                return False
            if p == index_end and p and h.base_offset != self.base_offset + self.index.rel_offsets[-1]:
                return False
            self._note_batch(p, h.base_offset, h.max_timestamp)
            next_offset, pos = h.next_offset, p + h.size
        self.next_offset = next_offset
        return pos == self.size_bytes and (expected_next_offset is None
                                           or next_offset == expected_next_offset)

    def recover(self, epoch_ok: EpochCheck | None,
                on_batch: Callable[[BatchHeader], None]) -> ScanResult:
        """Validate every batch (length, counts, contiguity, epoch, CRC), cut the file after the
        last valid one and rebuild both indexes from scratch."""
        self.index = OffsetIndex(self.index.path)
        self.time_index = TimeIndex(self.time_index.path)
        self._max_ts = _NONE_YET

        def note(pos: int, h: BatchHeader) -> None:
            self._note_batch(pos, h.base_offset, h.max_timestamp)
            on_batch(h)

        res = scan_valid(self.fd, self.size_bytes, self.base_offset, note, epoch_ok)
        if res.stop_reason is not None:
            log.warning("%s: truncating %d bytes at position %d (offset %d): %s", self.log_path,
                        self.size_bytes - res.valid_bytes, res.valid_bytes, res.next_offset,
                        res.stop_reason)
            os.ftruncate(self.fd, res.valid_bytes)
        self.size_bytes = res.valid_bytes
        self.next_offset = res.next_offset
        self.index.rewrite(self.index.to_bytes())
        self.time_index.rewrite(self.time_index.to_bytes())
        return res

