"""Storage options and limits: the one frozen `LogOptions` a partition log is opened with.

Owns every tunable and hard bound of the storage engine, each named with its unit last, and
checks their relations when an options object is built (a wrong value fails at open, not at the
first append a week later). Imports only the stdlib, raftlog.errors and raftlog.codec.batch;
never asyncio, aiohttp, pysyncobj or anything from raftlog.meta/server/replication.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raftlog.codec.batch import HEADER_SIZE
from raftlog.errors import ConfigError

FlushPolicy = Literal["fsync", "interval"]
FLUSH_POLICIES: tuple[str, ...] = ("fsync", "interval")

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
DAY_MS = 24 * 3600 * 1000

# Positions in the offset index are u32 and Kafka caps segment.bytes at an int32; keep the same so
# a segment file is always addressable by a u32 position even with one oversized batch in it.
SEGMENT_BYTES_MAX = (1 << 31) - 1
SEGMENT_BYTES_MIN = 64  # tiny segments are for tests; a batch larger than this gets its own segment
MAX_BATCH_BYTES_MAX = 256 * MIB
INDEX_INTERVAL_BYTES_MIN = 1
INDEX_INTERVAL_BYTES_MAX = 64 * MIB
# Relative offsets in both indexes are u32: a segment never spans more offsets than this.
SEGMENT_OFFSETS_MAX = (1 << 32) - 1

# I/O granularity (not tunables): header scans read this much at a time so a run of small batches
# costs one pread, recovery reads this much at a time so CRC checks run over large buffers.
HEADER_SCAN_WINDOW_BYTES = 64 * KIB
RECOVERY_READ_BYTES = 8 * MIB
# Index entries are buffered in memory and written to their files in chunks of this size (and on
# seal/close/truncate): an index is a cache that recovery repairs, so it need not be written per
# batch.
INDEX_WRITE_CHUNK_BYTES = 4 * KIB


@dataclass(frozen=True)
class LogOptions:
    """How one partition log behaves; defaults are Kafka's topic defaults where Kafka has one."""

    segment_bytes: int = GIB                 # roll when the active segment would grow past this
    segment_ms: int = 7 * DAY_MS             # roll when the active segment is older than this
    index_interval_bytes: int = 4 * KIB      # one sparse index entry per this many log bytes
    flush_policy: FlushPolicy = "fsync"      # fsync: durable after flush(); interval: periodic
    flush_interval_ms: int = 1000            # how often the caller flushes under "interval"
    max_batch_bytes: int = MIB               # the largest single batch append() accepts

    def __post_init__(self) -> None:
        _check_range("segment_bytes", self.segment_bytes, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
        _check_range("segment_ms", self.segment_ms, 1, 1 << 62)
        _check_range("index_interval_bytes", self.index_interval_bytes,
                     INDEX_INTERVAL_BYTES_MIN, INDEX_INTERVAL_BYTES_MAX)
        _check_range("flush_interval_ms", self.flush_interval_ms, 1, 1 << 62)
        _check_range("max_batch_bytes", self.max_batch_bytes, HEADER_SIZE, MAX_BATCH_BYTES_MAX)
        if self.flush_policy not in FLUSH_POLICIES:
            raise ConfigError(f"flush_policy must be one of {FLUSH_POLICIES}, "
                              f"got {self.flush_policy!r}", {"key": "flush_policy"})


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}",
                          {"key": name})
