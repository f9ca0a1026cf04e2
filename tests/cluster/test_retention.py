"""Retention and compaction on a real 3-node cluster: size and time retention (the quiet-topic
segment.ms roll included) move the log start on every replica, consumers below it get
OFFSET_OUT_OF_RANGE, and `topic alter` takes effect without a restart."""
import os

import pytest

from raftlog.testing.cluster import DataClient, ProcessCluster, wait_until

pytestmark = pytest.mark.cluster

TOML = ("[replication]\nreplica_lag_time_max_ms = 1500\nreplica_fetch_wait_max_ms = 300\n"
        "[log]\nretention_check_interval_ms = 150\n")


@pytest.fixture(scope="module")
def rc(tmp_path_factory):
    c = ProcessCluster(str(tmp_path_factory.mktemp("ret") / "c"), 3, extra_toml=TOML)
    try:
        c.start()
        c.wait_ready(40)
        yield c, DataClient(c)
    finally:
        c.stop()


def make_topic(c, name, **config):
    cfg = {"min.insync.replicas": 2}
    cfg.update({k.replace("_", "."): v for k, v in config.items()})
    c.call(1, "POST", "/v1/topics", {"name": name, "partitions": 1, "replication_factor": 3,
                                      "config": cfg})


def first_base(c, node, topic, p=0):
    """Base offset of the oldest segment file a replica keeps on disk."""
    d = os.path.join(c.workdir, f"node-{node}", "partitions", f"{topic}-{p}")
    names = sorted(n for n in os.listdir(d) if n.endswith(".log"))
    return int(names[0][:20]) if names else -1


def produce_n(dc, topic, n, size=1000, key=None):
    last = None
    for i in range(n):
        r = dc.produce(topic, 0, [(key or b"k%d" % i, b"x" * size)])
        assert "error" not in r, r
        last = r
    return last


def test_size_retention_moves_log_start_on_every_replica(rc):
    c, dc = rc
    make_topic(c, "rsize", segment_bytes=16384, retention_bytes=40000)
    produce_n(dc, "rsize", 120)           # ~120 KB in ~8 segments
    wait_until(lambda: all(first_base(c, n, "rsize") > 0 for n in (1, 2, 3)), 15,
               what="old segments deleted on all replicas")
    r = dc.fetch("rsize", 0, 0)
    assert r.get("error") == "OFFSET_OUT_OF_RANGE", r
    start = r["hint"]["log_start_offset"]
    assert start > 0
    r2 = dc.fetch("rsize", 0, start)
    assert "error" not in r2 and r2["records"], r2
    # the leader keeps at least retention.bytes
    d = os.path.join(c.workdir, f"node-{dc.leader('rsize', 0)}", "partitions", "rsize-0")
    total = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if n.endswith(".log"))
    assert total >= 40000


def test_quiet_topic_time_retention_and_alter_without_restart(rc):
    c, dc = rc
    make_topic(c, "rtime")                  # defaults: 7 d retention, 7 d segment.ms
    produce_n(dc, "rtime", 5, size=100)
    hw_before = dc.partition("rtime", 0)
    assert hw_before
    # Nothing expires under the defaults; alter retention.ms and segment.ms at runtime: the
    # quiet active segment rolls and then goes, on every replica, without a restart.
    c.call(1, "PATCH", "/v1/topics/rtime", {"config": {"retention.ms": 300,
                                                        "segment.ms": 300}})
    wait_until(lambda: all(first_base(c, n, "rtime") >= 5 for n in (1, 2, 3)), 15,
               what="expired quiet data deleted on all replicas")
    r = dc.fetch("rtime", 0, 0)
    assert r.get("error") == "OFFSET_OUT_OF_RANGE", r
    # new data is still accepted and readable after the log start moved
    r = dc.produce("rtime", 0, [(b"k", b"after")])
    assert "error" not in r, r
    # configs show in describe
    desc = c.get(1, "/v1/topics/rtime")
    rows = {row["name"]: row for row in desc["config"]}
    assert rows["retention.ms"]["value"] == 300 and rows["retention.ms"]["source"] == "topic"
    assert rows["cleanup.policy"]["value"] == "delete"
