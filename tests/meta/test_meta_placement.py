"""Placement and elections: balance of new topics, Kafka's leader choice, and that every change
the controller helpers emit applies cleanly to the state machine they were computed from."""
from __future__ import annotations

from collections import Counter

import pytest

from raftlog import errors
from raftlog.meta import commands as C
from raftlog.meta import names, placement
from raftlog.meta.state import MetadataState
from raftlog.meta.view import NO_LEADER


@pytest.mark.parametrize("n,rf,rounds", [(1, 1, 3), (3, 3, 1), (3, 2, 4), (5, 3, 2), (6, 3, 5),
                                         (4, 1, 2)])
def test_place_replicas_spreads_leaders_and_replicas_evenly(n: int, rf: int, rounds: int) -> None:
    brokers = [10 * (i + 1) for i in range(n)]
    plan = placement.place_replicas(list(reversed(brokers)), n * rounds, rf)
    assert len(plan) == n * rounds
    for reps in plan:
        assert len(reps) == rf and len(set(reps)) == rf and set(reps) <= set(brokers)
    leaders = Counter(r[0] for r in plan)
    replicas = Counter(b for r in plan for b in r)
    assert set(leaders.values()) == {rounds}
    assert set(replicas.values()) == {rounds * rf}
    if n > 2 and rounds > 1 and rf > 1:
        # Followers do not always trail the same leader (the shift grows every n partitions).
        followers_of_first = {tuple(r[1:]) for r in plan if r[0] == brokers[0]}
        assert len(followers_of_first) > 1


def test_place_replicas_starts_at_the_least_loaded_broker() -> None:
    plan = placement.place_replicas([1, 2, 3], 1, 2, {1: 5, 2: 1, 3: 4})
    assert plan[0][0] == 2
    assert placement.place_replicas([1, 2, 3], 4, 2) == placement.place_replicas([3, 1, 2], 4, 2)
    # Successive single-partition topics rotate their leader when the load is fed back.
    s = _cluster(3)
    leaders = []
    for i in range(6):
        plan = placement.place_replicas(s.view.active_broker_ids(), 1, 2,
                                        placement.leader_load(s.view))
        assert C.is_ok(s.apply(C.create_topic(f"t{i}", f"T{i}", plan)))
        leaders.append(plan[0][0])
    assert Counter(leaders) == {1: 2, 2: 2, 3: 2}


def test_place_replicas_refuses_impossible_requests() -> None:
    with pytest.raises(errors.for_code("INVALID_REPLICATION_FACTOR")):
        placement.place_replicas([1, 2], 3, 3)
    with pytest.raises(errors.for_code("INVALID_REPLICATION_FACTOR")):
        placement.place_replicas([], 1, 1)
    with pytest.raises(errors.for_code("INVALID_PARTITIONS")):
        placement.place_replicas([1], 0, 1)


def test_choose_leader() -> None:
    assert placement.choose_leader([3, 1, 2], {1, 2}, {1, 2, 3}, False) == 1
    assert placement.choose_leader([3, 1, 2], {3, 1}, {1, 2}, False) == 1
    assert placement.choose_leader([3, 1, 2], {3}, {1, 2}, False) == NO_LEADER
    assert placement.choose_leader([3, 1, 2], {3}, {1, 2}, True) == 1
    assert placement.choose_leader([3, 1, 2], {3}, set(), True) == NO_LEADER


def _cluster(n: int) -> MetadataState:
    s = MetadataState()
    for b in range(1, n + 1):
        assert C.is_ok(s.apply(C.register_broker(b, f"h{b}", 9000 + b, "i", 0)))
        assert C.is_ok(s.apply(C.unfence_broker(b, b)))
    return s


def test_controller_helpers_emit_changes_that_apply() -> None:
    s = _cluster(3)
    plan = placement.place_replicas([1, 2, 3], 6, 3)
    assert C.is_ok(s.apply(C.create_topic("t", "T", plan)))
    # Preview of a failure equals what fence_broker then does.
    preview = placement.broker_failure_changes(s.view, 1)
    assert {(c["topic"], c["partition"]) for c in preview} == {("t", p) for p in range(6)}
    assert C.is_ok(s.apply(C.fence_broker(1, 1)))
    for c in preview:
        p = s.view.partition(c["topic"], c["partition"])
        assert (p.leader, list(p.isr)) == (c["leader"], list(c["isr"]))
    assert placement.preferred_leader_moves(s.view) == []          # broker 1 is fenced
    # Broker 1 comes back and catches up: the leader lets it into the ISR.
    assert C.is_ok(s.apply(C.unfence_broker(1, 1)))
    for p in s.view.all_partitions():
        assert C.is_ok(s.apply(C.change_partition("t", p.partition, p.partition_epoch, p.leader,
                                                  p.replicas)))
    moves = placement.preferred_leader_moves(s.view)
    assert sorted(c["partition"] for c in moves) == [p for p in range(6) if plan[p][0] == 1]
    result = C.unwrap(s.apply(C.elect_leaders(moves)))
    assert all(r[0] == "ok" for r in result["results"])
    assert all(p.leader == p.replicas[0] for p in s.view.all_partitions())
    assert placement.preferred_leader_moves(s.view) == []


def test_leaderless_sweep_after_explicit_leaderless_change() -> None:
    s = _cluster(2)
    assert C.is_ok(s.apply(C.create_topic("t", "T", [[1, 2]])))
    assert C.is_ok(s.apply(C.change_partition("t", 0, 0, NO_LEADER, [1, 2])))
    changes = placement.leaderless_elections(s.view)
    assert [(c["leader"], c["isr"]) for c in changes] == [(1, [1, 2])]
    assert C.unwrap(s.apply(C.elect_leaders(changes)))["results"][0][0] == "ok"
    assert s.view.leader_of("t", 0) == 1 and placement.leaderless_elections(s.view) == []


@pytest.mark.parametrize("name,ok", [("a", True), ("A-b_c.9", True), ("x" * 249, True),
                                     ("", False), (".", False), ("..", False), ("x" * 250, False),
                                     ("a b", False), ("ü", False), (3, False)])
def test_topic_names(name: object, ok: bool) -> None:
    assert (names.topic_name_error(name) is None) == ok


def test_group_names_and_collisions() -> None:
    assert names.group_name_error("g-1 x") is None
    assert names.group_name_error("") and names.group_name_error("a\nb")
    assert names.collision_key("a.b") == names.collision_key("a_b")
