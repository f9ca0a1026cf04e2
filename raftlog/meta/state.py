"""MetadataState: the replicated metadata state machine, pure and deterministic.

Owns: the transition of the metadata view by one command (`apply`); `snapshot`/`restore`
delegate to meta/snapshot.py. Pure: imports raftlog.errors and meta/{commands,names,placement,
snapshot,view}; never time, random, os, asyncio, pysyncobj or storage. Time arrives stamped
in commands by their proposer.

Rules that keep every node identical (pysyncobj.md §2, style B4):
- `apply` never raises. A rejection is a result ``("error", CODE, message)``; a bug is caught and
  returned as UNKNOWN_SERVER_ERROR, because a raising replicated method wedges pysyncobj.
- Each apply builds a new immutable MetadataView and swaps one reference at the end, so another
  thread reading `view` sees the state before or after a command, never half of one. A command
  that fails halfway leaves nothing behind.
- `version` goes up by one for every applied command, rejected or not.
- Loops over maps go in sorted order: a node restored from a snapshot holds its dicts in a
  different insertion order than one that replayed the log.

Invariants after every command: each ISR is non-empty, duplicate-free, inside the replica list
and in replica order; the leader is NO_LEADER or an active ISR member; an ISR holds only active
brokers except a partition's last member kept after a fence (the partition is then leaderless).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from raftlog import errors
from raftlog.meta import commands, names, placement
from raftlog.meta.commands import Result
from raftlog.meta.snapshot import snapshot_bytes, view_from_snapshot
from raftlog.meta.view import (NO_LEADER, BrokerInfo, GroupInfo, MetadataView, PartitionInfo,
                               TopicInfo, frozen_map)

__all__ = ["MetadataState", "state_from_snapshot", "snapshot_bytes", "view_from_snapshot"]
PRODUCER_ID_BLOCK_MAX = 1_000_000
TOPIC_PARTITIONS_MAX = 100_000


class MetadataState:
    """Holds the current MetadataView and moves it forward one command at a time."""

    def __init__(self, view: MetadataView | None = None) -> None:
        self._view = view if view is not None else MetadataView()

    @property
    def view(self) -> MetadataView:
        return self._view

    @property
    def version(self) -> int:
        return self._view.version

    def apply(self, blob: bytes) -> Result:
        """Apply one encoded command; return ("ok", {...}) or ("error", CODE, message)."""
        stamped = self._view
        try:
            stamped = dataclasses.replace(self._view, version=self._view.version + 1)
            cmd = commands.decode(blob)
            result, new = _HANDLERS[cmd.op](stamped, cmd.payload)
        except errors.RaftlogError as e:
            result, new = commands.rejected(e.code.name, e.message), stamped
        except Exception as e:  # a bug: report it, keep the old state, never wedge the log
            result, new = commands.rejected("UNKNOWN_SERVER_ERROR", f"{e!r:.300}"), stamped
        self._view = new
        return result

    def snapshot(self) -> bytes:
        return snapshot_bytes(self._view)

    def restore(self, blob: bytes) -> None:
        self._view = view_from_snapshot(blob)

    # pysyncobj pickles the consumer's attributes into its dump file: pickle our canonical
    # snapshot, not Python objects (MappingProxyType cannot be pickled, and the dump then stays
    # readable when the classes change).
    def __reduce__(self) -> tuple[Any, ...]:
        return (state_from_snapshot, (self.snapshot(),))


def state_from_snapshot(blob: bytes) -> MetadataState:
    return MetadataState(view_from_snapshot(blob))


# --- helpers ---------------------------------------------------------------------------------

def _reject(code: str, message: str) -> errors.RaftlogError:
    return errors.error(code, message)


def _put(m: Mapping[Any, Any], key: Any, value: Any) -> Mapping[Any, Any]:
    d = dict(m)
    d[key] = value
    return MappingProxyType(d)


def _drop(m: Mapping[Any, Any], key: Any) -> Mapping[Any, Any]:
    d = dict(m)
    d.pop(key, None)
    return MappingProxyType(d)


def _active(v: MetadataView) -> frozenset[int]:
    return frozenset(v.active_broker_ids())


def _with_partition(p: PartitionInfo, leader: int, isr: tuple[int, ...]) -> PartitionInfo:
    """p with a new leader/ISR: partition epoch always bumps, leader epoch iff the leader moves."""
    return dataclasses.replace(
        p, leader=leader, isr=isr, partition_epoch=p.partition_epoch + 1,
        leader_epoch=p.leader_epoch + (1 if leader != p.leader else 0))


def _replace_partitions(v: MetadataView, updates: Mapping[tuple[str, int], PartitionInfo]
                        ) -> MetadataView:
    if not updates:
        return v
    topics = dict(v.topics)
    for name in sorted({t for t, _ in updates}):
        t = topics[name]
        parts = tuple(updates.get((name, p.partition), p) for p in t.partitions)
        topics[name] = dataclasses.replace(t, partitions=parts)
    return dataclasses.replace(v, topics=MappingProxyType(topics))


def _elect(v: MetadataView, choose: Callable[[PartitionInfo, frozenset[int], bool],
                                             tuple[int, tuple[int, ...]] | None],
           unclean_default: bool,
           topics: tuple[str, ...] | None = None) -> tuple[MetadataView, list[list[Any]]]:
    """Apply `choose(p, active, unclean)` to every partition (sorted); return view and changes.

    `unclean` is the topic's override, else `unclean_default`: the proposer's config value
    carried in the command, so every node decides alike whatever its own config file says.
    """
    active = _active(v)
    updates: dict[tuple[str, int], PartitionInfo] = {}
    changed: list[list[Any]] = []
    for name in topics if topics is not None else v.topic_names():
        t = v.topics[name]
        for p in t.partitions:
            choice = choose(p, active, t.unclean_or(unclean_default))
            if choice is not None:
                updates[(name, p.partition)] = _with_partition(p, *choice)
                changed.append([name, p.partition])
    return _replace_partitions(v, updates), changed


def _fence_in_partitions(v: MetadataView, broker_id: int, unclean_default: bool
                         ) -> tuple[MetadataView, list[list[Any]]]:
    """`broker_id` (already fenced in v) leaves every ISR and leadership, Kafka style."""
    return _elect(v, lambda p, active, unclean:
                  placement.elect_after_loss(p, broker_id, active, unclean), unclean_default)


def _broker_or_reject(v: MetadataView, broker_id: int, broker_epoch: int) -> BrokerInfo:
    b = v.brokers.get(broker_id)
    if b is None:
        raise _reject("UNKNOWN_BROKER", f"broker {broker_id} is not registered")
    if broker_epoch != b.epoch:
        raise _reject("STALE_BROKER_EPOCH",
                      f"broker {broker_id} epoch is {b.epoch}, the command carries {broker_epoch}")
    return b


def _partition_or_reject(v: MetadataView, topic: str, partition: int) -> PartitionInfo:
    p = v.partition(topic, partition)
    if p is None:
        raise _reject("UNKNOWN_TOPIC_OR_PARTITION", f"no partition {topic}/{partition}")
    return p


# --- brokers ---------------------------------------------------------------------------------

def _register_broker(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    bid = c["broker_id"]
    old = v.brokers.get(bid)
    if old is not None and (old.incarnation, old.host, old.http_port) == (
            c["incarnation"], c["host"], c["http_port"]):
        # The same process retrying (its first attempt may have committed late): same epoch.
        return commands.ok({"broker_id": bid, "broker_epoch": old.epoch, "duplicate": True,
                            "changed": []}), v
    if not c["incarnation"]:
        raise _reject("INVALID_REQUEST", "incarnation must be non-empty")
    epoch = v.last_broker_epoch + 1
    b = BrokerInfo(bid, c["host"], c["http_port"], c["incarnation"], epoch, True, c["now_ms"])
    v = dataclasses.replace(v, brokers=_put(v.brokers, bid, b), last_broker_epoch=epoch)
    changed: list[list[Any]] = []
    if old is not None:
        # A new incarnation may have lost unflushed data: treat the old one as fenced (KIP-966).
        v, changed = _fence_in_partitions(v, bid, c["unclean_default"])
    return commands.ok({"broker_id": bid, "broker_epoch": epoch, "duplicate": False,
                        "changed": changed}), v


def _fence_broker(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    b = _broker_or_reject(v, c["broker_id"], c["broker_epoch"])
    if not b.fenced:
        v = dataclasses.replace(v, brokers=_put(v.brokers, b.broker_id,
                                                dataclasses.replace(b, fenced=True)))
    v, changed = _fence_in_partitions(v, b.broker_id, c["unclean_default"])
    return commands.ok({"broker_id": b.broker_id, "broker_epoch": b.epoch,
                        "changed": changed}), v


def _unfence_broker(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    b = _broker_or_reject(v, c["broker_id"], c["broker_epoch"])
    if b.fenced:
        v = dataclasses.replace(v, brokers=_put(v.brokers, b.broker_id,
                                                dataclasses.replace(b, fenced=False)))
    bid = b.broker_id
    # Kafka elects the returning broker where partitions it replicates have no leader.
    v, elected = _elect(v, lambda p, active, unclean: placement.elect_leaderless(
        p, active, unclean) if bid in p.replicas else None, c["unclean_default"])
    return commands.ok({"broker_id": bid, "broker_epoch": b.epoch, "elected": elected}), v


# --- topics ----------------------------------------------------------------------------------

def _create_topic(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    name, topic_id, replicas = c["topic"], c["topic_id"], c["replicas"]
    err = names.topic_name_error(name)
    if err:
        raise _reject("INVALID_TOPIC_EXCEPTION", err)
    existing = v.topics.get(name)
    if existing is not None:
        if existing.topic_id == topic_id:   # our own earlier attempt committed: same answer
            return commands.ok({"topic": name, "topic_id": topic_id,
                                "partitions": len(existing.partitions), "duplicate": True}), v
        raise _reject("TOPIC_ALREADY_EXISTS", f"topic {name!r} already exists")
    if not topic_id:
        raise _reject("INVALID_REQUEST", "topic_id must be non-empty")
    for other in v.topic_names():
        if v.topics[other].topic_id == topic_id:
            raise _reject("INVALID_REQUEST", f"topic id {topic_id!r} is used by {other!r}")
        if names.collision_key(other) == names.collision_key(name):
            raise _reject("INVALID_TOPIC_EXCEPTION",
                          f"topic {name!r} collides with {other!r} ('.' and '_' clash)")
    if not 1 <= len(replicas) <= TOPIC_PARTITIONS_MAX:
        raise _reject("INVALID_PARTITIONS", f"a topic needs 1..{TOPIC_PARTITIONS_MAX} partitions")
    rf = len(replicas[0])
    active = _active(v)
    parts = []
    for i, reps in enumerate(replicas):
        if len(reps) != rf or rf < 1 or len(set(reps)) != rf:
            raise _reject("INVALID_REPLICATION_FACTOR",
                          f"partition {i}: replicas {list(reps)} must be {rf} distinct brokers")
        unknown = sorted(r for r in reps if r not in v.brokers)
        if unknown:
            raise _reject("UNKNOWN_BROKER", f"partition {i}: brokers {unknown} are not registered")
        isr = tuple(r for r in reps if r in active)
        if not isr:
            raise _reject("BROKER_NOT_AVAILABLE",
                          f"partition {i}: every replica in {list(reps)} is fenced")
        parts.append(PartitionInfo(name, i, tuple(reps), isr[0], 0, isr, 0))
    t = TopicInfo(name, topic_id, frozen_map(c["config"]), tuple(parts))
    return commands.ok({"topic": name, "topic_id": topic_id, "partitions": len(parts),
                        "duplicate": False}), dataclasses.replace(v, topics=_put(v.topics, name, t))


def _delete_topic(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    name, topic_id = c["topic"], c["topic_id"]
    t = v.topics.get(name)
    if t is None:
        raise _reject("UNKNOWN_TOPIC_OR_PARTITION", f"no topic {name!r}")
    if topic_id and topic_id != t.topic_id:
        # A late retry must not delete a newer topic that reuses the name.
        raise _reject("UNKNOWN_TOPIC_OR_PARTITION",
                      f"topic {name!r} has id {t.topic_id!r}, not {topic_id!r}")
    return (commands.ok({"topic": name, "topic_id": t.topic_id}),
            dataclasses.replace(v, topics=_drop(v.topics, name)))


def _alter_topic_config(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    name = c["topic"]
    t = v.topics.get(name)
    if t is None:
        raise _reject("UNKNOWN_TOPIC_OR_PARTITION", f"no topic {name!r}")
    if c["expected"] is not None and dict(t.config) != c["expected"]:
        raise _reject("INVALID_REQUEST", f"topic {name!r} config changed since it was read "
                                         "(expected does not match); re-read and retry")
    if c["replace"] is not None:
        if c["set"] or c["delete"]:
            raise _reject("INVALID_REQUEST", "replace excludes set/delete")
        new = dict(c["replace"])
    else:
        both = sorted(set(c["set"]) & set(c["delete"]))
        if both:
            raise _reject("INVALID_REQUEST", f"keys both set and deleted: {both}")
        new = {k: val for k, val in t.config.items() if k not in c["delete"]}
        new.update(c["set"])
    config = frozen_map({k: new[k] for k in sorted(new)})
    altered = dataclasses.replace(t, config=config)
    v = dataclasses.replace(v, topics=_put(v.topics, name, altered))
    elected: list[list[Any]] = []
    default = c["unclean_default"]
    if altered.unclean_or(default) and not t.unclean_or(default):
        # Opting in to unclean election (an override set to true, or an override false removed
        # under a default of true) takes effect at once for leaderless partitions.
        v, elected = _elect(v, placement.elect_leaderless, default, topics=(name,))
    return commands.ok({"topic": name, "config": dict(config), "elected": elected}), v


# --- partitions ------------------------------------------------------------------------------

def _change_partition(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    p = _partition_or_reject(v, c["topic"], c["partition"])
    if c["partition_epoch"] != p.partition_epoch:
        raise _reject("STALE_PARTITION_EPOCH",
                      f"{p.topic}/{p.partition} partition epoch is {p.partition_epoch}, "
                      f"the change expects {c['partition_epoch']}")
    if c["leader_epoch"] != -1 and c["leader_epoch"] != p.leader_epoch:
        raise _reject("FENCED_LEADER_EPOCH",
                      f"{p.topic}/{p.partition} leader epoch is {p.leader_epoch}, "
                      f"the change expects {c['leader_epoch']}")
    isr_in, leader = c["isr"], c["leader"]
    if not isr_in or len(set(isr_in)) != len(isr_in):
        raise _reject("INVALID_REQUEST", f"ISR {list(isr_in)} must be non-empty and distinct")
    outside = sorted(set(isr_in) - set(p.replicas))
    if outside:
        raise _reject("INVALID_REQUEST", f"ISR members {outside} are not replicas {list(p.replicas)}")
    for r in sorted(isr_in):
        b = v.brokers.get(r)
        if b is None:
            raise _reject("UNKNOWN_BROKER", f"ISR member {r} is not registered")
        if b.fenced:
            raise _reject("BROKER_NOT_AVAILABLE", f"ISR member {r} is fenced")
    epochs = c["isr_broker_epochs"]
    if epochs:
        if len(epochs) != len(isr_in):
            raise _reject("INVALID_REQUEST", "isr_broker_epochs must match isr one to one")
        for r, e in zip(isr_in, epochs):
            if v.brokers[r].epoch != e:
                # KIP-903: the follower restarted since the leader saw it catch up.
                raise _reject("STALE_BROKER_EPOCH",
                              f"ISR member {r} epoch is {v.brokers[r].epoch}, not {e}")
    if leader != NO_LEADER and leader not in isr_in:
        raise _reject("INVALID_REQUEST", f"leader {leader} is not in ISR {list(isr_in)}")
    isr = tuple(r for r in p.replicas if r in isr_in)     # canonical: replica order
    changed = (leader, isr) != (p.leader, p.isr)
    if changed:
        p = _with_partition(p, leader, isr)
        v = _replace_partitions(v, {(p.topic, p.partition): p})
    return commands.ok({"topic": p.topic, "partition": p.partition, "leader": p.leader,
                        "leader_epoch": p.leader_epoch, "isr": list(p.isr),
                        "partition_epoch": p.partition_epoch, "changed": changed}), v


def _elect_leaders(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    """Each change is its own CAS, applied in order; one stale change does not block the rest."""
    results = []
    for change in c["changes"]:
        try:
            result, v = _change_partition(v, change)
        except errors.RaftlogError as e:
            result = commands.rejected(e.code.name, e.message)
        results.append(list(result))
    return commands.ok({"results": results}), v


# --- producer ids, groups, barrier -----------------------------------------------------------

def _allocate_producer_ids(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    count = c["count"]
    if not 1 <= count <= PRODUCER_ID_BLOCK_MAX:
        raise _reject("INVALID_REQUEST", f"count must be 1..{PRODUCER_ID_BLOCK_MAX}, got {count}")
    if c["broker_id"] != -1:
        b = v.brokers.get(c["broker_id"])
        if b is None:
            raise _reject("UNKNOWN_BROKER", f"broker {c['broker_id']} is not registered")
        if c["broker_epoch"] != -1 and c["broker_epoch"] != b.epoch:
            raise _reject("STALE_BROKER_EPOCH",
                          f"broker {b.broker_id} epoch is {b.epoch}, not {c['broker_epoch']}")
    start = v.next_producer_id
    if start + count >= 2**63:
        raise _reject("INVALID_REQUEST", "producer id space exhausted")
    return (commands.ok({"start": start, "count": count}),
            dataclasses.replace(v, next_producer_id=start + count))


def _set_group_assignment(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    group, gen, assignment = c["group"], c["generation"], c["assignment"]
    err = names.group_name_error(group)
    if err:
        raise _reject("INVALID_REQUEST", err)
    g = v.groups.get(group)
    new = GroupInfo(group, gen, c["protocol"], frozen_map(assignment))
    if g is not None and g == new:
        return commands.ok({"group": group, "generation": gen, "duplicate": True}), v
    current = g.generation if g is not None else 0
    if c["expected_generation"] != current:
        raise _reject("ILLEGAL_GENERATION", f"group {group!r} is at generation {current}, "
                                            f"the assignment expects {c['expected_generation']}")
    if gen <= current:
        raise _reject("ILLEGAL_GENERATION", f"new generation {gen} must exceed {current}")
    if not c["protocol"]:
        raise _reject("INVALID_REQUEST", "protocol must be non-empty")
    seen: dict[tuple[str, int], str] = {}
    for member in sorted(assignment):
        if not member:
            raise _reject("INVALID_REQUEST", "member ids must be non-empty")
        for tp in assignment[member]:
            if v.partition(*tp) is None:
                raise _reject("UNKNOWN_TOPIC_OR_PARTITION", f"no partition {tp[0]}/{tp[1]}")
            if tp in seen:
                raise _reject("INVALID_REQUEST",
                              f"{tp[0]}/{tp[1]} assigned to both {seen[tp]!r} and {member!r}")
            seen[tp] = member
    return (commands.ok({"group": group, "generation": gen, "duplicate": False}),
            dataclasses.replace(v, groups=_put(v.groups, group, new)))


def _delete_group(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    g = v.groups.get(c["group"])
    if g is None:
        raise _reject("GROUP_ID_NOT_FOUND", f"no group {c['group']!r}")
    if g.generation != c["expected_generation"]:
        raise _reject("ILLEGAL_GENERATION", f"group {g.group!r} is at generation {g.generation}, "
                                            f"not {c['expected_generation']}")
    return (commands.ok({"group": g.group, "generation": g.generation}),
            dataclasses.replace(v, groups=_drop(v.groups, g.group)))


def _noop(v: MetadataView, c: dict[str, Any]) -> tuple[Result, MetadataView]:
    return commands.ok({"version": v.version}), v


_HANDLERS: dict[str, Callable[[MetadataView, dict[str, Any]], tuple[Result, MetadataView]]] = {
    "register_broker": _register_broker, "fence_broker": _fence_broker,
    "unfence_broker": _unfence_broker, "create_topic": _create_topic,
    "delete_topic": _delete_topic, "alter_topic_config": _alter_topic_config,
    "change_partition": _change_partition, "elect_leaders": _elect_leaders,
    "allocate_producer_ids": _allocate_producer_ids,
    "set_group_assignment": _set_group_assignment, "delete_group": _delete_group,
    "noop": _noop,
}
assert set(_HANDLERS) == commands.OPS, "every op needs a handler"
