"""The producer's background sender: drains the accumulator into produce requests per leader.

Owns: the one sender task (created and cancelled by the Producer), the request tasks it starts
(at most `max_in_flight` per broker, each carrying batches for many partitions of that broker),
idempotence state (producer id/epoch, per-partition sequence numbers), and what to do with each
answer: complete, retry with backoff, re-route after a metadata refresh, or fail.
Imports the client's modules, `codec.batch` and `errors`; never raftlog.server/meta/storage.

Flow of one batch::

    accumulator --drain--> [assign sequence, encode once] --POST /v1/produce--> leader
        ok                      -> complete (base_offset) ; free memory
        DUPLICATE_SEQUENCE      -> complete with offset -1 (already written, KIP-192)
        retriable (NOT_LEADER, timeout, connection, NOT_ENOUGH_REPLICAS, ...)
                                -> requeue at the front after retry_backoff_ms, same bytes and
                                   same sequence; refresh metadata when the error says so
        OUT_OF_ORDER_SEQUENCE or UNKNOWN_PRODUCER_ID while an earlier batch of the partition
        is outstanding, or was when this attempt was sent
                                -> retriable (it overtook that batch on another connection; an
                                   answer arriving after that batch's is stale, KIP-360), with
                                   no backoff: it is sent again once that batch is answered
        sequence broken (OUT_OF_ORDER at the head, UNKNOWN_PRODUCER_ID, a sequenced batch failed)
                                -> fail that batch, and before sending more: wait for in-flight
                                   requests, get a new producer id, re-sequence pending batches
        other                   -> fail the batch's records with the error
        delivery_timeout_ms passed while queued -> DeliveryTimeoutError with the last error
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from raftlog.client.accumulator import NO_SEQUENCE, Accumulator, ProducerBatch
from raftlog.client.client import Client
from raftlog.client.errors import DeliveryTimeoutError
from raftlog.client.wakeup import Wakeup
from raftlog.codec import batch as codec
from raftlog.errors import ErrorCode, RaftlogError, error, from_wire

log = logging.getLogger("raftlog.producer")

# The broker gets `request_timeout_ms` to answer (acks=all waits inside it); the HTTP request
# gets this much more so the broker's own REQUEST_TIMED_OUT arrives before ours.
REQUEST_TIMEOUT_SLACK_MS = 1_000
# Sequence numbers are int32 and wrap to 0, as Kafka's do.
SEQUENCE_MAX = (1 << 31) - 1
_SEQUENCE_BROKEN = {ErrorCode.UNKNOWN_PRODUCER_ID, ErrorCode.INVALID_PRODUCER_EPOCH}
# What a batch that reached the broker before an earlier one of its partition is answered.
_OVERTAKEN = {ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID}
# Answers by which the broker refused a batch without appending it; any other failure of an
# attempt leaves its outcome unknown (ProducerBatch.maybe_written).
_NOT_WRITTEN = {ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.NOT_ENOUGH_REPLICAS,
                ErrorCode.CORRUPT_MESSAGE, ErrorCode.MESSAGE_TOO_LARGE,
                ErrorCode.DUPLICATE_SEQUENCE_NUMBER} | _SEQUENCE_BROKEN | _OVERTAKEN


def _unknown_outcome(b: ProducerBatch, exc: BaseException | None) -> DeliveryTimeoutError:
    """The error of a batch that may be in the log (an earlier attempt's answer was lost) but
    can no longer be retried under its producer id and sequence: re-sent it could be written
    twice, so its outcome stays unknown, as for any batch that timed out."""
    return DeliveryTimeoutError(
        f"{len(b.records)} record(s) for {b.topic}-{b.partition}: outcome unknown (an earlier "
        f"attempt may have been written; not re-sent, to avoid a duplicate); last error: {exc}")


class Sender:
    def __init__(self, client: Client, acc: Accumulator, *, acks: int, idempotent: bool,
                 max_in_flight: int, request_timeout_ms: int, retry_backoff_ms: int,
                 max_request_size: int, codec_id: int) -> None:
        self.client = client
        self.acc = acc
        self.acks = acks
        self.idempotent = idempotent
        self.max_in_flight = max_in_flight
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.max_request_size = max_request_size
        self.codec_id = codec_id
        self.producer_id = -1
        self.producer_epoch = -1
        self.last_error: RaftlogError | None = None  # for BufferFullError messages
        self._pid_reset = False
        self._broken: set[tuple[str, int]] = set()     # partitions whose sequence broke
        self._node_in_flight: dict[int, int] = {}
        self._in_flight_total = 0
        self._requests: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._wakeup = Wakeup(self._loop)
        acc.wake = self.wake

    # -- wake-ups ---------------------------------------------------------------------------
    def wake(self) -> None:
        self._wakeup.wake()

    async def _sleep(self, timeout_s: float | None) -> None:
        await self._wakeup.sleep_until(None if timeout_s is None else self._loop.time() + timeout_s)

    # -- producer id ------------------------------------------------------------------------
    async def init_producer_id(self) -> None:
        """Get a producer id and epoch from the cluster (any broker; Raft allocates blocks)."""
        answer = await self.client.send_any("/v1/init-producer-id", {})
        self.producer_id = int(answer["producer_id"])
        self.producer_epoch = int(answer["producer_epoch"])
        log.debug("producer id %d epoch %d", self.producer_id, self.producer_epoch)

    async def _reset_producer_id(self) -> None:
        """New id, sequences from 0, pending batches re-sequenced (KIP-360's epoch bump)."""
        await self.init_producer_id()
        for key, q in self.acc.queues.items():
            q.next_sequence = 0
            if key not in self._broken:
                # Batches already sent here keep their old id and sequence: their outcome may
                # be unknown (a lost answer), and only that identity lets the broker recognise
                # a retry. Re-sent under the new id they would be written twice.
                continue
            q.outstanding.clear()
            for b in list(q.batches):
                if b.maybe_written:
                    # an earlier attempt may be in the log: under a new id it would be written
                    # again, so its outcome stays unknown to the caller (as Kafka, KIP-360)
                    q.batches.remove(b)
                    self.acc.fail(b, _unknown_outcome(b, b.last_error))
                    continue
                b.base_sequence = NO_SEQUENCE   # never sent, or refused: safe to re-sequence
                b.encoded = None
        self._broken.clear()
        self._pid_reset = False

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Owned by the Producer; runs until cancelled."""
        while True:
            now = self._loop.time()
            if self._pid_reset:
                # Nothing new leaves until the in-flight requests are answered and a new
                # producer id is in hand (request completions wake us).
                wait_s: float | None = None
                if not self._in_flight_total:
                    try:
                        await self._reset_producer_id()
                    except RaftlogError as exc:
                        self.last_error = exc
                        log.warning("cannot get a new producer id: %s", exc)
                        wait_s = self.retry_backoff_s
                if self._pid_reset:
                    for b in self.acc.expired(self._loop.time()):
                        self._fail_expired(b)
                    await self._sleep(wait_s)
                    continue
            drained, next_s, no_leader = self.acc.drain(
                now, self.client.metadata.leader_for, self._node_has_room, self.max_request_size)
            for node, batches in drained.items():
                self._start_request(node, batches)
            for b in self.acc.expired(now):
                self._fail_expired(b)
            if no_leader:
                self.client.request_update()
                retry = now + self.retry_backoff_s
                next_s = retry if next_s is None else min(next_s, retry)
            await self._sleep(None if next_s is None else max(0.0, next_s - self._loop.time()))

    def _node_has_room(self, node: int) -> bool:
        return self._node_in_flight.get(node, 0) < self.max_in_flight

    def _start_request(self, node: int, batches: list[ProducerBatch]) -> None:
        for b in batches:
            self._prepare(b)
        self._node_in_flight[node] = self._node_in_flight.get(node, 0) + 1
        self._in_flight_total += 1
        task = self._loop.create_task(self._produce(node, batches))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _prepare(self, b: ProducerBatch) -> None:
        """Assign the sequence (first send only) and encode once; a retry reuses the bytes."""
        if self.idempotent and b.base_sequence == NO_SEQUENCE:
            q = self.acc.queues[(b.topic, b.partition)]
            b.producer_id, b.producer_epoch = self.producer_id, self.producer_epoch
            b.base_sequence = q.next_sequence
            q.next_sequence = (q.next_sequence + len(b.records)) & SEQUENCE_MAX
            q.outstanding.append(b)
            b.encoded = None
        if b.base_sequence != NO_SEQUENCE:
            q = self.acc.queues[(b.topic, b.partition)]
            b.sent_behind = bool(q.outstanding) and q.outstanding[0] is not b
        if b.encoded is None:
            if b.payload is not None:
                b.encoded = codec.encode_payload(
                    b.payload, len(b.records), b.first_ts, b.max_ts, attributes=self.codec_id,
                    producer_id=b.producer_id, producer_epoch=b.producer_epoch,
                    base_sequence=b.base_sequence)
            else:
                b.encoded = codec.encode_wire(
                    b.records, b.first_ts, b.max_ts, codec=self.codec_id,
                    producer_id=b.producer_id, producer_epoch=b.producer_epoch,
                    base_sequence=b.base_sequence)

    async def _produce(self, node: int, batches: list[ProducerBatch]) -> None:
        body = {"acks": self.acks, "timeout_ms": self.request_timeout_ms,
                "partitions": [{"topic": b.topic, "partition": b.partition, "batch": b.encoded}
                               for b in batches]}
        answer: Any = None
        failure: RaftlogError | None = None
        try:
            answer = await self.client.send(
                node, "/v1/produce", body, self.request_timeout_ms + REQUEST_TIMEOUT_SLACK_MS)
        except RaftlogError as exc:
            failure = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in our own code path: fail the batches, say so
            log.exception("produce request to broker %d failed unexpectedly", node)
            failure = error(ErrorCode.UNKNOWN_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            # Counted here, not by the task's done-callback, so the loop woken just below
            # already sees this request as answered.
            self._node_in_flight[node] -= 1
            self._in_flight_total -= 1
            for b in batches:
                self.acc.sent_done(b)
            self.wake()
        if failure is not None:
            self.last_error = failure
            if failure.invalid_metadata:
                self.client.request_update()
            for b in batches:
                self._on_error(b, failure)
            return
        if self.acks == 0:
            for b in batches:
                self.acc.complete(b, -1, -1)
            return
        results = {(p.get("topic"), p.get("partition")): p
                   for p in (answer or {}).get("partitions") or ()}
        refresh = False
        for b in batches:
            r = results.get((b.topic, b.partition))
            if r is None:
                self._on_error(b, error(ErrorCode.UNKNOWN_SERVER_ERROR,
                                        f"broker {node} gave no result for {b.topic}-{b.partition}"))
            elif r.get("error"):
                exc = from_wire(r)
                self.last_error = exc
                if exc.invalid_metadata:
                    refresh = True
                    if exc.hint:
                        self.client.metadata.apply_leader_hint(b.topic, b.partition, exc.hint)
                self._on_error(b, exc)
            else:
                self.acc.complete(b, int(r["base_offset"]), int(r.get("log_append_time_ms", -1)))
        if refresh:
            self.client.request_update()

    # -- outcomes ---------------------------------------------------------------------------
    def _on_error(self, b: ProducerBatch, exc: RaftlogError) -> None:
        code = exc.code
        if code not in _NOT_WRITTEN:
            b.maybe_written = True
        if self.idempotent and b.base_sequence != NO_SEQUENCE:
            if code is ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
                self.acc.complete(b, -1, -1)  # written before; its offset is no longer known
                return
            stale_pid = b.producer_id != self.producer_id
            if code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER or code in _SEQUENCE_BROKEN:
                q = self.acc.queues[(b.topic, b.partition)]
                # Sent behind an unanswered batch: the broker may have judged this one before
                # that batch arrived, even if that batch has been answered since (a late
                # answer). Only a batch sent first in line, with every earlier one answered,
                # gets an answer about the broker's current state (Kafka's rule, KIP-360).
                overtook = b.sent_behind or (bool(q.outstanding) and q.outstanding[0] is not b)
                if (overtook and code in _OVERTAKEN) or self._pid_reset or stale_pid:
                    # An earlier batch is in flight or being retried (in-flight requests travel
                    # on separate connections, so a later one can reach the broker first: a gap,
                    # or an unknown producer when the earlier one holds sequence 0), or a new
                    # producer id is on its way: this batch was not written; send it again in
                    # order.
                    if self._pid_reset or stale_pid:
                        if b.maybe_written:
                            self.acc.fail(b, _unknown_outcome(b, exc))
                            return
                        b.base_sequence = NO_SEQUENCE
                        b.encoded = None
                        if b in q.outstanding:
                            q.outstanding.remove(b)
                        self._retry(b, exc)
                        return
                    # Nothing to back off from: the accumulator sends a retrying partition's
                    # head only once nothing of it is in flight (its rule 3), i.e. right after
                    # the batch it overtook is answered.
                    self._retry(b, exc, backoff=False)
                    return
                if b.maybe_written:
                    # the broker's answer is about this attempt; an earlier one may be in the
                    # log (a lost answer), so the outcome is unknown, not a refusal
                    self._fail(b, _unknown_outcome(b, exc))
                    return
                self._fail(b, exc)
                return
        if exc.retriable and self._loop.time() < b.deadline_s:
            self._retry(b, exc)
            return
        if exc.retriable:
            exc = DeliveryTimeoutError(
                f"{len(b.records)} record(s) for {b.topic}-{b.partition} not acknowledged within "
                f"delivery_timeout_ms after {b.attempts + 1} attempt(s); last error: {exc}")
        self._fail(b, exc)

    def _retry(self, b: ProducerBatch, exc: RaftlogError, backoff: bool = True) -> None:
        b.last_error = exc
        self.acc.requeue(b, self._loop.time() + (self.retry_backoff_s if backoff else 0.0))
        log.debug("retrying %r after %s", b, exc)

    def _fail(self, b: ProducerBatch, exc: BaseException) -> None:
        if self.idempotent and b.base_sequence != NO_SEQUENCE \
                and b.producer_id == self.producer_id:
            # The broker still expects this batch's sequence: every later batch would be out of
            # order. Start over with a new producer id before sending anything else.
            self._pid_reset = True
            self._broken.add((b.topic, b.partition))
        self.acc.fail(b, exc)

    def _fail_expired(self, b: ProducerBatch) -> None:
        last = f"; last error: {b.last_error}" if b.last_error else ""
        self._fail(b, DeliveryTimeoutError(
            f"{len(b.records)} record(s) for {b.topic}-{b.partition} not delivered within "
            f"delivery_timeout_ms ({b.attempts} attempt(s)){last}"))

    # -- shutdown ---------------------------------------------------------------------------
    def in_flight(self) -> int:
        return self._in_flight_total

    async def close(self) -> None:
        """Cancel request tasks; their batches are failed by the producer."""
        for t in list(self._requests):
            t.cancel()
        if self._requests:
            await asyncio.gather(*self._requests, return_exceptions=True)

