"""Admin: topics, configs, cluster description and offsets (aiokafka's AIOKafkaAdminClient shape).

Owns: the JSON admin calls of docs/protocol.md (`/v1/cluster`, `/v1/topics[/{name}]`), sent to
any broker (the broker forwards writes to the controller; the Client retries NO_QUORUM and
NOT_CONTROLLER and fails over between brokers), and list-offsets on partition leaders. Answers
are the protocol's JSON objects, returned as dicts, so `--json` output and scripts see exactly
what the cluster said. Imports the client's modules and `errors`; never raftlog.server/meta/...

    async with Admin("127.0.0.1:9091") as admin:
        await admin.create_topic("events", partitions=6, replication_factor=3,
                                 config={"retention.ms": 86_400_000})
        print(await admin.describe_topic("events"))
"""
from __future__ import annotations

from typing import Any, Iterable, NamedTuple
from urllib.parse import quote

from raftlog.client.client import Client
from raftlog.client.group_admin import GroupAdminMixin
from raftlog.client.structs import TopicPartition


class NewTopic(NamedTuple):
    """aiokafka/kafka-python's NewTopic: None leaves the cluster default."""

    name: str
    num_partitions: int | None = None
    replication_factor: int | None = None
    topic_configs: dict[str, Any] | None = None


def _path(name: str) -> str:
    return f"/v1/topics/{quote(name, safe='')}"


class Admin(GroupAdminMixin):   # groups: raftlog/client/group_admin.py
    def __init__(self, bootstrap_servers: str | Iterable[str] = "127.0.0.1:9091", *,
                 request_timeout_ms: int = 30_000, bootstrap_timeout_ms: int = 10_000,
                 retry_backoff_ms: int = 100, client_id: str = "raftlog-admin") -> None:
        self.client_id = client_id
        self.client = Client(bootstrap_servers, request_timeout_ms=request_timeout_ms,
                             bootstrap_timeout_ms=bootstrap_timeout_ms,
                             retry_backoff_ms=retry_backoff_ms)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self.client.start()
            self._started = True

    async def close(self) -> None:
        await self.client.close()
        self._started = False

    stop = close

    async def __aenter__(self) -> "Admin":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- cluster ----------------------------------------------------------------------------
    async def describe_cluster(self) -> dict[str, Any]:
        """`{cluster_id, node_id, controller, brokers: [...], partitions_total,
        offline_partitions, under_replicated_partitions, ...}`"""
        return await self.client.admin("GET", "/v1/cluster")

    # -- topics -----------------------------------------------------------------------------
    async def create_topic(self, name: str, partitions: int | None = None,
                           replication_factor: int | None = None,
                           config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create one topic; returns its description. Raises TopicAlreadyExistsError etc."""
        body: dict[str, Any] = {"name": name}
        if partitions is not None:
            body["partitions"] = partitions
        if replication_factor is not None:
            body["replication_factor"] = replication_factor
        if config:
            body["config"] = config
        return await self.client.admin("POST", "/v1/topics", body)

    async def create_topics(self, new_topics: Iterable[NewTopic]) -> dict[str, dict[str, Any]]:
        """Create several topics in turn; stops at the first error (earlier ones stay)."""
        out = {}
        for t in new_topics:
            out[t.name] = await self.create_topic(t.name, t.num_partitions,
                                                  t.replication_factor, t.topic_configs)
        return out

    async def delete_topic(self, name: str) -> dict[str, Any]:
        return await self.client.admin("DELETE", _path(name))

    async def delete_topics(self, names: Iterable[str]) -> list[dict[str, Any]]:
        return [await self.delete_topic(n) for n in names]

    async def list_topics(self) -> list[dict[str, Any]]:
        """`[{name, id, partitions, replication_factor, internal}]`"""
        answer = await self.client.admin("GET", "/v1/topics")
        return list(answer.get("topics") or [])

    async def describe_topic(self, name: str) -> dict[str, Any]:
        """`{name, id, config: [{name, value, source}], partitions: [{partition, leader,
        leader_epoch, replicas, isr, partition_epoch}]}`"""
        return await self.client.admin("GET", _path(name))

    async def describe_topics(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        if names is None:
            names = [t["name"] for t in await self.list_topics()]
        return [await self.describe_topic(n) for n in names]

    # -- configs ----------------------------------------------------------------------------
    async def describe_configs(self, topic: str) -> dict[str, dict[str, Any]]:
        """`{config name: {"value": ..., "source": "topic"|"default"|...}}` of one topic."""
        desc = await self.describe_topic(topic)
        return {c["name"]: {"value": c.get("value"), "source": c.get("source")}
                for c in desc.get("config") or ()}

    async def alter_configs(self, topic: str, config: dict[str, Any]) -> dict[str, Any]:
        """Set topic configs; a value of None resets that key to the cluster default.
        Returns the new topic description."""
        return await self.client.admin("PATCH", _path(topic), {"config": config})

    # -- offsets ----------------------------------------------------------------------------
    async def list_offsets(self, timestamps: dict[TopicPartition, int]
                           ) -> dict[TopicPartition, int]:
        """Offset per partition for a timestamp: -1 = latest (high watermark), -2 = earliest,
        else the earliest offset whose timestamp is >= it (-1 when none is that new)."""
        found = await self.client.list_offsets(
            {(tp[0], tp[1]): ts for tp, ts in timestamps.items()})
        return {TopicPartition(*tp): found[(tp[0], tp[1])][0] for tp in timestamps}
