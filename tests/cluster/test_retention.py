"""Retention and compaction on a real 3-node cluster: size and time retention (the quiet-topic
segment.ms roll included) move the log start on every replica, consumers below it get
OFFSET_OUT_OF_RANGE, `topic alter` takes effect without a restart, and an expired tombstone
leaves a quiet compacted log."""
import os

import pytest

from raftlog.testing.cluster import DataClient, running_cluster, wait_until

pytestmark = pytest.mark.cluster

TOML = ("[replication]\nreplica_lag_time_max_ms = 1500\nreplica_fetch_wait_max_ms = 300\n"
        "[log]\nretention_check_interval_ms = 150\n")


@pytest.fixture(scope="module")
def rc(tmp_path_factory):
    with running_cluster(str(tmp_path_factory.mktemp("ret") / "c"), 3, extra_toml=TOML) as c:
        yield c, DataClient(c)


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


def replica_records(c, node, topic, p=0):
    """{offset: (key, value)} of everything a replica holds on disk (control batches aside)."""
    from raftlog.codec import batch
    d = os.path.join(c.workdir, f"node-{node}", "partitions", f"{topic}-{p}")
    out = {}
    for n in sorted(x for x in os.listdir(d) if x.endswith(".log")):
        with open(os.path.join(d, n), "rb") as fh:
            data = fh.read()
        try:
            out.update({r.offset: (r.key, r.value) for r in batch.decode(data)})
        except Exception:
            return None   # caught mid-swap or mid-append: look again
    return out


def _compacted_everywhere(c, topic, total):
    got = [replica_records(c, n, topic) for n in (1, 2, 3)]
    return got if all(g is not None and len(g) < total for g in got) else None


def test_compaction_on_every_replica_replicas_agree_and_keys_required(rc):
    c, dc = rc
    make_topic(c, "comp", cleanup_policy="compact", segment_bytes=16384,
               min_cleanable_dirty_ratio=0.01)
    r = dc.produce("comp", 0, [(None, b"keyless")])
    assert r.get("error") == "INVALID_RECORD", r
    latest = {}
    for i in range(240):
        k = b"key-%d" % (i % 12)
        v = b"%d-" % i + b"v" * 500
        r = dc.produce("comp", 0, [(k, v)])
        assert "error" not in r, r
        latest[k] = (r["base_offset"], v)
    got = wait_until(lambda: _compacted_everywhere(c, "comp", 240), 20,
                     what="every replica compacted")
    # replicas agree: the same record at every offset they share, and each holds the latest
    # value of every key at its original offset
    for g in got:
        for k, (off, v) in latest.items():
            assert g.get(off) == (k, v)
    shared = set(got[0]) & set(got[1]) & set(got[2])
    assert shared and all(got[0][o] == got[1][o] == got[2][o] for o in shared)
    # a consumer reads, in offset order, at most the survivors, ending with each key's latest
    recs = dc.read_all("comp", 0)
    offs = [x.offset for x in recs]
    assert offs == sorted(offs) and len(offs) < 240
    seen = {}
    for x in recs:
        seen[x.key] = (x.offset, x.value)
    assert seen == latest
    # idempotent producer / new data still fine after cleaning
    r = dc.produce("comp", 0, [(b"key-0", b"after")])
    assert "error" not in r, r


def test_cleanup_policy_flip_to_compact_without_restart(rc):
    c, dc = rc
    make_topic(c, "flip", segment_bytes=16384)
    for i in range(120):
        assert "error" not in dc.produce("flip", 0, [(b"k%d" % (i % 3), b"x" * 500)])
    assert len(replica_records(c, dc.leader("flip", 0), "flip")) >= 120
    c.call(1, "PATCH", "/v1/topics/flip", {"config": {"cleanup.policy": "compact",
                                                       "min.cleanable.dirty.ratio": 0.01}})
    wait_until(lambda: _compacted_everywhere(c, "flip", 120), 20, what="compacted after flip")


def test_expired_tombstone_leaves_a_quiet_compacted_log(rc):
    """The first pass keeps the fresh tombstone; with no more writes nothing is dirty again, yet
    after delete.retention.ms the cleaner passes again and the tombstone goes on every replica.
    One batch: all of it lands in one segment (rolled by segment.ms) and so is cleaned at once,
    and it dwarfs the leader's epoch marker, so the dirty ratio passes even if the marker's
    segment was cleaned first."""
    c, dc = rc
    make_topic(c, "tomb", cleanup_policy="compact", segment_ms=300,
               min_cleanable_dirty_ratio=0.5, delete_retention_ms=4000)
    v = [b"v%d-" % i + b"x" * 200 for i in range(6)]
    r = dc.produce("tomb", 0, [(b"k%d" % (i % 2), v[i]) for i in range(6)] + [(b"k0", None)])
    assert "error" not in r, r

    def state(n):
        recs = replica_records(c, n, "tomb")
        return None if recs is None else sorted(recs.values(), key=lambda kv: kv[0])

    first = [(b"k0", None), (b"k1", v[5])]
    wait_until(lambda: all(state(n) == first for n in (1, 2, 3)), 15,
               what="first pass: superseded values gone, the tombstone kept")
    wait_until(lambda: all(state(n) == [(b"k1", v[5])] for n in (1, 2, 3)), 20,
               what="the expired tombstone removed without new writes")
