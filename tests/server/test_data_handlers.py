"""The data-plane handlers (raftlog/server/handlers_data.py) in process, on real Partitions.

An aiohttp test server runs the real routes and error middleware on a stub broker whose replica
manager holds real `Partition`s over real `PartitionLog`s in tmp_path, so answers are checked on
the wire: HTTP status, Kafka error code, message, and the bytes the partition then serves.

- audit bug 1: a CRC-valid batch whose records are wrong is refused with CORRUPT_MESSAGE, the
  log end offset does not move, and the partition's committed records still decode;
- audit bug 3: every wrongly typed per-partition field of /v1/fetch and /v1/replica/fetch is a
  400 INVALID_REQUEST naming the field (it was a 500 with a traceback, or silently ignored);
- audit bug 4: a follower fetch stops adding batches once the request's max_bytes is used up,
  and still carries one whole batch larger than max_bytes when it is the first data.
"""
from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftlog.codec import batch as B
from raftlog.errors import ErrorCode, error
from raftlog.replication.manager import ReplicaManager
from raftlog.replication.partition import Partition
from raftlog.server import handlers_data
from raftlog.server.http import MSGPACK, error_middleware
from raftlog.storage.log import PartitionLog

FOLLOWER_ID = 2
FOLLOWER_EPOCH = 5
NOW = int(time.time() * 1000)


class Replicas:
    """The two lookups and the flush wait the handlers use of the ReplicaManager."""

    def __init__(self, parts: list[Partition]):
        self.parts = {p.key: p for p in parts}

    def get(self, topic: str, index: int) -> Partition:
        p = self.parts.get((topic, index))
        if p is None:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{index}")
        return p

    leader = ReplicaManager.leader     # the real rule on top of this fake's get()

    async def durable(self, p: Partition, offset: int) -> None:
        return None


def stub_broker(parts: list[Partition]) -> SimpleNamespace:
    brokers = {FOLLOWER_ID: SimpleNamespace(epoch=FOLLOWER_EPOCH)}
    return SimpleNamespace(
        replicas=Replicas(parts), meta=None,
        cfg=SimpleNamespace(limits=SimpleNamespace(fetch_max_bytes=1 << 20,
                                                   request_timeout_ms=5000),
                            replication=SimpleNamespace(replica_fetch_max_bytes=1 << 20)),
        view=SimpleNamespace(broker=brokers.get))


def leader_partition(tmp_path, topic: str, index: int = 0) -> Partition:
    p = Partition(topic, index, PartitionLog.open(str(tmp_path / f"{topic}-{index}")), 1)
    # RF 2 with the follower in the ISR: the follower's fetches move the high watermark.
    # (now_ms: a marker far older than the data would roll a segment, splitting reads)
    p.become_leader(0, (1, FOLLOWER_ID), (1, FOLLOWER_ID), partition_epoch=0, now_ms=NOW)
    return p


@pytest.fixture
async def node(tmp_path):
    parts = [leader_partition(tmp_path, "t", 0), leader_partition(tmp_path, "t", 1)]
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(handlers_data.routes(stub_broker(parts)))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield SimpleNamespace(client=client, parts=parts)
    finally:
        await client.close()
        for p in parts:
            p.close()


async def post(node, path: str, body: dict) -> tuple[int, dict]:
    r = await node.client.post(path, data=msgpack.packb(body, use_bin_type=True),
                               headers={"Content-Type": MSGPACK, "Accept": MSGPACK})
    return r.status, msgpack.unpackb(await r.read(), raw=False)


async def produce(node, batch: bytes, partition: int = 0) -> dict:
    status, out = await post(node, "/v1/produce", {"acks": 1, "timeout_ms": 2000, "partitions": [
        {"topic": "t", "partition": partition, "batch": batch}]})
    assert status == 200, out
    return out["partitions"][0]


async def replica_fetch(node, entries: list[dict], max_bytes: int = 1 << 20) -> tuple[int, dict]:
    return await post(node, "/v1/replica/fetch", {
        "broker_id": FOLLOWER_ID, "broker_epoch": FOLLOWER_EPOCH, "max_wait_ms": 0,
        "max_bytes": max_bytes, "partitions": entries})


