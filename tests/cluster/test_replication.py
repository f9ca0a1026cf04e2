"""Replication on real 3-node clusters: byte-identical replicas, no acknowledged loss on leader
SIGKILL, ISR shrink/expand with min.insync.replicas, divergence truncation, long-poll timing,
and nothing above the high watermark reaches a consumer."""
import threading
import time

import pytest

from raftlog.codec import batch
from raftlog.testing.cluster import DataClient, LAG_TOML, running_cluster, wait_until

pytestmark = pytest.mark.cluster



@pytest.fixture
def rc(tmp_path):
    with running_cluster(str(tmp_path / "c"), 3, extra_toml=LAG_TOML) as c:
        yield c, DataClient(c)


def make_topic(c, name, partitions=1, mir=2):
    c.call(1, "POST", "/v1/topics", {"name": name, "partitions": partitions,
                                      "replication_factor": 3,
                                      "config": {"min.insync.replicas": mir}})


def replicas_identical(dc, topic, p, nodes=(1, 2, 3)):
    data = [dc.segment_bytes(n, topic, p) for n in nodes]
    return data[0] if all(d == data[0] for d in data) and data[0] else None


def test_acks_all_batches_are_byte_identical_on_every_replica(rc):
    c, dc = rc
    make_topic(c, "same")
    acked = []
    for i in range(20):
        r = dc.produce("same", 0, [(b"k%d" % i, b"v%d-%d" % (i, j)) for j in range(10)])
        assert "error" not in r, r
        acked.append(r["base_offset"])
    assert acked == sorted(acked) and len(set(acked)) == 20
    data = wait_until(lambda: replicas_identical(dc, "same", 0), 10, what="identical replicas")
    # what the replicas hold is exactly what a consumer reads back
    values = [r.value for r in batch.decode(data)]
    assert values == [b"v%d-%d" % (i, j) for i in range(20) for j in range(10)]
    assert [r.value for r in dc.read_all("same", 0)] == values


def test_leader_sigkill_right_after_ack_loses_nothing(rc):
    c, dc = rc
    make_topic(c, "kill")
    acked = {}
    for i in range(30):
        r = dc.produce("kill", 0, [(None, b"rec-%d" % i)])
        assert "error" not in r, r
        acked[r["base_offset"]] = b"rec-%d" % i
    old = dc.leader("kill", 0)
    c.kill(old)                       # immediately after the last acks=all answer
    survivors = [n for n in (1, 2, 3) if n != old]
    wait_until(lambda: dc.partition("kill", 0, survivors[0])["leader"] in survivors, 15,
               what="a new leader")
    got = wait_until(lambda: {r.offset: r.value for r in dc.read_all("kill", 0)}
                     if len(dc.read_all("kill", 0)) >= len(acked) else None, 15,
                     what="new leader serving every acknowledged record")
    for off, v in acked.items():
        assert got[off] == v, f"offset {off}: acknowledged {v!r}, new leader has {got.get(off)!r}"


def test_follower_down_min_isr_two_keeps_working_three_refuses(rc):
    c, dc = rc
    make_topic(c, "mir2", mir=2)
    make_topic(c, "mir3", mir=3)
    leader2 = dc.leader("mir2", 0)
    # commit something on mir3 first, so its HW already covers everything in its log
    assert "error" not in dc.produce("mir3", 0, [(None, b"before")])
    ctl = c.controller()
    follower = next(n for n in (1, 2, 3) if n not in (leader2, ctl))
    c.kill(follower)
    # mir=2: acks=all keeps working once the dead follower left the ISR
    r = dc.produce("mir2", 0, [(None, b"after-shrink")], timeout_ms=15_000)
    assert "error" not in r, r
    wait_until(lambda: follower not in dc.partition("mir3", 0)["isr"], 15, what="ISR shrink")
    # mir=3: refused before the append, and nothing becomes visible
    r = dc.produce("mir3", 0, [(None, b"must-not-be-acked")])
    assert r.get("error") == "NOT_ENOUGH_REPLICAS", r
    # what a consumer can read is exactly what was acknowledged. If the killed node led mir3,
    # the new leader (elected at once now: the dead port refuses) serves reads only once its HW
    # has caught up, so wait for the acknowledged record rather than read the first answer.
    read = wait_until(lambda: [x.value for x in dc.read_all("mir3", 0)] or None, 15,
                      what="mir3 readable after the failover")
    assert read == [b"before"]
    # the follower returns, catches up and rejoins the ISR
    c.start(follower)
    wait_until(lambda: follower in dc.partition("mir2", 0)["isr"], 30, what="ISR expand")
    wait_until(lambda: follower in dc.partition("mir3", 0)["isr"], 30, what="ISR expand mir3")
    r = dc.produce("mir3", 0, [(None, b"three-again")])
    assert "error" not in r, r
    wait_until(lambda: replicas_identical(dc, "mir2", 0), 15, what="mir2 replicas identical")


