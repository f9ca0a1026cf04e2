"""The client library and the CLI against real 3-node clusters (issue 5, item 6).

- every Admin, Producer and Consumer call, checked against the bytes, offsets, timestamps and
  headers the cluster really stores, and keyed partitioning against raftlog.client.partitioner;
  list_offsets / offsets_for_times by timestamp answer the record, not the start of its batch
  and never the leader's epoch marker (fixed in handlers_data.py);
- a consumer follows a leader SIGKILLed mid-consumption and reads every record exactly once;
- idempotence end to end: a FaultProxy (raftlog/testing/fault_proxy.py) lets the first produce
  reach the leader and withholds its answer, so the producer retries; once with the same leader,
  once with the leader SIGKILLed between the attempts: every record is written exactly once and
  the retry is answered with the original offset;
- a batch that overtakes its partition's first batch (sequence 0) on another connection is
  retried after it, not failed;
- the `raftlog` CLI in subprocesses: topic create, produce from stdin, consume as JSON, cluster
  status, and one-line errors with a non-zero exit.

One module-scoped cluster serves the non-destructive tests; the two fault tests get their own.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from raftlog.client import Admin, Consumer, NewTopic, Producer, TopicPartition
from raftlog.client.errors import NoOffsetForPartitionError
from raftlog.client.partitioner import partition_for_key
from raftlog.client.structs import RecordMetadata
from raftlog.errors import ErrorCode, for_code
from raftlog.testing.cluster import (LAG_TOML, ProcessCluster, eventually, free_ports,
                                    running_cluster, wait_until)
from raftlog.testing.fault_proxy import FaultProxy

pytestmark = pytest.mark.cluster

# Followers that stop fetching leave the ISR quickly, so acks=all resumes soon after a SIGKILL.
UnknownTopicOrPartitionError = for_code(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
TopicAlreadyExistsError = for_code(ErrorCode.TOPIC_ALREADY_EXISTS)
OffsetOutOfRangeError = for_code(ErrorCode.OFFSET_OUT_OF_RANGE)


# -- fixtures and helpers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One running cluster for the tests that do not kill nodes; every process killed after."""
    with running_cluster(str(tmp_path_factory.mktemp("client-shared")), 3) as c:
        yield c


@pytest.fixture
def fresh(tmp_path):
    """A cluster of its own, for a test that SIGKILLs a node."""
    with running_cluster(str(tmp_path / "c"), 3, extra_toml=LAG_TOML) as c:
        yield c




async def read_n(consumer: Consumer, n: int, timeout_s: float, *tps: TopicPartition,
                 max_records: int | None = None) -> list:
    """Exactly the next `n` records getmany hands out (fails on fewer within the deadline)."""
    out: list = []

    async def more() -> bool:
        got = await consumer.getmany(*tps, timeout_ms=200, max_records=max_records)
        if max_records is not None:
            assert sum(map(len, got.values())) <= max_records
        for recs in got.values():
            out.extend(recs)
        return len(out) >= n

    await eventually(more, timeout_s, f"{n} records (have {len(out)})", interval_s=0)
    return out


async def make_topic(admin: Admin, name: str, partitions: int, **config: Any) -> dict:
    desc = await admin.create_topic(name, partitions, 3, config or None)
    await wait_leaders(admin, name, partitions)
    return desc


async def wait_leaders(admin: Admin, name: str, partitions: int) -> dict:
    async def ready() -> dict | None:
        d = await admin.describe_topic(name)
        parts = d["partitions"]
        ok = len(parts) == partitions and all(p["leader"] in (1, 2, 3) for p in parts)
        return d if ok else None
    return await eventually(ready, 20, f"leaders for {name}")