def follower_entry(p: Partition, **fields) -> dict:
    e = {"topic": p.topic, "partition": p.index, "leader_epoch": p.leader_epoch,
         "fetch_offset": p.log_end_offset, "last_fetched_epoch": 0}
    e.update(fields)
    return e


async def commit_all(node) -> None:
    """The follower fetches at every leader's log end: the high watermarks reach it."""
    status, out = await replica_fetch(node, [follower_entry(p) for p in node.parts])
    assert status == 200 and not any("error" in e for e in out["partitions"]), out
    assert all(p.hw == p.log_end_offset for p in node.parts)


# -- bug 1: poison batches --------------------------------------------------------------------
ONE = B.pack([(0, None, b"x", None)])
POISON = {
    "says 1000 records, holds 1": B.encode_payload(ONE, 1000, NOW, NOW),
    "garbage msgpack payload": B.encode_payload(b"\xc1\xc1\xc1", 1, NOW, NOW),
    "unknown codec 5": B.encode_payload(ONE, 1, NOW, NOW, attributes=5),
    "gzip bit on an uncompressed payload": B.encode_payload(ONE, 1, NOW, NOW, attributes=1),
    "record_count 2**31-1": B.encode_payload(ONE, 2**31 - 1, NOW, NOW),
}


@pytest.mark.parametrize("case", sorted(POISON))
async def test_poison_batch_is_refused_and_the_partition_stays_readable(node, case):
    p = node.parts[0]
    good = await produce(node, B.encode([(None, b"before", None, NOW)]))
    assert "error" not in good, good
    leo = p.log_end_offset
    out = await produce(node, POISON[case])
    assert out["error"] == "CORRUPT_MESSAGE" and out["message"], out
    assert p.log_end_offset == leo                       # nothing appended, no offset jump
    after = await produce(node, B.encode([(None, b"after", None, NOW)]))
    assert "error" not in after and after["base_offset"] == leo, after
    await commit_all(node)
    status, res = await post(node, "/v1/fetch", {"max_wait_ms": 0, "partitions": [
        {"topic": "t", "partition": 0, "offset": 0}]})
    assert status == 200 and "error" not in res["partitions"][0], res
    assert [r.value for r in B.decode(res["partitions"][0]["records"])] == [b"before", b"after"]


# -- bug 3: wrongly typed per-partition fields -----------------------------------------------
BAD_FETCH = {
    "max_bytes": ["abc", [1], 1.5, True, -1, 1 << 40],
    "current_leader_epoch": ["0", 1.0, [0], -2],
    "offset": ["0", None, 1.0, {"x": 1}],
}


@pytest.mark.parametrize("name,value", [(n, v) for n, vs in sorted(BAD_FETCH.items())
                                        for v in vs])
async def test_fetch_refuses_a_wrongly_typed_partition_field(node, name, value):
    entry = {"topic": "t", "partition": 0, "offset": 0, name: value}
    status, out = await post(node, "/v1/fetch", {"max_wait_ms": 0, "partitions": [entry]})
    assert status == 400, out
    assert out["error"] == "INVALID_REQUEST" and f"'{name}'" in out["message"], out
    assert "t-0" in out["message"], out


async def test_fetch_refuses_infinity_max_bytes_sent_as_json(node):
    # JSON bodies can carry Infinity; msgpack can carry inf as a float: both are not ints.
    for body, ctype in ((b'{"max_wait_ms": 0, "partitions": [{"topic": "t", "partition": 0, '
                         b'"offset": 0, "max_bytes": Infinity}]}', "application/json"),
                        (msgpack.packb({"max_wait_ms": 0, "partitions": [
                            {"topic": "t", "partition": 0, "offset": 0,
                             "max_bytes": float("inf")}]}), MSGPACK)):
        r = await node.client.post("/v1/fetch", data=body, headers={"Content-Type": ctype})
        out = msgpack.unpackb(await r.read()) if ctype == MSGPACK else await r.json()
        assert r.status == 400 and out["error"] == "INVALID_REQUEST", out
        assert "'max_bytes'" in out["message"], out