def test_unreplicated_suffix_is_truncated_and_never_visible(rc):
    c, dc = rc
    make_topic(c, "div", mir=2)
    for i in range(5):
        assert "error" not in dc.produce("div", 0, [(None, b"committed-%d" % i)])
    wait_until(lambda: replicas_identical(dc, "div", 0), 10, what="replicas in sync")
    old = dc.leader("div", 0)
    followers = [n for n in (1, 2, 3) if n != old]
    for f in followers:
        c.pause(f)
    # The followers' outstanding long-polls expire (replica_fetch_wait_max_ms = 300) and are
    # answered empty; paused, they send no new fetch, so what follows stays on the leader only.
    time.sleep(1.0)
    r = dc.produce("div", 0, [(None, b"acks1-lost-%d" % i) for i in range(3)], acks=1, node=old)
    assert "error" not in r, r
    # consumers never see data above the high watermark
    seen = [x.value for x in dc.read_all("div", 0, node=old)]
    assert not any(v.startswith(b"acks1") for v in seen)
    c.kill(old)
    for f in followers:
        c.resume(f)
    wait_until(lambda: dc.partition("div", 0, followers[0])["leader"] in followers, 20,
               what="new leader among the followers")
    r = dc.produce("div", 0, [(None, b"new-epoch-%d" % i) for i in range(3)], timeout_ms=15_000)
    assert "error" not in r, r
    c.start(old)
    c.wait_ready(30, nodes=[1, 2, 3])
    data = wait_until(lambda: replicas_identical(dc, "div", 0), 30,
                      what="old leader truncated and caught up")
    values = [x.value for x in batch.decode(data)]
    assert values == [b"committed-%d" % i for i in range(5)] + [b"new-epoch-%d" % i for i in range(3)]


def test_fetch_long_poll_wakes_on_data_and_times_out_without(rc):
    c, dc = rc
    make_topic(c, "poll", mir=1)
    assert "error" not in dc.produce("poll", 0, [(None, b"first")])
    hw = dc.fetch("poll", 0, 0)["high_watermark"]
    leader = dc.leader("poll", 0)
    # no data: answers at max_wait_ms
    t0 = time.monotonic()
    r = dc.fetch("poll", 0, hw, node=leader, max_wait_ms=800)
    waited = time.monotonic() - t0
    assert r["records"] == b"" and 0.75 <= waited < 2.0, waited
    # data arrives while waiting: answers soon after the write commits, not at max_wait_ms
    sent = {}

    def later():
        time.sleep(0.3)
        sent["t"] = time.monotonic()
        dc.produce("poll", 0, [(None, b"wake")])
    th = threading.Thread(target=later)
    th.start()
    t0 = time.monotonic()
    r = dc.fetch("poll", 0, hw, node=leader, max_wait_ms=5000)
    done = time.monotonic()
    th.join()
    assert [x.value for x in batch.decode(r["records"])] == [b"wake"]
    assert done - t0 < 2.0
    assert done - sent["t"] < 0.5, done - sent["t"]