async def on_every_node(c: ProcessCluster, call: Any, ok: Any, timeout_s: float = 10) -> Any:
    """`await call(admin)` on an Admin bootstrapped at each node in turn, until `ok(answer)` holds
    on every node (metadata reaches the nodes one by one); the last answer."""
    out = None
    for node in c.live_nodes():
        async with Admin(f"127.0.0.1:{c.http_ports[node]}") as admin:
            async def agreed() -> bool:
                nonlocal out
                out = await call(admin)
                return bool(ok(out))
            await eventually(agreed, timeout_s, f"node {node} to apply the change")
    return out


async def partition_led_by_non_controller(admin: Admin, topic: str) -> tuple[int, int]:
    """(partition, leader) of `topic` whose leader is not the metadata controller, so killing it
    leaves the Raft quorum's leader alone."""
    ctl = (await admin.describe_cluster())["controller"]
    for p in (await admin.describe_topic(topic))["partitions"]:
        if p["leader"] != ctl:
            return p["partition"], p["leader"]
    raise AssertionError(f"every partition of {topic} is led by the controller {ctl}")


# -- 1. every client call --------------------------------------------------------------------
async def test_admin_calls_against_real_cluster(shared):
    c = shared
    async with Admin(c.bootstrap) as admin:
        cluster = await admin.describe_cluster()
        assert cluster["cluster_id"] == "test"
        assert cluster["controller"] in (1, 2, 3)
        assert sorted((b["id"], b["http_port"], b["state"]) for b in cluster["brokers"]) == \
            [(i, c.http_ports[i], "active") for i in (1, 2, 3)]

        desc = await admin.create_topic("adm", 3, 3, {"retention.ms": 3_600_000})
        assert desc["name"] == "adm" and len(desc["partitions"]) == 3
        for p in desc["partitions"]:
            assert sorted(p["replicas"]) == [1, 2, 3]
        created = await admin.create_topics([NewTopic("adm2", 1, 1), NewTopic("adm3")])
        assert set(created) == {"adm2", "adm3"}
        assert len(created["adm2"]["partitions"]) == 1
        with pytest.raises(TopicAlreadyExistsError):
            await admin.create_topic("adm", 3, 3)

        listed = await on_every_node(
            c, lambda a: a.list_topics(),
            lambda ts: {"adm", "adm2", "adm3"} <= {t["name"] for t in ts})
        listed = {t["name"]: t for t in listed}
        assert (listed["adm"]["partitions"], listed["adm"]["replication_factor"]) == (3, 3)
        assert (listed["adm2"]["partitions"], listed["adm2"]["replication_factor"]) == (1, 1)

        d = await wait_leaders(admin, "adm", 3)
        for p in d["partitions"]:
            assert p["leader"] in p["replicas"] and set(p["isr"]) <= set(p["replicas"])
        assert [t["name"] for t in await admin.describe_topics(["adm", "adm2"])] == \
            ["adm", "adm2"]
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.describe_topic("no-such-topic")

        cfg = await admin.describe_configs("adm")
        assert cfg["retention.ms"] == {"value": 3_600_000, "source": "topic"}
        assert cfg["min.insync.replicas"]["source"] == "default"
        default_retention = (await admin.describe_configs("adm2"))["retention.ms"]["value"]

        # Writes go through the controller; another broker applies them a moment later, so
        # reads after writes wait for the change to reach every node.
        after = await admin.alter_configs("adm", {"retention.ms": 7_200_000,
                                                  "max.message.bytes": 65536})
        assert {x["name"]: x["value"] for x in after["config"]}["max.message.bytes"] == 65536
        cfg = await on_every_node(c, lambda a: a.describe_configs("adm"),
                                  lambda cfg: cfg["retention.ms"]["value"] == 7_200_000)
        assert cfg["retention.ms"] == {"value": 7_200_000, "source": "topic"}
        assert cfg["max.message.bytes"] == {"value": 65536, "source": "topic"}
        await admin.alter_configs("adm", {"retention.ms": None})          # reset to default
        cfg = await on_every_node(c, lambda a: a.describe_configs("adm"),
                                  lambda cfg: cfg["retention.ms"]["source"] == "default")
        assert cfg["retention.ms"] == {"value": default_retention, "source": "default"}
        assert cfg["max.message.bytes"]["value"] == 65536

        # list_offsets: empty partition, then after records with known timestamps
        tp = TopicPartition("adm", 1)
        assert await admin.list_offsets({tp: -2}) == {tp: 0}
        hw0 = (await admin.list_offsets({tp: -1}))[tp]
        t0 = int(time.time() * 1000) - 60_000
        async with Producer(c.bootstrap) as p:
            mds = [await p.send("adm", b"x%d" % i, partition=1, timestamp_ms=t0 + i * 1000)
                   for i in range(5)]
            # one batch whose records have different timestamps
            first = await p.send_batch("adm", 2, [(None, b"y%d" % i, None, t0 + i * 1000)
                                                  for i in range(5)])
        assert [m.offset for m in mds] == list(range(mds[0].offset, mds[0].offset + 5))
        assert mds[0].offset >= hw0
        found = await admin.list_offsets({tp: -1, TopicPartition("adm", 0): -2})
        assert found == {tp: mds[-1].offset + 1, TopicPartition("adm", 0): 0}
        assert await admin.list_offsets({tp: t0 + 2500}) == {tp: mds[3].offset}
        assert await admin.list_offsets({tp: t0}) == {tp: mds[0].offset}
        assert await admin.list_offsets({tp: t0 + 10_000}) == {tp: -1}
        # the record, not its batch's start; and never the leader's epoch marker at offset 0,
        # whose timestamp is the broker's clock (newer than these records)
        tp2 = TopicPartition("adm", 2)
        assert await admin.list_offsets({tp2: t0 + 2500}) == {tp2: first.offset + 3}
        assert await admin.list_offsets({tp2: t0 - 1}) == {tp2: first.offset}

        assert (await admin.delete_topic("adm3")) == {"deleted": "adm3"}
        await admin.delete_topics(["adm2"])
        names = await on_every_node(c, lambda a: a.list_topics(),
                                    lambda ts: not {"adm2", "adm3"} & {t["name"] for t in ts})
        assert "adm" in {t["name"] for t in names}
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.describe_topic("adm3")


