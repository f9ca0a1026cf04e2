"""What a consumer reads and where it stands: assignment, positions, resets, pauses.

Owns: the set of assigned partitions and, per partition, the position (next offset to hand to
the user), a pending reset strategy, the last high watermark / log start seen, the paused flag
and a `generation` bumped by every seek so fetches issued for an old position are dropped.
Pure: no IO, no asyncio; imports only the stdlib and the client's structs.

This is the seam for consumer groups: today `assign_from_user()` sets the assignment (manual
`Consumer.assign`); the group coordinator will call `assign_from_group()` with the partitions of
each generation, and the fetcher will not need to change.
"""
from __future__ import annotations

from typing import Callable, Iterable

from raftlog.client.structs import TopicPartition

RESET_EARLIEST = "earliest"
RESET_LATEST = "latest"
RESET_NONE = "none"
RESET_STRATEGIES = (RESET_EARLIEST, RESET_LATEST, RESET_NONE)
# list-offsets timestamps for the strategies
RESET_TIMESTAMP = {RESET_EARLIEST: -2, RESET_LATEST: -1}


class PartitionState:
    __slots__ = ("position", "reset", "highwater", "log_start", "paused", "generation")

    def __init__(self, reset: str) -> None:
        self.position: int | None = None   # None until seek or reset gives one
        self.reset: str | None = reset     # strategy to use when position is None
        self.highwater = -1
        self.log_start = -1
        self.paused = False
        self.generation = 0

    @property
    def fetchable(self) -> bool:
        return self.position is not None and not self.paused


class SubscriptionState:
    def __init__(self, default_reset: str = RESET_LATEST) -> None:
        if default_reset not in RESET_STRATEGIES:
            raise ValueError(f"auto_offset_reset must be one of {RESET_STRATEGIES}, "
                             f"got {default_reset!r}")
        self.default_reset = default_reset
        self._states: dict[TopicPartition, PartitionState] = {}
        self.source: str | None = None  # "user" (assign) or "group"
        self.on_change: Callable[[], None] = lambda: None  # the fetcher's wake-up

    # -- assignment ---------------------------------------------------------------------------
    def assign_from_user(self, partitions: Iterable[TopicPartition]) -> None:
        self._assign(partitions, "user")

    def assign_from_group(self, partitions: Iterable[TopicPartition]) -> None:
        """For the group coordinator (groups issue): same state, different owner."""
        self._assign(partitions, "group")

    def _assign(self, partitions: Iterable[TopicPartition], source: str) -> None:
        new = {TopicPartition(*tp) for tp in partitions}
        self._states = {tp: self._states.get(tp) or PartitionState(self.default_reset)
                        for tp in sorted(new)}
        self.source = source
        self.on_change()

    def unsubscribe(self) -> None:
        self._states = {}
        self.source = None
        self.on_change()

    def assigned(self) -> list[TopicPartition]:
        return list(self._states)

    def is_assigned(self, tp: TopicPartition) -> bool:
        return tp in self._states

    def state(self, tp: TopicPartition) -> PartitionState:
        st = self._states.get(tp)
        if st is None:
            raise KeyError(tp)
        return st

    def states(self) -> Iterable[tuple[TopicPartition, PartitionState]]:
        return self._states.items()

    # -- positions ----------------------------------------------------------------------------
    def seek(self, tp: TopicPartition, offset: int) -> None:
        st = self.state(tp)
        st.position = offset
        st.reset = None
        st.generation += 1
        self.on_change()

    def request_reset(self, tp: TopicPartition, strategy: str | None = None) -> None:
        st = self.state(tp)
        st.position = None
        st.reset = strategy or self.default_reset
        st.generation += 1
        self.on_change()

    def needs_reset(self) -> list[TopicPartition]:
        return [tp for tp, st in self._states.items() if st.position is None]

    def pause(self, tp: TopicPartition) -> None:
        self.state(tp).paused = True

    def resume(self, tp: TopicPartition) -> None:
        self.state(tp).paused = False
        self.on_change()
