"""The metadata plane on real processes: admin API on every node, controller and broker failover,
preferred leadership, full restart. Each test starts its own 3-node cluster through node.py."""
import time

import pytest

from raftlog.testing.cluster import HttpError, wait_until

pytestmark = pytest.mark.cluster


def topic(c, node, name):
    return c.get(node, f"/v1/topics/{name}")


def test_topic_created_on_one_node_is_visible_on_all(cluster3):
    c = cluster3
    created = c.call(2, "POST", "/v1/topics", {"name": "orders", "partitions": 6,
                                              "replication_factor": 3})
    assert created["name"] == "orders" and len(created["partitions"]) == 6
    for node in (1, 2, 3):
        t = wait_until(lambda: topic(c, node, "orders"), 10, what=f"topic on node {node}")
        assert [p["partition"] for p in t["partitions"]] == list(range(6))
        assert all(sorted(p["replicas"]) == [1, 2, 3] for p in t["partitions"])
        assert all(p["leader"] == p["replicas"][0] for p in t["partitions"])
    # leaders are spread: each broker is preferred leader of two partitions
    leaders = [p["leader"] for p in created["partitions"]]
    assert sorted(leaders.count(b) for b in (1, 2, 3)) == [2, 2, 2]
    listed = c.get(3, "/v1/topics")["topics"]
    assert [t["name"] for t in listed] == ["orders"]