async def test_producer_calls_keys_headers_timestamps_acks(shared):
    c = shared
    async with Admin(c.bootstrap) as admin:
        await make_topic(admin, "prod", 4)

    t0 = int(time.time() * 1000) - 3_600_000
    keys = [b"user-%d" % i for i in range(40)]
    async with Producer(c.bootstrap, acks="all", linger_ms=2) as p:
        assert p.producer_id[0] >= 0                       # idempotent by default
        # keyed, with headers and explicit timestamps, pipelined and flushed
        handles = [p.send("prod", b"val-%d" % i, key=k, headers=[("n", b"%d" % i), ("e", None)],
                          timestamp_ms=t0 + i) for i, k in enumerate(keys)]
        again = [p.send("prod", b"again-%d" % i, key=k) for i, k in enumerate(keys)]
        await p.flush()
        assert all(h.done() for h in handles + again)
        mds = [h.result() for h in handles]
        for i, (k, md) in enumerate(zip(keys, mds)):
            assert isinstance(md, RecordMetadata) and md.topic == "prod"
            assert md.partition == partition_for_key(k, 4), k    # Kafka's murmur2 partitioner
            assert md.timestamp == t0 + i and md.offset >= 0
            assert again[i].result().partition == md.partition  # same key, same partition
        assert len({md.partition for md in mds}) > 1

        one = await p.send_and_wait("prod", b"solo", key=b"user-3")
        assert one.partition == partition_for_key(b"user-3", 4)
        bulk = await p.send_batch("prod", 2, [(b"bk%d" % i, b"bulk-%d" % i) for i in range(50)])
        assert bulk.partition == 2 and bulk.offset >= 0
    per_partition: dict[int, list[int]] = {}
    for md in mds + [h.result() for h in again] + [one]:
        per_partition.setdefault(md.partition, []).append(md.offset)
    for offs in per_partition.values():
        assert offs == sorted(offs) and len(set(offs)) == len(offs)   # send order, no reuse

    # acks 0 / 1 / all into one partition
    sent: dict[Any, list[RecordMetadata]] = {}
    for acks in (0, 1, "all"):
        async with Producer(c.bootstrap, acks=acks) as p:
            sent[acks] = [await p.send_and_wait("prod", b"acks-%s-%d" % (str(acks).encode(), i),
                                                partition=3) for i in range(5)]
    assert all(md.offset == -1 for md in sent[0])             # nothing awaited with acks=0
    for acks in (1, "all"):
        offs = [md.offset for md in sent[acks]]
        assert offs == list(range(offs[0], offs[0] + 5))

    # read back everything: bytes, keys, headers, timestamps, offsets, partitions
    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest") as cons:
        cons.assign([TopicPartition("prod", i) for i in range(4)])
        total = len(keys) * 2 + 1 + 50 + 15
        recs = await read_n(cons, total, 20)
        assert await cons.getmany(timeout_ms=300) == {}           # nothing more, no duplicates
    by_value = {r.value: r for r in recs}
    assert len(recs) == len(by_value) == total
    for i, (k, md) in enumerate(zip(keys, mds)):
        r = by_value[b"val-%d" % i]
        assert (r.partition, r.offset, r.key, r.timestamp) == (md.partition, md.offset, k, t0 + i)
        assert r.headers == (("n", b"%d" % i), ("e", None))
        assert by_value[b"again-%d" % i].partition == md.partition
        assert by_value[b"again-%d" % i].key == k
    assert (by_value[b"solo"].partition, by_value[b"solo"].offset) == (one.partition, one.offset)
    for i in range(50):
        r = by_value[b"bulk-%d" % i]
        assert (r.partition, r.offset, r.key) == (2, bulk.offset + i, b"bk%d" % i)
    acks_recs = sorted((r for r in recs if r.value.startswith(b"acks-")), key=lambda r: r.offset)
    assert [r.partition for r in acks_recs] == [3] * 15
    assert [r.value for r in acks_recs] == [b"acks-%s-%d" % (a, i) for a in (b"0", b"1", b"all")
                                            for i in range(5)]
    for acks in (1, "all"):
        for i, md in enumerate(sent[acks]):
            assert by_value[b"acks-%s-%d" % (str(acks).encode(), i)].offset == md.offset


