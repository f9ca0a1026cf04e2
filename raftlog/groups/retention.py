"""When an empty group's committed offsets expire (Kafka's offsets.retention.minutes, KIP-211).

Owns the rule, nothing else: a group with members never expires; a group without members expires
`retention_ms` after it was last active — the later of its last offset commit and the moment it
became empty. Both instants are wall-clock ms and both are durable (commit_ms in each offset
record, an "empty since" record in __consumer_offsets), so the coordinator that loads a partition
after a failover or a restart resumes each group's clock instead of restarting or shortening it.

Pure and synchronous: the caller passes the clock and membership, and does the IO (tombstones,
the Raft group delete) in raftlog/groups/service.py. Imports nothing from raftlog.
"""
from __future__ import annotations

from typing import Callable, Iterable


class Retention:
    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.last_active_ms: dict[str, int] = {}

    def touch(self, group: str, at_ms: int) -> None:
        """`group` was active at `at_ms` (a commit, or it became empty); never moves back."""
        prev = self.last_active_ms.get(group)
        if prev is None or at_ms > prev:
            self.last_active_ms[group] = at_ms

    def forget(self, groups: Iterable[str]) -> None:
        for g in list(groups):
            self.last_active_ms.pop(g, None)

    def expired(self, now_ms: int, has_members: Callable[[str], bool]) -> list[str]:
        """Groups without members whose last activity is `retention_ms` old or older."""
        return sorted(g for g, t in self.last_active_ms.items()
                      if now_ms - t >= self.retention_ms and not has_members(g))
