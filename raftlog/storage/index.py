"""Sparse per-segment indexes: offset -> file position (`.index`) and timestamp -> offset
(`.timeindex`).

Owns the in-memory arrays, the fixed-width big-endian file formats and the sanity checks of both
indexes, nothing about when entries are made (segment.py decides). Imports only the stdlib;
never asyncio, aiohttp, pysyncobj or anything from raftlog.meta/server/replication.

`.index` entries: relative offset u32 + position u32 (8 bytes), the base offset and file position
of a batch; one per `index_interval_bytes` of log. `.timeindex` entries: timestamp i64 + relative
offset u32 (12 bytes), meaning "every batch before this offset has max_timestamp <= timestamp";
entries are added only when that maximum grew, plus one final entry when the segment is sealed.

An index is a cache, never checksummed: as in Kafka, it is rebuilt from the log when it is
missing or fails `sane()`. Entries are kept in memory (8 + 12 bytes per entry, about 5 MiB per
GiB of log at the default interval) and buffered writes reach the file in chunks.
"""
from __future__ import annotations

import bisect
import os
import struct
import sys
from array import array

OFFSET_ENTRY = struct.Struct(">II")
TIME_ENTRY = struct.Struct(">qI")
OFFSET_ENTRY_BYTES = OFFSET_ENTRY.size
TIME_ENTRY_BYTES = TIME_ENTRY.size


