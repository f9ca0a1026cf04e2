"""The client's view of the cluster: topic -> partitions -> leader, broker id -> URL.

Owns: a cache updated from `/v1/metadata` answers and from leader hints in error answers. Like
aiokafka's ClusterMetadata it performs no IO and never sleeps; `client.py` fetches, this only
remembers. Imports only the stdlib and `raftlog.errors`.

Invariants: `version` grows by one on every change, so waiters can tell "newer than what I saw";
a leader hint only moves a partition to a *higher* leader epoch (a stale hint never wins).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from raftlog.errors import RaftlogError, from_wire

NO_LEADER = -1


class PartitionMetadata(NamedTuple):
    topic: str
    partition: int
    leader: int  # NO_LEADER when there is none
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


def broker_url(entry: dict[str, Any]) -> str:
    """`http://host:port` of a broker entry (`url` wins when the broker gives one)."""
    url = entry.get("url")
    if url:
        return str(url).rstrip("/")
    return f"http://{entry['host']}:{entry['http_port']}"


class ClusterMetadata:
    """Pure cache of brokers and partition leaders; no IO."""

    def __init__(self) -> None:
        self._brokers: dict[int, str] = {}
        self._partitions: dict[str, tuple[PartitionMetadata, ...]] = {}
        self._topic_errors: dict[str, RaftlogError] = {}
        # topic -> partition count. Updated in place, never rebound: the producer keeps a
        # reference for its per-record lookup.
        self.partition_counts: dict[str, int] = {}
        self.controller: int | None = None
        self.version = 0
        self.updated_at_s = 0.0  # monotonic time of the last full answer; 0 = never

    # -- updates ----------------------------------------------------------------------------
    def update(self, answer: dict[str, Any], now_s: float) -> None:
        """Apply one `/v1/metadata` answer. Topics absent from it keep what we knew."""
        brokers = {int(b["id"]): broker_url(b) for b in answer.get("brokers") or ()}
        if brokers:
            self._brokers = brokers
        self.controller = answer.get("controller")
        for t in answer.get("topics") or ():
            name = t["name"]
            err = t.get("error")
            if err:
                self._topic_errors[name] = from_wire(
                    {"error": err, "message": t.get("message") or f"topic '{name}': {err}"})
                self._partitions.pop(name, None)
                self.partition_counts.pop(name, None)
                continue
            self._topic_errors.pop(name, None)
            parts = sorted(t.get("partitions") or (), key=lambda p: p["partition"])
            self._partitions[name] = tuple(
                PartitionMetadata(name, int(p["partition"]), _leader(p.get("leader")),
                                  int(p.get("leader_epoch", -1)),
                                  tuple(p.get("replicas") or ()), tuple(p.get("isr") or ()))
                for p in parts)
            self.partition_counts[name] = len(parts)
        self.updated_at_s = now_s
        self.version += 1

    def apply_leader_hint(self, topic: str, partition: int, hint: dict[str, Any]) -> bool:
        """Move a partition's leader from a NOT_LEADER_OR_FOLLOWER hint; True when it moved.

        Only a hint with a higher leader epoch than ours is believed: an older broker's idea
        of the leader must not undo a newer answer.
        """
        leader = hint.get("leader_id")
        epoch = hint.get("leader_epoch")
        parts = self._partitions.get(topic)
        if leader is None or epoch is None or parts is None or partition >= len(parts):
            return False
        cur = parts[partition]
        if int(epoch) <= cur.leader_epoch:
            return False
        url = hint.get("leader_url")
        if url:
            self._brokers[int(leader)] = str(url).rstrip("/")
        elif int(leader) not in self._brokers:
            return False
        new = cur._replace(leader=int(leader), leader_epoch=int(epoch))
        self._partitions[topic] = parts[:partition] + (new,) + parts[partition + 1:]
        self.version += 1
        return True

    def forget_topic(self, topic: str) -> None:
        if self._partitions.pop(topic, None) is not None:
            self.partition_counts.pop(topic, None)
            self.version += 1

    # -- reads ------------------------------------------------------------------------------
    @property
    def brokers(self) -> dict[int, str]:
        return dict(self._brokers)

    def broker_url(self, broker_id: int) -> str | None:
        return self._brokers.get(broker_id)

    def topics(self) -> set[str]:
        return set(self._partitions)

    def partitions_for_topic(self, topic: str) -> tuple[PartitionMetadata, ...] | None:
        return self._partitions.get(topic)

    def partition_count(self, topic: str) -> int | None:
        parts = self._partitions.get(topic)
        return len(parts) if parts is not None else None

    def partition(self, topic: str, partition: int) -> PartitionMetadata | None:
        parts = self._partitions.get(topic)
        if parts is None or not 0 <= partition < len(parts):
            return None
        return parts[partition]

    def leader_for(self, topic: str, partition: int) -> int:
        """Leader broker id, or NO_LEADER when unknown or leaderless."""
        parts = self._partitions.get(topic)
        if parts is None or not 0 <= partition < len(parts):
            return NO_LEADER
        return parts[partition].leader

    def topic_error(self, topic: str) -> RaftlogError | None:
        return self._topic_errors.get(topic)


def _leader(value: Any) -> int:
    return NO_LEADER if value is None else int(value)
