"""Goal: Admin creates, lists, describes, alters and deletes topics, describes the cluster and
lists offsets, and surfaces broker errors as their classes. Method: the fake broker's JSON
admin endpoints; every answer is checked against the fake's state."""
import pytest

from raftlog.client.admin import Admin, NewTopic
from raftlog.client.producer import Producer
from raftlog.client.structs import TopicPartition as TP
from raftlog.errors import (InvalidConfigError, InvalidReplicationFactorError,
                            TopicAlreadyExistsError, UnknownTopicOrPartitionError)


async def test_topic_lifecycle(fake):
    async with Admin(fake.bootstrap) as admin:
        desc = await admin.create_topic("orders", partitions=4,
                                        config={"retention.ms": 60_000})
        assert desc["name"] == "orders" and len(desc["partitions"]) == 4
        assert len(fake.topics["orders"].partitions) == 4
        names = [t["name"] for t in await admin.list_topics()]
        assert names == ["orders", "t"]
        d = await admin.describe_topic("orders")
        assert [p["partition"] for p in d["partitions"]] == [0, 1, 2, 3]
        cfg = await admin.describe_configs("orders")
        assert cfg["retention.ms"] == {"value": "60000", "source": "topic"}
        assert cfg["cleanup.policy"]["source"] == "default"
        await admin.alter_configs("orders", {"cleanup.policy": "compact", "retention.ms": None})
        cfg = await admin.describe_configs("orders")
        assert cfg["cleanup.policy"] == {"value": "compact", "source": "topic"}
        assert cfg["retention.ms"]["source"] == "default"
        assert await admin.delete_topic("orders") == {"deleted": "orders"}
        assert "orders" not in fake.topics
        made = await admin.create_topics([NewTopic("a", 1), NewTopic("b", 2)])
        assert sorted(made) == ["a", "b"]
        assert [d["name"] for d in await admin.describe_topics(["a", "b"])] == ["a", "b"]
        await admin.delete_topics(["a", "b"])


async def test_admin_errors_are_their_classes(fake):
    async with Admin(fake.bootstrap) as admin:
        with pytest.raises(TopicAlreadyExistsError, match="already exists"):
            await admin.create_topic("t")
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.describe_topic("missing")
        with pytest.raises(UnknownTopicOrPartitionError):
            await admin.delete_topic("missing")
        with pytest.raises(InvalidConfigError, match="bogus"):
            await admin.alter_configs("t", {"bogus": 1})
        with pytest.raises(InvalidReplicationFactorError):
            await admin.create_topic("x", replication_factor=5)


async def test_describe_cluster_and_list_offsets(fake2):
    async with Producer(fake2.bootstrap) as p:
        for ts in (1000, 2000, 3000):
            await p.send("t", b"x", partition=1, timestamp_ms=ts)
    async with Admin(fake2.bootstrap) as admin:
        c = await admin.describe_cluster()
        assert c["controller"] == 1 and [b["id"] for b in c["brokers"]] == [1, 2]
        offs = await admin.list_offsets({TP("t", 1): -1, TP("t", 0): -2})
        assert offs == {TP("t", 1): 3, TP("t", 0): 0}
        assert await admin.list_offsets({TP("t", 1): 1500}) == {TP("t", 1): 1}
        assert await admin.list_offsets({TP("t", 1): 5000}) == {TP("t", 1): -1}


async def test_admin_fails_over_to_a_live_broker(fake2):
    # The first bootstrap address is dead; the second answers.
    async with Admin(f"127.0.0.1:1,{fake2.bootstrap.split(',')[1]}") as admin:
        assert [t["name"] for t in await admin.list_topics()] == ["t"]