class _EntryFile:
    """Append-only file of fixed-width entries with an in-memory write buffer."""

    def __init__(self, path: str, entry_bytes: int):
        self.path = path
        self._entry_bytes = entry_bytes
        self._written = 0       # entries already in the file
        self._pending = bytearray()

    def _read_existing(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        self._written = len(data) // self._entry_bytes
        return data

    def buffer(self, packed: bytes) -> None:
        self._pending += packed

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def write_pending(self, fsync: bool = False) -> None:
        if not self._pending and not fsync:
            return
        data, self._pending = self._pending, bytearray()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self._written += len(data) // self._entry_bytes

    def keep_entries(self, count: int, entries_bytes: bytes) -> None:
        """Shrink to the first `count` entries; `entries_bytes` re-packs any not yet written."""
        if count < self._written:
            os.truncate(self.path, count * self._entry_bytes)
            self._written = count
        self._pending = bytearray(entries_bytes)

    def rewrite(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self._written = len(data) // self._entry_bytes
        self._pending.clear()

    def delete(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class OffsetIndex(_EntryFile):
    """(relative offset, position) of indexed batch starts; bisect finds the floor entry."""

    def __init__(self, path: str):
        super().__init__(path, OFFSET_ENTRY_BYTES)
        self.rel_offsets = array("I")
        self.positions = array("I")
        self.last_position = 0  # position of the last entry, 0 (segment start) when none

    @classmethod
    def load(cls, path: str) -> OffsetIndex | None:
        """The index in `path`, or None when the file is missing or not whole entries."""
        idx = cls(path)
        data = idx._read_existing()
        if data is None or len(data) % OFFSET_ENTRY_BYTES:
            return None
        flat = array("I")
        flat.frombytes(data)
        if sys.byteorder == "little":
            flat.byteswap()
        idx.rel_offsets = flat[0::2]
        idx.positions = flat[1::2]
        idx.last_position = idx.positions[-1] if idx.positions else 0
        return idx

    def __len__(self) -> int:
        return len(self.positions)

    def sane(self, next_rel_offset: int, size_bytes: int) -> bool:
        """Entries strictly increase and point inside the log (Kafka's sanityCheck, stricter)."""
        rel, pos = self.rel_offsets, self.positions
        n = len(pos)
        if n and (rel[-1] >= next_rel_offset or pos[-1] >= size_bytes or pos[0] == 0):
            return False
        return all(rel[i] < rel[i + 1] and pos[i] < pos[i + 1] for i in range(n - 1))

    def append(self, rel_offset: int, position: int) -> None:
        assert not self.positions or (rel_offset > self.rel_offsets[-1]
                                      and position > self.positions[-1]), "index not monotonic"
        self.rel_offsets.append(rel_offset)
        self.positions.append(position)
        self.last_position = position
        self.buffer(OFFSET_ENTRY.pack(rel_offset, position))

    def floor(self, rel_offset: int) -> tuple[int, int]:
        """(relative offset, position) of the last entry at or before `rel_offset`; (0, 0) (the
        segment start) when there is none."""
        i = bisect.bisect_right(self.rel_offsets, rel_offset) - 1
        if i < 0:
            return 0, 0
        return self.rel_offsets[i], self.positions[i]

    def truncate_to_position(self, position: int) -> None:
        """Drop entries at or after `position` (the log file was cut there)."""
        keep = bisect.bisect_left(self.positions, position)
        if keep == len(self.positions):
            return
        del self.rel_offsets[keep:]
        del self.positions[keep:]
        self.last_position = self.positions[-1] if self.positions else 0
        unwritten = range(self._written, keep)
        self.keep_entries(keep, b"".join(OFFSET_ENTRY.pack(self.rel_offsets[i], self.positions[i])
                                         for i in unwritten))

    def to_bytes(self) -> bytes:
        return b"".join(OFFSET_ENTRY.pack(r, p) for r, p in zip(self.rel_offsets, self.positions))


class TimeIndex(_EntryFile):
    """(max timestamp of the batches before, relative offset), both non-decreasing."""

    def __init__(self, path: str):
        super().__init__(path, TIME_ENTRY_BYTES)
        self.timestamps = array("q")
        self.rel_offsets = array("I")

    @classmethod
    def load(cls, path: str) -> TimeIndex | None:
        idx = cls(path)
        data = idx._read_existing()
        if data is None or len(data) % TIME_ENTRY_BYTES:
            return None
        for ts, rel in TIME_ENTRY.iter_unpack(data):
            idx.timestamps.append(ts)
            idx.rel_offsets.append(rel)
        return idx

    def __len__(self) -> int:
        return len(self.timestamps)

    def sane(self, next_rel_offset: int) -> bool:
        ts, rel = self.timestamps, self.rel_offsets
        n = len(ts)
        if n and (rel[-1] > next_rel_offset or rel[0] == 0):
            return False
        return all(ts[i] <= ts[i + 1] and rel[i] < rel[i + 1] for i in range(n - 1))

    @property
    def last(self) -> tuple[int, int] | None:
        return (self.timestamps[-1], self.rel_offsets[-1]) if self.timestamps else None

    def append(self, timestamp: int, rel_offset: int) -> None:
        assert not self.timestamps or (timestamp >= self.timestamps[-1]
                                       and rel_offset > self.rel_offsets[-1]), "timeindex order"
        self.timestamps.append(timestamp)
        self.rel_offsets.append(rel_offset)
        self.buffer(TIME_ENTRY.pack(timestamp, rel_offset))

    def start_for(self, timestamp: int) -> int:
        """Relative offset from which to scan for the first batch with max_timestamp >=
        `timestamp`: every batch before it has a smaller max timestamp."""
        i = bisect.bisect_left(self.timestamps, timestamp) - 1
        return self.rel_offsets[i] if i >= 0 else 0

    def truncate_to_rel_offset(self, next_rel_offset: int) -> None:
        """Drop entries describing batches at or after `next_rel_offset` (cut log)."""
        keep = bisect.bisect_right(self.rel_offsets, next_rel_offset)
        if keep == len(self.rel_offsets):
            return
        del self.timestamps[keep:]
        del self.rel_offsets[keep:]
        self.keep_entries(keep, b"".join(TIME_ENTRY.pack(self.timestamps[i], self.rel_offsets[i])
                                         for i in range(self._written, keep)))

    def to_bytes(self) -> bytes:
        return b"".join(TIME_ENTRY.pack(t, r) for t, r in zip(self.timestamps, self.rel_offsets))