def test_bad_batch_fails_its_partition_only_and_list_offsets_and_delete(rc):
    import os

    from raftlog.testing.cluster import post_msgpack
    c, dc = rc
    c.call(1, "POST", "/v1/topics", {"name": "mixed", "partitions": 2, "replication_factor": 1,
                                      "config": {"max.message.bytes": 4096}})
    wait_until(lambda: dc.leader("mixed", 0) >= 0 and dc.leader("mixed", 1) >= 0, 10,
               what="leaders")
    # put both partitions on one request to one leader: use the leader of partition 0 and
    # send partition 0 a good batch and a corrupt one in the same request when co-located
    t0 = int(time.time() * 1000) + 60_000                 # after the leader's epoch marker
    good = batch.encode([(None, b"good", None, t0)])
    bad = bytearray(batch.encode([(None, b"evil", None, t0)]))
    bad[-1] ^= 0xFF                                       # breaks the CRC
    big = batch.encode([(None, b"x" * 5000, None, 3_000)])
    node = dc.leader("mixed", 0)
    wait_until(lambda: "error" not in dc.fetch("mixed", 0, 0, node=node), 10,
               what="partition opened on its leader")
    out = post_msgpack(c.url(node, "/v1/produce"), {"acks": 1, "timeout_ms": 5000, "partitions": [
        {"topic": "mixed", "partition": 0, "batch": good},
        {"topic": "mixed", "partition": 0, "batch": bytes(bad)},
        {"topic": "mixed", "partition": 0, "batch": big},
        {"topic": "nope", "partition": 0, "batch": good},
    ]})["partitions"]
    assert "error" not in out[0] and out[0]["base_offset"] >= 0
    assert out[1]["error"] == "CORRUPT_MESSAGE" and "CRC" in out[1]["message"]
    assert out[2]["error"] == "MESSAGE_TOO_LARGE"
    assert out[3]["error"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert [r.value for r in dc.read_all("mixed", 0)] == [b"good"]
    # list offsets: earliest, latest, by timestamp
    q = lambda ts: post_msgpack(c.url(node, "/v1/list-offsets"), {"partitions": [
        {"topic": "mixed", "partition": 0, "timestamp": ts}]})["partitions"][0]["offset"]
    assert dc.produce("mixed", 0, [(None, b"later")], acks=1, node=node)["base_offset"] > 0
    latest = q(-1)
    assert q(-2) == 0 and latest == dc.fetch("mixed", 0, 0)["high_watermark"]
    good_off = out[0]["base_offset"]
    assert q(t0 - 30_000) == good_off and q(t0) == good_off
    assert q(t0 + 10**9) == -1
    # delete: the partition directories go away on every broker
    d = os.path.join(c.workdir, f"node-{node}", "partitions", "mixed-0")
    assert os.path.isdir(d)
    c.call(2, "DELETE", "/v1/topics/mixed")
    wait_until(lambda: not os.path.exists(d), 10, what="deleted topic's data removed")


def test_idempotent_retries_are_written_once_even_across_a_leader_kill(rc):
    from raftlog.testing.cluster import post_msgpack
    c, dc = rc
    make_topic(c, "idem", mir=2)
    ids = post_msgpack(c.url(1, "/v1/init-producer-id"), {})
    pid, epoch = ids["producer_id"], ids["producer_epoch"]
    assert pid >= 0

    def send(seq, values, node=None):
        b = batch.encode([(None, v, None, int(time.time() * 1000)) for v in values],
                         producer_id=pid, producer_epoch=epoch, base_sequence=seq)
        def once():
            r = post_msgpack(c.url(node or dc.leader("idem", 0), "/v1/produce"), {
                "acks": -1, "timeout_ms": 15_000,
                "partitions": [{"topic": "idem", "partition": 0, "batch": b}]})["partitions"][0]
            return None if r.get("error") == "LEADER_NOT_AVAILABLE" else r
        return wait_until(once, 10, what="partition open on its leader")

    first = send(0, [b"a", b"b"])
    assert "error" not in first
    again = send(0, [b"a", b"b"])                   # the answer was "lost": the client retries
    assert again.get("error") is None and again["base_offset"] == first["base_offset"]
    second = send(2, [b"c"])
    assert second["base_offset"] == first["base_offset"] + 2
    gap = send(9, [b"x"])
    assert gap["error"] == "OUT_OF_ORDER_SEQUENCE_NUMBER"
    old = dc.leader("idem", 0)
    c.kill(old)
    survivors = [n for n in (1, 2, 3) if n != old]
    wait_until(lambda: dc.partition("idem", 0, survivors[0])["leader"] in survivors, 15,
               what="new leader")
    # the retry reaches the new leader, which rebuilt producer state from its log
    retry = wait_until(lambda: (lambda r: r if "error" not in r else None)(send(2, [b"c"])),
                       15, what="retry accepted by the new leader")
    assert retry["base_offset"] == second["base_offset"]
    third = send(3, [b"d"])
    assert "error" not in third
    values = [r.value for r in dc.read_all("idem", 0)]
    assert values == [b"a", b"b", b"c", b"d"]


def test_topic_recreated_under_the_same_name_starts_empty(rc):
    c, dc = rc
    make_topic(c, "again", mir=2)
    assert "error" not in dc.produce("again", 0, [(None, b"old-life")])
    c.call(2, "DELETE", "/v1/topics/again")
    wait_until(lambda: "again" not in [t["name"] for t in c.get(1, "/v1/topics")["topics"]], 10,
               what="deleted")
    make_topic(c, "again", mir=2)
    r = wait_until(lambda: (lambda x: x if "error" not in x else None)(
        dc.produce("again", 0, [(None, b"new-life")])), 15, what="produce to the new topic")
    assert [x.value for x in dc.read_all("again", 0)] == [b"new-life"]
    assert r["base_offset"] <= 1


def test_poison_batches_are_refused_and_consumers_keep_reading(rc):
    """Audit: CRC-valid batches whose records are wrong were acknowledged, replicated, and then
    failed Consumer.getmany() on their partition forever ("says 1000 records, holds 1"); a
    record_count of 2**31-1 moved the log end offset by 2**31."""
    import asyncio

    from raftlog.client import Consumer, TopicPartition
    from raftlog.testing.cluster import post_msgpack
    c, dc = rc
    make_topic(c, "poison")
    assert "error" not in dc.produce("poison", 0, [(None, b"before")])
    now = int(time.time() * 1000)
    one = batch.pack([(0, None, b"x", None)])
    poison = [batch.encode_payload(one, 1000, now, now),
              batch.encode_payload(b"\xc1\xc1\xc1", 1, now, now),
              batch.encode_payload(one, 1, now, now, attributes=5),
              batch.encode_payload(one, 1, now, now, attributes=batch.CODEC_GZIP),
              batch.encode_payload(one, 2**31 - 1, now, now)]
    leader = dc.leader("poison", 0)
    hw = dc.fetch("poison", 0, 0)["high_watermark"]
    out = post_msgpack(c.url(leader, "/v1/produce"), {"acks": -1, "timeout_ms": 5000,
                                                      "partitions": [
        {"topic": "poison", "partition": 0, "batch": b} for b in poison]})["partitions"]
    assert [e.get("error") for e in out] == ["CORRUPT_MESSAGE"] * len(poison), out
    after = dc.produce("poison", 0, [(None, b"after")])
    assert after.get("base_offset") == hw, after           # no offset taken by a poison batch
    wait_until(lambda: replicas_identical(dc, "poison", 0), 10, what="identical replicas")

    async def consume() -> list[bytes]:
        tp = TopicPartition("poison", 0)
        async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest") as cons:
            cons.assign([tp])
            got: list[bytes] = []
            deadline = time.monotonic() + 10
            while len(got) < 2 and time.monotonic() < deadline:
                for recs in (await cons.getmany(timeout_ms=500)).values():
                    got += [r.value for r in recs]
            return got
    assert asyncio.run(consume()) == [b"before", b"after"]
