"""Helpers shared by the storage tests: build batches, model what a read must return.

The model is deliberately naive (a list of whole batches, a linear scan): the tests compare the
engine's answers with it byte for byte.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from raftlog.codec import batch as B


def make_batch(records: int = 3, ts: int = 1000, value_bytes: int = 10, seed: int = 0,
               base_offset: int = 0, leader_epoch: int = -1, ts_step: int = 0) -> bytes:
    """One batch of `records` records with deterministic pseudo-random values."""
    rng = random.Random(seed)
    recs = [(b"k%d" % i, rng.randbytes(value_bytes), None, ts + i * ts_step)
            for i in range(records)]
    return B.encode(recs, base_offset=base_offset, leader_epoch=leader_epoch)


def restamp(batch: bytes, base_offset: int, leader_epoch: int) -> bytes:
    buf = bytearray(batch)
    B.stamp(buf, base_offset, leader_epoch)
    return bytes(buf)


@dataclass
class ModelBatch:
    base_offset: int
    next_offset: int
    epoch: int
    max_ts: int
    data: bytes  # as stored (stamped)

    @property
    def last_offset(self) -> int:
        return self.next_offset - 1


@dataclass
class LogModel:
    """What the log should hold: whole batches in order, plus start/end offsets."""

    batches: list[ModelBatch] = field(default_factory=list)
    log_start: int = 0
    log_end: int = 0
    epochs: list[tuple[int, int]] = field(default_factory=list)

    def append(self, data: bytes) -> ModelBatch:
        h = B.peek(data)
        assert h.base_offset == self.log_end
        mb = ModelBatch(h.base_offset, h.next_offset, h.leader_epoch, h.max_timestamp, data)
        self.epochs_on_append(mb)
        self.batches.append(mb)
        self.log_end = h.next_offset
        return mb

    def containing(self, offset: int) -> int:
        """Index of the first batch whose last offset >= offset."""
        for i, b in enumerate(self.batches):
            if b.last_offset >= offset:
                return i
        raise AssertionError(f"no batch holds {offset}")

    def read_candidates(self, offset: int, upper_bound: int | None) -> list[ModelBatch]:
        """Every batch a read at `offset` may return, in order (ignores max_bytes/segments)."""
        if offset >= self.log_end:
            return []
        out = []
        for b in self.batches[self.containing(offset):]:
            if upper_bound is not None and b.last_offset >= upper_bound:
                break
            out.append(b)
        return out

    def truncate_to(self, offset: int) -> int:
        """Kafka truncates to batch boundaries: the batch holding `offset` goes too."""
        if offset >= self.log_end:
            return self.log_end
        i = self.containing(offset)
        self.log_end = self.batches[i].base_offset
        del self.batches[i:]
        self.log_start = min(self.log_start, self.log_end)
        self.epochs_truncate_from_end(self.log_end)
        return self.log_end

    def delete_before(self, offset: int) -> None:
        if offset > self.log_start:
            self.log_start = offset
            self.epochs_truncate_from_start(offset)

    def reopened(self) -> None:
        """What recovery does to the epoch cache at open."""
        self.epochs_truncate_from_start(self.log_start)
        self.epochs_truncate_from_end(self.log_end)

    def latest_epoch(self) -> int:
        return self.epochs[-1][0] if self.epochs else -1

    # The epoch cache, modelled as a plain list under Kafka's rules (LeaderEpochFileCache).
    def epochs_on_append(self, b: ModelBatch) -> None:
        if b.epoch > self.latest_epoch():
            # Kafka's assign: tail entries not below the new one in both epoch and offset go
            # (after a delete of the whole log, the moved entry starts at this very offset).
            self.epochs = [e for e in self.epochs if e[0] < b.epoch and e[1] < b.base_offset]
            self.epochs.append((b.epoch, b.base_offset))

    def epochs_truncate_from_end(self, end: int) -> None:
        self.epochs = [e for e in self.epochs if e[1] < end]

    def epochs_truncate_from_start(self, start: int) -> None:
        before = [e for e in self.epochs if e[1] <= start]
        after = [e for e in self.epochs if e[1] > start]
        self.epochs = ([(before[-1][0], start)] if before else []) + after

    def offset_for_timestamp(self, ts: int) -> int | None:
        for b in self.batches:
            if b.next_offset > self.log_start and b.max_ts >= ts:
                return max(b.base_offset, self.log_start)
        return None

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch answer, by linear search."""
        starts = self.epochs
        if epoch < 0 or not starts:
            return -1, -1
        if epoch == starts[-1][0]:
            return epoch, self.log_end
        higher = [s for s in starts if s[0] > epoch]
        if not higher:
            return -1, -1
        lower = [s for s in starts if s[0] <= epoch]
        if not lower:
            return epoch, higher[0][1]
        return lower[-1][0], higher[0][1]
