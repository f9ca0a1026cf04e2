"""Idempotent-producer state of one partition: the last batches of each producer id.

Owns Kafka's dedupe rule (KIP-98): per (producer id, partition) the broker remembers the last
`BATCHES_PER_PRODUCER` batches (first/last sequence -> offsets). A batch whose sequences match
a remembered one is a retry: it is answered with the original offsets and not written again.
The next sequence is accepted; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is
INVALID_PRODUCER_EPOCH. The table is rebuilt from batch headers (the log carries producer id,
epoch and base sequence), so a new leader dedupes retries sent to the old one.

Pure: works on batch headers only; imports codec and errors, never storage or asyncio.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from raftlog.codec.batch import BatchHeader
from raftlog.errors import ErrorCode, error

BATCHES_PER_PRODUCER = 5     # Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN


class CachedBatch(NamedTuple):
    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass
class ProducerEntry:
    epoch: int
    batches: deque[CachedBatch] = field(default_factory=lambda: deque(maxlen=BATCHES_PER_PRODUCER))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


class ProducerStateTable:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, h: BatchHeader) -> CachedBatch | None:
        """Before appending `h`: None to append, a CachedBatch for a retry, or raises."""
        if h.producer_id < 0:
            return None
        e = self.producers.get(h.producer_id)
        first, last = h.base_sequence, h.base_sequence + h.record_count - 1
        if e is None:
            if first != 0:
                raise error(ErrorCode.UNKNOWN_PRODUCER_ID,
                            f"producer {h.producer_id} is unknown here and starts at sequence "
                            f"{first}, not 0: its state expired or was never written")
            return None
        if h.producer_epoch < e.epoch:
            raise error(ErrorCode.INVALID_PRODUCER_EPOCH,
                        f"producer {h.producer_id} epoch {h.producer_epoch} is older than "
                        f"{e.epoch}: a newer instance of this producer exists")
        if h.producer_epoch > e.epoch:
            if first != 0:
                raise error(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                            f"a new epoch {h.producer_epoch} must start at sequence 0, "
                            f"got {first}")
            return None
        for b in e.batches:
            if b.first_seq == first and b.last_seq == last:
                return b
        if first == e.last_seq + 1:
            return None
        if first <= e.last_seq:
            raise error(ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
                        f"producer {h.producer_id} sequence {first} was written before and is "
                        f"older than the last {BATCHES_PER_PRODUCER} batches kept")
        raise error(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"producer {h.producer_id} sent sequence {first}, expected {e.last_seq + 1}")

    def update(self, h: BatchHeader) -> None:
        """Record an appended (stamped) batch."""
        if h.producer_id < 0:
            return
        e = self.producers.get(h.producer_id)
        if e is None or h.producer_epoch > e.epoch:
            e = self.producers[h.producer_id] = ProducerEntry(h.producer_epoch)
        elif h.producer_epoch < e.epoch:
            return
        # last_offset_delta, not record_count: the log cleaner removes records of a batch but
        # keeps its header fields, so the sequence range survives compaction (as Kafka's).
        e.batches.append(CachedBatch(h.base_sequence, h.base_sequence + h.last_offset_delta,
                                     h.base_offset, h.last_offset))

    def rebuild(self, headers: Iterable[BatchHeader]) -> None:
        self.producers.clear()
        for h in headers:
            self.update(h)
