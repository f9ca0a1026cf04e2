"""The group coordinator's state machine: members, generations, sessions, reconciliation.

Owns the in-memory state of the groups this broker coordinates and every rule about them. Pure
and synchronous: the caller passes the clock (`now_ms`, monotonic) and partition counts, and does
the IO (Raft proposals, offset records) in raftlog/groups/service.py. So the whole protocol is
table-testable without a cluster (tests/groups/test_coordinator.py).

Protocol (server-side assignment, in the spirit of Kafka's KIP-848):

- A member joins with its subscription; the coordinator answers at once with a member id, the
  group generation and the member's *current* assignment (possibly empty while a rebalance is
  pending). Heartbeats carry the partitions the member owns right now and get the same answer.
- A membership or subscription change marks the group dirty; after `rebalance_delay_ms` (which
  coalesces a burst of joins) the service computes a *target* assignment with the group's
  assignor, commits it to Raft with `set_group_assignment` (generation + 1) and installs it.
- Reconciliation, two-phase: a member's current assignment is its target minus partitions some
  *other* member still holds (was told it has, or reports owning). A member that loses a
  partition revokes it, reports its smaller owned set, and only then does the new owner get it.
  So a partition is never held by two members, and members keep every partition that does not
  move (only moving partitions are revoked).
- Fencing: each member has the generation it was last told; an offset commit must carry exactly
  that generation (ILLEGAL_GENERATION otherwise) from a known member (UNKNOWN_MEMBER_ID), for
  partitions the member holds (ILLEGAL_GENERATION for one it has released).
  Members past their session deadline, or holding revoked partitions past their rebalance
  timeout, are removed (their partitions are free at once).
- Static membership: a join with a known `group_instance_id` takes over that member (same member
  id, same assignment, no rebalance) as long as it comes back within its session timeout.
- After a coordinator move, `restore()` rebuilds the group from its last Raft-committed
  assignment: members keep their ids, generation and partitions, and just keep heartbeating.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from raftlog.errors import ErrorCode, error
from raftlog.groups import assignors

TP = tuple[str, int]

EMPTY = "Empty"
STABLE = "Stable"
REBALANCING = "Rebalancing"     # a new target is pending or members are still reconciling

DEFAULT_SESSION_TIMEOUT_MS = 10_000
DEFAULT_REBALANCE_TIMEOUT_MS = 60_000
FENCED_IDS_MAX = 1000           # replaced static member ids remembered per group


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    host: str
    client_id: str
    topics: tuple[str, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    strategy: str
    deadline_ms: int
    reported: frozenset[TP] = frozenset()     # what the member said it owns, last heartbeat
    told: frozenset[TP] = frozenset()         # what we last told it it owns
    generation: int = 0                        # the generation we last told it
    revoke_deadline_ms: int | None = None      # must release revoked partitions before this
    topics_known: bool = True                  # False for members restored from Raft
    timeouts_known: bool = True                # False for them too, until a heartbeat says

    @property
    def held(self) -> frozenset[TP]:
        return self.reported | self.told

    def describe(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "group_instance_id": self.instance_id,
                "host": self.host, "client_id": self.client_id, "topics": list(self.topics),
                "assignment": [list(tp) for tp in sorted(self.told)],
                "generation": self.generation}


@dataclass
class Group:
    name: str
    generation: int = 0
    protocol: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, frozenset[TP]] = field(default_factory=dict)
    dirty_since_ms: int | None = None          # membership changed: a new target is due
    changes: int = 0                           # count of mark_dirty calls (see install)
    sizes: dict[str, int] = field(default_factory=dict)   # partition counts the target used
    # The `sizes_token` (metadata version) `sizes` was last compared under (see due).
    sizes_checked: object = None
    proposing: bool = False                    # a target is being committed to Raft
    # Member ids replaced by a newer process with the same group_instance_id -> that id.
    fenced_ids: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if not self.members:
            return EMPTY
        if self.dirty_since_ms is not None or self.proposing:
            return REBALANCING
        for m in self.members.values():
            if m.told != self.target.get(m.member_id, frozenset()) or m.reported != m.told:
                return REBALANCING
        return STABLE

    def mark_dirty(self, now_ms: int) -> None:
        self.changes += 1
        self.sizes_checked = None          # subscriptions may have changed: compare again
        if self.dirty_since_ms is None:
            self.dirty_since_ms = now_ms

    def held_by_others(self, member_id: str) -> set[TP]:
        out: set[TP] = set()
        for m in self.members.values():
            if m.member_id != member_id:
                out |= m.held
        return out

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.topics}


class Coordinator:
    """Every group coordinated by this broker. `now_ms` is a monotonic clock in ms."""

    def __init__(self, rebalance_delay_ms: int = 100, min_session_timeout_ms: int = 500,
                 max_session_timeout_ms: int = 300_000,
                 new_member_id: Callable[[str], str] | None = None) -> None:
        self.groups: dict[str, Group] = {}
        self.rebalance_delay_ms = rebalance_delay_ms
        self.min_session_timeout_ms = min_session_timeout_ms
        self.max_session_timeout_ms = max_session_timeout_ms
        self._new_member_id = new_member_id or (lambda client_id: f"{client_id}-{uuid.uuid4().hex}")

    def group(self, name: str) -> Group:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = Group(name)
        return g

    # -- membership -------------------------------------------------------------------------
    def join(self, group: str, member_id: str | None, instance_id: str | None,
             topics: Iterable[str], session_timeout_ms: int, rebalance_timeout_ms: int,
             strategy: str, host: str, client_id: str, owned: Iterable[TP],
             now_ms: int) -> dict[str, Any]:
        if strategy not in assignors.STRATEGIES:
            raise error(ErrorCode.INVALID_REQUEST,
                        f"unknown assignment strategy {strategy!r} "
                        f"(known: {', '.join(assignors.STRATEGIES)})")
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            raise error(ErrorCode.INVALID_REQUEST,
                        f"session_timeout_ms {session_timeout_ms} is outside the broker's "
                        f"[{self.min_session_timeout_ms}, {self.max_session_timeout_ms}]")
        topics = tuple(sorted(set(topics)))
        g = self.group(group)
        m = None
        if instance_id:
            m = next((x for x in g.members.values() if x.instance_id == instance_id), None)
            if m is not None and member_id != m.member_id:
                self._replace_static(g, m, client_id)
        if m is None and member_id:
            m = g.members.get(member_id)
        if m is None:
            m = Member(self._new_member_id(client_id or "member"), instance_id or None, host,
                       client_id, topics, session_timeout_ms, rebalance_timeout_ms, strategy,
                       now_ms + session_timeout_ms)
            g.members[m.member_id] = m
            g.mark_dirty(now_ms)
        else:
            if m.topics != topics and (m.topics_known
                                       or not set(topics) <= g.subscribed_topics()):
                g.mark_dirty(now_ms)
            if m.strategy != strategy:
                g.mark_dirty(now_ms)
            m.topics, m.topics_known, m.strategy = topics, True, strategy
            m.session_timeout_ms, m.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
            m.host, m.client_id = host, client_id
        return self._touch_and_answer(g, m, owned, now_ms)

    def _replace_static(self, g: Group, m: Member, client_id: str) -> None:
        """A new process joined with a known group_instance_id: it takes over the member's
        place and assignment without a rebalance under a new member id, and the old id is
        fenced (KIP-345), so two processes never act as one member."""
        old = m.member_id
        m.member_id = self._new_member_id(client_id or "member")
        del g.members[old]
        g.members[m.member_id] = m
        if old in g.target:
            g.target[m.member_id] = g.target.pop(old)
        g.fenced_ids[old] = m.instance_id or ""
        while len(g.fenced_ids) > FENCED_IDS_MAX:
            g.fenced_ids.pop(next(iter(g.fenced_ids)))

    def check_fenced(self, g: Group | None, member_id: str | None) -> None:
        if g is not None and member_id and member_id in g.fenced_ids:
            raise error(ErrorCode.FENCED_INSTANCE_ID,
                        f"member {member_id!r} was replaced by a newer process with "
                        f"group_instance_id {g.fenced_ids[member_id]!r}")

    def heartbeat(self, group: str, member_id: str, generation: int, owned: Iterable[TP],
                  now_ms: int, topics: Iterable[str] | None = None,
                  timeouts: tuple[int, int] | None = None) -> dict[str, Any]:
        """`timeouts` (session, rebalance ms, as the member joined with): adopted by a member
        restored from Raft, which until then has the defaults -- a member with a short session
        that died right after a coordinator move is then noticed in its own session timeout."""
        g = self.groups.get(group)
        self.check_fenced(g, member_id)
        m = g.members.get(member_id) if g is not None else None
        if g is None or m is None:
            raise error(ErrorCode.UNKNOWN_MEMBER_ID,
                        f"member {member_id!r} is not in group {group!r} (expired or left): "
                        "join again")
        if generation > g.generation:
            raise error(ErrorCode.ILLEGAL_GENERATION,
                        f"generation {generation} is ahead of group {group!r} ({g.generation})")
        if topics is not None:
            ts = tuple(sorted(set(topics)))
            if ts != m.topics:
                # A member restored from Raft knows only the topics of its partitions: learning
                # the rest matters only when it brings a topic the group does not read yet.
                if m.topics_known or not set(ts) <= g.subscribed_topics():
                    g.mark_dirty(now_ms)
                m.topics = ts
            m.topics_known = True
        if timeouts is not None and not m.timeouts_known \
                and self.min_session_timeout_ms <= timeouts[0] <= self.max_session_timeout_ms \
                and timeouts[1] > 0:
            m.session_timeout_ms, m.rebalance_timeout_ms = timeouts
            m.timeouts_known = True
        return self._touch_and_answer(g, m, owned, now_ms)

    def leave(self, group: str, member_id: str | None, instance_id: str | None,
              now_ms: int) -> bool:
        g = self.groups.get(group)
        if g is None:
            return False
        if member_id and member_id in g.fenced_ids:
            return False          # a fenced process leaving must not remove its successor
        m = g.members.get(member_id or "")
        if m is None and instance_id:
            m = next((x for x in g.members.values() if x.instance_id == instance_id), None)
        if m is None:
            return False
        self._remove(g, m, now_ms)
        return True

    def _remove(self, g: Group, m: Member, now_ms: int) -> None:
        del g.members[m.member_id]
        g.mark_dirty(now_ms)

    def _touch_and_answer(self, g: Group, m: Member, owned: Iterable[TP],
                          now_ms: int) -> dict[str, Any]:
        m.deadline_ms = now_ms + m.session_timeout_ms
        m.reported = frozenset((str(t), int(p)) for t, p in owned)
        target = g.target.get(m.member_id, frozenset())
        current = frozenset(target - g.held_by_others(m.member_id))
        if m.reported - current:
            if m.revoke_deadline_ms is None:
                m.revoke_deadline_ms = now_ms + m.rebalance_timeout_ms
        else:
            m.revoke_deadline_ms = None
        m.told = current
        m.generation = g.generation
        return {"member_id": m.member_id, "generation": g.generation,
                "protocol": g.protocol,
                "assignment": [list(tp) for tp in sorted(current)],
                "rebalance_in_progress": g.state != STABLE,
                "session_timeout_ms": m.session_timeout_ms}

    # -- timers -----------------------------------------------------------------------------
    def expire(self, now_ms: int) -> list[tuple[str, str, str]]:
        """Remove members whose session lapsed or who hold revoked partitions too long."""
        gone = []
        for g in list(self.groups.values()):
            for m in list(g.members.values()):
                why = None
                if now_ms > m.deadline_ms:
                    why = "session timeout"
                elif m.revoke_deadline_ms is not None and now_ms > m.revoke_deadline_ms:
                    why = "did not release revoked partitions within its rebalance timeout"
                if why:
                    self._remove(g, m, now_ms)
                    gone.append((g.name, m.member_id, why))
        return gone

    def due(self, now_ms: int, sizes: Callable[[str], int | None],
            sizes_token: object = None) -> list[Group]:
        """Groups that need a new target now: dirty for `rebalance_delay_ms`, or a subscribed
        topic changed its partition count (created, deleted, grown). Partition counts change
        only with the metadata: given a `sizes_token` that changes with it, a group's counts
        are compared once per token (and again after each new target), not on every tick."""
        out = []
        for g in self.groups.values():
            if g.proposing:
                continue
            if g.dirty_since_ms is None and g.members and \
                    (sizes_token is None or g.sizes_checked is not sizes_token):
                g.sizes_checked = sizes_token
                for t in g.subscribed_topics():
                    if sizes(t) != g.sizes.get(t):
                        g.mark_dirty(now_ms - self.rebalance_delay_ms)
                        break
            if g.dirty_since_ms is not None and now_ms - g.dirty_since_ms >= self.rebalance_delay_ms:
                out.append(g)
        return out

    # -- rebalancing ------------------------------------------------------------------------
    @staticmethod
    def choose_protocol(g: Group) -> str:
        votes: dict[str, int] = {}
        for m in g.members.values():
            votes[m.strategy] = votes.get(m.strategy, 0) + 1
        if not votes:
            return g.protocol or "range"
        return min(votes, key=lambda s: (-votes[s], s))

    def compute_target(self, g: Group, sizes: Callable[[str], int | None]
                       ) -> tuple[int, str, dict[str, list[TP]], dict[str, int]]:
        """(new generation, protocol, member -> partitions, topic sizes used). Not installed:
        the caller commits it to Raft first, then calls `install`."""
        protocol = self.choose_protocol(g)
        counts = {t: n for t in g.subscribed_topics() if (n := sizes(t)) is not None}
        subs = {mid: m.topics for mid, m in g.members.items()}
        prev = {mid: sorted(g.target.get(mid, frozenset()) | m.told)
                for mid, m in g.members.items()}
        return (g.generation + 1, protocol, assignors.assign(protocol, subs, counts, prev),
                counts)

    @staticmethod
    def install(g: Group, generation: int, protocol: str, assignment: dict[str, list[TP]],
                sizes: dict[str, int], changes_at_compute: int) -> None:
        g.generation = generation
        g.protocol = protocol
        g.target = {m: frozenset((t, p) for t, p in tps) for m, tps in assignment.items()
                    if m in g.members}
        g.sizes = dict(sizes)
        g.sizes_checked = None
        # A change that arrived while the proposal was in flight keeps the group dirty.
        # (Counted, not timed: dirty_since_ms keeps the first change, so a join or leave during
        # the proposal would leave it equal and be lost — a joiner never assigned, a leaver's
        # partitions owned by nobody.)
        if g.changes == changes_at_compute:
            g.dirty_since_ms = None

    def restore(self, name: str, generation: int, protocol: str,
                assignment: dict[str, Iterable[TP]], now_ms: int,
                sizes: Callable[[str], int | None]) -> Group:
        """A group this broker now coordinates, from its last Raft-committed assignment."""
        g = Group(name, generation, protocol)
        for mid, tps in assignment.items():
            owned = frozenset((t, p) for t, p in tps)
            g.members[mid] = Member(mid, None, "", "", tuple(sorted({t for t, _ in owned})),
                                    DEFAULT_SESSION_TIMEOUT_MS, DEFAULT_REBALANCE_TIMEOUT_MS,
                                    protocol or "range", now_ms + DEFAULT_SESSION_TIMEOUT_MS,
                                    reported=owned, told=owned, generation=generation,
                                    topics_known=False, timeouts_known=False)
            g.target[mid] = owned
        g.sizes = {t: n for t in g.subscribed_topics() if (n := sizes(t)) is not None}
        self.groups[name] = g
        return g

    # -- fencing ----------------------------------------------------------------------------
    def check_commit(self, group: str, member_id: str, generation: int,
                     tps: Iterable[TP] = (), instance_id: str | None = None) -> None:
        g = self.groups.get(group)
        if not member_id:
            if g is not None and g.members:
                raise error(ErrorCode.NON_EMPTY_GROUP,
                            f"group {group!r} has {len(g.members)} active members: only they "
                            "may commit (stop them first to reset offsets)")
            return
        self.check_fenced(g, member_id)
        m = g.members.get(member_id) if g is not None else None
        if m is None:
            raise error(ErrorCode.UNKNOWN_MEMBER_ID,
                        f"member {member_id!r} is not in group {group!r}: the group has "
                        "rebalanced without it; rejoin")
        if instance_id and m.instance_id and instance_id != m.instance_id:
            raise error(ErrorCode.FENCED_INSTANCE_ID,
                        f"member {member_id!r} of group {group!r} is group_instance_id "
                        f"{m.instance_id!r}, not {instance_id!r}")
        if generation != m.generation:
            raise error(ErrorCode.ILLEGAL_GENERATION,
                        f"commit for generation {generation}, but member {member_id!r} is at "
                        f"generation {m.generation} of group {group!r}: the group has already "
                        "rebalanced")
        # Only for partitions it holds: once a member has reported releasing a partition its
        # next owner may have started from the committed offset, and a late commit from the
        # old owner would move that offset under it (backwards, or past unprocessed records).
        foreign = sorted(set(tps) - m.held)
        if foreign:
            raise error(ErrorCode.ILLEGAL_GENERATION,
                        f"member {member_id!r} of group {group!r} does not own "
                        f"{', '.join(f'{t}-{p}' for t, p in foreign[:5])}"
                        f"{' ...' if len(foreign) > 5 else ''}: reassigned in a rebalance")

    def describe(self, name: str) -> dict[str, Any]:
        g = self.groups.get(name)
        if g is None:
            return {"group": name, "state": "Dead", "generation": 0, "protocol": "",
                    "members": []}
        return {"group": name, "state": g.state, "generation": g.generation,
                "protocol": g.protocol,
                "members": [g.members[m].describe() for m in sorted(g.members)]}
