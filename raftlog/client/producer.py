"""Producer: the user-facing API for writing records (aiokafka's AIOKafkaProducer shape).

Owns: configuration checks, the per-record `send()` fast path (serialise, pick a partition,
append a tuple), what the wait line admits and how it fails (the line itself is
client/wait_line.py), `flush`, `send_batch`, and the lifecycle of the Client, Accumulator,
WaitLine and Sender it builds. Imports the client's modules, `codec.batch` and
`errors`; never raftlog.server/meta/storage/replication.

Back-pressure: records occupy `buffer_memory` from `send()` until their batch is answered. When
a record does not fit (or its topic is not in the metadata yet), `send()` does not block the
event loop: the record joins a FIFO *wait line* and everything sent after it queues behind it,
so order is kept. A record still in line after `max_block_ms` fails with BufferFullError (or
UnknownTopicOrPartitionError when its topic never appeared). Loops that produce faster than the
cluster absorbs should `await producer.drain()` now and then, like `StreamWriter.drain()`, or
await the futures they get.

    async with Producer("127.0.0.1:9091", acks="all") as p:
        md = await p.send("events", b"hello", key=b"user-1")     # RecordMetadata
        futs = [p.send("events", v) for v in values]             # pipelined
        await p.flush()
"""
from __future__ import annotations

import asyncio
import logging
from itertools import repeat
from operator import itemgetter
import time
from typing import Any, Callable, Iterable, Sequence

from raftlog.client.accumulator import (RECORD_OVERHEAD_BYTES, Accumulator, PendingRecordFuture,
                                       ProducerBatch, RecordFuture)
from raftlog.client.client import Client
from raftlog.client.errors import BufferFullError, IllegalStateError
from raftlog.client.partitioner import DefaultPartitioner, positive_murmur2
from raftlog.client.sender import Sender
from raftlog.client.structs import RecordMetadata
from raftlog.client.wait_line import Waiting, WaitLine
from raftlog.codec import batch as codec
from raftlog.errors import ErrorCode, RaftlogError, error

log = logging.getLogger("raftlog.producer")
_now = time.time
_FIELD0, _FIELD1, _FIELD2 = itemgetter(0), itemgetter(1), itemgetter(2)
_BYTES_OR_NONE = {bytes, type(None)}
# "No clock reading this loop turn": below any int64 timestamp, so never a batch's last_ts.
_NO_MS = -(1 << 63) - 1

KIB = 1024
MIB = 1024 * KIB
# Kafka's limit: the broker keeps the last 5 batches per producer and partition for dedupe, so
# more than 5 in flight could make a retried batch look like a gap.
IDEMPOTENT_IN_FLIGHT_MAX = 5
_ACKS = {"all": -1, -1: -1, "-1": -1, 1: 1, "1": 1, 0: 0, "0": 0}


# Kafka's batch.size default is 16 KiB; here each produce request costs ~0.3-0.5 ms of Python
# (client and brokers, replica fetches included) whatever its size, so a batch carries more
# records before that cost dominates: 64 -> 256 KiB took send() of 100 B records from ~0.14 to
# ~0.28 M/s into RF=1 and from ~0.1 to ~0.23 M/s into RF=3 acks=all (benchmarks/produce_perf.py,
# same machine load). Batches only grow this big under load: linger_ms closes them first
# otherwise, and memory is counted by bytes used, not by batch_size.
DEFAULT_BATCH_SIZE = 256 * KIB


