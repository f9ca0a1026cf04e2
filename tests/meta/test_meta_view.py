"""MetadataView helpers and its JSON form, on a small known cluster."""
from __future__ import annotations

import json

from raftlog.meta import commands as C
from raftlog.meta.state import MetadataState
from raftlog.meta.view import NO_LEADER, MetadataView


def _state() -> MetadataState:
    s = MetadataState()
    for b in (1, 2, 3):
        s.apply(C.register_broker(b, f"h{b}", 9000 + b, "i", 10))
        s.apply(C.unfence_broker(b, b))
    s.apply(C.create_topic("b", "B", [[1, 2], [2, 3], [3, 1]], {"retention.ms": "5"}))
    s.apply(C.create_topic("a", "A", [[2, 1]]))
    s.apply(C.fence_broker(3, 3))
    s.apply(C.set_group_assignment("g", 1, 0, {"m": [["a", 0]]}, "range"))
    return s


def test_lookups() -> None:
    v = _state().view
    assert v.partition("b", 1).leader == 2 and v.partition("b", 3) is None
    assert v.partition("zzz", 0) is None and v.partition("b", -1) is None
    assert v.leader_of("b", 0) == 1 and v.leader_of("nope", 0) is None
    assert v.active_broker_ids() == (1, 2) and v.broker_ids() == (1, 2, 3)
    assert v.is_active(1) and not v.is_active(3) and not v.is_active(9)
    assert [(p.topic, p.partition) for p in v.partitions_led_by(2)] == [("a", 0), ("b", 1)]
    assert [(p.topic, p.partition) for p in v.partitions_replicated_by(3)] == [("b", 1), ("b", 2)]
    assert [(p.topic, p.partition) for p in v.all_partitions()] == [
        ("a", 0), ("b", 0), ("b", 1), ("b", 2)]
    assert v.group("g").assignment == {"m": (("a", 0),)}
    assert v.topic("b").config == {"retention.ms": "5"} and not v.topic("b").unclean_election


def test_with_controller_and_json() -> None:
    v = _state().view
    assert v.with_controller(None) is v
    w = v.with_controller(2)
    assert w.controller_id == 2 and w.version == v.version and w.topics is v.topics
    doc = json.loads(json.dumps(w.to_json()))
    assert doc["controller_id"] == 2 and doc["version"] == v.version
    assert [b["id"] for b in doc["brokers"]] == [1, 2, 3] and doc["brokers"][2]["fenced"]
    assert [t["name"] for t in doc["topics"]] == ["a", "b"]
    assert doc["topics"][1]["partitions"][2] == {
        "partition": 2, "replicas": [3, 1], "leader": 1, "leader_epoch": 1, "isr": [1],
        "partition_epoch": 1}
    assert doc["groups"] == [{"group": "g", "generation": 1, "protocol": "range",
                              "assignment": {"m": [["a", 0]]}}]


def test_empty_view() -> None:
    v = MetadataView()
    assert v.version == 0 and v.to_json()["topics"] == [] and v.leader_of("t", 0) is None
    assert NO_LEADER == -1
