"""The leader-epoch cache: which leader epoch started at which offset (Kafka KIP-101/KIP-279).

Owns the ordered list of (epoch, start_offset) entries of one partition, its persistence in
`leader-epoch-checkpoint` (atomic: tmp + fsync + rename + fsync dir, via storage.checkpoint) and
the OffsetsForLeaderEpoch answer. Imports only the stdlib and raftlog.storage.checkpoint; never
asyncio, aiohttp, pysyncobj or anything from raftlog.meta/server/replication.

Invariants: epochs strictly increase and start offsets strictly increase along the list. Each
change is persisted before the log bytes it describes are written (the log calls `assign` first),
so after a crash every batch in the log has its epoch in the file; recovery relies on that to
catch a corrupted epoch field (which lies outside the batch CRC) and then truncates the cache to
the recovered log end. Truncations may therefore be persisted later (`persist=False`, then
`persist_if_dirty()` in a worker thread): a stale file only holds entries outside the log, which
recovery drops.
"""
from __future__ import annotations

import bisect
import threading
from typing import NamedTuple

from raftlog.storage import checkpoint

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    """Epoch -> start offset map of one partition, owned by the log writer; only
    `persist_if_dirty()` may run in another thread (a worker finishing a deletion)."""

    def __init__(self, path: str | None, entries: list[EpochEntry] | None = None):
        self._path = path  # None: in memory only (tests)
        self._entries: list[EpochEntry] = list(entries or [])
        self._dirty = False          # changed since the last write (a deferred truncation)
        # Serialises file writes (the writer's assign vs a worker's deferred persist); each
        # write snapshots the entries inside it, so the last write is always the newest state.
        self._write_lock = threading.Lock()
        self._check()

    @classmethod
    def load(cls, path: str) -> tuple[LeaderEpochCache, bool]:
        """(cache, trusted): an unreadable or non-monotonic file gives an empty untrusted cache."""
        pairs = checkpoint.read_int_pairs(path)
        if pairs is None:
            return cls(path), False
        entries = [EpochEntry(e, o) for e, o in pairs]
        if not _monotonic(entries):
            return cls(path), False
        return cls(path, entries), True

    # -- queries ------------------------------------------------------------------------------
    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def latest_entry(self) -> EpochEntry | None:
        return self._entries[-1] if self._entries else None

    def epoch_for_offset(self, offset: int) -> int:
        """The epoch whose range holds `offset`, or -1 when the offset is before the first entry."""
        i = bisect.bisect_right(self._entries, offset, key=lambda e: e.start_offset) - 1
        return self._entries[i].epoch if i >= 0 else UNDEFINED_EPOCH

    def end_offset_for_epoch(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch (LeaderEpochFileCache.endOffsetFor, KIP-279).

        - undefined (-1) or larger than every known epoch: (-1, -1);
        - the latest epoch: (latest, log_end_offset);
        - otherwise the largest epoch <= requested and its end = start of the next higher epoch;
        - smaller than the first known epoch: (requested, start of the first epoch), exactly as
          Kafka does: that history was deleted, and the follower must not keep anything past
          where the leader's known history begins.
        """
        if requested_epoch == UNDEFINED_EPOCH or not self._entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if requested_epoch == self._entries[-1].epoch:
            return requested_epoch, log_end_offset
        i = bisect.bisect_right(self._entries, requested_epoch, key=lambda e: e.epoch)
        if i == len(self._entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        higher = self._entries[i]
        if i == 0:
            return requested_epoch, higher.start_offset
        return self._entries[i - 1].epoch, higher.start_offset

    # -- changes (each persisted before returning unless told otherwise) -----------------------
    def assign(self, epoch: int, start_offset: int, persist: bool = True) -> bool:
        """Record that `epoch` starts at `start_offset`; True when the cache changed.

        As Kafka: a no-op for the latest epoch at a later offset; an entry that is not monotonic
        with the tail first removes the tail entries it conflicts with.
        """
        if epoch < 0 or start_offset < 0:
            raise ValueError(f"epoch {epoch} and start offset {start_offset} must be >= 0")
        last = self.latest_entry()
        if last is not None and last.epoch == epoch and start_offset >= last.start_offset:
            return False
        while self._entries and (self._entries[-1].epoch >= epoch
                                 or self._entries[-1].start_offset >= start_offset):
            self._entries.pop()
        self._entries.append(EpochEntry(epoch, start_offset))
        self._changed(persist)
        return True

    def assign_many(self, pairs: list[tuple[int, int]]) -> bool:
        """Several `assign`s persisted once (a replica buffer may cross epochs)."""
        changed = [self.assign(e, o, persist=False) for e, o in pairs]
        if any(changed):
            self._persist()
        return any(changed)

    def truncate_from_end(self, end_offset: int, persist: bool = True) -> None:
        """Drop entries starting at or after `end_offset` (the log was truncated there).
        `persist=False` leaves the write to `persist_if_dirty()` (see the module docstring)."""
        n = len(self._entries)
        while self._entries and self._entries[-1].start_offset >= end_offset:
            self._entries.pop()
        if len(self._entries) != n:
            self._changed(persist)

    def truncate_from_start(self, start_offset: int, persist: bool = True) -> None:
        """Forget history before `start_offset`: entries at or before it are removed and the last
        of them is kept, moved to start at `start_offset` (Kafka truncateFromStart)."""
        i = bisect.bisect_right(self._entries, start_offset, key=lambda e: e.start_offset)
        if i == 0:
            return
        kept = EpochEntry(self._entries[i - 1].epoch, start_offset)
        if i == 1 and self._entries[0] == kept:
            return
        self._entries[:i] = [kept]
        self._changed(persist)

    def clear(self, persist: bool = True) -> None:
        if self._entries:
            self._entries.clear()
            self._changed(persist)

    def persist(self) -> None:
        self._persist()

    def persist_if_dirty(self) -> None:
        """Write a deferred truncation; safe in a worker thread while the writer appends."""
        if self._dirty:
            self._persist()

    def _changed(self, persist: bool) -> None:
        if persist:
            self._persist()
        else:
            self._check()
            self._dirty = True

    def _persist(self) -> None:
        with self._write_lock:
            self._dirty = False
            entries = list(self._entries)   # one C-level copy: a consistent snapshot
            assert _monotonic(entries), f"epoch cache not monotonic: {entries}"
            if self._path is not None:
                checkpoint.write_int_pairs(self._path, entries)

    def _check(self) -> None:
        assert _monotonic(self._entries), f"epoch cache not monotonic: {self._entries}"


def _monotonic(entries: list[EpochEntry]) -> bool:
    return all(a.epoch < b.epoch and a.start_offset < b.start_offset
               for a, b in zip(entries, entries[1:])) and all(
        e.epoch >= 0 and e.start_offset >= 0 for e in entries)
