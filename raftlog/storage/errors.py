"""Errors the storage engine raises, as subclasses of raftlog's wire error classes.

Owns only the storage-specific exception types; each maps to an existing `ErrorCode` so the
server can answer with it unchanged. Imports only raftlog.errors; never asyncio, aiohttp,
pysyncobj or anything from raftlog.meta/server/replication.
"""
from __future__ import annotations

from raftlog.errors import ErrorCode, RaftlogError, for_code

OffsetOutOfRangeError = for_code(ErrorCode.OFFSET_OUT_OF_RANGE)
MessageTooLargeError = for_code(ErrorCode.MESSAGE_TOO_LARGE)


class UnexpectedAppendOffsetError(for_code(ErrorCode.INVALID_RECORD)):  # type: ignore[misc]
    """append_replica got batches that do not continue the log exactly (Kafka's
    UnexpectedAppendOffsetException): hint has expected_offset and got_offset."""


class EpochOrderError(for_code(ErrorCode.FENCED_LEADER_EPOCH)):  # type: ignore[misc]
    """An append carries a leader epoch older than the latest one in the epoch cache: the writer
    is stale (leader path) or the follower skipped divergence truncation (replica path)."""


class LogStorageError(RaftlogError):
    """The on-disk log is inconsistent in a way recovery could not fix while open (e.g. a trusted
    sealed segment whose headers no longer parse); restart to let recovery deal with it."""


class LogClosedError(RaftlogError):
    """The log was closed; the caller raced a shutdown."""
