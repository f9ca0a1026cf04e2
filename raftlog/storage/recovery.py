"""Opening a partition directory after a clean or unclean shutdown.

Owns the decisions of what to trust on disk, in this order:
1. Checkpoints (`recovery-checkpoint`: recovery point + log start offset; the epoch file; the HW
   file) are trusted when they parse, because they are only ever replaced atomically.
2. Segments wholly below the log start offset, and `*.deleted` files (renamed by a deletion or
   truncation whose worker had not unlinked them yet, see log.py "Deletion"), are leftovers of an
   interrupted delete: removed.
3. Segments entirely below the recovery point (every byte was fsynced before the checkpoint
   was written) are trusted without CRC checks, as Kafka does; the last segment only when it
   ends exactly at the recovery point (a clean close). Their index files are trusted only if
   they pass a sanity check and a header walk from the last index entry ends exactly at the
   file end with the expected next offset; otherwise that segment and all later ones are
   validated.
4. Every other segment (the one holding the recovery point, all later ones, the active one
   after a crash) is validated batch by batch: length, counts, offset contiguity, epoch, CRC.
   The first invalid batch and everything after it is cut, files included; later segments go
   too. Their indexes are rebuilt from scratch. So after a crash no batch failing its CRC is
   ever served; after a clean close, as in Kafka, bytes are not re-read at open.
5. The epoch cache must account for every validated batch's epoch (it is written before the
   batches it describes); without a readable epoch file every segment is validated and the cache
   is rebuilt from batch headers. It is then truncated to [log start, log end).
6. A log start beyond the recovered end empties the log and restarts it at the log start.
Everything validated is fsynced and a fresh recovery checkpoint is written, so the next open of
an untouched directory trusts it all.

Imports only the stdlib and raftlog.storage/codec/errors; never asyncio, aiohttp, pysyncobj or
anything from raftlog.meta/server/replication.
"""
from __future__ import annotations

import logging
import os
import re
from typing import NamedTuple

from raftlog.codec.batch import BatchHeader
from raftlog.storage import checkpoint, cleaner
from raftlog.storage.epochs import LeaderEpochCache
from raftlog.storage.options import LogOptions
from raftlog.storage.segment import (DELETED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX,
                                     TIMEINDEX_SUFFIX, Segment, file_stem)

log = logging.getLogger(__name__)

_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")


class Recovered(NamedTuple):
    segments: list[Segment]
    epochs: LeaderEpochCache
    log_start_offset: int
    high_watermark: int
    validated_from: int | None  # base offset of the first CRC-validated segment
    truncated_bytes: int        # bytes cut off torn or corrupt tails, whole segments included