async def test_consumer_calls_positions_seeks_times_and_resets(shared):
    c = shared
    async with Admin(c.bootstrap) as admin:
        await make_topic(admin, "cons", 2)
    tp, tp1 = TopicPartition("cons", 0), TopicPartition("cons", 1)
    t0 = int(time.time() * 1000) - 3_600_000
    async with Producer(c.bootstrap, linger_ms=0) as p:
        handles = [p.send("cons", b"v%03d" % i, key=b"k%d" % i, partition=0,
                          timestamp_ms=t0 + 10 * i) for i in range(100)]
        await p.flush()
        mds = [await h for h in handles]
        await p.send_and_wait("cons", b"p1-only", partition=1)
    offs = [m.offset for m in mds]
    values = [b"v%03d" % i for i in range(100)]

    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest",
                        max_partition_fetch_bytes=2048) as cons:
        cons.assign([tp, tp1])
        assert cons.assignment() == {tp, tp1}
        assert await cons.position(tp) == 0                       # earliest = log start
        recs = await read_n(cons, 100, 20, tp, max_records=7)
        assert [r.value for r in recs] == values                  # offset order, exactly once
        assert [r.offset for r in recs] == offs
        assert [r.timestamp for r in recs] == [t0 + 10 * i for i in range(100)]
        end = offs[-1] + 1
        assert await cons.position(tp) == end
        assert cons.highwater(tp) == end
        assert await cons.end_offsets([tp]) == {tp: end}
        assert await cons.beginning_offsets([tp]) == {tp: 0}

        cons.seek(tp, offs[50])
        assert await cons.position(tp) == offs[50]
        assert [r.value for r in await read_n(cons, 3, 10, tp, max_records=3)] == values[50:53]

        await cons.seek_to_beginning(tp)
        assert await cons.position(tp) == 0
        assert (await read_n(cons, 1, 10, tp, max_records=1))[0].value == values[0]

        await cons.seek_to_end(tp)
        assert await cons.position(tp) == end
        assert await cons.getmany(tp, timeout_ms=300) == {}
        async with Producer(c.bootstrap) as p:
            late = await p.send_and_wait("cons", b"late", partition=0)
        assert late.offset >= end
        got = await read_n(cons, 1, 10, tp)
        assert [(r.offset, r.value) for r in got] == [(late.offset, b"late")]

        found = await cons.offsets_for_times({tp: t0 + 505, tp1: t0})
        assert found[tp].offset == offs[51]
        assert found[tp1] is not None                              # p1-only is newer than t0
        assert (await cons.offsets_for_times({tp: int(time.time() * 1000) + 3_600_000}))[tp] \
            is None

        # async for, from an offset, one record at a time
        cons.seek(tp, offs[10])
        cons.pause(tp1)
        seen = []
        async for r in cons:
            seen.append((r.offset, r.value))
            if len(seen) == 10:
                break
        assert seen == list(zip(offs[10:20], values[10:20]))
        cons.resume(tp1)

        # OFFSET_OUT_OF_RANGE with auto_offset_reset=earliest: back to the first record
        cons.seek(tp, end + 1000)
        r = (await read_n(cons, 1, 10, tp, max_records=1))[0]
        assert (r.offset, r.value) == (offs[0], values[0])

    # topics without a group: every partition assigned; "latest" starts at the end
    async with Consumer("cons", bootstrap_servers=c.bootstrap, auto_offset_reset="latest") as cons:
        assert cons.assignment() == {tp, tp1}
        assert await cons.position(tp) == late.offset + 1
        assert await cons.getmany(timeout_ms=300) == {}
        async with Producer(c.bootstrap) as p:
            newest = await p.send_and_wait("cons", b"newest", partition=1)
        got = await read_n(cons, 1, 10)
        assert [(r.partition, r.offset, r.value) for r in got] == [(1, newest.offset, b"newest")]
        cons.seek(tp, late.offset + 1000)                      # out of range -> latest
        assert await cons.getmany(tp, timeout_ms=300) == {}

        async def reset_to_latest() -> bool:
            return await cons.position(tp) == late.offset + 1
        await eventually(reset_to_latest, 10, "reset to latest")
        async with Producer(c.bootstrap) as p:
            after = await p.send_and_wait("cons", b"after-reset", partition=0)
        got = await read_n(cons, 1, 10, tp)
        assert [(r.offset, r.value) for r in got] == [(after.offset, b"after-reset")]

    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="none") as cons:
        cons.assign([tp])
        with pytest.raises(NoOffsetForPartitionError):
            await cons.position(tp)
        cons.seek(tp, offs[99])
        assert [r.value for r in await read_n(cons, 1, 10, tp, max_records=1)] == [values[99]]
        cons.seek(tp, after.offset + 1000)

        async def raises_out_of_range() -> bool:
            try:
                await cons.getmany(tp, timeout_ms=200)
            except OffsetOutOfRangeError:
                return True
            return False
        await eventually(raises_out_of_range, 10, "OFFSET_OUT_OF_RANGE with reset 'none'")


