"""The consumer's background fetcher: keeps one fetch in flight per leader, buffers the answers.

Owns: the fetch loop task and its request tasks (created and cancelled by the Consumer), the
per-partition buffers of fetched-but-not-returned batches, offset resets (list-offsets for
partitions without a position), leader moves (metadata refresh, per-partition backoff) and the
errors the user must see (OFFSET_OUT_OF_RANGE with auto_offset_reset="none", corrupt data,
non-retriable broker errors). Imports the client's modules, `codec.batch` and `errors`; never
raftlog.server/meta/storage/replication.

Prefetch: a partition is fetched again as soon as less than `max_partition_fetch_bytes` of it
is buffered, so the next answer is on its way while the caller processes the last one. Records
are decoded lazily, when handed out, so a seek throws away raw bytes, not objects.

Every fetch answer is checked against the partition's `generation` (bumped by seek/reset):
an answer for an old position is dropped. A fetch may start mid-batch: records below the
position are skipped when decoding.
"""
from __future__ import annotations

import asyncio
import logging
import zlib
from collections import deque
from itertools import repeat
from operator import add, itemgetter
from typing import Any

import msgpack
from crc32c import crc32c

from raftlog.client.client import Client
from raftlog.client.errors import NoOffsetForPartitionError
from raftlog.client.structs import ConsumerRecord, TopicPartition
from raftlog.client.subscription import RESET_NONE, RESET_TIMESTAMP, SubscriptionState
from raftlog.client.wakeup import Wakeup
from raftlog.codec import batch as codec
from raftlog.errors import CorruptBatchError, ErrorCode, RaftlogError, error, from_wire

log = logging.getLogger("raftlog.consumer")


class FetchResult:
    """One partition's records from one fetch answer, decoded one batch at a time.

    `raw[pos:]` holds the batches not unpacked yet (`raw` is None once none is left); `body`
    holds the unpacked records of the current batch as msgpack gives them (plain tuples) and
    `body[index:]` are the ones not handed out yet, the first at offset `offset + index`.
    ConsumerRecords are built only for the records a getmany() takes, so a buffered answer
    holds one object per record (msgpack's tuple, which the GC untracks) until then, not two.
    """

    __slots__ = ("generation", "raw", "pos", "body", "index", "offset", "timestamp",
                 "log_append", "next_offset", "size", "offsets")

    def __init__(self, generation: int, raw: bytes, next_offset: int) -> None:
        self.generation = generation
        self.raw: bytes | None = raw
        self.pos = 0
        self.body: tuple = ()
        self.index = 0
        self.offset = 0
        self.offsets: list[int] | None = None  # a compacted batch's record offsets
        self.timestamp = 0        # the batch's first timestamp, or its log-append time
        self.log_append = False
        self.next_offset = next_offset  # offset after the last batch of `raw`
        self.size = len(raw)

    def unpack_next(self, topic: str, partition: int, position: int) -> None:
        """Unpack the next batch holding records at or above `position` into `body`
        (or set `raw` to None when no whole batch is left)."""
        raw = self.raw
        assert raw is not None
        found = _next_batch(topic, partition, raw, self.pos, position)
        if found is None:
            self.raw = None
            self.body = ()
            self.index = 0
            return
        self.pos, h, body, skip = found
        if self.pos >= len(raw):
            self.raw = None  # this was the last batch
        self.body = body
        self.index = skip
        self.offset = h.base_offset
        self.offsets = _compacted_offsets(h, body)
        self.log_append = bool(h.attributes & codec.TIMESTAMP_LOG_APPEND)
        self.timestamp = h.max_timestamp if self.log_append else h.first_timestamp


_ts_delta, _key, _value, _headers = (itemgetter(i) for i in range(4))


