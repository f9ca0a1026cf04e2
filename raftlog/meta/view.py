"""MetadataView: the immutable, versioned picture of cluster metadata that everything reads.

Owns: the value records (BrokerInfo, PartitionInfo, TopicInfo, GroupInfo), the MetadataView
that holds them, read helpers and the JSON form for admin output. Pure: stdlib only (no time,
random, os, asyncio, pysyncobj, storage).

Invariants:
- Nothing here is ever mutated. Records are frozen dataclasses; maps are MappingProxyType over
  dicts that the state machine builds fresh for every change and never touches again. So a view
  taken on one thread stays consistent while the Raft thread applies the next command
  (pysyncobj.md pitfall 10), and publishing a view is handing over one reference.
- `version` counts applied commands (rejections included), so every node holding the same
  version holds the same view. `controller_id` is not state: meta/replica.py attaches the Raft
  leader it knows of when it publishes a view.
- Readers iterate in sorted order (`sorted_*` helpers) so output never depends on dict order.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

NO_LEADER = -1
ConfigValue = str | int | bool
UNCLEAN_ELECTION_KEY = "unclean.leader.election.enable"


def frozen_map(d: Mapping[Any, Any] | None = None) -> Mapping[Any, Any]:
    """A read-only map over a private copy of `d`."""
    return MappingProxyType(dict(d or {}))


def config_true(value: ConfigValue | None) -> bool:
    """Kafka configs are strings: 'true' (any case) or a real True count as enabled."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    broker_id: int
    host: str
    http_port: int
    incarnation: str          # process token: a new one means the broker restarted
    epoch: int                # assigned by the registration command; higher on re-registration
    fenced: bool              # a fenced broker leads nothing and is in no ISR (bar a last member)
    registered_ms: int        # proposer's clock at registration, for display only

    @property
    def active(self) -> bool:
        return not self.fenced

    def to_json(self) -> dict[str, Any]:
        return {"id": self.broker_id, "host": self.host, "http_port": self.http_port,
                "incarnation": self.incarnation, "epoch": self.epoch, "fenced": self.fenced,
                "registered_ms": self.registered_ms}


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    topic: str
    partition: int
    replicas: tuple[int, ...]   # replicas[0] is the preferred leader
    leader: int                 # NO_LEADER (-1) when leaderless
    leader_epoch: int           # bumps on every leader change (to NO_LEADER too)
    isr: tuple[int, ...]        # never empty; in replica order
    partition_epoch: int        # bumps on every change of leader, ISR or replicas

    @property
    def preferred_leader(self) -> int:
        return self.replicas[0]

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "replicas": list(self.replicas),
                "leader": self.leader, "leader_epoch": self.leader_epoch, "isr": list(self.isr),
                "partition_epoch": self.partition_epoch}


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    topic_id: str
    config: Mapping[str, ConfigValue]
    partitions: tuple[PartitionInfo, ...]   # indexed by partition number

    @property
    def unclean_election(self) -> bool:
        """The topic's own override only (False without one); elections use `unclean_or`."""
        return self.unclean_or(False)

    def unclean_or(self, default: bool) -> bool:
        """Unclean election for this topic: its override if it has one (Kafka's rule), else
        `default`, the cluster default that the command or the controller carries."""
        value = self.config.get(UNCLEAN_ELECTION_KEY)
        return default if value is None else config_true(value)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.topic_id,
                "config": {k: self.config[k] for k in sorted(self.config)},
                "partitions": [p.to_json() for p in self.partitions]}


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    generation: int
    protocol: str                                          # assignor name, e.g. "range"
    assignment: Mapping[str, tuple[tuple[str, int], ...]]  # member -> sorted (topic, partition)

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "generation": self.generation, "protocol": self.protocol,
                "assignment": {m: [list(tp) for tp in self.assignment[m]]
                               for m in sorted(self.assignment)}}


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class MetadataView:
    version: int = 0
    brokers: Mapping[int, BrokerInfo] = field(default_factory=_empty)
    topics: Mapping[str, TopicInfo] = field(default_factory=_empty)
    groups: Mapping[str, GroupInfo] = field(default_factory=_empty)
    next_producer_id: int = 0
    last_broker_epoch: int = 0        # the highest broker epoch ever assigned
    controller_id: int | None = None  # attached by meta/replica.py; not replicated state

    # --- brokers ---
    def broker(self, broker_id: int) -> BrokerInfo | None:
        return self.brokers.get(broker_id)

    def is_active(self, broker_id: int) -> bool:
        b = self.brokers.get(broker_id)
        return b is not None and not b.fenced

    def broker_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.brokers))

    def active_broker_ids(self) -> tuple[int, ...]:
        return tuple(i for i in sorted(self.brokers) if not self.brokers[i].fenced)

    # --- topics and partitions ---
    def topic(self, name: str) -> TopicInfo | None:
        return self.topics.get(name)

    def topic_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.topics))

    def partition(self, topic: str, partition: int) -> PartitionInfo | None:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        return t.partitions[partition]

    def leader_of(self, topic: str, partition: int) -> int | None:
        """The leader's broker id, NO_LEADER if leaderless, None if there is no such partition."""
        p = self.partition(topic, partition)
        return None if p is None else p.leader

    def all_partitions(self) -> Iterator[PartitionInfo]:
        """Every partition, ordered by (topic, partition)."""
        for name in sorted(self.topics):
            yield from self.topics[name].partitions

    def partitions_led_by(self, broker_id: int) -> tuple[PartitionInfo, ...]:
        return tuple(p for p in self.all_partitions() if p.leader == broker_id)

    def partitions_replicated_by(self, broker_id: int) -> tuple[PartitionInfo, ...]:
        """Partitions with `broker_id` among their replicas (led or followed)."""
        return tuple(p for p in self.all_partitions() if broker_id in p.replicas)

    def group(self, group: str) -> GroupInfo | None:
        return self.groups.get(group)

    def with_controller(self, controller_id: int | None) -> MetadataView:
        if controller_id == self.controller_id:
            return self
        return dataclasses.replace(self, controller_id=controller_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "controller_id": self.controller_id,
            "brokers": [self.brokers[i].to_json() for i in sorted(self.brokers)],
            "topics": [self.topics[n].to_json() for n in sorted(self.topics)],
            "groups": [self.groups[g].to_json() for g in sorted(self.groups)],
            "next_producer_id": self.next_producer_id,
            "last_broker_epoch": self.last_broker_epoch,
        }
