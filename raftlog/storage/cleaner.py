"""Log compaction: keep the latest record per key in sealed segments below the high watermark.

Owns the cleaner's decisions (`plan_clean`: which segments, whether the dirty ratio is high
enough), the rewrite of segments (`clean`: offset map, batch rewriting, crash-safe swap) and the
recovery of an interrupted swap (`recover_swap`, called by recovery.py before anything else).
Imports only the stdlib, msgpack, raftlog.codec.batch and raftlog.storage; never asyncio or
anything from raftlog.meta/server/replication, and never reads the clock: callers pass now_ms.
`clean()` is blocking file work meant for a worker thread (the manager runs it through
asyncio.to_thread); it never mutates the PartitionLog: it returns freshly opened Segments that
the log's writer installs (`PartitionLog.install_cleaned`) on its own thread.

What survives (Kafka's rules, kafka-reference §5):
- a keyed record survives when it is the latest record of its key in [log start, end of the
  cleaned range); order and original offsets are kept;
- a tombstone (null value) that is the latest of its key survives until its batch's max
  timestamp is more than delete.retention.ms before now, then goes;
- records without a key (written before the topic became compacted) and control batches are
  kept as they are; the active segment and anything at or above the HW are never touched;
- segments younger than min.compaction.lag.ms (judged by their newest timestamp) are not
  cleaned; a log is cleaned only when its dirty share (bytes above the last cleaned offset,
  checkpointed in `cleaner-offset-checkpoint`) reaches min.cleanable.dirty.ratio, or when a
  tombstone that the last pass kept has expired since: that pass records the oldest kept
  tombstone's batch timestamp in the same checkpoint, so expired tombstones go even on a quiet
  log that never gets dirty enough again.

Batches stay the unit: each batch is copied verbatim when all its records survive, otherwise
re-encoded with the same base offset, epoch, attributes, timestamps, producer id/epoch, base
sequence and last_offset_delta, fewer records, each carrying its offset delta (codec/batch.py,
"Compacted batches"). Offsets stay contiguous (recovery, replica appends and the offset index
need no gap rules), so batches left without records are not dropped but folded:
- the last `PRODUCER_BATCHES_KEPT` batches of each producer id in the cleaned range keep their
  header (record_count 0 when emptied): idempotent-producer state is rebuilt from headers and
  remembers exactly that many batches per producer, so it comes out the same;
- every other run of consecutive empty batches of one segment and one leader epoch becomes one
  empty header with no producer (a filler) spanning the run's offsets, with the run's newest
  timestamp. So a compacted log holds at most one filler between two surviving batches, not one
  header per batch ever written (Kafka drops such batches and leaves an offset gap instead).

Crash-safe swap (`_swap`), one step per boundary (each can be killed, see tests):
1. every cleaned segment is written to `<base>.log.cleaned` and fsynced; the directory fsynced;
2. commit point: the marker `cleaner-swap` listing the bases is written atomically (tmp, fsync,
   rename, dir fsync);
3. each `.cleaned` file is renamed over its `.log` and the old index files are removed;
4. directory fsync, then the marker is removed.
Recovery (`recover_swap`): with a marker, finish step 3 for its bases (roll forward; every
`.cleaned` file is complete since step 1 ended before the marker existed); without one, delete
any `.cleaned` file (roll back). Either way the old or the new segments are whole and valid.

Replicas: every replica cleans its own log, independently, as Kafka does (followers run the same
loop on their own HW and segments). The rewrite is deterministic given the same segment, offset
map and time, but replicas roll segments at different moments and clean at different times, so
byte identity of replicas no longer holds below the HW for compacted topics. What does hold, and
what a checker must compare for compacted topics, is logical: at any offset that two replicas
both still hold, they hold the same record (key, value, timestamp, headers), and after every
replica has cleaned past an offset each holds exactly the latest record of every key below it
(tombstones aside). Non-compacted topics keep byte-identical replicas.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from operator import itemgetter
from typing import Callable, Iterator, NamedTuple, Sequence

import msgpack
from crc32c import crc32c

from raftlog.codec.batch import (CODEC_GZIP, CODEC_NONE, CRC_START, HEADER, HEADER_SIZE,
                                 LENGTH_OVERHEAD, MAGIC, NO_PRODUCER_ID, TIMESTAMP_LOG_APPEND,
                                 BatchHeader, peek)
from raftlog.errors import CorruptBatchError
from raftlog.storage import checkpoint
from raftlog.storage.options import LogOptions
from raftlog.storage.retention import segment_age_ts
from raftlog.storage.segment import (INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, Segment,
                                     SegmentInfo, file_stem)

CLEANED_SUFFIX = ".cleaned"
SWAP_MARKER = "cleaner-swap"
OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"   # first_dirty_offset
READ_BUFFER_BYTES = 8 << 20
PRODUCER_BATCHES_KEPT = 5      # = Kafka's NUM_BATCHES_TO_RETAIN, what producer state remembers
EMPTY_PAYLOAD = msgpack.packb([])

_key = itemgetter(1)


class CleanConfig(NamedTuple):
    delete_retention_ms: int
    min_cleanable_dirty_ratio: float
    min_compaction_lag_ms: int


class CleanerState(NamedTuple):
    """What the last pass left in `cleaner-offset-checkpoint`."""
    first_dirty_offset: int              # the cleaned range ended here
    oldest_tombstone_ms: int | None      # batch max timestamp of the oldest tombstone kept


class CleanPlan(NamedTuple):
    segments: tuple[SegmentInfo, ...]  # sealed segments to rewrite, in offset order
    end_offset: int                    # the offset map covers [log start, end_offset)
    dirty_ratio: float


class CleanStats(NamedTuple):
    read_bytes: int
    written_bytes: int
    records_read: int
    records_kept: int
    oldest_tombstone_ms: int | None   # see CleanerState


class Rewritten(NamedTuple):
    data: bytes                # the cleaned batch (the input itself when everything survives)
    records_in: int
    records_kept: int
    kept_tombstone: bool       # a keyed null value survived (not expired yet)


# -- decisions (pure) ---------------------------------------------------------------------------
def plan_clean(segments: Sequence[SegmentInfo], log_start: int, high_watermark: int,
               state: CleanerState, now_ms: int, cfg: CleanConfig) -> CleanPlan | None:
    """Which sealed segments to clean now, or None (nothing cleanable, or not dirty enough and
    no kept tombstone expired)."""
    cands: list[SegmentInfo] = []
    for s in segments:
        if s.is_active or s.next_offset > high_watermark:
            break
        if s.next_offset <= log_start or s.size_bytes == 0:
            continue
        if cfg.min_compaction_lag_ms > 0 and \
                now_ms - segment_age_ts(s) < cfg.min_compaction_lag_ms:
            break
        cands.append(s)
    if not cands:
        return None
    total = sum(s.size_bytes for s in cands)
    dirty = sum(s.size_bytes for s in cands if s.next_offset > state.first_dirty_offset)
    ratio = dirty / total
    tombstone_expired = state.oldest_tombstone_ms is not None and \
        state.oldest_tombstone_ms < now_ms - cfg.delete_retention_ms
    if not tombstone_expired and (dirty == 0 or ratio < cfg.min_cleanable_dirty_ratio):
        return None
    return CleanPlan(tuple(cands), cands[-1].next_offset, ratio)


def read_state(directory: str) -> CleanerState:
    values = checkpoint.read_values(os.path.join(directory, OFFSET_CHECKPOINT)) or {}
    return CleanerState(values.get("first_dirty_offset", 0), values.get("oldest_tombstone_ms"))


def _write_state(directory: str, state: CleanerState) -> None:
    values = {"first_dirty_offset": state.first_dirty_offset}
    if state.oldest_tombstone_ms is not None:
        values["oldest_tombstone_ms"] = state.oldest_tombstone_ms
    checkpoint.write_values(os.path.join(directory, OFFSET_CHECKPOINT), values)


# -- reading and rewriting batches --------------------------------------------------------------
def iter_file_batches(path: str) -> Iterator[tuple[BatchHeader, bytes]]:
    """(header, whole batch bytes) of every batch of a segment file, CRC checked."""
    with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
        while True:
            head = f.read(HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                return
            h = peek(head)
            data = head + f.read(h.size - HEADER_SIZE)
            if len(data) != h.size:
                return
            if crc32c(memoryview(data)[CRC_START:]) != h.crc:
                raise CorruptBatchError(f"{path}: CRC mismatch in batch at offset {h.base_offset}")
            yield h, data


def _body(h: BatchHeader, data: bytes) -> tuple:
    payload = data[HEADER_SIZE:]
    if h.codec == CODEC_GZIP:
        payload = zlib.decompress(payload)
    elif h.codec != CODEC_NONE:
        raise CorruptBatchError(f"unsupported codec {h.codec}")
    body = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=False)
    if not isinstance(body, tuple) or len(body) != h.record_count:
        raise CorruptBatchError(f"batch at offset {h.base_offset}: record count mismatch")
    return body


def _offsets(h: BatchHeader, body: tuple) -> Sequence[int]:
    base = h.base_offset
    if len(body) == h.last_offset_delta + 1:
        return range(base, base + len(body))
    return [base + r[4] for r in body]


class OffsetMap(NamedTuple):
    latest: dict[bytes | None, int]    # key -> offset of its latest record
    producer_tails: frozenset[int]     # base offsets of each producer's last batches
    read_bytes: int
    records: int


def build_offset_map(paths: Sequence[str], pace: Callable[[], None] = lambda: None
                     ) -> OffsetMap:
    """The latest offset of every key over the segment files, in order, and which batch headers
    producer state needs. Control batches hold no keys."""
    latest: dict[bytes | None, int] = {}
    tails: dict[int, deque[int]] = {}
    read = records = 0
    for path in paths:
        for h, data in iter_file_batches(path):
            read += len(data)
            if h.producer_id != NO_PRODUCER_ID:
                tail = tails.get(h.producer_id)
                if tail is None:
                    tail = tails[h.producer_id] = deque(maxlen=PRODUCER_BATCHES_KEPT)
                tail.append(h.base_offset)
            if h.is_control or h.record_count == 0:
                continue
            body = _body(h, data)
            records += len(body)
            latest.update(zip(map(_key, body), _offsets(h, body)))
            pace()
    kept = frozenset(base for tail in tails.values() for base in tail)
    return OffsetMap(latest, kept, read, records)


def rewrite_batch(h: BatchHeader, data: bytes, latest: dict[bytes | None, int],
                  tombstone_horizon_ms: int) -> Rewritten:
    """The cleaned batch. Tombstones go when the batch's max timestamp is below
    `tombstone_horizon_ms`."""
    if h.is_control or h.record_count == 0:
        return Rewritten(data, 0, 0, False)
    body = _body(h, data)
    offs = _offsets(h, body)
    drop_tombstones = h.max_timestamp < tombstone_horizon_ms
    keep = [i for i, (r, off) in enumerate(zip(body, offs))
            if r[1] is None or (latest.get(r[1]) == off
                                and not (drop_tombstones and r[2] is None))]
    # only an unexpired batch can keep a tombstone: skip the scan for expired ones
    tomb = not drop_tombstones and any(body[i][2] is None and body[i][1] is not None
                                       for i in keep)
    if len(keep) == len(body):
        return Rewritten(data, len(body), len(body), tomb)
    base = h.base_offset
    out = [(body[i][0], body[i][1], body[i][2], body[i][3], offs[i] - base) for i in keep]
    payload = msgpack.packb(out, use_bin_type=True)
    if h.codec == CODEC_GZIP:
        payload = zlib.compress(payload, 1)
    buf = bytearray(HEADER_SIZE + len(payload))
    HEADER.pack_into(buf, 0, base, HEADER_SIZE - LENGTH_OVERHEAD + len(payload), h.leader_epoch,
                     MAGIC, 0, h.attributes, h.last_offset_delta, h.first_timestamp,
                     h.max_timestamp, h.producer_id, h.producer_epoch, h.base_sequence,
                     len(keep))
    buf[HEADER_SIZE:] = payload
    struct.pack_into(">I", buf, 17, crc32c(memoryview(buf)[CRC_START:]))
    return Rewritten(bytes(buf), len(body), len(keep), tomb)


# -- the whole clean ----------------------------------------------------------------------------
Step = Callable[[str], None]   # called at each step boundary (crash-injection tests raise)

Pace = Callable[[], None]      # called after each batch: the caller's throttle (may sleep)


def _no_step(_name: str) -> None:
    return None


def clean(directory: str, plan: CleanPlan, now_ms: int, cfg: CleanConfig, options: LogOptions,
          step: Step = _no_step, pace: Pace = lambda: None
          ) -> tuple[list[Segment], CleanStats]:
    """Rewrite the planned segments and swap them in on disk; returns the new Segments (opened,
    indexes rebuilt, sealed) for the log's writer to install, and statistics. Blocking: run it
    in a worker thread. A failure before the commit point leaves the old segments in place."""
    log_paths = [_path(directory, s.base_offset, LOG_SUFFIX) for s in plan.segments]
    omap = build_offset_map(log_paths, pace)
    latest, records_in = omap.latest, omap.records
    step("mapped")
    horizon = now_ms - cfg.delete_retention_ms
    written = kept = read = 0
    oldest_tombstone: int | None = None
    bases = [s.base_offset for s in plan.segments]
    try:
        for base, path in zip(bases, log_paths):
            tmp = path + CLEANED_SUFFIX
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                with os.fdopen(os.dup(fd), "wb", buffering=READ_BUFFER_BYTES) as out:
                    run = _EmptyRun()
                    for h, data in iter_file_batches(path):
                        read += len(data)
                        new, _n, k, tomb = rewrite_batch(h, data, latest, horizon)
                        pace()
                        kept += k
                        if tomb and (oldest_tombstone is None
                                     or h.max_timestamp < oldest_tombstone):
                            oldest_tombstone = h.max_timestamp
                        if k == 0 and not h.is_control and \
                                h.base_offset not in omap.producer_tails:
                            if not run.extends(h):
                                written += run.write(out)
                                run.start(h)
                            continue
                        written += run.write(out)
                        out.write(new)
                        written += len(new)
                    written += run.write(out)
                os.fsync(fd)
            finally:
                os.close(fd)
            step(f"wrote-{base}")
        checkpoint.fsync_dir(directory)
    except BaseException:
        for path in log_paths:
            _unlink(path + CLEANED_SUFFIX)
        raise
    step("written")
    _swap(directory, bases, step)
    _write_state(directory, CleanerState(plan.end_offset, oldest_tombstone))
    step("checkpointed")
    segs = [_open_rebuilt(directory, b, options, now_ms) for b in bases]
    return segs, CleanStats(read, written, records_in, kept, oldest_tombstone)


class _EmptyRun:
    """Consecutive empty batches of one leader epoch, written as one filler header."""

    def __init__(self) -> None:
        self.first: BatchHeader | None = None
        self.next_offset = self.max_timestamp = 0

    def start(self, h: BatchHeader) -> None:
        self.first, self.next_offset, self.max_timestamp = h, h.next_offset, h.max_timestamp

    def extends(self, h: BatchHeader) -> bool:
        f = self.first
        if f is None or f.leader_epoch != h.leader_epoch or h.base_offset != self.next_offset \
                or (f.attributes ^ h.attributes) & TIMESTAMP_LOG_APPEND:
            return False
        self.next_offset = h.next_offset
        self.max_timestamp = max(self.max_timestamp, h.max_timestamp)
        return True

    def write(self, out) -> int:
        """Write the filler (if any) and start over; returns the bytes written."""
        f = self.first
        if f is None:
            return 0
        self.first = None
        data = empty_batch(f.base_offset, self.next_offset - f.base_offset, f.leader_epoch,
                           f.first_timestamp, self.max_timestamp,
                           f.attributes & TIMESTAMP_LOG_APPEND)
        out.write(data)
        return len(data)


def empty_batch(base_offset: int, offsets: int, leader_epoch: int, first_timestamp: int,
                max_timestamp: int, attributes: int = 0) -> bytes:
    """A batch of no records and no producer covering `offsets` offsets from `base_offset`."""
    buf = bytearray(HEADER_SIZE + len(EMPTY_PAYLOAD))
    HEADER.pack_into(buf, 0, base_offset, HEADER_SIZE - LENGTH_OVERHEAD + len(EMPTY_PAYLOAD),
                     leader_epoch, MAGIC, 0, attributes, offsets - 1, first_timestamp, max_timestamp,
                     NO_PRODUCER_ID, -1, -1, 0)
    buf[HEADER_SIZE:] = EMPTY_PAYLOAD
    struct.pack_into(">I", buf, 17, crc32c(memoryview(buf)[CRC_START:]))
    return bytes(buf)


def _swap(directory: str, bases: list[int], step: Step) -> None:
    checkpoint.write_rows(os.path.join(directory, SWAP_MARKER), [(b,) for b in bases])
    step("committed")
    for i, b in enumerate(bases):
        _replace_segment(directory, b)
        step(f"renamed-{i}")
    checkpoint.fsync_dir(directory)
    _unlink(os.path.join(directory, SWAP_MARKER))
    checkpoint.fsync_dir(directory)
    step("swapped")


def _replace_segment(directory: str, base: int) -> None:
    log_path = _path(directory, base, LOG_SUFFIX)
    if os.path.exists(log_path + CLEANED_SUFFIX):
        os.replace(log_path + CLEANED_SUFFIX, log_path)
    # The old indexes point at old positions: drop them so they are rebuilt.
    _unlink(_path(directory, base, INDEX_SUFFIX))
    _unlink(_path(directory, base, TIMEINDEX_SUFFIX))


def _open_rebuilt(directory: str, base: int, options: LogOptions, now_ms: int) -> Segment:
    seg = Segment.open(directory, base, options, now_ms)
    res = seg.recover(None, lambda _h: None)
    if res.stop_reason is not None:
        seg.close()
        raise CorruptBatchError(f"cleaned segment {base} does not validate: {res.stop_reason}")
    seg.seal()
    return seg


def recover_swap(directory: str) -> None:
    """Finish (marker present) or undo (no marker) an interrupted swap; see the docstring."""
    marker = os.path.join(directory, SWAP_MARKER)
    rows = checkpoint.read_rows(marker) if os.path.exists(marker) else None
    if rows is not None:
        for row in rows:
            _replace_segment(directory, int(row[0]))
        checkpoint.fsync_dir(directory)
    _unlink(marker)
    for name in os.listdir(directory):
        if name.endswith(CLEANED_SUFFIX):
            _unlink(os.path.join(directory, name))


def _path(directory: str, base: int, suffix: str) -> str:
    return os.path.join(directory, file_stem(base) + suffix)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