async def test_fetch_with_a_stale_current_leader_epoch_is_fenced(node):
    # the type check must not break the check it feeds: an int epoch still fences
    status, out = await post(node, "/v1/fetch", {"max_wait_ms": 0, "partitions": [
        {"topic": "t", "partition": 0, "offset": 0, "current_leader_epoch": 7}]})
    assert status == 200 and out["partitions"][0]["error"] == "UNKNOWN_LEADER_EPOCH", out


BAD_REPLICA = {
    "leader_epoch": ["0", 0.0, [0], "None", -2],
    "fetch_offset": ["0", 1.5, [0], -1],
    "last_fetched_epoch": ["0", 0.5, {}, -2],
    "max_bytes": ["abc", [1], 1.5, -1],
}


@pytest.mark.parametrize("name,value", [(n, v) for n, vs in sorted(BAD_REPLICA.items())
                                        for v in vs])
async def test_replica_fetch_refuses_a_wrongly_typed_partition_field(node, name, value):
    entry = follower_entry(node.parts[0], **{name: value})
    status, out = await replica_fetch(node, [entry])
    assert status == 400, out
    assert out["error"] == "INVALID_REQUEST" and f"'{name}'" in out["message"], out
    assert "t-0" in out["message"], out


# -- bug 4: a follower fetch's total max_bytes ------------------------------------------------
def big_batch(size: int) -> bytes:
    return B.encode([(None, b"v" * size, None, NOW)])


async def test_replica_fetch_stops_adding_batches_once_max_bytes_is_used_up(node):
    p0, p1 = node.parts
    for p in (p0, p1):
        assert "error" not in await produce(node, big_batch(3000), p.index)
    # from the data batch (offset 1, after each leader's epoch marker), in epoch 0
    start = [follower_entry(p, fetch_offset=1) for p in (p0, p1)]
    # max_bytes below one batch: the first partition's batch comes whole, the second waits
    status, out = await replica_fetch(node, start, max_bytes=1000)
    assert status == 200, out
    first, second = out["partitions"]
    got = list(B.iter_batches(first["records"]))
    assert got and got[-1][1].next_offset == p0.log_end_offset   # progress: the whole log
    assert len(first["records"]) > 1000
    assert second["records"] == b"" and "error" not in second, second
    # the second partition is served when it is the first with data
    status, out = await replica_fetch(node, [follower_entry(p0), start[1]], max_bytes=1000)
    assert status == 200 and out["partitions"][0]["records"] == b""
    assert list(B.iter_batches(out["partitions"][1]["records"]))[-1][1].next_offset \
        == p1.log_end_offset


async def test_replica_fetch_budget_cannot_starve_partitions_late_in_the_list(node):
    # Both partitions always have more than max_bytes pending (the follower asks from the same
    # offsets): the partition the last full answer left out is read first next time.
    p0, p1 = node.parts
    for p in (p0, p1):
        assert "error" not in await produce(node, big_batch(3000), p.index)
    entries = [follower_entry(p, fetch_offset=1) for p in (p0, p1)]
    served = []
    for _ in range(4):
        status, out = await replica_fetch(node, entries, max_bytes=1000)
        assert status == 200, out
        got = [bool(e["records"]) for e in out["partitions"]]
        assert got.count(True) == 1, got          # one whole batch, then the budget is gone
        served.append(got.index(True))
    assert served == [0, 1, 0, 1]


async def test_a_diverging_follower_is_answered_without_waiting_out_the_long_poll(node):
    p0, p1 = node.parts
    await commit_all(node)
    # p0 caught up (nothing to send); p1 claims an epoch the leader never had at its offset
    entries = [follower_entry(p0), follower_entry(p1, last_fetched_epoch=3)]
    started = asyncio.get_running_loop().time()
    status, out = await asyncio.wait_for(post(node, "/v1/replica/fetch", {
        "broker_id": FOLLOWER_ID, "broker_epoch": FOLLOWER_EPOCH, "max_wait_ms": 20_000,
        "max_bytes": 1 << 20, "partitions": entries}), 30)
    assert status == 200 and "diverging_epoch" in out["partitions"][1], out
    # answered at once, not after max_wait_ms (20 s)
    assert asyncio.get_running_loop().time() - started < 10