def _next_batch(topic: str, partition: int, raw: bytes | memoryview, start: int, position: int
                ) -> tuple[int, codec.BatchHeader, tuple, int] | None:
    """The first whole, non-control batch of `raw` from byte `start` with records at or above
    `position`, CRC checked and unpacked: (byte position after it, header, records as msgpack
    tuples, how many of them lie below `position`); None when there is none."""
    mv = memoryview(raw)
    total = len(mv)
    pos = start
    while total - pos >= codec.HEADER_SIZE:
        h = codec.peek(mv, pos)
        end = pos + h.size
        if end > total:
            return None
        batch_start, pos = pos, end
        if h.next_offset <= position or h.is_control:
            continue
        if crc32c(mv[batch_start + codec.CRC_START:end]) != h.crc:
            raise CorruptBatchError(
                f"{topic}-{partition}: CRC mismatch in batch at offset {h.base_offset}")
        payload = mv[batch_start + codec.HEADER_SIZE:end]
        if h.codec == codec.CODEC_GZIP:
            try:
                payload = zlib.decompress(payload)
            except zlib.error as exc:
                raise CorruptBatchError(f"{topic}-{partition}: batch at offset "
                                        f"{h.base_offset} does not decompress: {exc}") from None
        elif h.codec != codec.CODEC_NONE:
            raise CorruptBatchError(f"{topic}-{partition}: unsupported codec {h.codec}")
        try:
            body = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise CorruptBatchError(f"{topic}-{partition}: records of batch at offset "
                                    f"{h.base_offset} do not decode: {exc}") from None
        if not isinstance(body, tuple) or len(body) != h.record_count:
            raise CorruptBatchError(f"{topic}-{partition}: batch at offset {h.base_offset} "
                                    f"says {h.record_count} records, holds "
                                    f"{len(body) if isinstance(body, tuple) else 'no list'}")
        skip = position - h.base_offset if position > h.base_offset else 0
        if skip and len(body) != h.last_offset_delta + 1:  # compacted: count by offset
            skip = sum(1 for r in body if h.base_offset + r[4] < position)
        return pos, h, body, skip
    return None


def _compacted_offsets(h: codec.BatchHeader, body: tuple) -> list[int] | None:
    """Absolute offsets of a compacted batch's records (each carries its offset delta, see
    codec/batch.py), None for an ordinary batch (offset = base + position)."""
    if len(body) == h.last_offset_delta + 1:
        return None
    base = h.base_offset
    return [base + r[4] for r in body]


def make_records(topic: str, partition: int, first_offset: int, body: tuple,
                 timestamp: int, log_append: bool,
                 offsets: Any = None) -> list[ConsumerRecord]:
    """ConsumerRecords of msgpack record tuples `body` (the first at `first_offset`) of a batch
    whose first timestamp (or log-append time, when `log_append`) is `timestamp`.

    Per record only C-level loops (a map over the records' columns) and one ConsumerRecord;
    headers are the tuples msgpack already returns (use_list=False), not rebuilt.
    """
    try:
        # any() over a map: a C loop that allocates nothing and stops at the first hit.
        hs: Any = [x or () for x in map(_headers, body)] if any(map(_headers, body)) \
            else repeat(())
        if log_append or not any(map(_ts_delta, body)):
            ts: Any = repeat(timestamp)
        else:
            ts = map(add, repeat(timestamp), map(_ts_delta, body))
        return list(map(ConsumerRecord, repeat(topic), repeat(partition),
                        offsets if offsets is not None
                        else range(first_offset, first_offset + len(body)),
                        ts, map(_key, body), map(_value, body), hs))
    except (TypeError, IndexError) as exc:
        raise CorruptBatchError(f"{topic}-{partition}: malformed record in batch with offsets "
                                f"from {first_offset}: {exc}") from None


def decode_records(topic: str, partition: int, raw: bytes | memoryview,
                   position: int) -> list[ConsumerRecord]:
    """ConsumerRecords of the whole batches in `raw`, skipping offsets below `position` and
    control batches, CRC checked."""
    out: list[ConsumerRecord] = []
    pos = 0
    while True:
        found = _next_batch(topic, partition, raw, pos, position)
        if found is None:
            return out
        pos, h, body, skip = found
        ts_mode = bool(h.attributes & codec.TIMESTAMP_LOG_APPEND)
        offs = _compacted_offsets(h, body)
        out += make_records(topic, partition, h.base_offset + skip, body[skip:] if skip else body,
                            h.max_timestamp if ts_mode else h.first_timestamp, ts_mode,
                            offs[skip:] if offs is not None else None)


