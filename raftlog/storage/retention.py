"""Retention decisions: which whole segments may go, and when a quiet active segment rolls.

Pure functions over `SegmentInfo` rows (PartitionLog.segments()); the caller (the replica
manager's retention loop, on the leader) applies the answer with `PartitionLog.delete_before`.
Imports only the stdlib and storage.segment; never asyncio or anything from
raftlog.meta/server/replication, and never reads the clock: callers pass now_ms.

Rules (Kafka's, docs/implementation/log.md and kafka-reference §5):
- only whole segments are deleted, oldest first, stopping at the first one that must stay;
- never the active segment, never a segment holding data at or above the high watermark
  (its next offset must be <= HW);
- time: a segment is expired when now - its newest timestamp > retention.ms (-1 = never). A
  segment without a usable timestamp (empty, or its newest record stamped after its last
  append, i.e. in the future) is judged by its last append time, which is never earlier
  than any honest record's timestamp, so this only ever keeps data longer;
- size: while the log is larger than retention.bytes (-1 = off), the oldest segment goes if
  the log without it is still at least retention.bytes (Kafka: `diff - size >= 0`);
- either rule deletes.
`roll_due`: the active segment rolls when it is older than segment.ms even without appends,
so a quiet topic's expired data becomes a sealed segment that retention can delete.
"""
from __future__ import annotations

from typing import Sequence

from raftlog.storage.segment import SegmentInfo


def segment_age_ts(s: SegmentInfo) -> int:
    """The timestamp a segment is judged by: its newest record, else its last append. A
    record stamped after the segment's last append (a producer clock ahead, or a bogus
    CreateTime) is no usable age: taken as is, one such record would pin this segment, and so
    every later one, until the wall clock caught up with it."""
    ts = s.max_timestamp_ms
    return ts if 0 <= ts <= s.last_append_ms else s.last_append_ms


def retention_cutoff(segments: Sequence[SegmentInfo], log_start: int, high_watermark: int,
                     now_ms: int, retention_ms: int, retention_bytes: int) -> int | None:
    """The new log start offset (the next offset of the last deletable segment), or None when
    nothing may be deleted."""
    live = [s for s in segments if s.next_offset > log_start]
    if retention_bytes >= 0:
        over = sum(s.size_bytes for s in live) - retention_bytes
    else:
        over = -1
    cutoff = None
    for s in live:
        if s.is_active or s.next_offset > high_watermark or s.next_offset <= s.base_offset:
            break
        by_time = retention_ms >= 0 and now_ms - segment_age_ts(s) > retention_ms
        by_size = retention_bytes >= 0 and over - s.size_bytes >= 0
        if not (by_time or by_size):
            break
        over -= s.size_bytes
        cutoff = s.next_offset
    if cutoff is None or cutoff <= log_start:
        return None
    return cutoff


def roll_due(active: SegmentInfo, now_ms: int, segment_ms: int) -> bool:
    """Whether the (non-empty) active segment is older than segment.ms and should roll now."""
    return active.is_active and active.size_bytes > 0 and \
        now_ms - active.created_ms > segment_ms