# -- 2. the consumer follows a leader move ---------------------------------------------------
async def test_consumer_follows_leader_sigkill_exactly_once_in_order(fresh):
    c = fresh
    async with Admin(c.bootstrap) as admin:
        await make_topic(admin, "move", 3, **{"min.insync.replicas": 2})
        part, leader = await partition_led_by_non_controller(admin, "move")
    tp = TopicPartition("move", part)
    before = [b"before-%03d" % i for i in range(200)]
    after = [b"after-%03d" % i for i in range(200)]
    async with Producer(c.bootstrap, acks="all", linger_ms=0) as p:
        firsts = [await p.send_batch("move", part, [(None, v) for v in before[i:i + 10]])
                  for i in range(0, 200, 10)]
        expected_offsets = [f.offset + j for f in firsts for j in range(10)]

        # small fetches: the consumer can only be a batch or two ahead of what it hands out
        async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest",
                            max_partition_fetch_bytes=256, fetch_max_wait_ms=100,
                            retry_backoff_ms=50) as cons:
            cons.assign([tp])
            got = await read_n(cons, 50, 15, max_records=5)
            c.kill(leader)                                    # SIGKILL mid-consumption
            assert len(got) < 150, "the consumer was not mid-consumption at the kill"
            # what is produced now exists only on the new leader
            handles = [p.send("move", v, partition=part) for v in after]
            got += await read_n(cons, 400 - len(got), 40, max_records=5)
            assert await cons.getmany(timeout_ms=300) == {}
            mds = [await h for h in handles]
    assert [r.value for r in got] == before + after           # every record, once, in order
    offsets = [r.offset for r in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert offsets[:200] == expected_offsets
    assert offsets[200:] == [md.offset for md in mds]
    async with Admin(c.bootstrap) as admin:
        now = (await admin.describe_topic("move"))["partitions"][part]["leader"]
    assert now != leader and now in (1, 2, 3)


# -- 3. idempotence end to end: lost produce answers, retried, and a leader killed between -------
async def test_idempotent_retry_after_lost_answer_and_leader_kill_writes_once(fresh):
    c = fresh
    async with Admin(c.bootstrap) as admin:
        await make_topic(admin, "idem", 3, **{"min.insync.replicas": 2})
        part, leader = await partition_led_by_non_controller(admin, "idem")
        other = (part + 1) % 3
        other_leader = (await admin.describe_topic("idem"))["partitions"][other]["leader"]

    async with FaultProxy(c.http_ports) as proxy:
        async with Producer(proxy.bootstrap, acks="all", linger_ms=5, batch_size=750,
                            retry_backoff_ms=50, request_timeout_ms=10_000) as p:
            pid = p.producer_id
            assert pid[0] >= 0

            # (a) the answer is lost, the same leader gets the retry: answered from its
            # producer state with the original offset, not written again
            proxy.drop_produce_response(other_leader)
            md = await asyncio.wait_for(p.send_and_wait("idem", b"once", partition=other), 30)
            sends = [(x, b) for x, b in proxy.produced() if b.partition == other]
            assert len(sends) >= 2, sends
            assert sends[0][0].dropped and not any(x.dropped for x, _ in sends[1:])
            assert {(x.node, b.producer_id, b.base_sequence) for x, b in sends} \
                == {(other_leader, pid[0], 0)}                 # the same batch, retried
            first_answer = sends[0][0].answer["partitions"][0]
            assert "error" not in first_answer                  # the first attempt was written
            last_answer = sends[-1][0].answer["partitions"][0]
            assert md.offset == first_answer["base_offset"] == last_answer["base_offset"]

            # (b) the answer is lost and the leader is SIGKILLed before the retry
            async def kill_leader(x):
                await asyncio.to_thread(c.kill, leader)

            # the answer lost is the one for the partition's first batch (sequence 0); 200
            # records of 15 bytes make 4 batches, within the 5 batches per producer a leader
            # remembers, so the retry is answered with its original offset
            proxy.drop_produce_response(
                leader, before_drop=kill_leader,
                match=lambda x: any(b.partition == part and b.base_sequence == 0
                                    for b in x.batches))
            values = [b"rec-%03d" % i for i in range(200)]
            handles = [p.send("idem", v, partition=part) for v in values]
            mds = await asyncio.wait_for(asyncio.gather(*handles), 60)
            assert not proxy.hook_errors, proxy.hook_errors
        assert not c.alive(leader)

    dropped = [(x, b) for x, b in proxy.produced(leader) if x.dropped]
    assert len(dropped) == 1
    x1, b1 = dropped[0]
    lost = x1.answer["partitions"][0]
    assert "error" not in lost and b1.partition == part       # committed before it was lost
    resent = [(x, b) for x, b in proxy.produced() if x.node != leader and b.partition == part
              and (b.producer_id, b.producer_epoch, b.base_sequence)
              == (b1.producer_id, b1.producer_epoch, b1.base_sequence)]
    assert resent, "the producer never retried the batch whose answer was lost"
    answered = [x.answer["partitions"][0] for x, _ in resent if x.answer]
    assert any(a.get("base_offset") == lost["base_offset"] for a in answered), answered
    assert mds[0].offset == lost["base_offset"]                # the original offset, not a new one

    # read the partitions straight from the cluster: every record exactly once, in send order
    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest") as cons:
        cons.assign([TopicPartition("idem", part), TopicPartition("idem", other)])
        recs = await read_n(cons, 201, 30)
        assert await cons.getmany(timeout_ms=300) == {}
    mine = [r for r in recs if r.partition == part]
    assert [r.value for r in mine] == values
    assert [r.offset for r in mine] == [m.offset for m in mds]
    assert [(r.offset, r.value) for r in recs if r.partition == other] == [(md.offset, b"once")]


async def test_batch_overtaking_sequence_zero_is_retried_not_failed(shared):
    """In-flight produce requests travel on separate connections, so a partition's second batch
    can reach the leader before its first (sequence 0); the leader, not knowing the producer
    yet, answers UNKNOWN_PRODUCER_ID. The producer must send it again after the first, not fail
    its records (it did, until sender.py treated that answer like OUT_OF_ORDER_SEQUENCE)."""
    c = shared
    async with Admin(c.bootstrap) as admin:
        await make_topic(admin, "overtake", 1)
        leader = (await admin.describe_topic("overtake"))["partitions"][0]["leader"]
    values = [b"rec-%03d" % i for i in range(200)]
    async with FaultProxy(c.http_ports) as proxy:
        release = proxy.hold_produce_request(
            leader, match=lambda x: any(b.base_sequence == 0 for b in x.batches))
        # 50 records of 15 bytes fill a batch of 750: sent at once, and held in the proxy
        async with Producer(proxy.bootstrap, batch_size=750, linger_ms=5,
                            retry_backoff_ms=20) as p:
            pid = p.producer_id[0]
            handles = [p.send("overtake", v, partition=0) for v in values[:50]]
            await eventually(lambda: any(x.held for x in proxy.exchanges), 10, "sequence 0 held")
            handles += [p.send("overtake", v, partition=0) for v in values[50:]]
            await eventually(lambda: any(b.base_sequence > 0 and x.status is not None
                                         for x, b in proxy.produced()), 10, "a batch overtaking")
            release.set()
            mds = await asyncio.wait_for(asyncio.gather(*handles), 30)
            assert p.producer_id[0] == pid                     # no producer id reset either
    sent = [(b.producer_id, b.base_sequence,
             x.answer["partitions"][0].get("error") if x.answer else None)
            for x, b in proxy.produced()]
    assert sent[0][:2] == (pid, 0)
    assert next(s for s in sent if s[1] == 50) == (pid, 50, "UNKNOWN_PRODUCER_ID"), sent
    assert {(s[0], s[1]) for s in sent if s[2] is None} == {(pid, q) for q in (0, 50, 100, 150)}
    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest") as cons:
        cons.assign([TopicPartition("overtake", 0)])
        recs = await read_n(cons, 200, 20)
        assert await cons.getmany(timeout_ms=300) == {}
    assert [r.value for r in recs] == values
    assert [r.offset for r in recs] == [m.offset for m in mds]


# -- 4. the CLI in subprocesses ----------------------------------------------------------------
def raftlog_cli(*args: str, stdin: str | None = None, timeout_s: float = 30,
                ) -> subprocess.CompletedProcess:
    exe = os.path.join(os.path.dirname(sys.executable), "raftlog")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "raftlog.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAFTLOG_BOOTSTRAP", "RAFTLOG_DEBUG")}
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout_s, env=env)