class Fetcher:
    def __init__(self, client: Client, subscription: SubscriptionState, *,
                 fetch_max_wait_ms: int, fetch_min_bytes: int, fetch_max_bytes: int,
                 max_partition_fetch_bytes: int, request_timeout_ms: int,
                 retry_backoff_ms: int) -> None:
        self.client = client
        self.subs = subscription
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_s = retry_backoff_ms / 1000
        self._loop = asyncio.get_running_loop()
        self._buffers: dict[TopicPartition, deque[FetchResult]] = {}
        self._buffered_bytes: dict[TopicPartition, int] = {}
        self._next_fetch: dict[TopicPartition, tuple[int, int]] = {}  # tp -> (generation, offset)
        self._fetching_nodes: set[int] = set()
        self._resetting = False
        self._backoff_until: dict[TopicPartition, float] = {}
        self._errors: dict[TopicPartition, RaftlogError] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wakeup = Wakeup(self._loop)
        self.data_ready = asyncio.Event()
        self._rr = 0
        subscription.on_change = self.wake

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name="raftlog-fetcher")
        self._task.add_done_callback(self._died)

    async def close(self) -> None:
        tasks = [t for t in [self._task, *self._tasks] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._tasks.clear()

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("consumer fetch task crashed", exc_info=task.exception())
            exc = error(ErrorCode.UNKNOWN_SERVER_ERROR, f"fetcher crashed: {task.exception()!r}")
            for tp in self.subs.assigned():
                self._errors[tp] = exc
            self.data_ready.set()

    def wake(self) -> None:
        self._wakeup.wake()

    async def _sleep(self, until_s: float | None) -> None:
        await self._wakeup.sleep_until(until_s)

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            now = self._loop.time()
            next_s = self._start_resets(now)
            more = self._start_fetches(now)
            if more is not None:
                next_s = more if next_s is None else min(next_s, more)
            await self._sleep(next_s)

    def _spawn(self, coro: Any) -> None:
        t = self._loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _start_resets(self, now: float) -> float | None:
        if self._resetting:
            return None
        todo: dict[TopicPartition, int] = {}
        next_s = None
        for tp, st in self.subs.states():
            if st.position is not None or tp in self._errors:
                continue
            until = self._backoff_until.get(tp, 0.0)
            if until > now:
                next_s = until if next_s is None else min(next_s, until)
                continue
            if st.reset == RESET_NONE or st.reset is None:
                self._errors[tp] = NoOffsetForPartitionError(
                    f"{tp.topic}-{tp.partition} has no position and auto_offset_reset='none'; "
                    "seek() to an offset first")
                self.data_ready.set()
                continue
            todo[tp] = st.generation
        if todo:
            self._resetting = True
            self._spawn(self._reset(todo))
        return next_s

    async def _reset(self, todo: dict[TopicPartition, int]) -> None:
        try:
            stamps = {tp: RESET_TIMESTAMP[self.subs.state(tp).reset or "latest"]
                      for tp in todo if self.subs.is_assigned(tp)}
            found = await self.client.list_offsets({(tp.topic, tp.partition): ts
                                                    for tp, ts in stamps.items()})
        except RaftlogError as exc:
            until = self._loop.time() + self.retry_backoff_s
            for tp in todo:
                self._backoff_until[tp] = until
                if not exc.retriable:
                    self._errors[tp] = exc
            if not exc.retriable:
                self.data_ready.set()
            log.debug("offset reset failed: %s", exc)
            return
        finally:
            self._resetting = False
            self.wake()
        for tp, gen in todo.items():
            if not self.subs.is_assigned(tp):
                continue
            st = self.subs.state(tp)
            hit = found.get((tp.topic, tp.partition))
            if hit is not None and st.generation == gen and st.position is None:
                st.position = hit[0]
                st.reset = None

    def _start_fetches(self, now: float) -> float | None:
        by_node: dict[int, list[tuple[TopicPartition, int, int]]] = {}
        next_s = None
        need_metadata = False
        md = self.client.metadata
        for tp, st in self.subs.states():
            if not st.fetchable or tp in self._errors:
                continue
            buf = self._buffers.get(tp)
            if buf and buf[0].generation != st.generation:
                self._drop_buffer(tp)
            if self._buffered_bytes.get(tp, 0) >= self.max_partition_fetch_bytes:
                continue
            until = self._backoff_until.get(tp, 0.0)
            if until > now:
                next_s = until if next_s is None else min(next_s, until)
                continue
            node = md.leader_for(tp.topic, tp.partition)
            if node < 0:
                need_metadata = True
                continue
            if node in self._fetching_nodes:
                continue
            nf = self._next_fetch.get(tp)
            assert st.position is not None
            offset = nf[1] if nf is not None and nf[0] == st.generation else st.position
            by_node.setdefault(node, []).append((tp, st.generation, offset))
        if need_metadata:
            self.client.request_update()
            retry = now + self.retry_backoff_s
            next_s = retry if next_s is None else min(next_s, retry)
        for node, entries in by_node.items():
            self._fetching_nodes.add(node)
            self._spawn(self._fetch(node, entries))
        return next_s

    async def _fetch(self, node: int, entries: list[tuple[TopicPartition, int, int]]) -> None:
        md = self.client.metadata
        parts = []
        for tp, _, offset in entries:
            e: dict[str, Any] = {"topic": tp.topic, "partition": tp.partition, "offset": offset,
                                 "max_bytes": self.max_partition_fetch_bytes}
            pm = md.partition(tp.topic, tp.partition)
            if pm is not None and pm.leader_epoch >= 0:
                e["current_leader_epoch"] = pm.leader_epoch
            parts.append(e)
        body = {"max_wait_ms": self.fetch_max_wait_ms, "min_bytes": self.fetch_min_bytes,
                "max_bytes": self.fetch_max_bytes, "partitions": parts}
        try:
            answer = await self.client.send(node, "/v1/fetch", body,
                                            self.request_timeout_ms + self.fetch_max_wait_ms)
        except RaftlogError as exc:
            log.debug("fetch from broker %d failed: %s", node, exc)
            until = self._loop.time() + self.retry_backoff_s
            for tp, _, _ in entries:
                self._backoff_until[tp] = until
                if not exc.retriable:
                    self._errors[tp] = exc  # e.g. INVALID_REQUEST: retrying cannot help
            if exc.retriable:
                self.client.request_update()
            else:
                self.data_ready.set()
            return
        finally:
            self._fetching_nodes.discard(node)
            self.wake()
        asked = {tp: (gen, off) for tp, gen, off in entries}
        refresh = False
        for r in (answer or {}).get("partitions") or ():
            tp = TopicPartition(r.get("topic"), r.get("partition"))
            if tp not in asked or not self.subs.is_assigned(tp):
                continue
            gen, offset = asked[tp]
            st = self.subs.state(tp)
            if st.generation != gen:
                continue  # seeked meanwhile: this answer is for an old position
            if r.get("error"):
                refresh |= self._on_error(tp, offset, from_wire(r))
                continue
            st.highwater = int(r.get("high_watermark", st.highwater))
            st.log_start = int(r.get("log_start_offset", st.log_start))
            raw = r.get("records") or b""
            if not raw:
                continue
            last_next = offset
            for _, h in codec.iter_batches(raw):
                last_next = h.next_offset
            if last_next <= offset:
                continue
            buf = self._buffers.get(tp)
            if buf is None:
                buf = self._buffers[tp] = deque()
            buf.append(FetchResult(gen, raw, last_next))
            self._buffered_bytes[tp] = self._buffered_bytes.get(tp, 0) + len(raw)
            self._next_fetch[tp] = (gen, last_next)
            self.data_ready.set()
        if refresh:
            self.client.request_update()

    def _on_error(self, tp: TopicPartition, offset: int, exc: RaftlogError) -> bool:
        """Handle one partition's fetch error; True when metadata should be refreshed."""
        code = exc.code
        if code is ErrorCode.OFFSET_OUT_OF_RANGE:
            if self.subs.default_reset == RESET_NONE:
                lo = exc.hint.get("log_start_offset", "?")
                hi = exc.hint.get("log_end_offset", "?")
                self._errors[tp] = type(exc)(
                    f"{tp.topic}-{tp.partition}: offset {offset} is out of range [{lo}, {hi}] "
                    "and auto_offset_reset='none'; seek() to a valid offset", exc.hint)
                self.data_ready.set()
            else:
                log.info("%s-%d: offset %d out of range, resetting to %s", tp.topic,
                         tp.partition, offset, self.subs.default_reset)
                self._drop_buffer(tp)
                self.subs.request_reset(tp)
            return False
        self._backoff_until[tp] = self._loop.time() + self.retry_backoff_s
        if exc.invalid_metadata:
            if exc.hint:
                self.client.metadata.apply_leader_hint(tp.topic, tp.partition, exc.hint)
            return True
        if not exc.retriable:
            self._errors[tp] = exc
            self.data_ready.set()
        return False

    def _drop_buffer(self, tp: TopicPartition) -> None:
        self._buffers.pop(tp, None)
        self._buffered_bytes.pop(tp, None)
        self._next_fetch.pop(tp, None)

    # -- handing records out (caller side, synchronous) ----------------------------------------
    def fetched_records(self, partitions: list[TopicPartition],
                        max_records: int | None) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Take buffered records of `partitions`, advancing their positions. Raises a pending
        error of one of them first, before any position moves."""
        if self._errors:
            for tp in partitions:
                exc = self._errors.pop(tp, None)
                if exc is not None:
                    raise exc
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        budget = max_records if max_records is not None else 1 << 62
        freed = False
        if len(partitions) > 1:
            # Start at a different partition each call so none starves under max_records.
            k = self._rr = (self._rr + 1) % len(partitions)
            partitions = partitions[k:] + partitions[:k]
        for tp in partitions:
            buf = self._buffers.get(tp)
            if not buf or budget <= 0:
                continue
            st = self.subs.state(tp)
            while buf and budget > 0:
                res = buf[0]
                if res.generation != st.generation or st.position is None:
                    self._drop_buffer(tp)
                    break
                body = res.body
                i = res.index
                if i >= len(body):
                    if res.raw is None:  # every record of this answer was handed out
                        buf.popleft()
                        self._buffered_bytes[tp] -= res.size
                        if st.position < res.next_offset:
                            st.position = res.next_offset  # skip control batches at its end
                        freed = True
                        continue
                    try:
                        res.unpack_next(tp.topic, tp.partition, st.position)
                    except CorruptBatchError:
                        self._drop_buffer(tp)
                        raise
                    continue
                k = len(body) - i
                if k > budget:
                    k = budget
                first = res.offset + i
                offs = res.offsets
                if offs is not None:
                    first = offs[i]
                take = make_records(tp.topic, tp.partition, first,
                                    body if k == len(body) else body[i:i + k],
                                    res.timestamp, res.log_append,
                                    None if offs is None else offs[i:i + k])
                res.index = i + k
                got = out.get(tp)
                if got is None:
                    out[tp] = take
                else:
                    got += take
                st.position = first + k if offs is None else offs[i + k - 1] + 1
                budget -= k
                if res.raw is None and res.index >= len(body):
                    buf.popleft()
                    self._buffered_bytes[tp] -= res.size
                    if st.position < res.next_offset:
                        st.position = res.next_offset
                    freed = True
            if buf is not None and not buf:
                self._buffers.pop(tp, None)
        if freed:
            self.wake()  # room to prefetch again
        return out

    def clear_error(self, tp: TopicPartition) -> None:
        """A seek answers a pending error of `tp` (e.g. no offset with reset 'none')."""
        self._errors.pop(tp, None)
        self._backoff_until.pop(tp, None)

    def highwater(self, tp: TopicPartition) -> int:
        return self.subs.state(tp).highwater

    def forget(self, keep: set[TopicPartition]) -> None:
        """Drop buffers and errors of partitions no longer assigned."""
        for tp in list(self._buffers):
            if tp not in keep:
                self._drop_buffer(tp)
        for tp in list(self._errors):
            if tp not in keep:
                del self._errors[tp]

