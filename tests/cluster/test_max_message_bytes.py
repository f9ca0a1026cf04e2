"""max.message.bytes raised at runtime applies end to end on a real 3-node cluster, without a
restart: the leader accepts a 10 MB batch (the open logs had an 8 MiB limit fixed at open),
every follower replicates it although it is larger than a follower fetch's max_bytes (the
first batch always comes whole, as Kafka), and a consumer reads it back."""
import os

import pytest

from raftlog.client import Consumer, Producer, TopicPartition
from raftlog.codec import batch
from raftlog.testing.cluster import LAG_TOML, DataClient, eventually, running_cluster, wait_until

pytestmark = pytest.mark.cluster

BIG = 10_000_000
LIMIT = 20_000_000


@pytest.fixture
def cluster(tmp_path):
    with running_cluster(str(tmp_path / "c"), 3, extra_toml=LAG_TOML) as c:
        yield c


def replica_values(c, node, topic, p=0):
    """Values of the records one replica holds on disk (None while caught mid-append)."""
    d = os.path.join(c.workdir, f"node-{node}", "partitions", f"{topic}-{p}")
    data = b""
    for n in sorted(x for x in os.listdir(d) if x.endswith(".log")):
        with open(os.path.join(d, n), "rb") as fh:
            data += fh.read()
    try:
        return [r.value for r in batch.decode(data)]
    except Exception:
        return None


def produce_big(dc, value):
    """Produce until the leader has applied the altered limit (it may lag the alter)."""
    def attempt():
        r = dc.produce("mm", 0, [(b"k", value)], acks=-1, timeout_ms=20_000)
        return r if r.get("error") != "MESSAGE_TOO_LARGE" else None
    return wait_until(attempt, 20, 0.2, "the raised max.message.bytes applied by the leader")


async def test_raised_max_message_bytes_applies_end_to_end_without_restart(cluster):
    c = cluster
    dc = DataClient(c)
    c.call(1, "POST", "/v1/topics", {"name": "mm", "partitions": 1, "replication_factor": 3,
                                      "config": {"min.insync.replicas": 2}})
    value = os.urandom(BIG)
    r = dc.produce("mm", 0, [(b"k", value)])
    assert r.get("error") == "MESSAGE_TOO_LARGE" and "max.message.bytes" in r["message"], r
    c.call(2, "PATCH", "/v1/topics/mm", {"config": {"max.message.bytes": LIMIT}})
    r = produce_big(dc, value)
    assert "error" not in r, r
    first = r["base_offset"]
    # acks=all answered: the ISR has it; every replica ends up holding the same bytes
    for n in (1, 2, 3):
        wait_until(lambda: value in (replica_values(c, n, "mm") or []), 20,
                   what=f"node {n} replicated the {BIG}-byte batch")
    # a consumer reads it, whatever its max_partition_fetch_bytes (1 MiB here)
    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest",
                        max_partition_fetch_bytes=1 << 20) as cons:
        cons.assign([TopicPartition("mm", 0)])

        async def got():
            for recs in (await cons.getmany(timeout_ms=500)).values():
                for rec in recs:
                    if rec.offset == first:
                        return rec
        rec = await eventually(got, 20, "the big record consumed")
        assert rec.value == value and rec.key == b"k"
    # and the client producer (the audit's repro) is accepted too
    async with Producer(c.bootstrap, acks="all", max_request_size=30 << 20) as p:
        md = await p.send_and_wait("mm", value[::-1], key=b"k2", partition=0)
        assert md.offset > first