def test_cli_round_trip_and_errors(shared):
    c = shared
    b = ["--bootstrap", c.bootstrap]
    r = raftlog_cli(*b, "topic", "create", "clitopic", "-p", "2", "-r", "3")
    assert r.returncode == 0, r.stderr
    assert "created topic clitopic with 2 partition(s)" in r.stdout

    def listed() -> dict | None:      # each node learns of the topic a moment after the create
        r = raftlog_cli(*b, "--json", "topic", "list")
        assert r.returncode == 0, r.stderr
        return next((t for t in json.loads(r.stdout) if t["name"] == "clitopic"), None)
    t = wait_until(listed, 15, what="clitopic in `raftlog topic list`")
    assert (t["partitions"], t["replication_factor"]) == (2, 3)

    lines = [(f"key-{i % 7}", f"value {i}: héllo") for i in range(60)] + [(None, "no key here")]
    stdin = "".join(f"{k}|{v}\n" if k is not None else f"{v}\n" for k, v in lines)
    r = raftlog_cli(*b, "--json", "produce", "clitopic", "--key-separator", "|", stdin=stdin)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["records"] == 61 and summary["topic"] == "clitopic"

    r = raftlog_cli(*b, "consume", "clitopic", "--from-beginning", "--max-messages", "61",
                    "--format", "json")
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == 61
    assert sorted((o["key"], o["value"]) for o in out if o["key"] is not None) == \
        sorted((k, v) for k, v in lines if k is not None)
    assert [o["value"] for o in out if o["key"] is None] == ["no key here"]
    for o in out:
        assert o["topic"] == "clitopic"
        if o["key"] is not None:
            assert o["partition"] == partition_for_key(o["key"].encode(), 2), o
    for part in (0, 1):
        mine = [o for o in out if o["partition"] == part]
        assert [o["offset"] for o in mine] == sorted(o["offset"] for o in mine)
        # each partition holds its records in stdin order
        order = [v for k, v in lines if k is not None and partition_for_key(k.encode(), 2) == part]
        assert [o["value"] for o in mine if o["key"] is not None] == order
        rng = summary["partitions"].get(str(part))
        if mine:
            assert rng["first_offset"] == mine[0]["offset"]
            assert rng["last_offset"] == mine[-1]["offset"]

    r = raftlog_cli(*b, "consume", "clitopic", "--from-beginning", "--max-messages", "2",
                    "--partition", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2

    r = raftlog_cli(*b, "cluster", "status")
    assert r.returncode == 0, r.stderr
    assert "controller" in r.stdout and r.stdout.count("active") == 3
    r = raftlog_cli(*b, "--json", "cluster", "status")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert sorted(x["id"] for x in st["cluster"]["brokers"]) == [1, 2, 3]
    assert st["cluster"]["controller"] in (1, 2, 3)
    assert st["partitions_without_leader"] == []

    # errors: one line on stderr, non-zero exit, never a traceback
    r = raftlog_cli(*b, "topic", "describe", "no-such-topic")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no-such-topic" in r.stderr and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr
    assert r.stdout == ""

    r = raftlog_cli(*b, "--timeout-ms", "1500", "produce", "no-such-topic", stdin="x\n")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no-such-topic" in r.stderr and "UNKNOWN_TOPIC_OR_PARTITION" in r.stderr

    (dead,) = free_ports(1)
    started = time.monotonic()
    r = raftlog_cli("--bootstrap", f"127.0.0.1:{dead}", "--timeout-ms", "1500", "topic", "list")
    took = time.monotonic() - started
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"127.0.0.1:{dead}" in r.stderr and "bootstrap" in r.stderr
    assert took < 15, f"a dead bootstrap address took {took:.1f}s to fail"