def test_admin_errors_have_codes_and_statuses(cluster3):
    c = cluster3
    c.call(1, "POST", "/v1/topics", {"name": "t1", "partitions": 1})
    cases = [
        ({"name": "t1"}, 409, "TOPIC_ALREADY_EXISTS"),
        ({"name": "bad name!"}, 400, "INVALID_TOPIC_EXCEPTION"),
        ({"name": "t2", "partitions": 0}, 400, "INVALID_PARTITIONS"),
        ({"name": "t2", "replication_factor": 4}, 400, "INVALID_REPLICATION_FACTOR"),
        ({"name": "t2", "config": {"retention.ms": "soon"}}, 400, "INVALID_CONFIG"),
        ({"name": "t2", "config": {"no.such": 1}}, 400, "INVALID_CONFIG"),
    ]
    for node, (body, status, code) in zip((1, 2, 3, 1, 2, 3), cases):
        with pytest.raises(HttpError) as exc:
            c.call(node, "POST", "/v1/topics", body)
        assert (exc.value.status, exc.value.body["error"]) == (status, code), body
        assert exc.value.body["message"]
    with pytest.raises(HttpError) as exc:
        c.get(2, "/v1/topics/nope")
    assert (exc.value.status, exc.value.body["error"]) == (404, "UNKNOWN_TOPIC_OR_PARTITION")
    # malformed JSON is a 400 with a message, never a 500
    import urllib.request
    req = urllib.request.Request(c.url(1, "/v1/topics"), data=b"{nope", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc2:
        urllib.request.urlopen(req, timeout=5)
    assert exc2.value.code == 400


def test_alter_and_delete_topic(cluster3):
    c = cluster3
    c.call(1, "POST", "/v1/topics", {"name": "cfg", "partitions": 1,
                                      "config": {"retention.ms": 1000}})
    t = c.call(3, "PATCH", "/v1/topics/cfg", {"config": {"retention.ms": "5000",
                                                         "cleanup.policy": "compact"}})
    conf = {r["name"]: r for r in t["config"]}
    assert conf["retention.ms"] == {"name": "retention.ms", "value": 5000, "source": "topic"}
    assert conf["cleanup.policy"]["value"] == "compact"
    assert conf["segment.bytes"]["source"] == "default"
    t = c.call(2, "PATCH", "/v1/topics/cfg", {"config": {"retention.ms": None}})
    assert {r["name"]: r for r in t["config"]}["retention.ms"]["source"] == "default"
    c.call(2, "DELETE", "/v1/topics/cfg")
    for node in (1, 2, 3):
        wait_until(lambda: "cfg" not in [x["name"] for x in c.get(node, "/v1/topics")["topics"]],
                   10, what="topic deleted everywhere")


def test_controller_sigkill_elects_new_controller_and_admin_keeps_working(cluster3):
    c = cluster3
    old = c.controller()
    assert old in (1, 2, 3)
    c.kill(old)
    survivors = [n for n in (1, 2, 3) if n != old]
    new = wait_until(lambda: (lambda x: x if x not in (None, old) else None)(
        c.cluster(survivors[0])["controller"]), 15, what="a new controller")
    assert new in survivors
    # admin writes work through either survivor (retry while the new controller settles)
    wait_until(lambda: c.call(survivors[1], "POST", "/v1/topics",
                              {"name": "after", "partitions": 2, "replication_factor": 2}),
               15, what="topic creation after controller failover")
    t = topic(c, survivors[0], "after")
    assert all(set(p["replicas"]) <= set(survivors) for p in t["partitions"])


def test_broker_sigkill_moves_leaders_then_preferred_leadership_returns(cluster3):
    c = cluster3
    c.call(1, "POST", "/v1/topics", {"name": "ha", "partitions": 6, "replication_factor": 3})
    before = {p["partition"]: p for p in topic(c, 1, "ha")["partitions"]}
    ctl = c.controller()
    victim = next(b for b in (1, 2, 3) if b != ctl)
    led = [i for i, p in before.items() if p["leader"] == victim]
    assert led
    t0 = time.monotonic()
    c.kill(victim)

    def moved():
        ps = {p["partition"]: p for p in topic(c, ctl, "ha")["partitions"]}
        ok = all(ps[i]["leader"] not in (victim, -1) for i in led) and \
            all(victim not in p["isr"] for p in ps.values())
        return ps if ok else None
    after = wait_until(moved, 3.0 + 5.0, what="leaders moved off the killed broker")
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0 + 5.0          # session timeout (3 s in tests) plus a margin
    for i in led:
        assert after[i]["leader"] in before[i]["isr"]
        assert after[i]["leader_epoch"] > before[i]["leader_epoch"]
    states = {b["id"]: b["state"] for b in c.cluster(ctl)["brokers"]}
    assert states[victim] == "fenced"
    # restart: it re-registers with a higher epoch, is unfenced, and preferred leaders return
    old_epoch = next(b["epoch"] for b in c.cluster(ctl)["brokers"] if b["id"] == victim)
    c.start(victim)
    c.wait_ready(30, nodes=[1, 2, 3])
    new_epoch = next(b["epoch"] for b in c.cluster(ctl)["brokers"] if b["id"] == victim)
    assert new_epoch > old_epoch

    def preferred_back():
        ps = {p["partition"]: p for p in topic(c, ctl, "ha")["partitions"]}
        return all(ps[i]["leader"] == victim for i in led) and ps
    wait_until(preferred_back, 30, what="preferred leadership back on the restarted broker")


def test_full_cluster_restart_keeps_every_topic(cluster3):
    c = cluster3
    for i in range(3):
        c.call(1 + i, "POST", "/v1/topics", {"name": f"keep{i}", "partitions": i + 1})

    def keep_ids_on_node_1():
        ids = {t["name"]: t["id"] for t in c.get(1, "/v1/topics")["topics"]
               if t["name"].startswith("keep")}
        return ids if len(ids) == 3 else None

    # node 1 applies a topic created through node 2 or 3 a moment later: wait for all three
    before = wait_until(keep_ids_on_node_1, 10, what="node 1 sees every new topic")
    for n in (1, 2, 3):
        c.kill(n)
    c.start()
    c.wait_ready(40, nodes=[1, 2, 3])
    for node in (1, 2, 3):
        # each node replays its own journal and catches up with the leader at its own pace
        names = wait_until(lambda: (lambda n: n if n == before else None)(
            {t["name"]: t["id"] for t in c.get(node, "/v1/topics")["topics"]}), 20,
            what=f"node {node} back with every topic")
        assert names == before
