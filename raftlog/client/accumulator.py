"""Producer batches: records wait here, per partition, until the sender drains them.

Owns: one FIFO of `ProducerBatch` per partition (the open batch is the last one), the bytes held
(`memory_used`, bounded by `buffer_memory` through the producer), linger/batch_size readiness,
per-partition flow control (in-flight count, retry ordering) and delivery-timeout expiry.
Imports only the stdlib, the client's structs/partitioner and `raftlog.errors`; it does no IO
and never awaits: the producer appends, the sender drains (aiokafka's accumulator/sender split).

Per-record work is one tuple appended to a list, already in the wire shape
`(timestamp_delta, key, value, headers or None)` that msgpack packs as is
(`codec.batch.encode_wire`): a batch is encoded once, when it is first drained, with no
per-record Python work.

Ordering rules (what keeps a partition's records in order, with or without idempotence):
1. A partition's batches leave in FIFO order; only the head of its queue is ever drained.
2. A batch that failed with a retriable error goes back to the *front*, ahead of newer batches
   (ordered by `serial`, which is also sequence order).
3. While a partition has a retried batch outstanding, it has at most one batch in flight, so a
   retry is never overtaken (Kafka does the same after an error with idempotence on).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Generator, Iterable

from raftlog.client.structs import RecordMetadata

# Bytes msgpack adds around a record's key and value (array header, timestamp delta, bin
# headers, nil headers); used to estimate a batch's size without encoding it.
RECORD_OVERHEAD_BYTES = 8
NO_SEQUENCE = -1



class ProducerBatch:
    """Records for one partition that travel in one encoded batch."""

    __slots__ = ("topic", "partition", "records", "size", "created_s", "deadline_s", "closed",
                 "future", "serial", "attempts", "retry_at_s", "last_error", "base_sequence",
                 "producer_id", "producer_epoch", "encoded", "first_ts", "max_ts", "uniform_ts",
                 "last_ts", "in_flight", "sent_behind", "payload", "maybe_written")

    def __init__(self, topic: str, partition: int, serial: int, now_s: float,
                 deadline_s: float, future: asyncio.Future[tuple[int, int]]) -> None:
        self.topic = topic
        self.partition = partition
        # One entry per record, in wire shape; a send_batch batch whose records all have
        # first_ts (uniform_ts) and whose payload is packed may hold other per-record entries
        # (its values): then only their count is read.
        self.records: list[Any] = []
        self.size = 0
        self.created_s = now_s
        self.deadline_s = deadline_s
        self.closed = False
        self.future = future
        self.serial = serial
        self.attempts = 0
        # An attempt ended without a definite answer (timeout, lost connection): it may be in
        # the log, and only its producer id and sequence let the broker recognise a retry.
        self.maybe_written = False
        self.retry_at_s = 0.0
        self.last_error: BaseException | None = None
        self.base_sequence = NO_SEQUENCE
        self.producer_id = -1
        self.producer_epoch = -1
        self.encoded: bytes | None = None
        self.first_ts = -1
        self.max_ts = -1
        # True while every record shares first_ts: then metadata needs no per-record timestamps
        # after delivery and the records can be dropped.
        self.uniform_ts = True
        # Timestamp of the last record appended: a record with the same one can be appended
        # without touching first_ts/max_ts/uniform_ts (the producer's send() fast path).
        self.last_ts = -1
        self.in_flight = False
        # Whether an earlier sequenced batch of the partition was still unanswered when this
        # attempt was sent (set by the sender): then a sequence error answered to it may
        # describe the broker before that batch arrived, not now.
        self.sent_behind = False
        # Records payload packed and compressed by send_batch; None = pack `records` at drain.
        self.payload: bytes | None = None

    @property
    def record_count(self) -> int:
        return len(self.records)

    def timestamp_of(self, index: int) -> int:
        if self.uniform_ts:
            return self.first_ts
        return self.first_ts + self.records[index][0]

    def metadata(self, index: int) -> RecordMetadata:
        """Metadata of record `index`; only valid once `future` holds a result."""
        base_offset, log_append_time = self.future.result()
        offset = base_offset + index if base_offset >= 0 else -1
        ts = log_append_time if log_append_time >= 0 else self.timestamp_of(index)
        return RecordMetadata(self.topic, self.partition, offset, ts)

    def __repr__(self) -> str:
        return (f"<ProducerBatch {self.topic}-{self.partition} serial={self.serial} "
                f"records={len(self.records)} seq={self.base_sequence} attempts={self.attempts}>")


class RecordFuture(tuple):
    """What `send()` returns: await it for the record's RecordMetadata.

    A (batch, index) tuple instead of one asyncio.Future per record: all records of a batch
    share the batch's future, and building this handle costs one tuple. `done()`, `result()`
    and `exception()` mirror asyncio.Future's.
    """

    __slots__ = ()

    @property
    def batch(self) -> ProducerBatch:
        return tuple.__getitem__(self, 0)

    @property
    def index(self) -> int:
        return tuple.__getitem__(self, 1)

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        b, i = self
        yield from b.future.__await__()
        return b.metadata(i)

    def done(self) -> bool:
        return self[0].future.done()

    def result(self) -> RecordMetadata:
        """The metadata of a delivered record; raises its error, or InvalidStateError if pending."""
        b, i = self
        return b.metadata(i)

    def exception(self) -> BaseException | None:
        fut = self[0].future
        return fut.exception() if fut.done() else None

    def __repr__(self) -> str:
        b, i = self
        state = "pending" if not b.future.done() else (
            "failed" if b.future.exception() else f"offset={b.metadata(i).offset}")
        return f"<RecordFuture {b.topic}-{b.partition}[{i}] {state}>"


class PendingRecordFuture:
    """The handle of a record that waited in the producer's line for buffer room or metadata:
    `admitted` resolves once it is in a batch (or fails, e.g. BufferFullError)."""

    __slots__ = ("batch", "index", "admitted")

    def __init__(self, admitted: asyncio.Future[None]) -> None:
        self.batch: ProducerBatch | None = None
        self.index = -1
        self.admitted = admitted

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        yield from self.admitted.__await__()
        b = self.batch
        assert b is not None
        yield from b.future.__await__()
        return b.metadata(self.index)

    def done(self) -> bool:
        if self.batch is None:
            return self.admitted.done()
        return self.batch.future.done()

    def result(self) -> RecordMetadata:
        if self.batch is None:
            self.admitted.result()  # raises its error, or InvalidStateError while waiting
            raise asyncio.InvalidStateError("record not admitted yet")
        return self.batch.metadata(self.index)

    def exception(self) -> BaseException | None:
        if self.batch is None:
            return self.admitted.exception() if self.admitted.done() else None
        fut = self.batch.future
        return fut.exception() if fut.done() else None




class PartitionQueue:
    """One partition's batches (oldest first) and its flow-control counters."""

    __slots__ = ("topic", "partition", "batches", "in_flight", "retrying", "next_sequence",
                 "outstanding")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batches: deque[ProducerBatch] = deque()
        self.in_flight = 0     # batches of this partition sent and not answered
        self.retrying = 0      # retried batches not yet completed (rule 3 of the docstring)
        # Idempotence (owned by the sender): next sequence to hand out, and sequenced batches not
        # yet completed, in sequence order.
        self.next_sequence = 0
        self.outstanding: list[ProducerBatch] = []


