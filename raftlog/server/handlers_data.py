"""Data-plane HTTP handlers (msgpack): produce, fetch, list offsets, metadata, replica fetch.

Owns decoding these requests, checking their fields at the edge, calling the ReplicaManager's
partitions, and the long-poll waits. A failure in one partition answers that partition's entry
only. Batches stay opaque bytes: header validation and one CRC pass in C per batch, nothing per
record. See docs/protocol.md for the shapes.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from raftlog import config
from raftlog.codec import batch as batch_codec
from raftlog.errors import CorruptBatchError, ErrorCode, RaftlogError, error
from raftlog.replication.partition import Partition
from raftlog.server.http import answer, field, read_body

if TYPE_CHECKING:
    from raftlog.server.broker import Broker

MAX_WAIT_MS_MAX = 60_000
# Kafka's wire widths: leader epochs are int32, offsets int64, byte limits int32.
INT32_MAX = (1 << 31) - 1
INT64_MAX = config.INT64_MAX
INT64_MIN = -INT64_MAX - 1
LIST_EARLIEST = -2
LIST_LATEST = -1


def routes(broker: Broker) -> list[web.RouteDef]:
    h = DataHandlers(broker)
    return [
        web.post("/v1/produce", h.produce),
        web.post("/v1/fetch", h.fetch),
        web.post("/v1/list-offsets", h.list_offsets),
        web.post("/v1/metadata", h.metadata),
        web.post("/v1/init-producer-id", h.init_producer_id),
        web.post("/v1/replica/fetch", h.replica_fetch),
    ]


def _err(entry: dict[str, Any], exc: RaftlogError) -> dict[str, Any]:
    entry["error"] = exc.code.name
    entry["message"] = exc.message
    if exc.hint:
        entry["hint"] = exc.hint
    return entry


def _entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts = field(body, "partitions", list)
    for e in parts:
        if not isinstance(e, dict) or not isinstance(e.get("topic"), str) \
                or type(e.get("partition")) is not int:
            raise error(ErrorCode.INVALID_REQUEST,
                        "each partitions entry needs a string 'topic' and an integer 'partition'")
    return parts


def _entry_field(e: dict[str, Any], name: str, kind: type, default: Any = ..., *,
                 lo: int | None = None, hi: int | None = None) -> Any:
    """One checked field of a partitions entry: http.field's checks (missing, wrong type, out of
    range -> 400 INVALID_REQUEST), its message naming the entry as well as the field."""
    try:
        return field(e, name, kind, default, lo=lo, hi=hi)
    except RaftlogError as exc:
        raise error(exc.code, f"partitions entry {e['topic']}-{e['partition']}: "
                              f"{exc.message}") from None


def _fetch_entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A consumer fetch's partitions, every field checked before any is read. A per-partition
    `max_bytes` of 0 or none means no cap beyond the request's; a `current_leader_epoch` of -1
    or none means the consumer does not know the epoch (no fencing)."""
    entries = _entries(body)
    for e in entries:
        e["offset"] = _entry_field(e, "offset", int, lo=INT64_MIN, hi=INT64_MAX)
        e["max_bytes"] = _entry_field(e, "max_bytes", int, 0, lo=0, hi=INT32_MAX)
        e["current_leader_epoch"] = _entry_field(e, "current_leader_epoch", int, -1,
                                                 lo=-1, hi=INT32_MAX)
    return entries


