"""The coordinator state machine with a fake clock: joins, generations, two-phase handover,
fencing, session expiry, static membership, restore after a coordinator move."""
import itertools

import pytest

from raftlog.errors import FencedInstanceIdError

from raftlog.errors import ErrorCode, RaftlogError
from raftlog.groups.coordinator import EMPTY, REBALANCING, STABLE, Coordinator

SIZES = {"t": 6}.get


class Harness:
    def __init__(self, delay=100):
        ids = itertools.count()
        self.c = Coordinator(rebalance_delay_ms=delay, new_member_id=lambda cid: f"m{next(ids)}")
        self.now = 0
        self.owned = {}      # member -> what the (well-behaved) client holds

    def join(self, instance=None, member=None, session=1000, strategy="range"):
        r = self.c.join("g", member, instance, ["t"], session, 5000, strategy, "h", "c",
                        self.owned.get(member, []), self.now)
        self.owned[r["member_id"]] = [tuple(tp) for tp in r["assignment"]]
        return r

    def hb(self, m):
        r = self.c.heartbeat("g", m, self.c.groups["g"].generation, self.owned.get(m, []),
                             self.now)
        self.owned[m] = [tuple(tp) for tp in r["assignment"]]
        return r

    def rebalance(self):
        """Advance past the delay and run every due rebalance as the service would."""
        self.now += 1000
        for g in self.c.due(self.now, SIZES):
            dirty = g.changes
            gen, proto, assignment, sizes = self.c.compute_target(g, SIZES)
            self.c.install(g, gen, proto, assignment, sizes, dirty)

    def settle(self, members, rounds=4):
        for _ in range(rounds):
            for m in members:
                self.hb(m)
        return {m: sorted(self.owned[m]) for m in members}


def no_overlap(owned):
    seen = set()
    for tps in owned.values():
        for tp in tps:
            assert tp not in seen, f"{tp} owned twice"
            seen.add(tp)
    return seen


def test_three_members_split_six_partitions():
    h = Harness()
    ms = [h.join()["member_id"] for _ in range(3)]
    assert h.c.groups["g"].state == REBALANCING
    h.rebalance()
    owned = h.settle(ms)
    assert sorted(len(v) for v in owned.values()) == [2, 2, 2]
    assert len(no_overlap(owned)) == 6
    assert h.c.groups["g"].state == STABLE
    assert h.c.groups["g"].generation == 1


def test_handover_is_two_phase_and_only_moving_partitions_are_revoked():
    h = Harness()
    a = h.join(strategy="sticky")["member_id"]
    h.rebalance()
    h.settle([a])
    assert len(h.owned[a]) == 6
    b = h.join(strategy="sticky")["member_id"]
    h.rebalance()
    # b heartbeats first: a still holds everything, so b gets nothing yet
    assert h.hb(b)["assignment"] == []
    before = set(h.owned[a])
    ra = h.hb(a)             # a is told to give up 3, keeps 3
    kept = {tuple(tp) for tp in ra["assignment"]}
    assert len(kept) == 3 and kept < before
    # a has not confirmed yet (its report still holds 6): b still gets nothing
    h.owned[a] = list(before)
    assert h.hb(b)["assignment"] == []
    h.owned[a] = list(kept)
    h.hb(a)                  # a confirms the release
    assert {tuple(tp) for tp in h.hb(b)["assignment"]} == before - kept
    assert h.c.groups["g"].state == REBALANCING   # until b confirms it holds them
    h.hb(b)
    assert h.c.groups["g"].state == STABLE


def test_session_expiry_frees_partitions_and_seventh_member_takes_over():
    h = Harness()
    ms = [h.join(session=1000)["member_id"] for _ in range(7)]
    h.rebalance()
    owned = h.settle(ms)
    idle = [m for m in ms if not owned[m]]
    assert len(idle) == 1
    victim = next(m for m in ms if owned[m])
    h.now += 500
    h.settle([m for m in ms if m != victim])
    h.now += 600                           # victim silent for 1100 ms > 1000
    gone = h.c.expire(h.now)
    assert [x[1] for x in gone] == [victim]
    h.rebalance()
    survivors = [m for m in ms if m != victim]
    owned = h.settle(survivors)
    assert len(no_overlap(owned)) == 6
    assert all(owned[m] for m in survivors)


