"""Placement and election choices: pure functions the controller and the state machine share.

Owns: where the replicas of a new topic go, who leads a partition after a failure or a return,
and which partitions should move back to their preferred leader. Pure and deterministic:
imports only the stdlib, raftlog.errors and meta/{commands,view}; never time, random, os,
asyncio, pysyncobj or storage. Inputs are sorted before use, so the same view always yields the
same choices on every node (the state machine calls `elect_after_loss`/`elect_leaderless`
inside apply).

Election rule (Kafka's): the new leader is the first replica, in replica order, that is in the
ISR and active. Only when unclean election is on for the topic (its
`unclean.leader.election.enable` override, else the controller's `[log]` default, carried in
the command) and no ISR member is active may a live replica outside the ISR lead; the ISR then
becomes just that replica.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from raftlog import errors
from raftlog.meta import commands
from raftlog.meta.view import NO_LEADER, MetadataView, PartitionInfo


def choose_leader(replicas: Sequence[int], isr: Collection[int], active: Collection[int],
                  unclean: bool) -> int:
    """First replica in ISR and active; else (unclean only) first active replica; else -1."""
    for r in replicas:
        if r in isr and r in active:
            return r
    if unclean:
        for r in replicas:
            if r in active:
                return r
    return NO_LEADER


def elect_after_loss(p: PartitionInfo, lost: int, active: Collection[int],
                     unclean: bool) -> tuple[int, tuple[int, ...]] | None:
    """(leader, isr) once broker `lost` is fenced, or None if `p` does not change.

    `lost` leaves the ISR unless it is the last member: Kafka keeps that one (the partition is
    then leaderless) so the ISR still names the replica that has every committed record.
    """
    if lost not in p.isr and p.leader != lost:
        return None
    isr = tuple(r for r in p.isr if r != lost) or p.isr
    leader = p.leader
    if leader == lost:
        leader = choose_leader(p.replicas, isr, active, unclean)
        if leader != NO_LEADER and leader not in isr:
            isr = (leader,)                      # unclean: the ISR restarts from the new leader
    if (leader, isr) == (p.leader, p.isr):
        return None
    return leader, isr


def elect_leaderless(p: PartitionInfo, active: Collection[int],
                     unclean: bool) -> tuple[int, tuple[int, ...]] | None:
    """(leader, isr) for a leaderless partition that can have a leader now, else None."""
    if p.leader != NO_LEADER:
        return None
    leader = choose_leader(p.replicas, p.isr, active, unclean)
    if leader == NO_LEADER:
        return None
    if leader in p.isr:
        # A fenced "last member" kept in the ISR leaves it once someone else can lead.
        return leader, tuple(r for r in p.isr if r in active)
    return leader, (leader,)


def place_replicas(brokers: Sequence[int], num_partitions: int, rf: int,
                   existing_load: Mapping[int, int] | None = None) -> list[list[int]]:
    """Replica lists for a new topic, Kafka's rack-unaware round robin, made deterministic.

    Partition p's preferred leader is brokers[(start + p) % n]; its followers sit at offsets
    1 + (shift + j) % (n - 1) from it, and `shift` grows by one after every n partitions, so
    followers do not always trail the same leader. Kafka picks `start` and `shift` at random;
    here `start` is the broker leading the fewest existing partitions (`existing_load`: broker
    -> preferred-leader count, see `leader_load`), which spreads leaders across topics too.
    Raises InvalidReplicationFactor / InvalidPartitions for impossible requests.
    """
    ids = sorted(set(brokers))
    n = len(ids)
    if num_partitions < 1:
        raise errors.error("INVALID_PARTITIONS", f"partitions must be >= 1, got {num_partitions}")
    if rf < 1 or rf > n:
        raise errors.error("INVALID_REPLICATION_FACTOR",
                           f"replication factor {rf} needs {rf} active brokers, have {n}")
    load = existing_load or {}
    start = min(range(n), key=lambda i: (load.get(ids[i], 0), ids[i]))
    shift = start
    out: list[list[int]] = []
    for p in range(num_partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (start + p) % n
        replicas = [ids[first]]
        for j in range(rf - 1):
            replicas.append(ids[(first + 1 + (shift + j) % (n - 1)) % n])
        out.append(replicas)
    return out


def leader_load(view: MetadataView) -> dict[int, int]:
    """Preferred-leader count per registered broker (0 for brokers that lead nothing)."""
    load = {b: 0 for b in view.broker_ids()}
    for p in view.all_partitions():
        load[p.preferred_leader] = load.get(p.preferred_leader, 0) + 1
    return load


def preferred_leader_moves(view: MetadataView) -> list[dict[str, Any]]:
    """Changes moving leadership back to replicas[0] where it is active, in ISR and not leader."""
    out = []
    for p in view.all_partitions():
        pref = p.preferred_leader
        if p.leader != pref and pref in p.isr and view.is_active(pref):
            out.append(commands.partition_change(p.topic, p.partition, p.partition_epoch, pref,
                                                 p.isr, leader_epoch=p.leader_epoch))
    return out


def leaderless_elections(view: MetadataView, unclean_default: bool = False
                         ) -> list[dict[str, Any]]:
    """Changes giving a leader to every leaderless partition that can have one now.

    The state machine already elects on fence, unfence and unclean opt-in; this is the
    controller's periodic sweep for anything left over (Kafka runs the same sweep).
    `unclean_default` is the controller's `[log]` default for topics without an override.
    """
    active = frozenset(view.active_broker_ids())
    out = []
    for name in view.topic_names():
        t = view.topics[name]
        for p in t.partitions:
            choice = elect_leaderless(p, active, t.unclean_or(unclean_default))
            if choice is not None:
                out.append(commands.partition_change(p.topic, p.partition, p.partition_epoch,
                                                     choice[0], choice[1],
                                                     leader_epoch=p.leader_epoch))
    return out


def broker_failure_changes(view: MetadataView, broker_id: int, unclean_default: bool = False
                           ) -> list[dict[str, Any]]:
    """What fencing `broker_id` would change, as partition changes (fence_broker applies the
    same rule itself, with the same `unclean_default`; this is for previews and for
    controllers that batch differently)."""
    active = frozenset(view.active_broker_ids()) - {broker_id}
    out = []
    for name in view.topic_names():
        t = view.topics[name]
        for p in t.partitions:
            choice = elect_after_loss(p, broker_id, active, t.unclean_or(unclean_default))
            if choice is not None:
                out.append(commands.partition_change(p.topic, p.partition, p.partition_epoch,
                                                     choice[0], choice[1],
                                                     leader_epoch=p.leader_epoch))
    return out
