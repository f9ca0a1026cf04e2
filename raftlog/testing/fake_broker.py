"""FakeCluster: an in-process stand-in for raftlog brokers, speaking docs/protocol.md.

Owns: N aiohttp apps on 127.0.0.1 ephemeral ports sharing one in-memory state (topics,
partition logs of stamped batches, leaders and epochs, idempotent-producer state), plus fault
hooks tests use to make the client work: per-partition error answers, lost responses (applied,
then the connection is cut), stalled requests, no quorum, leader moves, log-start truncation.
It lets the client be tested before the real broker exists; it does no replication, no disk,
no Raft (HW = log end). Test-only: no production module imports it.

    async with FakeCluster(nodes=2) as fc:
        fc.create_topic("t", partitions=3)
        ... Producer(fc.bootstrap) ...
    with FakeCluster.in_thread(nodes=1) as fc: ...   # for subprocess (CLI) tests
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import msgpack
from aiohttp import web

from raftlog.codec import batch as codec
from raftlog.errors import ErrorCode, RaftlogError, error

MSGPACK = "application/msgpack"
NODE_ID = web.AppKey("node_id", int)
PRODUCER_BATCHES_KEPT = 5  # as Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN
KNOWN_CONFIGS = {"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete",
                 "min.insync.replicas": "1", "max.message.bytes": "1048576",
                 "segment.bytes": "1073741824"}


@dataclass
class FakePartition:
    leader: int
    replicas: list[int]
    leader_epoch: int = 0
    log: list[tuple[int, bytes]] = field(default_factory=list)  # (base_offset, stamped batch)
    next_offset: int = 0
    log_start: int = 0
    producers: dict[int, tuple[int, deque]] = field(default_factory=dict)  # pid -> (epoch, [(first, last, base)])


@dataclass
class FakeTopic:
    name: str
    id: str
    partitions: list[FakePartition]
    config: dict[str, Any] = field(default_factory=dict)


class FakeCluster:
    def __init__(self, nodes: int = 1) -> None:
        self.node_ids = list(range(1, nodes + 1))
        self.topics: dict[str, FakeTopic] = {}
        self.ports: dict[int, int] = {}
        self.controller = 1
        self.no_quorum = False
        self.next_producer_id = 1000
        self.metadata_version = 1
        self.requests: list[tuple[int, str]] = []  # (node, path) of every request, for asserts
        self._errors: list[dict[str, Any]] = []    # pending injected per-partition errors
        self._drops: dict[str, int] = {}           # path -> responses to lose after applying
        self.stalled: set[str] = set()             # paths that never answer
        self._runners: list[web.AppRunner] = []
        self._stopping = False
        self._data: Any = None     # asyncio.Condition, created on start (needs the loop)
        self._unstall: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> "FakeCluster":
        self._data = asyncio.Condition()
        self._unstall = asyncio.Event()
        for nid in self.node_ids:
            app = web.Application(middlewares=[self._middleware], client_max_size=256 << 20)
            app[NODE_ID] = nid
            r = app.router
            r.add_get("/v1/cluster", self._cluster)
            r.add_get("/v1/topics", self._list_topics)
            r.add_post("/v1/topics", self._create_topic)
            r.add_get("/v1/topics/{name}", self._describe_topic)
            r.add_patch("/v1/topics/{name}", self._alter_topic)
            r.add_delete("/v1/topics/{name}", self._delete_topic)
            for path, h in (("metadata", self._metadata), ("produce", self._produce),
                            ("fetch", self._fetch), ("list-offsets", self._list_offsets),
                            ("init-producer-id", self._init_pid)):
                r.add_post(f"/v1/{path}", h)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.ports[nid] = runner.addresses[0][1]
            self._runners.append(runner)
        return self

    async def stop(self) -> None:
        self.stalled.clear()
        self._stopping = True
        if self._unstall is not None:
            self._unstall.set()
        if self._data is not None:
            async with self._data:
                self._data.notify_all()  # long-polling fetches answer now
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> "FakeCluster":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, nodes: int = 1) -> Iterator["FakeCluster"]:
        """Run a FakeCluster on its own loop in a daemon thread (for subprocess tests)."""
        fc = cls(nodes)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(fc.start())
            ready.set()
            loop.run_forever()

        t = threading.Thread(target=run, name="fake-broker", daemon=True)
        t.start()
        if not ready.wait(10):
            raise RuntimeError("fake broker did not start within 10 s")
        fc.loop = loop  # type: ignore[attr-defined]
        try:
            yield fc
        finally:
            asyncio.run_coroutine_threadsafe(fc.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            t.join(10)
            loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a sync helper on the cluster's loop thread (in_thread mode) and return its result."""
        loop = getattr(self, "loop", None)
        if loop is None:
            return fn(*args)

        async def go() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(go(), loop).result(10)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in self.node_ids)

    def url(self, node_id: int) -> str:
        return f"http://127.0.0.1:{self.ports[node_id]}"

    # -- test helpers ------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 3, leader: int | None = None,
                     config: dict[str, Any] | None = None) -> FakeTopic:
        if name in self.topics:
            raise error(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{name}' already exists")
        parts = [FakePartition(leader=leader or self.node_ids[i % len(self.node_ids)],
                               replicas=list(self.node_ids)) for i in range(partitions)]
        t = self.topics[name] = FakeTopic(name, uuid.uuid4().hex, parts, dict(config or {}))
        self.metadata_version += 1
        return t

    def move_leader(self, topic: str, partition: int, node_id: int) -> None:
        p = self.topics[topic].partitions[partition]
        p.leader = node_id
        p.leader_epoch += 1
        self.metadata_version += 1

    def fail_next(self, path: str, code: ErrorCode, *, count: int = 1, topic: str | None = None,
                  partition: int | None = None, hint: dict[str, Any] | None = None) -> None:
        """The next `count` entries for (topic, partition) on `path` answer `code` unapplied."""
        self._errors.append({"path": path, "code": code, "count": count, "topic": topic,
                             "partition": partition, "hint": hint})

    def lose_responses(self, path: str, count: int = 1) -> None:
        """Apply the next `count` requests on `path`, then cut the connection unanswered."""
        self._drops[path] = self._drops.get(path, 0) + count

    def truncate_before(self, topic: str, partition: int, offset: int) -> None:
        """Advance the log start (as retention would) and drop whole batches below it."""
        p = self.topics[topic].partitions[partition]
        p.log_start = offset
        p.log = [(b, raw) for b, raw in p.log if codec.peek(raw).next_offset > offset]

    def records(self, topic: str, partition: int) -> list[codec.Record]:
        p = self.topics[topic].partitions[partition]
        return codec.decode(b"".join(raw for _, raw in p.log)) if p.log else []

    def batch_headers(self, topic: str, partition: int) -> list[codec.BatchHeader]:
        return [codec.peek(raw) for _, raw in self.topics[topic].partitions[partition].log]

    # -- plumbing ------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.removeprefix("/v1/")
        self.requests.append((request.app[NODE_ID], path))
        if self.no_quorum and path != "cluster":
            return _answer(request, error(ErrorCode.NO_QUORUM, "no metadata quorum",
                                          {"retry_after_ms": 50}).to_wire(), 503)
        if path in self.stalled:
            assert self._unstall is not None
            await self._unstall.wait()  # never answers; stop() releases it
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        try:
            resp = await handler(request)
        except RaftlogError as exc:
            return _answer(request, exc.to_wire(), exc.http_status)
        if self._drops.get(path):
            self._drops[path] -= 1
            assert request.transport is not None
            request.transport.abort()  # applied, but the client never hears back
        return resp

    def _injected(self, path: str, topic: str, partition: int) -> dict[str, Any] | None:
        for e in self._errors:
            if e["path"] == path and e["topic"] in (None, topic) \
                    and e["partition"] in (None, partition):
                e["count"] -= 1
                if e["count"] <= 0:
                    self._errors.remove(e)
                return error(e["code"], f"injected {e['code'].name}", e["hint"]).to_wire()
        return None

    def _partition(self, request: web.Request, topic: str, partition: int) -> FakePartition:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{partition}")
        p = t.partitions[partition]
        if p.leader != request.app[NODE_ID]:
            raise error(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"node {request.app[NODE_ID]} is not "
                        f"the leader of {topic}-{partition}",
                        {"leader_id": p.leader, "leader_url": self.url(p.leader),
                         "leader_epoch": p.leader_epoch})
        return p

    def _per_partition(self, request: web.Request, path: str, entries: list[dict[str, Any]],
                       fn: Any) -> list[dict[str, Any]]:
        out = []
        for e in entries:
            head = {"topic": e["topic"], "partition": e["partition"]}
            injected = self._injected(path, e["topic"], e["partition"])
            if injected:
                out.append({**head, **injected})
                continue
            try:
                out.append({**head, **fn(self._partition(request, e["topic"], e["partition"]), e)})
            except RaftlogError as exc:
                out.append({**head, **exc.to_wire()})
        return out

    # -- data plane --------------------------------------------------------------------------
    async def _metadata(self, request: web.Request) -> web.Response:
        body = await _body(request)
        names = body.get("topics")
        names = sorted(self.topics) if names is None else names
        topics = []
        for n in names:
            t = self.topics.get(n)
            if t is None:
                topics.append({"name": n, "error": "UNKNOWN_TOPIC_OR_PARTITION", "partitions": []})
                continue
            topics.append({"name": n, "partitions": [
                {"partition": i, "leader": p.leader, "leader_epoch": p.leader_epoch,
                 "replicas": p.replicas, "isr": p.replicas} for i, p in enumerate(t.partitions)]})
        return _answer(request, {"controller": self.controller, "brokers": self._brokers(),
                                 "topics": topics})

    async def _produce(self, request: web.Request) -> web.Response:
        body = await _body(request)
        results = self._per_partition(request, "produce", body["partitions"], self._append)
        if results:
            async with self._data:
                self._data.notify_all()
        if body.get("acks") == 0:
            return _answer(request, {})
        return _answer(request, {"partitions": results})

    def _append(self, p: FakePartition, e: dict[str, Any]) -> dict[str, Any]:
        h = codec.validate(e["batch"])
        base = p.next_offset
        if h.producer_id >= 0:
            epoch, recent = p.producers.get(h.producer_id, (h.producer_epoch, deque()))
            last = h.base_sequence + h.record_count - 1
            for first, last_seq, off in recent:
                if epoch == h.producer_epoch and first == h.base_sequence and last_seq == last:
                    return {"base_offset": off, "log_append_time_ms": -1,
                            "log_start_offset": p.log_start}  # duplicate: the original offset
            expected = recent[-1][1] + 1 if recent and epoch == h.producer_epoch else 0
            if h.base_sequence != expected:
                raise error(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                            f"expected sequence {expected}, got {h.base_sequence}")
            if epoch != h.producer_epoch:
                recent = deque()
            recent.append((h.base_sequence, last, base))
            while len(recent) > PRODUCER_BATCHES_KEPT:
                recent.popleft()
            p.producers[h.producer_id] = (h.producer_epoch, recent)
        buf = bytearray(e["batch"])
        codec.stamp(buf, base, p.leader_epoch)
        p.log.append((base, bytes(buf)))
        p.next_offset = h.next_offset + base
        return {"base_offset": base, "log_append_time_ms": -1, "log_start_offset": p.log_start}

    async def _fetch(self, request: web.Request) -> web.Response:
        body = await _body(request)
        deadline = asyncio.get_running_loop().time() + body.get("max_wait_ms", 500) / 1000
        while True:
            results = self._per_partition(request, "fetch", body["partitions"], self._read)
            got = sum(len(r.get("records", b"")) for r in results)
            remaining = deadline - asyncio.get_running_loop().time()
            if got >= body.get("min_bytes", 1) or remaining <= 0 or self._stopping \
                    or any("error" in r for r in results):
                return _answer(request, {"partitions": results})
            async with self._data:
                try:
                    await asyncio.wait_for(self._data.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    def _read(self, p: FakePartition, e: dict[str, Any]) -> dict[str, Any]:
        off = e["offset"]
        if off < p.log_start or off > p.next_offset:
            raise error(ErrorCode.OFFSET_OUT_OF_RANGE, f"offset {off} not in [{p.log_start}, "
                        f"{p.next_offset}]", {"log_start_offset": p.log_start,
                                              "log_end_offset": p.next_offset})
        out, size = [], 0
        for base, raw in p.log:
            if codec.peek(raw).next_offset <= off:
                continue
            if out and size + len(raw) > e.get("max_bytes", 1 << 20):
                break
            out.append(raw)
            size += len(raw)
        return {"high_watermark": p.next_offset, "log_start_offset": p.log_start,
                "records": b"".join(out)}

    async def _list_offsets(self, request: web.Request) -> web.Response:
        body = await _body(request)
        return _answer(request, {"partitions": self._per_partition(
            request, "list-offsets", body["partitions"], self._offset_for)})

    def _offset_for(self, p: FakePartition, e: dict[str, Any]) -> dict[str, Any]:
        ts = e["timestamp"]
        if ts == -1:
            return {"offset": p.next_offset}
        if ts == -2:
            return {"offset": p.log_start}
        for _, raw in p.log:
            if codec.peek(raw).max_timestamp >= ts:
                for r in codec.decode(raw):
                    if r.timestamp >= ts and r.offset >= p.log_start:
                        return {"offset": r.offset, "timestamp": r.timestamp}
        return {"offset": -1}

    async def _init_pid(self, request: web.Request) -> web.Response:
        self.next_producer_id += 1
        return _answer(request, {"producer_id": self.next_producer_id, "producer_epoch": 0})

    # -- admin (JSON) -----------------------------------------------------------------------
    def _brokers(self) -> list[dict[str, Any]]:
        return [{"id": n, "host": "127.0.0.1", "http_port": self.ports[n], "url": self.url(n),
                 "epoch": 1, "state": "active"} for n in self.node_ids]

    async def _cluster(self, request: web.Request) -> web.Response:
        parts = [p for t in self.topics.values() for p in t.partitions]
        return _answer(request, {
            "cluster_id": "fake", "node_id": request.app[NODE_ID],
            "controller": None if self.no_quorum else self.controller,
            "metadata_version": self.metadata_version, "brokers": self._brokers(),
            "partitions_total": len(parts),
            "offline_partitions": sum(1 for p in parts if p.leader < 0),
            "under_replicated_partitions": 0})

    def _describe(self, t: FakeTopic) -> dict[str, Any]:
        config = [{"name": k, "value": t.config.get(k, v),
                   "source": "topic" if k in t.config else "default"}
                  for k, v in sorted(KNOWN_CONFIGS.items())]
        return {"name": t.name, "id": t.id, "config": config, "partitions": [
            {"partition": i, "leader": p.leader if p.leader >= 0 else None,
             "leader_epoch": p.leader_epoch, "replicas": p.replicas,
             "isr": p.replicas if p.leader >= 0 else [], "partition_epoch": p.leader_epoch}
            for i, p in enumerate(t.partitions)]}

    def _topic(self, request: web.Request) -> FakeTopic:
        t = self.topics.get(request.match_info["name"])
        if t is None:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        f"topic '{request.match_info['name']}' does not exist")
        return t

    async def _list_topics(self, request: web.Request) -> web.Response:
        return _answer(request, {"topics": [
            {"name": t.name, "id": t.id, "partitions": len(t.partitions),
             "replication_factor": len(self.node_ids), "internal": False}
            for t in sorted(self.topics.values(), key=lambda t: t.name)]})

    async def _create_topic(self, request: web.Request) -> web.Response:
        body = await _body(request)
        config = body.get("config") or {}
        _check_configs(config)
        n = body.get("partitions") or 3
        if not isinstance(n, int) or n < 1:
            raise error(ErrorCode.INVALID_PARTITIONS, f"partitions must be >= 1, got {n!r}")
        rf = body.get("replication_factor") or 1
        if rf > len(self.node_ids):
            raise error(ErrorCode.INVALID_REPLICATION_FACTOR,
                        f"replication factor {rf} is larger than the {len(self.node_ids)} brokers")
        t = self.create_topic(body["name"], n, config={k: str(v) for k, v in config.items()})
        return _answer(request, self._describe(t), 201)

    async def _describe_topic(self, request: web.Request) -> web.Response:
        return _answer(request, self._describe(self._topic(request)))

    async def _alter_topic(self, request: web.Request) -> web.Response:
        t = self._topic(request)
        config = (await _body(request)).get("config") or {}
        _check_configs(config)
        for k, v in config.items():
            if v is None:
                t.config.pop(k, None)
            else:
                t.config[k] = str(v)
        return _answer(request, self._describe(t))

    async def _delete_topic(self, request: web.Request) -> web.Response:
        t = self._topic(request)
        del self.topics[t.name]
        self.metadata_version += 1
        return _answer(request, {"deleted": t.name})


def _check_configs(config: dict[str, Any]) -> None:
    for k in config:
        if k not in KNOWN_CONFIGS:
            raise error(ErrorCode.INVALID_CONFIG, f"unknown topic config '{k}'")


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    if request.content_type == MSGPACK:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    return json.loads(raw)


def _answer(request: web.Request, body: Any, status: int = 200) -> web.Response:
    if request.content_type == MSGPACK:
        return web.Response(body=msgpack.packb(body, use_bin_type=True), status=status,
                            content_type=MSGPACK)
    return web.json_response(body, status=status)


def main() -> None:
    """`python -m raftlog.testing.fake_broker [--nodes N] [--topic name:partitions ...]`"""
    import argparse
    ap = argparse.ArgumentParser(description="serve a FakeCluster until interrupted")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--topic", action="append", default=[], help="name:partitions")

    async def serve(args: argparse.Namespace) -> None:
        async with FakeCluster(args.nodes) as fc:
            for spec in args.topic:
                name, _, n = spec.partition(":")
                fc.create_topic(name, int(n or 3))
            print(f"BOOTSTRAP {fc.bootstrap}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    main()