def test_commit_fencing():
    h = Harness()
    a = h.join()["member_id"]
    h.rebalance()
    gen = h.hb(a)["generation"]
    h.c.check_commit("g", a, gen)
    with pytest.raises(RaftlogError) as e:
        h.c.check_commit("g", a, gen - 1)
    assert e.value.code is ErrorCode.ILLEGAL_GENERATION
    with pytest.raises(RaftlogError) as e:
        h.c.check_commit("g", "ghost", gen)
    assert e.value.code is ErrorCode.UNKNOWN_MEMBER_ID
    with pytest.raises(RaftlogError) as e:    # admin commits (no member) need an empty group
        h.c.check_commit("g", "", -1)
    assert e.value.code is ErrorCode.NON_EMPTY_GROUP
    b = h.join()["member_id"]
    h.rebalance()
    h.hb(a)                                   # a learns generation 2
    with pytest.raises(RaftlogError) as e:
        h.c.check_commit("g", a, gen)
    assert e.value.code is ErrorCode.ILLEGAL_GENERATION
    assert h.c.leave("g", a, None, h.now) and h.c.leave("g", b, None, h.now)
    assert h.c.groups["g"].state == EMPTY
    h.c.check_commit("g", "", -1)


def test_commit_only_for_partitions_the_member_holds():
    h = Harness()
    a = h.join(strategy="sticky")["member_id"]
    h.rebalance()
    h.settle([a])
    gen = h.c.groups["g"].generation
    h.c.check_commit("g", a, gen, [("t", 0), ("t", 5)])
    b = h.join(strategy="sticky")["member_id"]
    h.rebalance()
    r = h.hb(a)                                # told to give up half, still reports them all
    gen = r["generation"]
    moving = sorted(set((t, p) for t, p in [("t", i) for i in range(6)])
                    - {tuple(tp) for tp in r["assignment"]})
    assert moving
    h.c.check_commit("g", a, gen, moving)      # committing what it is about to revoke: fine
    h.hb(a)                                    # reports the smaller set: released
    with pytest.raises(RaftlogError) as e:     # a late commit of a released partition
        h.c.check_commit("g", a, gen, moving[:1])
    assert e.value.code is ErrorCode.ILLEGAL_GENERATION
    with pytest.raises(RaftlogError):
        h.c.check_commit("g", a, gen, [("other", 0)])
    h.settle([a, b])
    h.c.check_commit("g", b, h.c.groups["g"].generation, moving)


def test_membership_change_during_a_proposal_is_not_lost():
    h = Harness()
    a, b = h.join()["member_id"], h.join()["member_id"]
    h.now += 1000
    [g] = h.c.due(h.now, SIZES)
    changes = g.changes
    gen, proto, assignment, sizes = h.c.compute_target(g, SIZES)   # proposal in flight ...
    c = h.join()["member_id"]                                       # ... a third joins
    h.c.install(g, gen, proto, assignment, sizes, changes)
    assert g.state == REBALANCING and h.c.due(h.now + 1000, SIZES) == [g]
    h.rebalance()
    assert sorted(len(v) for v in h.settle([a, b, c]).values()) == [2, 2, 2]
    # and a leave during a proposal frees the leaver's partitions for the others
    h.c.leave("g", c, None, h.now)
    h.now += 1000
    [g] = h.c.due(h.now, SIZES)
    changes = g.changes
    gen, proto, assignment, sizes = h.c.compute_target(g, SIZES)
    h.c.leave("g", b, None, h.now)
    h.c.install(g, gen, proto, assignment, sizes, changes)
    h.rebalance()
    assert h.settle([a]) == {a: [("t", i) for i in range(6)]}


def test_static_member_rejoins_without_rebalance():
    h = Harness()
    a = h.join(instance="i-a")["member_id"]
    b = h.join(instance="i-b")["member_id"]
    h.rebalance()
    owned = h.settle([a, b])
    gen = h.c.groups["g"].generation
    h.owned.pop(a)                            # the process restarts: it owns nothing, no id
    r = h.join(instance="i-a")
    assert r["member_id"] != a                # a new id for the new process (KIP-345) ...
    assert sorted(tuple(tp) for tp in r["assignment"]) == owned[a]   # ... same partitions
    assert h.c.due(h.now + 10_000, SIZES) == []
    assert h.c.groups["g"].generation == gen
    # the replaced process is fenced: it can neither heartbeat, commit nor remove its successor
    with pytest.raises(FencedInstanceIdError):
        h.c.heartbeat("g", a, gen, owned[a], h.now)
    with pytest.raises(FencedInstanceIdError):
        h.c.check_commit("g", a, gen)
    assert h.c.leave("g", a, "i-a", h.now) is False
    assert r["member_id"] in h.c.groups["g"].members
    # a commit naming its instance id is checked against it (none named: not checked)
    new = r["member_id"]
    h.c.check_commit("g", new, gen, instance_id="i-a")
    h.c.check_commit("g", new, gen)
    with pytest.raises(FencedInstanceIdError):
        h.c.check_commit("g", new, gen, instance_id="i-b")


