"""PartitionLog: the file-backed log of one partition, a list of segments with one writer.

Owns the segment set and the offsets that span it (log start, log end, flushed), rolling,
writing the two append paths' plans (plan.py: leader stamps, follower keeps), reads,
truncation, deletion of old segments, the epoch cache's upkeep and the recovery/HW
checkpoints. Imports only the stdlib,
raftlog.codec.batch, raftlog.errors and raftlog.storage; never asyncio, aiohttp, pysyncobj or
anything from raftlog.meta/server/replication, and it never reads the clock: callers pass now_ms.

Threads: single writer, not thread-safe, except `flush()` and `finish_deletes()`, which may run
in a worker thread while the writer keeps appending. `_lock` guards only the fields those
snapshot (segment list, log end, flushed offset, truncation count, pending deletions); flush()
fsyncs dups of the segment fds outside it, and `_fsync_lock` serialises fsync rounds so that
concurrent callers share one (group commit: whoever waits behind a round finds its offset
already covered).

Durability: bytes are written with os.write (page cache) on append; they are durable once
`flushed_offset` passes them. Policy "fsync": the caller flushes (in a thread) before
acknowledging; "interval": every flush_interval_ms and after a roll. close() flushes inline; a
roll does not itself (see _roll): it raises `rolled_since_flush`, and the caller's flush (in a
worker thread) covers the sealed segment and persists the recovery point.

Deletion is split in two, as Kafka's async segment delete: `delete_before`, `truncate_to` and
`truncate_fully_and_start_at` do only quick work on the writer's thread (move the offsets,
drop the doomed segments from the list under `_lock`, ftruncate, rename the doomed files to
`*.deleted`, which frees their names at once) and leave the slow half to `finish_deletes()`,
which the caller runs in a worker thread: fdatasync of a truncated segment, the epoch file and
the recovery checkpoint (log start, recovery point; its directory fsync makes the renames
durable), then the unlinks. A crash in between leaves `*.deleted` files, which recovery
removes, and possibly the old checkpoint: the log start is then the first surviving segment's
base (below the requested one: older data reappears, as after an unclean Kafka shutdown, and
retention deletes it again). Renames go outside-in (oldest first for retention, newest first
for truncation) so that the surviving `.log` files stay contiguous.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import threading
from typing import Iterable, Iterator, NamedTuple

from raftlog.codec.batch import BatchHeader
from raftlog.storage import checkpoint, recovery
from raftlog.storage.epochs import EpochEntry
from raftlog.storage.errors import EpochOrderError, LogClosedError, OffsetOutOfRangeError
from raftlog.storage.options import SEGMENT_OFFSETS_MAX, LogOptions
from raftlog.storage.plan import (P_BASE, P_NEXT, P_POS, P_SIZE, Planned, plan_leader,
                                  plan_replica)
from raftlog.storage.segment import Segment, SegmentInfo


class AppendResult(NamedTuple):
    base_offset: int          # offset of the first appended record
    last_offset: int          # offset of the last appended record
    log_end_offset: int       # = last_offset + 1
    position: int             # file position of the first batch in its segment
    segment_base_offset: int  # segment holding the first batch
    batch_count: int
    size_bytes: int


class RecoveryReport(NamedTuple):
    validated_from: int | None  # base offset of the first segment validated batch by batch
    truncated_bytes: int        # bytes of torn or corrupt tail removed


class PartitionLog:
    """Use `PartitionLog.open(...)`; the constructor takes an already recovered directory."""

    def __init__(self, directory: str, options: LogOptions, rec: recovery.Recovered):
        self._dir = directory
        self._options = options
        self._segments: list[Segment] = rec.segments
        self._bases = [s.base_offset for s in rec.segments]
        self._epochs = rec.epochs
        self._log_start = rec.log_start_offset
        self._leo = rec.segments[-1].next_offset
        self._flushed = self._leo  # recovery fsynced what it validated
        self._hw_checkpoint = rec.high_watermark
        # what recovery did at open, for logs and tests
        self.recovery_report = RecoveryReport(rec.validated_from, rec.truncated_bytes)
        self._lock = threading.Lock()
        self._fsync_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._checkpointed_recovery_point = self._leo  # recovery wrote this
        self._truncations = 0
        self._closed = False
        self._dir_unsynced = False  # a roll created a file since the last directory fsync
        # The slow half of deletions, for finish_deletes() (guarded by _lock): whether the
        # checkpoint and epoch file are due, dup fds of truncated segments to fdatasync, and
        # renamed *.deleted files to unlink. _finish_lock serialises finish_deletes() calls.
        self._finish_due = False
        self._doomed_syncs: list[int] = []
        self._doomed_paths: list[str] = []
        self._finish_lock = threading.Lock()

    @classmethod
    def open(cls, directory: str, options: LogOptions | None = None,
             now_ms: int = 0) -> PartitionLog:
        """Open (creating if needed) and recover the partition directory; see recovery.py."""
        options = options or LogOptions()
        return cls(directory, options, recovery.recover(directory, options, now_ms))

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- offsets and metadata -----------------------------------------------------------------
    @property
    def directory(self) -> str:
        return self._dir

    @property
    def options(self) -> LogOptions:
        return self._options

    @property
    def log_start_offset(self) -> int:
        return self._log_start

    @property
    def log_end_offset(self) -> int:
        return self._leo

    @property
    def rolled_since_flush(self) -> bool:
        """A roll sealed a segment (and made a file) since the last flush: the interval policy
        flushes it at once rather than at the end of its interval ("on roll")."""
        return self._dir_unsynced

    @property
    def flushed_offset(self) -> int:
        """Every offset below this is on disk (fsynced); never above log_end_offset."""
        return self._flushed

    @property
    def high_watermark_checkpoint(self) -> int:
        """The HW last written with write_high_watermark (0 when never written)."""
        return self._hw_checkpoint

    @property
    def latest_epoch(self) -> int:
        return self._epochs.latest_epoch

    @property
    def epoch_entries(self) -> tuple[EpochEntry, ...]:
        return self._epochs.entries

    @property
    def closed(self) -> bool:
        return self._closed

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest epoch <= `epoch`, its end offset), Kafka's OffsetsForLeaderEpoch."""
        return self._epochs.end_offset_for_epoch(epoch, self._leo)

    def reconfigure(self, segment_bytes: int | None = None, segment_ms: int | None = None,
                    flush_policy: str | None = None, flush_interval_ms: int | None = None,
                    max_batch_bytes: int | None = None) -> None:
        """Change the options of a live log (topic config altered at runtime); None keeps a
        value. The roll limits apply from the next append or roll check, the size limit from
        the next append; the flush fields are read by the caller (which flushes) each time it
        decides. Raises ConfigError, leaving the options as they were, on a bad value."""
        changes = {k: v for k, v in (("segment_bytes", segment_bytes),
                                     ("segment_ms", segment_ms),
                                     ("flush_policy", flush_policy),
                                     ("flush_interval_ms", flush_interval_ms),
                                     ("max_batch_bytes", max_batch_bytes)) if v is not None}
        if changes and any(getattr(self._options, k) != v for k, v in changes.items()):
            # One atomic swap of a frozen object: a reader sees the old or the new options.
            self._options = dataclasses.replace(self._options, **changes)

    def segments(self) -> list[SegmentInfo]:
        last = len(self._segments) - 1
        return [s.info(i == last) for i, s in enumerate(self._segments)]

    # -- appends ------------------------------------------------------------------------------
    def append(self, batch: bytes | bytearray | memoryview, leader_epoch: int,
               now_ms: int) -> AppendResult:
        """Leader path: stamp each batch of `batch` with the next offsets and `leader_epoch` in
        place (pass a bytearray to avoid a copy), then append the bytes verbatim.

        The caller validated CRCs; this checks only what offsets depend on: whole batches,
        counts and the size limit. A new epoch is recorded in the epoch cache first.
        """
        self._check_open()
        buf = batch if type(batch) is bytearray or (
            isinstance(batch, memoryview) and not batch.readonly) else bytearray(batch)
        if leader_epoch < 0:
            raise ValueError(f"leader epoch {leader_epoch} must be >= 0")
        latest = self._epochs.latest_epoch
        if leader_epoch < latest:
            raise EpochOrderError(f"append in leader epoch {leader_epoch} after epoch {latest}",
                                  {"latest_epoch": latest})
        plan = plan_leader(buf, self._leo, leader_epoch, self._options.max_batch_bytes)
        if leader_epoch > latest:
            self._epochs.assign(leader_epoch, self._leo)
        return self._write(buf, plan, now_ms)

    def append_replica(self, buf: bytes | bytearray | memoryview, now_ms: int) -> AppendResult:
        """Follower path: whole batches already stamped by the leader, written with their
        offsets. Each batch must continue the log exactly and pass its CRC (one C call each);
        epochs may only grow, and new ones go to the epoch cache first."""
        self._check_open()
        mv = memoryview(buf)
        plan, new_epochs = plan_replica(mv, self._leo, self._epochs.latest_epoch)
        if not plan:
            seg = self._segments[-1]
            return AppendResult(self._leo, self._leo - 1, self._leo, seg.size_bytes,
                                seg.base_offset, 0, 0)
        if new_epochs:
            self._epochs.assign_many(new_epochs)
        return self._write(mv, plan, now_ms)

    def _write(self, buf: bytes | bytearray | memoryview, plan: list[Planned],
               now_ms: int) -> AppendResult:
        """Append planned batches in runs, one os.write per run, rolling between runs."""
        seg_bytes = self._options.segment_bytes
        first_pos = first_seg = -1
        i, n = 0, len(plan)
        last = plan[-1]
        while i < n:
            seg = self._maybe_roll(plan[i], now_ms)
            start = plan[i][P_POS]
            run_end, j = last[P_POS] + last[P_SIZE], n
            if not ((seg.size_bytes + run_end - start <= seg_bytes or i + 1 == n)
                    and last[P_NEXT] - seg.base_offset <= SEGMENT_OFFSETS_MAX):
                run_end, j = start + plan[i][P_SIZE], i + 1  # not all fit: find this run's end
                while j < n and seg.size_bytes + run_end - start + plan[j][P_SIZE] <= seg_bytes \
                        and plan[j][P_NEXT] - seg.base_offset <= SEGMENT_OFFSETS_MAX:
                    run_end += plan[j][P_SIZE]
                    j += 1
            data = buf if start == 0 and run_end == len(buf) else memoryview(buf)[start:run_end]
            position = seg.append(data, plan if i == 0 and j == n else plan[i:j], start, now_ms)
            with self._lock:
                self._leo = plan[j - 1][P_NEXT]
            if first_pos < 0:
                first_pos, first_seg = position, seg.base_offset
            i = j
        return AppendResult(plan[0][P_BASE], last[P_NEXT] - 1, self._leo, first_pos, first_seg,
                            n, last[P_POS] + last[P_SIZE] - plan[0][P_POS])

    def _maybe_roll(self, first: Planned, now_ms: int) -> Segment:
        seg = self._segments[-1]
        if seg.size_bytes == 0:
            return seg
        created = seg.created_ms
        if (created is not None and now_ms - created > self._options.segment_ms) or \
                seg.size_bytes + first[P_SIZE] > self._options.segment_bytes or \
                first[P_NEXT] - seg.base_offset > SEGMENT_OFFSETS_MAX:
            self._roll(now_ms)
            return self._segments[-1]
        return seg

    # -- rolling, flushing, checkpoints -------------------------------------------------------
    def roll(self, now_ms: int) -> int:
        """Seal the active segment and start a new one at the log end (no-op when it is empty);
        returns the active segment's base offset."""
        self._check_open()
        if not self._segments[-1].is_empty:
            self._roll(now_ms)
        return self._segments[-1].base_offset

    def _roll(self, now_ms: int) -> None:
        # No fsync here: an inline fsync of up to a segment of dirty data would stall the
        # writer (the event loop) for seconds. The next flush() (group commit or the interval
        # timer, in a worker thread) covers the sealed segment and the new file's directory
        # entry, then moves the persisted recovery point past it, as Kafka flushes rolled
        # segments from a background task.
        self._segments[-1].seal()
        new = Segment.create(self._dir, self._leo, self._options, now_ms)
        with self._lock:
            self._segments.append(new)
            self._bases.append(new.base_offset)
            self._dir_unsynced = True

    def flush(self) -> int:
        """fsync everything appended so far; returns the new flushed offset. Thread-safe: may
        run in a worker thread while the writer appends (see the module docstring). When the
        flushed offset passes a sealed segment the recovery point is persisted too, so the
        next open does not validate that segment again. An fsync error propagates and the
        flushed offset stays put; treat the log as failed then (after a failed fsync Linux may
        drop the dirty pages, so a retry could falsely succeed)."""
        with self._fsync_lock:
            with self._lock:
                if self._closed or (self._leo <= self._flushed and not self._dir_unsynced):
                    return self._flushed
                target, generation = self._leo, self._truncations
                fds = [os.dup(s.fd) for s in self._segments if s.next_offset > self._flushed]
                active_base = self._segments[-1].base_offset
                new_files, self._dir_unsynced = self._dir_unsynced, False
            try:
                for fd in fds:
                    os.fdatasync(fd)
                if new_files:
                    checkpoint.fsync_dir(self._dir)   # entries of segments created by rolls
            except BaseException:
                with self._lock:
                    self._dir_unsynced = self._dir_unsynced or new_files
                raise
            finally:
                for fd in fds:
                    os.close(fd)
            with self._lock:
                # A truncation during the fsync may have removed what we flushed.
                if generation == self._truncations and target > self._flushed:
                    self._flushed = target
                flushed = self._flushed
            if self._checkpointed_recovery_point < active_base <= flushed:
                self.checkpoint()
            return flushed

    def checkpoint(self) -> None:
        """Persist the recovery point (= flushed offset) and the log start offset. Called by
        the writer and by flush() in a worker thread, hence its own lock."""
        with self._checkpoint_lock:
            values = {"recovery_point": self._flushed, "log_start_offset": self._log_start}
            checkpoint.write_values(os.path.join(self._dir, checkpoint.RECOVERY_FILE), values)
            self._checkpointed_recovery_point = values["recovery_point"]

    def write_high_watermark(self, high_watermark: int) -> None:
        """Persist the HW for the replication layer (atomic; costs two fsyncs)."""
        checkpoint.write_values(os.path.join(self._dir, checkpoint.HIGH_WATERMARK_FILE),
                                {"high_watermark": high_watermark})
        self._hw_checkpoint = high_watermark

    def close(self) -> None:
        """Finish deletions, flush, seal the active segment's indexes, write checkpoints, close
        the files."""
        if self._closed:
            return
        self.finish_deletes()
        self.flush()
        self._segments[-1].seal()
        self.checkpoint()
        with self._lock:
            self._closed = True
        for seg in self._segments:
            seg.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"partition log {self._dir} is closed")

    # -- reads --------------------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int,
             upper_bound: int | None = None) -> bytes:
        """Whole batches starting with the one holding `offset`: the first one even when it
        alone exceeds `max_bytes` (as Kafka), then as many as fit, within one segment, never a
        batch whose last offset >= `upper_bound` (the HW, exclusive)."""
        self._check_open()
        if offset < self._log_start or offset > self._leo:
            raise self._out_of_range(offset)
        if upper_bound is not None and upper_bound >= self._leo:
            upper_bound = None
        if offset == self._leo or (upper_bound is not None and offset >= upper_bound):
            return b""
        i = bisect.bisect_right(self._bases, offset) - 1
        found = None
        while found is None and i < len(self._segments):
            seg = self._segments[i]
            found = seg.locate(offset)
            i += 1
        assert found is not None, f"offset {offset} below log end {self._leo} not found"
        pos, h = found
        if upper_bound is not None and h.last_offset >= upper_bound:
            return b""
        return seg.read_batches(pos, h, max_bytes, upper_bound)

    def _out_of_range(self, offset: int) -> Exception:
        return OffsetOutOfRangeError(
            f"offset {offset} is outside [{self._log_start}, {self._leo}]",
            {"log_start_offset": self._log_start, "log_end_offset": self._leo})

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """Base offset of the first batch (at/after the log start) whose max timestamp >=
        `timestamp`, or None. Batch granularity: records of that batch older than `timestamp`
        are the client's to skip, as the broker never reads records."""
        self._check_open()
        for seg in self._segments:
            found = seg.first_with_timestamp(timestamp, self._log_start)
            if found is not None:
                return found
        return None

    def iter_batch_headers(self, from_offset: int | None = None) -> Iterator[BatchHeader]:
        """Headers of every batch from the one holding `from_offset` (default: log start) to
        the log end as of the call: for rebuilding producer state without reading records."""
        self._check_open()
        offset = self._log_start if from_offset is None else max(from_offset, self._log_start)
        end = self._leo
        i = max(bisect.bisect_right(self._bases, offset) - 1, 0)
        for seg in list(self._segments[i:]):
            for h in seg.headers_from(offset):
                if h.base_offset >= end:
                    return
                yield h

    def last_batch_header(self) -> BatchHeader | None:
        """Header of the last batch at or after the log start, None for an empty log."""
        self._check_open()
        if self._leo <= self._log_start:
            return None
        i = bisect.bisect_right(self._bases, self._leo - 1) - 1
        found = self._segments[i].locate(self._leo - 1)
        return None if found is None else found[1]

    # -- compaction ---------------------------------------------------------------------------
    def install_cleaned(self, cleaned: list[Segment]) -> int:
        """Put segments the cleaner rewrote (storage/cleaner.py, already swapped in on disk) in
        place of the open ones with the same base and offsets; returns how many. Called by the
        writer. A segment no longer in the log (retention or truncation meanwhile) is closed."""
        self._check_open()
        installed, old = 0, []
        with self._lock:
            for seg in cleaned:
                i = bisect.bisect_left(self._bases, seg.base_offset)
                if i < len(self._segments) - 1 and self._bases[i] == seg.base_offset \
                        and self._segments[i].next_offset == seg.next_offset:
                    old.append(self._segments[i])
                    self._segments[i] = seg
                    installed += 1
                else:
                    old.append(seg)
        for seg in old:  # sealed: nothing pending, so close the fd only (the paths are reused)
            if seg.fd >= 0:
                os.close(seg.fd)
                seg.fd = -1
        return installed

    # -- truncation and deletion (the quick half; see "Deletion" in the module docstring) ------
    @property
    def deletes_pending(self) -> bool:
        """A deletion or truncation awaits `finish_deletes()`."""
        return self._finish_due

    def truncate_to(self, offset: int) -> int:
        """Drop everything at or after `offset`; returns the new log end.

        Truncation is to batch boundaries, as Kafka: an `offset` inside a batch drops that whole
        batch, so the new log end is its base offset (<= `offset`). Below the first segment the
        log is emptied and restarts at `offset`. Durable once `finish_deletes()` returns.
        """
        self._check_open()
        if offset >= self._leo:
            return self._leo
        if offset < self._segments[0].base_offset:
            self.truncate_fully_and_start_at(offset)
            return self._leo
        i = bisect.bisect_right(self._bases, offset) - 1
        doomed = self._segments[i + 1:]
        with self._lock:
            self._truncations += 1
            del self._segments[i + 1:]
            del self._bases[i + 1:]
        self._retire(reversed(doomed))
        seg = self._segments[i]
        seg.truncate_to(offset)
        with self._lock:
            self._truncations += 1
            self._leo = seg.next_offset
            self._flushed = min(self._flushed, self._leo)
            self._doomed_syncs.append(os.dup(seg.fd))
            self._finish_due = True
        self._log_start = min(self._log_start, self._leo)
        self._epochs.truncate_from_end(self._leo, persist=False)
        return self._leo

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the log empty at `offset` (log start = end =
        `offset`): for a follower whose fetch offset fell below the leader's log start. Durable
        once `finish_deletes()` returns."""
        self._check_open()
        if offset < 0:
            raise ValueError(f"offset {offset} must be >= 0")
        with self._lock:
            # log end = flushed = offset at once: a concurrent flush() finds nothing to do
            # while the segment list is empty
            self._truncations += 1
            doomed, self._segments, self._bases = self._segments, [], []
            self._leo = self._flushed = offset
        self._epochs.clear(persist=False)
        self._log_start = offset
        self._retire(doomed)
        new = Segment.create(self._dir, offset, self._options, doomed[-1].last_append_ms)
        with self._lock:
            self._segments, self._bases = [new], [offset]
            self._finish_due = True

    def delete_before(self, offset: int) -> int:
        """Move the log start to `offset` and drop the segments wholly below it; returns how
        many. The active segment is rolled first when the whole log is below `offset`. The log
        start is persisted and the files unlinked by `finish_deletes()`."""
        self._check_open()
        if offset > self._leo:
            raise self._out_of_range(offset)
        if offset <= self._log_start:
            return 0
        self._log_start = offset
        self._epochs.truncate_from_start(offset, persist=False)
        active = self._segments[-1]
        if active.next_offset <= offset and not active.is_empty:
            self._roll(active.last_append_ms)
        dead = 0
        while dead + 1 < len(self._segments) and self._segments[dead].next_offset <= offset:
            dead += 1
        with self._lock:
            doomed = self._segments[:dead]
            del self._segments[:dead]
            del self._bases[:dead]
            self._finish_due = True
        self._retire(doomed)
        return dead

    def _retire(self, doomed: Iterable[Segment]) -> None:
        """Rename segments already removed from the list, in the given order, for unlinking."""
        paths = [p for seg in doomed for p in seg.rename_for_delete()]
        with self._lock:
            self._doomed_paths += paths

    # -- the slow half of deletions -----------------------------------------------------------
    def finish_deletes(self) -> int:
        """Make the pending deletions and truncations durable and unlink the renamed files;
        returns how many files were unlinked. Blocking (fsyncs): run it in a worker thread;
        thread-safe against the writer and other callers, a no-op when nothing is pending.
        Once it returns, every deletion issued before the call is durable."""
        with self._finish_lock:
            with self._lock:
                if not self._finish_due:
                    return 0
                self._finish_due = False
                fds, self._doomed_syncs = self._doomed_syncs, []
                paths, self._doomed_paths = self._doomed_paths, []
            try:
                for fd in fds:
                    os.fdatasync(fd)   # the ftruncate of a truncated segment
            finally:
                for fd in fds:
                    os.close(fd)
            self._epochs.persist_if_dirty()
            self.checkpoint()   # log start + recovery point; fsyncs the directory (renames)
            for path in paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            return len(paths)