def recover(directory: str, options: LogOptions, now_ms: int) -> Recovered:
    os.makedirs(directory, exist_ok=True)
    cleaner.recover_swap(directory)  # finish or undo an interrupted compaction swap first
    bases = _tidy_directory(directory)
    values = checkpoint.read_values(os.path.join(directory, checkpoint.RECOVERY_FILE)) or {}
    recovery_point = values.get("recovery_point")
    log_start = max(values.get("log_start_offset", 0), 0)
    hw_values = checkpoint.read_values(os.path.join(directory, checkpoint.HIGH_WATERMARK_FILE))
    high_watermark = (hw_values or {}).get("high_watermark", 0)
    epoch_path = os.path.join(directory, checkpoint.EPOCH_FILE)
    epochs, epochs_trusted = LeaderEpochCache.load(epoch_path)

    # 2. leftovers of an interrupted delete_before (the last segment always stays)
    while len(bases) > 1 and bases[1] <= log_start:
        _unlink_segment(directory, bases.pop(0))
    if not bases:
        bases = [log_start]
        Segment.create(directory, log_start, options, now_ms).close()

    # Epochs are checked only from the log start on: batches wholly before it are unreadable
    # history that the cache has forgotten, and a truncation may have let epochs restart lower.
    check_from = max(log_start, bases[0])
    prev_epoch = [-1]

    def epoch_ok(h: BatchHeader) -> bool:
        if h.next_offset <= check_from:
            return True
        if h.leader_epoch < prev_epoch[0]:
            return False
        prev_epoch[0] = h.leader_epoch
        if not epochs_trusted:
            return True
        expected = epochs.epoch_for_offset(max(h.base_offset, check_from))
        return expected == h.leader_epoch or expected == -1  # -1: before the cache's history

    rebuilt: list[tuple[int, int]] = []

    def on_batch(h: BatchHeader) -> None:
        if not epochs_trusted and h.next_offset > check_from and h.leader_epoch >= 0 and (
                not rebuilt or h.leader_epoch > rebuilt[-1][0]):
            rebuilt.append((h.leader_epoch, h.base_offset))

    segments: list[Segment] = []
    validated: list[Segment] = []
    truncated = 0
    validating = recovery_point is None or not epochs_trusted
    for i, base in enumerate(bases):
        if segments and base != segments[-1].next_offset:
            log.warning("%s: segment %d does not continue offset %d; dropping it and later ones",
                        directory, base, segments[-1].next_offset)
            truncated += _drop(directory, bases[i:])
            break
        seg = Segment.open(directory, base, options, now_ms)
        trusted_end = None if validating else _trusted_end(bases, i, recovery_point)
        if trusted_end is not None:
            if seg.load_trusted(trusted_end):
                segments.append(seg)
                continue
            log.info("%s: segment %d is not as the checkpoint says; validating from it",
                     directory, base)
        validating = True
        size_before = seg.size_bytes
        res = seg.recover(epoch_ok, on_batch)
        truncated += size_before - res.valid_bytes
        segments.append(seg)
        validated.append(seg)
        if i + 1 < len(bases):
            if res.stop_reason is not None:
                truncated += _drop(directory, bases[i + 1:])
                break
            seg.seal()  # not the active one: final time entry, as when it was rolled

    if not epochs_trusted:
        epochs = LeaderEpochCache(epoch_path)
        epochs.assign_many(rebuilt)
        epochs.persist()
    log_end = segments[-1].next_offset
    log_start = max(log_start, segments[0].base_offset)
    if log_start > log_end:
        log.warning("%s: log start %d is past the recovered end %d; restarting the log there",
                    directory, log_start, log_end)
        for seg in segments:
            truncated += seg.size_bytes
            seg.delete()
        segments = [Segment.create(directory, log_start, options, now_ms)]
        validated = []
        log_end = log_start
    epochs.truncate_from_start(log_start)
    epochs.truncate_from_end(log_end)

    for seg in validated:
        os.fdatasync(seg.fd)
    checkpoint.fsync_dir(directory)
    checkpoint.write_values(os.path.join(directory, checkpoint.RECOVERY_FILE),
                            {"recovery_point": log_end, "log_start_offset": log_start})
    validated_from = validated[0].base_offset if validated else None
    return Recovered(segments, epochs, log_start, high_watermark, validated_from, truncated)


def _trusted_end(bases: list[int], i: int, recovery_point: int | None) -> int | None:
    """The next offset segment i must end at to be trusted, None when it is not below the
    recovery point: a middle segment ends where the next begins; the last one must end exactly
    at the recovery point (anything past it was written after the last checkpoint)."""
    if recovery_point is None:
        return None
    if i + 1 < len(bases):
        return bases[i + 1] if bases[i + 1] <= recovery_point else None
    return recovery_point if bases[i] <= recovery_point else None


def _tidy_directory(directory: str) -> list[int]:
    """Base offsets of the segment logs present, after removing tmp files, files renamed for
    deletion and orphan indexes."""
    logs: set[int] = set()
    others: list[tuple[int, str]] = []
    for name in os.listdir(directory):
        if name.endswith(checkpoint.TMP_SUFFIX) or name.endswith(DELETED_SUFFIX):
            os.unlink(os.path.join(directory, name))
            continue
        m = _SEGMENT_FILE.match(name)
        if m is None:
            continue
        if m.group(2) == LOG_SUFFIX:
            logs.add(int(m.group(1)))
        else:
            others.append((int(m.group(1)), name))
    for base, name in others:
        if base not in logs:
            os.unlink(os.path.join(directory, name))
    return sorted(logs)


def _unlink_segment(directory: str, base: int) -> int:
    size = 0
    for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        path = os.path.join(directory, file_stem(base) + suffix)
        try:
            if suffix == LOG_SUFFIX:
                size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            pass
    return size


def _drop(directory: str, bases: list[int]) -> int:
    return sum(_unlink_segment(directory, b) for b in bases)