class Producer:
    """Async producer. `async with Producer(...) as p:` or `await p.start()` / `await p.stop()`."""

    def __init__(self, bootstrap_servers: str | Iterable[str] = "127.0.0.1:9091", *,
                 acks: str | int = "all",
                 linger_ms: float = 5,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 max_in_flight: int = 5,
                 buffer_memory: int = 32 * MIB,
                 max_block_ms: int = 60_000,
                 delivery_timeout_ms: int = 120_000,
                 request_timeout_ms: int = 30_000,
                 retry_backoff_ms: int = 100,
                 compression: str = "none",
                 enable_idempotence: bool = True,
                 max_request_size: int = 1 * MIB,
                 bootstrap_timeout_ms: int = 10_000,
                 metadata_max_age_ms: int = 300_000,
                 key_serializer: Callable[[Any], bytes] | None = None,
                 value_serializer: Callable[[Any], bytes] | None = None,
                 partitioner: Callable[[str, bytes | None, int], int] | None = None,
                 client_id: str = "raftlog-producer") -> None:
        if acks not in _ACKS:
            raise ValueError(f"acks must be 'all', 1 or 0, got {acks!r}")
        if compression not in codec.CODECS:
            raise ValueError(f"compression must be one of {sorted(codec.CODECS)}, "
                             f"got {compression!r}")
        self.acks = _ACKS[acks]
        # Idempotence needs an answer to know what was written; with acks=0 there is none.
        self.idempotent = bool(enable_idempotence) and self.acks != 0
        if self.idempotent and max_in_flight > IDEMPOTENT_IN_FLIGHT_MAX:
            raise ValueError(f"max_in_flight must be <= {IDEMPOTENT_IN_FLIGHT_MAX} with "
                             f"enable_idempotence (got {max_in_flight})")
        for name, v, lo in (("linger_ms", linger_ms, 0), ("batch_size", batch_size, 1),
                            ("max_in_flight", max_in_flight, 1),
                            ("buffer_memory", buffer_memory, 1), ("max_block_ms", max_block_ms, 0),
                            ("delivery_timeout_ms", delivery_timeout_ms, 1),
                            ("request_timeout_ms", request_timeout_ms, 1),
                            ("retry_backoff_ms", retry_backoff_ms, 0),
                            ("max_request_size", max_request_size, 1)):
            if v < lo:
                raise ValueError(f"{name} must be >= {lo}, got {v}")
        self.client_id = client_id
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.buffer_memory = buffer_memory
        self.max_block_ms = max_block_ms
        self.delivery_timeout_ms = delivery_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.max_request_size = max_request_size
        self.codec_id = codec.CODECS[compression]
        self._key_serializer = key_serializer
        self._value_serializer = value_serializer
        self._partitioner = partitioner or DefaultPartitioner()
        # Null-key fast path: read the default partitioner's sticky choice directly.
        self._sticky = (self._partitioner.sticky.current
                        if isinstance(self._partitioner, DefaultPartitioner) else None)
        # Keyed records with the default partitioner: its keyed choice, called directly.
        self._keyed_default = type(self._partitioner) is DefaultPartitioner
        self._serializing = key_serializer is not None or value_serializer is not None
        self.client = Client(bootstrap_servers, request_timeout_ms=request_timeout_ms,
                             bootstrap_timeout_ms=bootstrap_timeout_ms,
                             metadata_max_age_ms=metadata_max_age_ms,
                             retry_backoff_ms=retry_backoff_ms)
        # topic -> partition count, a live view kept current by the client's metadata.
        self._counts = self.client.metadata.partition_counts
        self._acc: Accumulator | None = None
        self._sender: Sender | None = None
        self._sender_task: asyncio.Task[None] | None = None
        # topic -> the open batch of its sticky partition, last used by a null-key record: what
        # send()'s fast path appends to while that batch is open, has room, and the clock
        # reading is its last record's. Filled by send() only when the record did not wait in
        # line and there are no serializers; emptied when a record must wait or sends stop, so
        # the fast path never overtakes the wait line or runs after stop(). A topic deleted
        # while its batch is open gets that batch's fate (UNKNOWN_TOPIC_OR_PARTITION retries)
        # until the batch leaves, instead of waiting in line.
        self._fast: dict[str, ProducerBatch] = {}
        # Stays below both batch_size (a full batch closes on the slow path) and
        # max_request_size (no single record can be too large).
        self._fast_limit = min(batch_size, max_request_size)
        self._ms = _NO_MS  # the wall clock (ms) read in this loop turn (see _tick_ms)
        self._line: WaitLine | None = None  # built with the accumulator, in start()
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Bootstrap, get a producer id (idempotence), start the sender."""
        if self._sender_task is not None:
            return
        if self._closed:
            raise IllegalStateError("a stopped producer cannot be started again")
        await self.client.start()
        try:
            self._acc = Accumulator(batch_size=self.batch_size, linger_ms=self.linger_ms,
                                    delivery_timeout_ms=self.delivery_timeout_ms,
                                    max_in_flight=self.max_in_flight,
                                    on_batch_closed=self._on_batch_closed)
            self._sender = Sender(self.client, self._acc, acks=self.acks,
                                  idempotent=self.idempotent, max_in_flight=self.max_in_flight,
                                  request_timeout_ms=self.request_timeout_ms,
                                  retry_backoff_ms=self.retry_backoff_ms,
                                  max_request_size=self.max_request_size, codec_id=self.codec_id)
            self._line = WaitLine(self.max_block_ms,
                                  partition_count=self.client.metadata.partition_count,
                                  fits=self._fits, admit=self._admit,
                                  expired_error=self._expired_error,
                                  want_topic=self.client.add_topic,
                                  request_update=self.client.request_update)
            self._acc.on_freed = self._line.freed
            if self.idempotent:
                await self._sender.init_producer_id()
        except BaseException:
            await self.client.close()
            raise
        self._sender_task = asyncio.get_running_loop().create_task(
            self._sender.run(), name="raftlog-sender")
        self._sender_task.add_done_callback(self._sender_died)

    async def stop(self, timeout_ms: float | None = None) -> None:
        """Deliver what is pending (each batch within delivery_timeout_ms, or all within
        `timeout_ms`), then close everything; records still pending fail with IllegalStateError."""
        if self._closed:
            return
        self._refuse_sends()
        if self._sender_task is None:
            await self.client.close()
            return
        try:
            if not self._sender_task.done():
                await self.flush(timeout_ms)
        except RaftlogError as exc:
            log.warning("producer stopping with records undelivered: %s", exc)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        stopped = IllegalStateError("producer stopped before the record was delivered")
        assert self._sender_task is not None and self._line is not None
        self._sender_task.cancel()
        # return_exceptions: its cancellation (or a crash _sender_died already logged) is
        # expected; a cancellation of stop() itself still propagates.
        await asyncio.gather(self._sender_task, return_exceptions=True)
        await self._line.close(stopped)
        assert self._sender is not None and self._acc is not None
        await self._sender.close()
        for b in list(self._acc.incomplete):
            self._acc.fail(b, stopped)
        await self.client.close()

    async def __aenter__(self) -> "Producer":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def _sender_died(self, task: asyncio.Task[None]) -> None:
        """A crashed sender would leave every future pending forever: fail them loudly."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("producer sender task crashed", exc_info=exc)
        dead = error(ErrorCode.UNKNOWN_SERVER_ERROR, f"producer sender crashed: {exc!r}")
        self._refuse_sends()
        if self._acc is not None:
            for b in list(self._acc.incomplete):
                self._acc.fail(b, dead)

    def _refuse_sends(self) -> None:
        """From now on send() raises: the fast path has nothing to append to either."""
        self._closed = True
        self._fast.clear()

    # -- sending ----------------------------------------------------------------------------
    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None,
             partition: int | None = None,
             timestamp_ms: int | None = None) -> RecordFuture | PendingRecordFuture:
        """Queue one record; returns an awaitable resolving to its RecordMetadata.

        Never blocks the event loop. Raises at once for programming errors (not started,
        record larger than max_request_size, partition out of range); delivery errors come
        from awaiting the result.

        Records without a timestamp are stamped with a wall clock read at most once per
        event-loop turn and per batch (`_tick_ms`): a record's timestamp can be up to one loop
        turn older than its send() call, at millisecond resolution (Kafka reads the clock per
        record; reading it costs about as much as the rest of the fast path).
        """
        # Fast path: a plain null-key record for the topic's sticky open batch, stamped with the
        # clock reading its batch's last record got. It does what Accumulator.append does for
        # such a record (timestamps, batch size and limits unchanged, see `_fast`), inline.
        if key is None and partition is None and headers is None and timestamp_ms is None \
                and value.__class__ is bytes:
            b = self._fast.get(topic)
            if b is not None and b.last_ts == self._ms and not b.closed:
                size = RECORD_OVERHEAD_BYTES + len(value)
                acc = self._acc
                if b.size + size < self._fast_limit \
                        and acc.memory_used + size <= self.buffer_memory:  # type: ignore[union-attr]
                    recs = b.records
                    recs.append((b.last_ts - b.first_ts, None, value, None))
                    b.size += size
                    acc.memory_used += size  # type: ignore[union-attr]
                    return RecordFuture((b, len(recs) - 1))
        acc = self._acc
        if acc is None or self._closed:
            raise IllegalStateError("producer is not running: use `async with Producer(...)` or "
                                    "`await producer.start()` first")
        if self._serializing:
            if self._value_serializer is not None:
                value = self._value_serializer(value)
            if key is not None and self._key_serializer is not None:
                key = self._key_serializer(key)
        if value is None:
            size = RECORD_OVERHEAD_BYTES
        else:
            if value.__class__ is not bytes:
                value = _as_bytes(value, "value")
            size = RECORD_OVERHEAD_BYTES + len(value)
        if key is not None:
            if key.__class__ is not bytes:
                key = _as_bytes(key, "key")
            size += len(key)
        if headers:
            headers = _check_headers(headers)
            size += sum(len(k) + (len(v) if v else 0) + 2 for k, v in headers)
        elif headers is not None:
            headers = None  # the wire says "no headers" with nil
        if size > self.max_request_size:
            raise error(ErrorCode.MESSAGE_TOO_LARGE,
                        f"record of ~{size} bytes is larger than max_request_size "
                        f"({self.max_request_size} bytes)")
        if timestamp_ms is None:
            timestamp_ms = self._ms if self._ms != _NO_MS else self._tick_ms()
        n = self._counts.get(topic)
        if n is None or self._line or acc.memory_used + size > self.buffer_memory:
            return self._wait_in_line(topic, partition, (key, value, headers, timestamp_ms),
                                      size, bulk=False)
        if partition is None:
            sticky = self._sticky
            if key is None and sticky is not None:
                partition = sticky.get(topic)
                if partition is None or partition >= n:
                    partition = self._partitioner(topic, None, n)
                h = acc.append((topic, partition), None, value, headers, timestamp_ms, size,
                               sticky)
                if not self._serializing:
                    self._fast[topic] = h.batch
                return h
            partition = positive_murmur2(key) % n if self._keyed_default and key is not None \
                else self._partitioner(topic, key, n)
        elif not 0 <= partition < n:
            self._check_partition(topic, partition, n)
        return acc.append((topic, partition), key, value, headers, timestamp_ms, size)

    def _tick_ms(self) -> int:
        """Read the wall clock (ms) and keep it as `_ms` until the event loop's next turn."""
        if self._ms == _NO_MS:
            asyncio.get_running_loop().call_soon(self._expire_ms)
        ms = self._ms = int(_now() * 1000)
        return ms

    def _expire_ms(self) -> None:
        self._ms = _NO_MS

    async def send_and_wait(self, topic: str, value: Any = None, key: Any = None,
                            headers: Any = None, partition: int | None = None,
                            timestamp_ms: int | None = None) -> RecordMetadata:
        return await self.send(topic, value, key, headers, partition, timestamp_ms)

    def send_batch(self, topic: str, partition: int,
                   records: Sequence[tuple[Any, ...]]) -> RecordFuture | PendingRecordFuture:
        """Queue many records for one partition as *one* batch (bulk loads).

        `records` are (key, value) pairs or (key, value, headers, timestamp_ms) tuples of bytes.
        The awaitable resolves to the RecordMetadata of the first record; record i of the batch
        is at `offset + i` (a batch gets consecutive offsets). The batch must fit in
        max_request_size; split bigger loads yourself.
        """
        acc = self._acc
        if acc is None or self._closed:
            raise IllegalStateError("producer is not running: use `async with Producer(...)` or "
                                    "`await producer.start()` first")
        if not records:
            raise ValueError("send_batch needs at least one record")
        n = len(records)
        widths = set(map(len, records))
        if widths == {2}:
            keys = list(map(_FIELD0, records))
            values = list(map(_FIELD1, records))
            first_ts = max_ts = int(_now() * 1000)
            headers: list[Any] = []
            body = None  # wire tuples, built below only when the records have keys
        elif widths == {4}:
            keys = list(map(_FIELD0, records))
            values = list(map(_FIELD1, records))
            headers = list(filter(None, map(_FIELD2, records)))
            body, first_ts, max_ts = codec.wire_records(records)
        else:
            raise ValueError("send_batch records are (key, value) or "
                             "(key, value, headers, timestamp_ms) tuples")
        no_keys = keys.count(None) == n  # the usual bulk load: identity compares only
        value_types = set(map(type, values))
        if not (value_types if no_keys else value_types.union(map(type, keys))) <= _BYTES_OR_NONE:
            raise TypeError("send_batch keys and values must be bytes or None")
        size = RECORD_OVERHEAD_BYTES * n + sum(map(len, filter(None, values)))
        if not no_keys:
            size += sum(map(len, filter(None, keys)))
        for h in headers:
            size += sum(len(hk) + (len(hv) if hv else 0) + 2 for hk, hv in h)
        if size > self.max_request_size:
            raise error(ErrorCode.MESSAGE_TOO_LARGE,
                        f"batch of ~{size} bytes is larger than max_request_size "
                        f"({self.max_request_size} bytes); split it")
        if partition is None or partition < 0:
            raise ValueError("send_batch needs an explicit partition")
        # Pack (and compress) the records now: draining then only adds the header and CRC.
        if body is None and no_keys and value_types == {bytes}:
            # The plain bulk load: no wire tuples at all; the batch keeps the values only to
            # count its records (its one timestamp is first_ts).
            recs: list[Any] = values
            payload = codec.pack_values(values)
            uniform = True
        else:
            if body is None:
                body = list(zip(repeat(0, n), keys, values, repeat(None, n)))
            recs = body
            payload = codec.pack(body)
            uniform = first_ts == max_ts and list(map(_FIELD0, body)).count(0) == n
        payload = codec.compress(self.codec_id, payload)
        bulk = (recs, payload, first_ts, max_ts, uniform)
        if self._line or acc.memory_used + size > self.buffer_memory \
                or self.client.metadata.partition_count(topic) is None:
            return self._wait_in_line(topic, partition, bulk, size, bulk=True)
        return self._admit_bulk(topic, partition, bulk, size)

    def _admit_bulk(self, topic: str, partition: int, bulk: tuple, size: int) -> RecordFuture:
        """`bulk` is send_batch's (records, payload, first_ts, max_ts, uniform_ts)."""
        n = self.client.metadata.partition_count(topic)
        assert n is not None and self._acc is not None
        self._check_partition(topic, partition, n)
        b = self._acc.append_batch(topic, partition, *bulk, size)
        return RecordFuture((b, 0))

    def _choose(self, topic: str, key: bytes | None, partition: int | None,
                n: int) -> tuple[int, dict[str, int] | None]:
        """The slow-path twin of send()'s inline choice (records leaving the wait line):
        (partition, the sticky map when the sticky partitioner chose it)."""
        if partition is not None:
            self._check_partition(topic, partition, n)
            return partition, None
        if key is None and self._sticky is not None:
            return self._partitioner(topic, None, n), self._sticky
        return self._partitioner(topic, key, n), None

    @staticmethod
    def _check_partition(topic: str, partition: int, n: int) -> None:
        if not 0 <= partition < n:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        f"partition {partition} does not exist: topic '{topic}' has {n} "
                        f"partition(s) (0..{n - 1})")

    def _on_batch_closed(self, topic: str, partition: int) -> None:
        on_closed = getattr(self._partitioner, "on_batch_closed", None)
        if on_closed is not None:
            n = self.client.metadata.partition_count(topic)
            if n:
                on_closed(topic, partition, n)

    # -- the wait line (back-pressure, raftlog/client/wait_line.py) ------------------------
    def _wait_in_line(self, topic: str, partition: int | None, args: tuple, size: int,
                      bulk: bool) -> PendingRecordFuture:
        self._fast.clear()  # records sent from now on queue behind this one
        assert self._line is not None
        return self._line.join(topic, partition, args, size, bulk)

    def _fits(self, size: int) -> bool:
        assert self._acc is not None
        return self._acc.memory_used + size <= self.buffer_memory or self._acc.memory_used == 0

    def _admit(self, w: Waiting, n: int) -> None:
        assert w.handle.admitted is not None and self._acc is not None
        try:
            if w.bulk:
                inner = self._admit_bulk(w.topic, w.partition, w.args, w.size)  # type: ignore[arg-type]
                w.handle.batch, w.handle.index = inner.batch, inner.index
            else:
                key, value, headers, ts = w.args
                partition, sticky = self._choose(w.topic, key, w.partition, n)
                inner = self._acc.append((w.topic, partition), key, value, headers, ts, w.size,
                                         sticky)
                w.handle.batch, w.handle.index = inner.batch, inner.index
        except RaftlogError as exc:
            w.handle.admitted.set_exception(exc)
            return
        w.handle.admitted.set_result(None)

    def _expired_error(self, w: Waiting, n: int | None) -> RaftlogError:
        if n is None:
            return error(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic '{w.topic}' is not in the cluster metadata after max_block_ms="
                f"{self.max_block_ms} ms; create it first (raftlog topic create {w.topic})")
        assert self._acc is not None
        last = self._sender.last_error if self._sender else None
        return BufferFullError(
            f"send() waited max_block_ms={self.max_block_ms} ms for room in buffer_memory="
            f"{self.buffer_memory} bytes ({self._acc.memory_used} in use): the cluster is "
            f"not keeping up or is unreachable" + (f"; last error: {last}" if last else ""))

    async def drain(self) -> None:
        """Wait until every record in the wait line is in a batch (flow control for tight
        send loops, like `StreamWriter.drain()`); returns at once when nothing waits.

        Raises the error of the newest waiting record if it could not get in (BufferFullError
        after max_block_ms, unknown topic).
        """
        if self._line is not None:
            await self._line.drain()

    # -- flushing ---------------------------------------------------------------------------
    async def flush(self, timeout_ms: float | None = None) -> None:
        """Send everything queued now, ignoring linger, and wait until it is answered.

        Errors of individual records are not raised here: await their futures for those.
        """
        acc = self._acc
        if acc is None:
            return
        line = self._line
        assert line is not None
        acc.flushing += 1
        acc.wake()
        deadline = None if timeout_ms is None else asyncio.get_running_loop().time() + timeout_ms / 1000
        try:
            while line or acc.incomplete:
                if self._sender_task is not None and self._sender_task.done():
                    raise IllegalStateError("producer sender is not running (stopped or "
                                            "crashed); nothing more will be delivered")
                waits: list[Any] = [b.future for b in acc.incomplete]
                waits += list(line.admitted_futures())
                timeout = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if timeout is not None and timeout <= 0:
                    raise error(ErrorCode.REQUEST_TIMED_OUT,
                                f"flush did not finish within {timeout_ms} ms")
                await asyncio.wait(waits, timeout=timeout)
        finally:
            acc.flushing -= 1

    # -- introspection ----------------------------------------------------------------------
    def partitions_for(self, topic: str) -> int | None:
        return self.client.metadata.partition_count(topic)

    @property
    def producer_id(self) -> tuple[int, int]:
        s = self._sender
        return (s.producer_id, s.producer_epoch) if s else (-1, -1)


def _as_bytes(v: Any, what: str) -> bytes:
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes (or set a {what}_serializer), got {type(v).__name__}")


def _check_headers(headers: Any) -> list[tuple[str, bytes | None]]:
    out = []
    for item in headers.items() if isinstance(headers, dict) else headers:
        k, v = item
        if not isinstance(k, str) or not (v is None or isinstance(v, bytes)):
            raise TypeError("headers are (str, bytes|None) pairs")
        out.append((k, v))
    return out