def test_restore_after_coordinator_move_keeps_members():
    h = Harness()
    a, b = h.join()["member_id"], h.join()["member_id"]
    h.rebalance()
    owned = h.settle([a, b])
    g = h.c.groups["g"]
    c2 = Coordinator()
    c2.restore("g", g.generation, g.protocol, {m: owned[m] for m in (a, b)}, 0, SIZES)
    r = c2.heartbeat("g", a, g.generation, owned[a], 10, topics=["t"])
    assert sorted(tuple(tp) for tp in r["assignment"]) == owned[a]
    c2.check_commit("g", a, g.generation)
    assert c2.due(10_000, SIZES) == []        # same subscription: no rebalance


def test_bad_join_arguments():
    h = Harness()
    with pytest.raises(RaftlogError):
        h.c.join("g", None, None, ["t"], 1000, 1000, "bogus", "", "", [], 0)
    with pytest.raises(RaftlogError):
        h.c.join("g", None, None, ["t"], 1, 1000, "range", "", "", [], 0)
    with pytest.raises(RaftlogError) as e:
        h.c.heartbeat("g", "nobody", 0, [], 0)
    assert e.value.code is ErrorCode.UNKNOWN_MEMBER_ID


def test_partition_count_change_is_seen_once_per_metadata_token():
    h = Harness()
    a, b = h.join()["member_id"], h.join()["member_id"]
    h.rebalance()
    h.settle([a, b])
    g = h.c.groups["g"]
    v1, v2 = object(), object()            # two metadata versions
    assert h.c.due(h.now, SIZES, v1) == []
    grown = {"t": 8}.get
    # Same token: the counts were compared under it already, the growth is not looked at ...
    assert h.c.due(h.now, grown, v1) == [] and g.dirty_since_ms is None
    # ... a new token (the metadata changed) compares again and rebalances at once.
    assert h.c.due(h.now, grown, v2) == [g]
    gen, proto, assignment, sizes = h.c.compute_target(g, grown)
    h.c.install(g, gen, proto, assignment, sizes, g.changes)
    assert sizes == {"t": 8} and g.dirty_since_ms is None
    # After a new target the same token is compared again: nothing more to do.
    assert h.c.due(h.now, grown, v2) == [] and g.sizes_checked is v2
    assert sorted(p for tps in assignment.values() for _t, p in tps) == list(range(8))


def test_restored_member_adopts_its_session_timeout_from_its_heartbeat():
    """Restored from Raft a member has the default 10 s session; its first heartbeat says it
    joined with 1 s, so a death right after the move is noticed after 1 s, not 10."""
    h = Harness()
    a, b = h.join(session=1000)["member_id"], h.join(session=1000)["member_id"]
    h.rebalance()
    owned = h.settle([a, b])
    g = h.c.groups["g"]
    c2 = Coordinator()
    c2.restore("g", g.generation, g.protocol, {m: owned[m] for m in (a, b)}, 0, SIZES)
    c2.heartbeat("g", a, g.generation, owned[a], 10, topics=["t"], timeouts=(1000, 5000))
    c2.heartbeat("g", b, g.generation, owned[b], 10, topics=["t"])    # an older client
    gone = c2.expire(1_500)
    assert [(m, why) for _g, m, why in gone] == [(a, "session timeout")]
    assert list(c2.groups["g"].members) == [b]                       # still on the default
    # learned once: a later heartbeat cannot change a known member's timeouts
    c2.heartbeat("g", b, g.generation, owned[b], 20, timeouts=(1000, 5000))
    c2.heartbeat("g", b, g.generation, owned[b], 30, timeouts=(60_000, 5000))
    assert c2.groups["g"].members[b].session_timeout_ms == 1000
