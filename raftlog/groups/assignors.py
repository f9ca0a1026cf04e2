"""Partition assignors: pure functions from (members, partitions, previous) to an assignment.

Owns the three strategies a group may use (the coordinator computes assignments server-side,
as in Kafka's KIP-848):

- ``range``: per topic, the members subscribed to it (sorted by id) get contiguous ranges; the
  first ``n % m`` members get one extra (Kafka's RangeAssignor);
- ``roundrobin``: every partition of every subscribed topic, sorted by (topic, partition), dealt
  in turn to the members (sorted) that subscribe to its topic (Kafka's RoundRobinAssignor);
- ``sticky``: keep each member's previous partitions where balance allows, give unowned ones to
  the least loaded member, then move partitions from overloaded members only until no member
  has two more than another that could take them (Kafka's StickyAssignor in spirit).

Pure: stdlib only; deterministic (every iteration is sorted), so table tests pin the output.
A partition is never in two members' lists.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

TP = tuple[str, int]
Assignment = dict[str, list[TP]]

STRATEGIES = ("range", "roundrobin", "sticky")


def assign(strategy: str, subscriptions: Mapping[str, Sequence[str]],
           partitions: Mapping[str, int],
           previous: Mapping[str, Sequence[TP]] | None = None) -> Assignment:
    """`subscriptions`: member -> topics; `partitions`: topic -> partition count (topics missing
    here are ignored); `previous`: member -> partitions (sticky only)."""
    if strategy == "range":
        return range_assign(subscriptions, partitions)
    if strategy == "roundrobin":
        return roundrobin_assign(subscriptions, partitions)
    if strategy == "sticky":
        return sticky_assign(subscriptions, partitions, previous or {})
    raise ValueError(f"unknown assignment strategy {strategy!r} (known: {', '.join(STRATEGIES)})")


def _empty(subscriptions: Mapping[str, Sequence[str]]) -> Assignment:
    return {m: [] for m in sorted(subscriptions)}


def range_assign(subscriptions: Mapping[str, Sequence[str]],
                 partitions: Mapping[str, int]) -> Assignment:
    out = _empty(subscriptions)
    topics = sorted({t for ts in subscriptions.values() for t in ts if t in partitions})
    for t in topics:
        members = sorted(m for m, ts in subscriptions.items() if t in ts)
        n, k = partitions[t], len(members)
        base, extra = divmod(n, k)
        start = 0
        for i, m in enumerate(members):
            size = base + (1 if i < extra else 0)
            out[m].extend((t, p) for p in range(start, start + size))
            start += size
    return {m: sorted(v) for m, v in out.items()}


def _all_partitions(subscriptions: Mapping[str, Sequence[str]],
                    partitions: Mapping[str, int]) -> list[TP]:
    topics = sorted({t for ts in subscriptions.values() for t in ts if t in partitions})
    return [(t, p) for t in topics for p in range(partitions[t])]


def roundrobin_assign(subscriptions: Mapping[str, Sequence[str]],
                      partitions: Mapping[str, int]) -> Assignment:
    out = _empty(subscriptions)
    members = sorted(subscriptions)
    if not members:
        return out
    i = 0
    for tp in _all_partitions(subscriptions, partitions):
        for _ in range(len(members)):        # next member (circularly) subscribed to the topic
            m = members[i % len(members)]
            i += 1
            if tp[0] in subscriptions[m]:
                out[m].append(tp)
                break
    return {m: sorted(v) for m, v in out.items()}


def sticky_assign(subscriptions: Mapping[str, Sequence[str]], partitions: Mapping[str, int],
                  previous: Mapping[str, Sequence[TP]]) -> Assignment:
    out: dict[str, set[TP]] = {m: set() for m in sorted(subscriptions)}
    subs = {m: set(ts) for m, ts in subscriptions.items()}
    every = _all_partitions(subscriptions, partitions)
    valid = set(every)
    owner: dict[TP, str] = {}
    # 1. Keep what each member had and may still have (first claim wins on a conflict).
    for m in sorted(previous):
        if m not in out:
            continue
        for tp in sorted(previous[m]):
            tp = (tp[0], tp[1])
            if tp in valid and tp not in owner and tp[0] in subs[m]:
                owner[tp] = m
                out[m].add(tp)
    eligible = {t: sorted(m for m in out if t in subs[m]) for t in {tp[0] for tp in every}}

    def least(candidates: list[str]) -> str:
        return min(candidates, key=lambda m: (len(out[m]), m))

    # 2. Unowned partitions go to the least loaded member that subscribes to their topic.
    for tp in every:
        if tp not in owner:
            m = least(eligible[tp[0]])
            owner[tp] = m
            out[m].add(tp)
    # 3. Move partitions off overloaded members, one at a time, until balanced.
    while True:
        moved = False
        for src in sorted(out, key=lambda m: (-len(out[m]), m)):
            best: tuple[int, str, TP] | None = None
            for tp in sorted(out[src]):
                dst = least(eligible[tp[0]])
                if len(out[dst]) + 1 < len(out[src]):
                    cand = (len(out[dst]), dst, tp)
                    if best is None or cand < best:
                        best = cand
            if best is not None:
                _, dst, tp = best
                out[src].remove(tp)
                out[dst].add(tp)
                moved = True
                break
        if not moved:
            break
    return {m: sorted(v) for m, v in out.items()}
