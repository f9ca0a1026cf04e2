"""Goal: the metadata cache maps topics to leaders and brokers to URLs without IO, and only
believes leader hints that are newer than what it knows. Method: feed it answers and hints."""
from raftlog.client.metadata import NO_LEADER, ClusterMetadata
from raftlog.errors import UnknownTopicOrPartitionError

ANSWER = {
    "controller": 1,
    "brokers": [{"id": 1, "host": "127.0.0.1", "http_port": 9091},
                {"id": 2, "host": "127.0.0.1", "http_port": 9092, "url": "http://h2:9092/"}],
    "topics": [{"name": "t", "partitions": [
        {"partition": 1, "leader": 2, "leader_epoch": 4, "replicas": [2, 1], "isr": [2]},
        {"partition": 0, "leader": 1, "leader_epoch": 3, "replicas": [1, 2], "isr": [1, 2]}]},
        {"name": "gone", "error": "UNKNOWN_TOPIC_OR_PARTITION"},
        {"name": "nolead", "partitions": [{"partition": 0, "leader": None, "leader_epoch": 1}]}],
}


def test_update_maps_leaders_urls_and_counts():
    md = ClusterMetadata()
    md.update(ANSWER, 1.0)
    assert md.broker_url(1) == "http://127.0.0.1:9091"
    assert md.broker_url(2) == "http://h2:9092"
    assert md.partition_counts == {"t": 2, "nolead": 1}
    assert md.leader_for("t", 0) == 1 and md.leader_for("t", 1) == 2
    assert md.partition("t", 1).isr == (2,)
    assert md.leader_for("nolead", 0) == NO_LEADER
    assert md.leader_for("t", 5) == NO_LEADER and md.leader_for("x", 0) == NO_LEADER
    assert isinstance(md.topic_error("gone"), UnknownTopicOrPartitionError)
    assert md.controller == 1 and md.version == 1


def test_leader_hint_only_moves_forward():
    md = ClusterMetadata()
    md.update(ANSWER, 1.0)
    counts = md.partition_counts
    assert not md.apply_leader_hint("t", 0, {"leader_id": 2, "leader_epoch": 3})  # same epoch
    assert md.leader_for("t", 0) == 1
    assert md.apply_leader_hint("t", 0, {"leader_id": 2, "leader_epoch": 5})
    assert md.leader_for("t", 0) == 2 and md.partition("t", 0).leader_epoch == 5
    assert not md.apply_leader_hint("t", 0, {"leader_id": 9, "leader_epoch": 9})  # unknown url
    assert md.apply_leader_hint("t", 0, {"leader_id": 9, "leader_epoch": 9,
                                         "leader_url": "http://h9:1"})
    assert md.broker_url(9) == "http://h9:1"
    # The producer holds this dict: an update must change it in place, never rebind it.
    md.update({"brokers": ANSWER["brokers"], "topics": [{"name": "gone", "error": "X"}]}, 2.0)
    assert md.partition_counts is counts


def test_deleted_topic_disappears():
    md = ClusterMetadata()
    md.update(ANSWER, 1.0)
    md.update({"brokers": ANSWER["brokers"],
               "topics": [{"name": "t", "error": "UNKNOWN_TOPIC_OR_PARTITION"}]}, 2.0)
    assert md.partition_count("t") is None and "t" not in md.partition_counts
