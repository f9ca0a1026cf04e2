"""Pure replication arithmetic: the high watermark and the ISR verdicts of a partition leader.

Owns: `high_watermark()`, the one rule for what is committed, and `isr_changes()`, the one rule
for which followers leave or join the ISR. Pure functions of their arguments (time is passed in);
imports nothing from raftlog but plain values, never asyncio, storage or meta.

Rules (architecture.md, Replication; Kafka KIP-101/KIP-497):
- HW = min log-end offset over the ISR, counting only followers whose position is known in the
  current leader epoch; it never moves backwards, and it moves at all only once it covers a
  batch of the current leader epoch (offset >= `epoch_start_offset`), so an old leader's
  uncommitted suffix is not declared committed by a new leader by accident.
- a follower leaves the ISR when it has not been caught up to the leader's log end for
  `lag_max_ms`; it joins when its position reaches the HW and the current epoch's start.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FollowerProgress:
    """What the leader knows of one follower in the current leader epoch."""

    log_end_offset: int = -1          # -1: unknown until it fetches in this epoch
    last_caught_up_ms: int = 0        # last time its position reached the leader's log end
    last_fetch_ms: int = 0
    last_fetch_leader_leo: int = 0    # leader's log end at the time of its previous fetch


def high_watermark(leader_id: int, leader_leo: int, isr: tuple[int, ...],
                   progress: dict[int, FollowerProgress], current_hw: int,
                   epoch_start_offset: int) -> int:
    """The new high watermark; never lower than `current_hw`."""
    candidate = leader_leo
    for b in isr:
        if b == leader_id:
            continue
        p = progress.get(b)
        if p is None or p.log_end_offset < 0:
            return current_hw  # an ISR member's position is unknown: cannot advance
        if p.log_end_offset < candidate:
            candidate = p.log_end_offset
    if candidate <= epoch_start_offset:
        return current_hw      # nothing of this epoch is covered yet
    return candidate if candidate > current_hw else current_hw


def record_fetch(p: FollowerProgress, fetch_offset: int, leader_leo: int, now_ms: int) -> None:
    """Update a follower's progress from a fetch at `fetch_offset` (its log end offset).

    As Kafka does, a follower counts as caught up at this fetch if it reached the leader's log
    end as of its previous fetch: a busy partition never has a follower exactly at the end.
    """
    p.log_end_offset = fetch_offset
    if fetch_offset >= leader_leo:
        p.last_caught_up_ms = now_ms
    elif fetch_offset >= p.last_fetch_leader_leo and p.last_fetch_ms > p.last_caught_up_ms:
        p.last_caught_up_ms = p.last_fetch_ms
    p.last_fetch_leader_leo = leader_leo
    p.last_fetch_ms = now_ms


def isr_changes(leader_id: int, replicas: tuple[int, ...], isr: tuple[int, ...],
                progress: dict[int, FollowerProgress], hw: int, epoch_start_offset: int,
                now_ms: int, lag_max_ms: int, eligible: frozenset[int]) -> tuple[int, ...] | None:
    """The ISR the leader should ask the controller for, or None when it should stay.

    `eligible`: brokers currently active (unfenced); fenced ones never join.
    """
    keep = []
    for b in isr:
        if b == leader_id:
            keep.append(b)
            continue
        p = progress.get(b)
        if p is not None and now_ms - p.last_caught_up_ms <= lag_max_ms:
            keep.append(b)
    for b in replicas:
        if b in isr or b == leader_id or b not in eligible:
            continue
        p = progress.get(b)
        if p is not None and p.log_end_offset >= hw and p.log_end_offset >= epoch_start_offset:
            keep.append(b)
    new = tuple(b for b in replicas if b in keep)
    return None if set(new) == set(isr) else new
