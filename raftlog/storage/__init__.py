"""Partition log storage: segments, sparse indexes, leader-epoch cache, checkpoints, recovery.

Synchronous, single-writer and file-backed; knows nothing of HTTP, Raft, leaders or the event
loop (never imports asyncio, aiohttp, pysyncobj or raftlog.meta/server/replication). The event
loop calls it directly for appends, reads and the quick half of deletions and truncations, and
hands `flush()`, `finish_deletes()` and large scans to a thread.

Modules, one job each: options (LogOptions, limits), errors, checkpoint (atomic small files),
epochs (leader-epoch cache), index (.index/.timeindex), scan (header walks, CRC validation),
segment (one segment), recovery (what to trust at open), log (PartitionLog).
"""
from raftlog.storage.epochs import EpochEntry, LeaderEpochCache
from raftlog.storage.errors import (EpochOrderError, LogClosedError, LogStorageError,
                                    MessageTooLargeError, OffsetOutOfRangeError,
                                    UnexpectedAppendOffsetError)
from raftlog.storage.log import AppendResult, PartitionLog, RecoveryReport
from raftlog.storage.options import LogOptions
from raftlog.storage.segment import SegmentInfo

__all__ = [
    "AppendResult", "EpochEntry", "EpochOrderError", "LeaderEpochCache", "LogClosedError",
    "LogOptions", "LogStorageError", "MessageTooLargeError", "OffsetOutOfRangeError",
    "PartitionLog", "RecoveryReport", "SegmentInfo", "UnexpectedAppendOffsetError",
]