class Accumulator:
    """Per-partition batch queues. Synchronous; the event loop is the only thread."""

    def __init__(self, *, batch_size: int, linger_ms: float, delivery_timeout_ms: float,
                 max_in_flight: int, on_batch_closed: Callable[[str, int], None] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        assert batch_size > 0 and linger_ms >= 0 and max_in_flight >= 1
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.max_in_flight = max_in_flight
        self._on_batch_closed = on_batch_closed
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._clock = clock or loop.time
        self.queues: dict[tuple[str, int], PartitionQueue] = {}
        self._open: dict[tuple[str, int], ProducerBatch] = {}
        self.incomplete: set[ProducerBatch] = set()
        self.memory_used = 0
        self.flushing = 0  # > 0: every batch is ready now, linger or not
        self._serial = 0
        self.wake: Callable[[], None] = lambda: None  # set by the sender
        self.on_freed: Callable[[], None] = lambda: None  # set by the producer (wait line)

    # -- appending (producer side) ------------------------------------------------------------
    def append(self, tp: tuple[str, int], key: bytes | None, value: bytes | None,
               headers: Any, timestamp_ms: int, size: int,
               sticky: dict[str, int] | None = None) -> RecordFuture:
        """Add one record to partition `tp`; `size` is its estimated encoded bytes.

        The per-record hot path: one dict lookup, one tuple appended, two additions.
        `sticky` (topic -> partition) is given for null-key records placed by the sticky
        partitioner: when the record does not fit the open batch, closing it moves the sticky
        partition, and the record starts a batch *there* (Kafka's abortOnNewBatch).
        """
        b = self._open.get(tp)
        if b is None or (b.size + size > self.batch_size and b.records):
            if b is not None:
                self._close(b)
                if sticky is not None:
                    moved = sticky.get(tp[0], tp[1])
                    if moved != tp[1]:
                        return self.append((tp[0], moved), key, value, headers, timestamp_ms,
                                           size)
            b = self._new_batch(tp[0], tp[1])
            b.first_ts = b.max_ts = b.last_ts = timestamp_ms
            delta = 0
        else:
            delta = timestamp_ms - b.first_ts
            if delta:
                b.uniform_ts = False
                if timestamp_ms > b.max_ts:
                    b.max_ts = timestamp_ms
            b.last_ts = timestamp_ms
        recs = b.records
        recs.append((delta, key, value, headers))
        b.size += size
        self.memory_used += size
        if b.size >= self.batch_size:
            self._close(b)
        return RecordFuture((b, len(recs) - 1))

    def append_batch(self, topic: str, partition: int, records: list[Any], payload: bytes,
                     first_ts: int, max_ts: int, uniform_ts: bool, size: int) -> ProducerBatch:
        """Enqueue a whole closed batch (send_batch) whose records `payload` is already packed
        (and compressed): after every record appended before it. `records` has one entry per
        record (see ProducerBatch.records)."""
        tp = (topic, partition)
        open_batch = self._open.get(tp)
        if open_batch is not None:
            self._close(open_batch)
        b = self._new_batch(topic, partition)
        b.records = records
        b.first_ts = first_ts
        b.max_ts = max_ts
        b.uniform_ts = uniform_ts
        b.size = size
        b.payload = payload
        self.memory_used += size
        self._close(b)
        return b

    def _new_batch(self, topic: str, partition: int) -> ProducerBatch:
        tp = (topic, partition)
        q = self.queues.get(tp)
        if q is None:
            q = self.queues[tp] = PartitionQueue(topic, partition)
        now = self._clock()
        self._serial += 1
        fut: asyncio.Future[tuple[int, int]] = self._loop.create_future()
        fut.add_done_callback(mark_retrieved)
        b = ProducerBatch(topic, partition, self._serial, now, now + self.delivery_timeout_s, fut)
        q.batches.append(b)
        self._open[tp] = b
        self.incomplete.add(b)
        self.wake()  # the sender learns the new linger deadline
        return b

    def _close(self, b: ProducerBatch) -> None:
        if b.closed:
            return
        b.closed = True
        tp = (b.topic, b.partition)
        if self._open.get(tp) is b:
            del self._open[tp]
        if self._on_batch_closed is not None:
            self._on_batch_closed(b.topic, b.partition)
        self.wake()

    # -- draining (sender side) ---------------------------------------------------------------
    def drain(self, now: float, leader_of: Callable[[str, int], int],
              node_has_room: Callable[[int], bool], max_request_bytes: int
              ) -> tuple[dict[int, list[ProducerBatch]], float | None, bool]:
        """Take at most one ready batch per partition, grouped into one request per leader.

        Returns (node -> batches, when to look again (None = only when woken), whether some
        partition has no known leader). A node's request holds batches up to
        `max_request_bytes` (one oversized batch may go alone).
        """
        out: dict[int, list[ProducerBatch]] = {}
        out_bytes: dict[int, int] = {}
        next_s: float | None = None
        no_leader = False
        for q in self.queues.values():
            if not q.batches:
                continue
            b = q.batches[0]
            if b.deadline_s < (next_s if next_s is not None else float("inf")):
                next_s = b.deadline_s  # wake for expiry
            if b.retry_at_s > now:
                next_s = min(next_s, b.retry_at_s) if next_s is not None else b.retry_at_s
                continue
            if not b.closed and not self.flushing:
                due = b.created_s + self.linger_s
                if due > now:
                    next_s = min(next_s, due) if next_s is not None else due
                    continue
            if q.in_flight >= self.max_in_flight or (q.retrying and q.in_flight):
                continue
            node = leader_of(q.topic, q.partition)
            if node < 0:
                no_leader = True
                continue
            if node not in out and not node_has_room(node):
                continue
            size = b.size
            used = out_bytes.get(node, 0)
            if used and used + size > max_request_bytes:
                continue
            q.batches.popleft()
            if not b.closed:
                self._close(b)
            b.in_flight = True
            q.in_flight += 1
            out.setdefault(node, []).append(b)
            out_bytes[node] = used + size
        return out, next_s, no_leader

    def requeue(self, b: ProducerBatch, retry_at_s: float) -> None:
        """Put a batch that failed retriably back at the front of its partition, in serial order."""
        q = self.queues[(b.topic, b.partition)]
        if b.in_flight:
            b.in_flight = False
        if b.attempts == 0:
            q.retrying += 1
        b.attempts += 1
        b.retry_at_s = retry_at_s
        i = 0
        for other in q.batches:
            if other.serial > b.serial:
                break
            i += 1
        q.batches.insert(i, b)

    def sent_done(self, b: ProducerBatch) -> None:
        """A request carrying `b` came back (any outcome): free its in-flight slot."""
        q = self.queues[(b.topic, b.partition)]
        if b.in_flight:
            b.in_flight = False
            q.in_flight -= 1

    def expired(self, now: float) -> list[ProducerBatch]:
        """Queued (not in-flight) batches past their delivery deadline, removed from queues."""
        out: list[ProducerBatch] = []
        for q in self.queues.values():
            if q.batches and q.batches[0].deadline_s <= now:
                keep: deque[ProducerBatch] = deque()
                for b in q.batches:
                    (out if b.deadline_s <= now else keep).append(b)
                q.batches = keep
        for b in out:
            tp = (b.topic, b.partition)
            if self._open.get(tp) is b:
                del self._open[tp]
            b.closed = True
        return out

    def complete(self, b: ProducerBatch, base_offset: int, log_append_time_ms: int) -> None:
        self._finish(b)
        if not b.future.done():
            b.future.set_result((base_offset, log_append_time_ms))
        if b.uniform_ts:
            b.records = []  # metadata needs only first_ts now; free the values
        b.encoded = None
        b.payload = None

    def fail(self, b: ProducerBatch, exc: BaseException) -> None:
        self._finish(b)
        if not b.future.done():
            b.future.set_exception(exc)
        b.encoded = None
        b.payload = None

    def _finish(self, b: ProducerBatch) -> None:
        if b in self.incomplete:
            self.incomplete.discard(b)
            self.memory_used -= b.size
            q = self.queues.get((b.topic, b.partition))
            if q is not None:
                if b.attempts and q.retrying:
                    q.retrying -= 1
                if b in q.outstanding:
                    q.outstanding.remove(b)
            self.on_freed()

    def pending_batches(self) -> Iterable[ProducerBatch]:
        for q in self.queues.values():
            yield from q.batches

    def has_undrained(self) -> bool:
        return any(q.batches for q in self.queues.values())


def mark_retrieved(fut: asyncio.Future[Any]) -> None:
    """Errors reach users through the handles they await; a batch nobody awaits must not make
    asyncio log "exception was never retrieved"."""
    if not fut.cancelled():
        fut.exception()
