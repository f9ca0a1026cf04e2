"""Assignors: pure tables (Kafka's javadoc examples for range and roundrobin) and sticky rules."""
import itertools
import random

import pytest

from raftlog.groups import assignors

T2 = {"t0": 3, "t1": 3}
BOTH = {"C0": ["t0", "t1"], "C1": ["t0", "t1"]}


def tps(s):
    return [(t, int(p)) for t, p in (x.split("/") for x in s.split())]


@pytest.mark.parametrize("strategy, subs, parts, want", [
    # Kafka RangeAssignor javadoc: C0:[t0p0,t0p1,t1p0,t1p1], C1:[t0p2,t1p2]
    ("range", BOTH, T2, {"C0": tps("t0/0 t0/1 t1/0 t1/1"), "C1": tps("t0/2 t1/2")}),
    # Kafka RoundRobinAssignor javadoc: C0:[t0p0,t0p2,t1p1], C1:[t0p1,t1p0,t1p2]
    ("roundrobin", BOTH, T2, {"C0": tps("t0/0 t0/2 t1/1"), "C1": tps("t0/1 t1/0 t1/2")}),
    ("range", {"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 6},
     {"a": tps("t/0 t/1"), "b": tps("t/2 t/3"), "c": tps("t/4 t/5")}),
    ("roundrobin", {"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 6},
     {"a": tps("t/0 t/3"), "b": tps("t/1 t/4"), "c": tps("t/2 t/5")}),
    # more members than partitions: the last ones are idle
    ("range", {f"m{i}": ["t"] for i in range(7)}, {"t": 6},
     {**{f"m{i}": [("t", i)] for i in range(6)}, "m6": []}),
    # unequal subscriptions: roundrobin skips members not subscribed to a topic
    ("roundrobin", {"a": ["t0"], "b": ["t0", "t1"]}, {"t0": 2, "t1": 2},
     {"a": tps("t0/0"), "b": tps("t0/1 t1/0 t1/1")}),
    # unknown topics are ignored
    ("range", {"a": ["nope", "t"]}, {"t": 2}, {"a": tps("t/0 t/1")}),
    ("sticky", {"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 6},
     {"a": tps("t/0 t/3"), "b": tps("t/1 t/4"), "c": tps("t/2 t/5")}),
])
def test_tables(strategy, subs, parts, want):
    assert assignors.assign(strategy, subs, parts) == want


def test_sticky_keeps_owners_and_moves_only_what_balance_needs():
    prev = {"a": tps("t/0 t/1 t/2"), "b": tps("t/3 t/4 t/5")}
    subs = {"a": ["t"], "b": ["t"], "c": ["t"]}
    out = assignors.assign("sticky", subs, {"t": 6}, prev)
    assert sorted(len(v) for v in out.values()) == [2, 2, 2]
    moved = sum(1 for m in ("a", "b") for tp in prev[m] if tp not in out[m])
    assert moved == 2                                 # exactly the two c needs
    # a member leaves: the survivors keep everything they had
    out2 = assignors.assign("sticky", {"a": ["t"], "b": ["t"]}, {"t": 6}, out)
    for m in ("a", "b"):
        assert set(out[m]) <= set(out2[m])


def test_unknown_strategy():
    with pytest.raises(ValueError):
        assignors.assign("nope", {"a": ["t"]}, {"t": 1})


@pytest.mark.parametrize("strategy", assignors.STRATEGIES)
def test_random_cases_cover_every_partition_once_and_balance(strategy):
    rng = random.Random(7)
    for _ in range(200):
        topics = {f"t{i}": rng.randint(1, 8) for i in range(rng.randint(1, 3))}
        members = {f"m{i}": sorted(topics) for i in range(rng.randint(1, 9))}
        prev = {m: [(t, p) for t in topics for p in range(topics[t]) if rng.random() < 0.3]
                for m in members}
        out = assignors.assign(strategy, members, topics, prev)
        got = list(itertools.chain.from_iterable(out.values()))
        assert sorted(got) == sorted((t, p) for t in topics for p in range(topics[t]))
        if strategy != "range":   # range balances per topic, not overall
            sizes = [len(v) for v in out.values()]
            assert max(sizes) - min(sizes) <= 1