def _replica_entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A follower fetch's partitions, every field checked before any is read; `max_bytes` as
    for consumers (0 or none: the request's remaining budget)."""
    entries = _entries(body)
    for e in entries:
        e["leader_epoch"] = _entry_field(e, "leader_epoch", int, -1, lo=-1, hi=INT32_MAX)
        e["fetch_offset"] = _entry_field(e, "fetch_offset", int, 0, lo=0, hi=INT64_MAX)
        e["last_fetched_epoch"] = _entry_field(e, "last_fetched_epoch", int, -1,
                                               lo=-1, hi=INT32_MAX)
        e["max_bytes"] = _entry_field(e, "max_bytes", int, 0, lo=0, hi=INT32_MAX)
    return entries


async def _wait_any(parts: list[Partition], timeout_s: float) -> None:
    """Until any of `parts` changes (append, HW move, role change) or the timeout."""
    if timeout_s <= 0 or not parts:
        return
    futs = [p.watch() for p in parts]
    try:
        await asyncio.wait(futs, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Unregister every future, woken or not: an idle partition never wakes, and each
        # follower fetch round would otherwise leave one more future behind per partition.
        for p, f in zip(parts, futs):
            p.unwatch(f)
            if not f.done():
                f.cancel()


ReadOnce = Callable[[], tuple[list[dict[str, Any]], bool, list[Partition]]]


async def _long_poll(read_once: ReadOnce, max_wait_ms: int) -> list[dict[str, Any]]:
    """Run `read_once` until it says it has enough, or until `max_wait_ms`; between tries wait
    for any of its partitions to change (woken by appends and HW moves, never by polling)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_ms / 1000
    while True:
        results, enough, parts = read_once()
        left = deadline - loop.time()
        if enough or left <= 0:
            return results
        await _wait_any(parts, left)


def _offset_for_timestamp(p: Partition, ts: int) -> int:
    """The earliest committed offset of a *record* whose timestamp is >= `ts`, or -1.

    Storage finds the first batch whose max timestamp is >= `ts`; that batch may start with
    older records, and it may be a control batch (a leader's epoch marker carries the broker's
    clock, not the data's). So walk headers from there past control batches, and read the one
    data batch that qualifies to find the record, as Kafka's ListOffsets does.
    """
    start = p.log.offset_for_timestamp(ts)
    if start is None:
        return -1
    hw = p.hw
    for h in p.log.iter_batch_headers(start):
        if h.last_offset >= hw:
            break
        if h.is_control or h.max_timestamp < ts:
            continue
        if h.attributes & batch_codec.TIMESTAMP_LOG_APPEND:
            return h.base_offset  # every record has the batch's append time
        for r in batch_codec.decode(p.log.read(h.base_offset, h.size, hw)):
            if r.timestamp >= ts:
                return max(r.offset, start)
    return -1


class DataHandlers:
    def __init__(self, broker: Broker):
        self.b = broker
        self.m = broker.replicas
        # Per follower broker: the index of the partition entry its next fetch reads first, the
        # first one a full response left without records, so a few busy partitions early in
        # the follower's list cannot starve the rest (Kafka rotates fetch sessions likewise).
        self._replica_first: dict[int, int] = {}

    # -- produce ----------------------------------------------------------------------------
    async def produce(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        acks = field(body, "acks", int, -1)
        if acks not in (-1, 0, 1):
            raise error(ErrorCode.INVALID_REQUEST, f"acks must be -1 (all), 0 or 1, got {acks}")
        timeout_ms = field(body, "timeout_ms", int, self.b.cfg.limits.request_timeout_ms,
                           lo=1, hi=3_600_000)
        entries = _entries(body)
        now = int(time.time() * 1000)
        results: list[dict[str, Any]] = []
        pending: list[tuple[dict[str, Any], Partition, int, Any]] = []
        for e in entries:
            out: dict[str, Any] = {"topic": e["topic"], "partition": e["partition"]}
            results.append(out)
            try:
                p, res = self._append(e, acks, now)
            except RaftlogError as exc:
                _err(out, exc)
                continue
            out.update(base_offset=res.base_offset, log_append_time_ms=-1,
                       log_start_offset=p.log_start_offset)
            pending.append((out, p, res.last_offset + 1, p.leader_epoch))
        if acks == 0:
            return answer(request, {"partitions": []})
        if pending:
            await self._await_acks(pending, acks, timeout_ms / 1000)
        return answer(request, {"partitions": results})

    def _append(self, e: dict[str, Any], acks: int, now: int) -> tuple[Partition, Any]:
        raw = e.get("batch")
        if not isinstance(raw, (bytes, bytearray)):
            raise error(ErrorCode.INVALID_REQUEST, "'batch' must be binary record batch bytes")
        p = self.m.leader(e["topic"], e["partition"])
        if len(raw) > p.max_message_bytes:
            raise error(ErrorCode.MESSAGE_TOO_LARGE,
                        f"batch of {len(raw)} bytes exceeds max.message.bytes="
                        f"{p.max_message_bytes} of {p.topic}")
        try:
            batch_codec.validate(raw, p.max_message_bytes)
        except CorruptBatchError:
            raise
        return p, p.append_leader(bytearray(raw), acks, now)

    async def _await_acks(self, pending: list[tuple[dict[str, Any], Partition, int, int]],
                          acks: int, timeout_s: float) -> None:
        async def one(out: dict[str, Any], p: Partition, next_offset: int, epoch: int) -> None:
            try:
                await self.m.durable(p, next_offset)
                if acks == -1:
                    await p.wait_committed(next_offset, epoch)
                    p.check_isr_after_append()
            except RaftlogError as exc:
                _err(out, exc)
            except OSError as exc:
                _err(out, error(ErrorCode.UNKNOWN_SERVER_ERROR, f"storage failed: {exc}"))

        tasks = [asyncio.ensure_future(one(out, p, nxt, epoch)) for out, p, nxt, epoch in pending]
        done, not_done = await asyncio.wait(tasks, timeout=timeout_s)
        for t in not_done:
            t.cancel()
        for (out, p, nxt, _), t in zip(pending, tasks):
            if t in not_done:
                _err(out, error(ErrorCode.REQUEST_TIMED_OUT,
                                f"{p.topic}-{p.index}: not replicated to the ISR within "
                                f"{timeout_s * 1000:.0f} ms (the write may still commit)"))

    # -- fetch (consumers) ------------------------------------------------------------------
    async def fetch(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        max_wait_ms = field(body, "max_wait_ms", int, 500, lo=0, hi=MAX_WAIT_MS_MAX)
        min_bytes = field(body, "min_bytes", int, 1, lo=0)
        max_bytes = field(body, "max_bytes", int, self.b.cfg.limits.fetch_max_bytes, lo=1,
                          hi=self.b.cfg.limits.fetch_max_bytes)
        entries = _fetch_entries(body)
        results = await _long_poll(lambda: self._read(entries, max_bytes, min_bytes),
                                   max_wait_ms)
        return answer(request, {"partitions": results})

    def _read(self, entries: list[dict[str, Any]], max_bytes: int, min_bytes: int
              ) -> tuple[list[dict[str, Any]], bool, list[Partition]]:
        results = []
        parts = []
        total = 0
        failed = False
        for e in entries:
            out: dict[str, Any] = {"topic": e["topic"], "partition": e["partition"]}
            results.append(out)
            try:
                p = self.m.leader(e["topic"], e["partition"])
                epoch = e["current_leader_epoch"]
                if epoch >= 0 and epoch != p.leader_epoch:
                    code = (ErrorCode.FENCED_LEADER_EPOCH if epoch < p.leader_epoch
                            else ErrorCode.UNKNOWN_LEADER_EPOCH)
                    raise error(code, f"leader epoch is {p.leader_epoch}, request has {epoch}",
                                {"leader_epoch": p.leader_epoch})
                parts.append(p)
                budget = max(0, max_bytes - total)
                per = min(e["max_bytes"] or budget, budget)
                records = p.read_committed(e["offset"], per) if per > 0 or total == 0 else b""
            except RaftlogError as exc:
                _err(out, exc)
                failed = True
                continue
            total += len(records)
            out.update(high_watermark=p.hw, log_start_offset=p.log_start_offset,
                       records=records)
        return results, total >= min_bytes or failed, parts

    # -- list offsets, metadata, producer ids -----------------------------------------------
    async def list_offsets(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        results = []
        for e in _entries(body):
            out: dict[str, Any] = {"topic": e["topic"], "partition": e["partition"]}
            results.append(out)
            ts = e.get("timestamp", LIST_LATEST)
            try:
                if type(ts) is not int:
                    raise error(ErrorCode.INVALID_REQUEST, "'timestamp' must be an integer")
                p = self.m.leader(e["topic"], e["partition"])
                if ts == LIST_LATEST:
                    off = p.hw
                elif ts == LIST_EARLIEST:
                    off = p.log_start_offset
                else:
                    off = _offset_for_timestamp(p, ts)
                out["offset"] = off
            except RaftlogError as exc:
                _err(out, exc)
        return answer(request, {"partitions": results})

    async def metadata(self, request: web.Request) -> web.Response:
        body = await read_body(request, required=False)
        view = self.b.view
        names = body.get("topics")
        if names is not None and not (isinstance(names, list)
                                      and all(isinstance(n, str) for n in names)):
            raise error(ErrorCode.INVALID_REQUEST, "'topics' must be a list of names or null")
        topics = []
        for n in (names if names is not None else view.topic_names()):
            t = view.topic(n)
            if t is None:
                topics.append({"name": n, "error": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION.name,
                               "message": f"topic '{n}' does not exist"})
                continue
            topics.append({"name": n, "partitions": [
                {"partition": p.partition, "leader": p.leader, "leader_epoch": p.leader_epoch,
                 "replicas": list(p.replicas), "isr": list(p.isr)} for p in t.partitions]})
        return answer(request, {
            "controller": self.b.meta.leader_id if self.b.meta else None,
            "brokers": [{"id": b.broker_id, "host": b.host, "http_port": b.http_port}
                        for b in (view.brokers[i] for i in view.broker_ids()) if not b.fenced],
            "topics": topics})

    async def init_producer_id(self, request: web.Request) -> web.Response:
        res = await self.b.call_controller("/v1/controller/producer-ids", {"count": 1})
        first = res.get("first_id", res.get("start"))
        return answer(request, {"producer_id": first, "producer_epoch": 0})

    # -- replica fetch (followers) ----------------------------------------------------------
    async def replica_fetch(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        follower = field(body, "broker_id", int, lo=0)
        epoch = field(body, "broker_epoch", int)
        max_wait_ms = field(body, "max_wait_ms", int, 500, lo=0, hi=MAX_WAIT_MS_MAX)
        max_bytes = field(body, "max_bytes", int, self.b.cfg.replication.replica_fetch_max_bytes,
                          lo=1)
        b = self.b.view.broker(follower)
        if b is None or b.epoch != epoch:
            raise error(ErrorCode.STALE_BROKER_EPOCH,
                        f"broker {follower} epoch {epoch} is not the registered one")
        entries = _replica_entries(body)
        results = await _long_poll(lambda: self._replica_read(follower, entries, max_bytes),
                                   max_wait_ms)
        return answer(request, {"partitions": results})

    def _replica_read(self, follower: int, entries: list[dict[str, Any]], max_bytes: int
                      ) -> tuple[list[dict[str, Any]], bool, list[Partition]]:
        """Answer every partition entry (progress and HW count even when no records fit),
        adding records until `max_bytes` is used up. As Kafka, only the first partition with
        data may exceed it, by its one first batch, so a follower always makes progress; a
        partition read later gets no records once the budget is gone (its batch may still
        overrun a budget that is not gone yet: `log.read` returns at least one batch)."""
        now = int(time.time() * 1000)
        results: list[dict[str, Any]] = [{"topic": e["topic"], "partition": e["partition"]}
                                         for e in entries]
        parts = []
        total = 0
        urgent = False
        n = len(entries)
        first = self._replica_first.get(follower, 0) % n if n else 0
        starved = None
        for i in (*range(first, n), *range(first)):
            e, out = entries[i], results[i]
            try:
                p = self.m.get(e["topic"], e["partition"])
                parts.append(p)
                budget = max(0, max_bytes - total)
                per = min(e["max_bytes"] or budget, budget)
                if budget == 0 and starved is None:
                    starved = i
                r = p.answer_follower_fetch(
                    follower, e["leader_epoch"], e["fetch_offset"], e["last_fetched_epoch"],
                    max(per, 1) if total == 0 else per, now)
            except RaftlogError as exc:
                _err(out, exc)
                urgent = True
                continue
            out.update(r)
            total += len(r.get("records") or b"")
            # A high-watermark move alone does not answer a waiting follower (as in Kafka): it
            # would double the requests per produce; followers learn it with the next data.
            # A follower that must truncate is answered at once.
            if "diverging_epoch" in r:
                urgent = True
        if starved is not None:
            self._replica_first[follower] = starved
        return results, total > 0 or urgent, parts
