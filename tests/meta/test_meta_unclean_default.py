"""The cluster default for unclean leader election (`[log] unclean_leader_election_enable`).

Goal: a topic without an `unclean.leader.election.enable` override follows the default of the
controller's config file, in every election: inside the pure state machine (the default rides
in the command, so every node applies it alike) and in the controller's own sweep. A topic's
override wins either way, and commands without the field (older journals) elect clean only.
Method: the pure MetadataState driven by commands, and a Controller over a LocalMetaLog whose
config sets the default, checking leaders, ISRs and the proposed command bytes.
"""
from __future__ import annotations

from raftlog import config
from raftlog.meta import commands as C
from raftlog.meta import placement
from raftlog.meta.controller import Controller
from raftlog.meta.local import LocalMetaLog
from raftlog.meta.state import MetadataState
from raftlog.meta.view import NO_LEADER

OVERRIDE_FALSE = {"unclean.leader.election.enable": "false"}


def _cluster_with_lone_isrs() -> MetadataState:
    """Brokers 1-3 active; topics `plain` (no override) and `never` (override false), each one
    partition on [1, 2, 3] whose ISR shrank to its leader 1."""
    s = MetadataState()
    for b in (1, 2, 3):
        assert C.is_ok(s.apply(C.register_broker(b, f"h{b}", 9000 + b, "i", 0)))
        assert C.is_ok(s.apply(C.unfence_broker(b, b)))
    assert C.is_ok(s.apply(C.create_topic("plain", "P", [[1, 2, 3]])))
    assert C.is_ok(s.apply(C.create_topic("never", "N", [[1, 2, 3]], OVERRIDE_FALSE)))
    for t in ("plain", "never"):
        assert C.is_ok(s.apply(C.change_partition(t, 0, 0, 1, [1])))
    return s


def _leader_isr(s: MetadataState, topic: str) -> tuple[int, tuple[int, ...]]:
    p = s.view.partition(topic, 0)
    assert p is not None
    return p.leader, p.isr


def test_fence_with_carried_default_true_elects_uncleanly_unless_the_topic_says_false() -> None:
    s = _cluster_with_lone_isrs()
    res = C.unwrap(s.apply(C.fence_broker(1, 1, unclean_default=True)))
    assert res["changed"] == [["never", 0], ["plain", 0]]
    assert _leader_isr(s, "plain") == (2, (2,))            # first live replica, ISR restarts
    assert _leader_isr(s, "never") == (NO_LEADER, (1,))    # the override false wins


def test_fence_without_the_field_keeps_todays_clean_only_behaviour() -> None:
    s = _cluster_with_lone_isrs()
    C.unwrap(s.apply(C.fence_broker(1, 1)))
    assert _leader_isr(s, "plain") == (NO_LEADER, (1,))
    assert _leader_isr(s, "never") == (NO_LEADER, (1,))


def test_unfence_and_reregister_carry_the_default_too() -> None:
    s = _cluster_with_lone_isrs()
    C.unwrap(s.apply(C.fence_broker(2, 2)))
    C.unwrap(s.apply(C.fence_broker(3, 3)))
    # A new incarnation of 1 is a fence: with the default on, nobody live can lead yet.
    C.unwrap(s.apply(C.register_broker(1, "h1", 9001, "i2", 1, unclean_default=True)))
    assert _leader_isr(s, "plain") == (NO_LEADER, (1,))
    # 3 comes back: a live replica outside the ISR leads `plain` only.
    res = C.unwrap(s.apply(C.unfence_broker(3, 3, unclean_default=True)))
    assert res["elected"] == [["plain", 0]]
    assert _leader_isr(s, "plain") == (3, (3,))
    assert _leader_isr(s, "never") == (NO_LEADER, (1,))


def test_removing_an_override_false_under_a_default_true_elects_at_once() -> None:
    s = _cluster_with_lone_isrs()
    C.unwrap(s.apply(C.fence_broker(1, 1, unclean_default=True)))
    res = C.unwrap(s.apply(C.alter_topic_config(
        "never", delete_keys=["unclean.leader.election.enable"], unclean_default=True)))
    assert res["elected"] == [["never", 0]]
    assert _leader_isr(s, "never") == (2, (2,))


def test_placement_sweep_uses_the_default_unless_overridden() -> None:
    s = _cluster_with_lone_isrs()
    C.unwrap(s.apply(C.fence_broker(1, 1)))                # clean only: both leaderless
    assert placement.leaderless_elections(s.view) == []
    changes = placement.leaderless_elections(s.view, unclean_default=True)
    assert [(c["topic"], c["leader"], c["isr"]) for c in changes] == [("plain", 2, [2])]
    preview = placement.broker_failure_changes(_cluster_with_lone_isrs().view, 1, True)
    assert [(c["topic"], c["leader"]) for c in preview] == [("never", NO_LEADER), ("plain", 2)]


# --- the controller passes its config's value ------------------------------------------------

def _controller(unclean_default: bool) -> tuple[Controller, LocalMetaLog, list[int]]:
    cfg = config.parse({"broker": {"heartbeat_interval_ms": 100, "session_timeout_ms": 10_000},
                        "log": {"unclean_leader_election_enable": unclean_default},
                        "nodes": [{"id": i, "http_port": 9000 + i, "raft_port": 9100 + i}
                                  for i in (1, 2, 3)]}, "test.toml")
    meta = LocalMetaLog()
    clock = [1_000_000]
    return Controller(meta, cfg, mono_ms=lambda: clock[0]), meta, clock


async def _setup(ctl: Controller, meta: LocalMetaLog) -> None:
    """Three live brokers; `plain` and `never` (override false) with ISR [1], led by 1."""
    ctl._become_active()
    for b in (1, 2, 3):
        await ctl.register(b, "127.0.0.1", 9000 + b, f"inc-{b}")
        await ctl.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)
    await ctl.create_topic("plain", 1, 3, None)
    await ctl.create_topic("never", 1, 3, {"unclean.leader.election.enable": False})
    for t in ("plain", "never"):
        p = meta.view.partition(t, 0)
        assert C.is_ok(meta.apply_now(C.change_partition(t, 0, p.partition_epoch, 1, [1])))


async def _let_leader_session_lapse(ctl: Controller, meta: LocalMetaLog,
                                    clock: list[int]) -> int:
    """Advance past the session timeout with everyone but plain/0's leader heartbeating."""
    lost = meta.view.partition("plain", 0).leader
    clock[0] += 10_100
    for b in (1, 2, 3):
        if b != lost:
            await ctl.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)
    await ctl._fence_expired()
    assert meta.view.broker(lost).fenced
    return lost


def _fence_command(meta: LocalMetaLog, lost: int) -> C.Command:
    fences = [c for c in map(C.decode, meta.proposed)
              if c.op == "fence_broker" and c.payload["broker_id"] == lost]
    assert len(fences) == 1
    return fences[0]


async def test_controller_with_default_true_fences_with_unclean_election() -> None:
    ctl, meta, clock = _controller(True)
    await _setup(ctl, meta)
    lost = await _let_leader_session_lapse(ctl, meta, clock)
    cmd = _fence_command(meta, lost)
    assert cmd.format_version == 2 and cmd.payload["unclean_default"] is True
    plain, never = meta.view.partition("plain", 0), meta.view.partition("never", 0)
    assert plain.leader not in (lost, NO_LEADER) and plain.isr == (plain.leader,)
    assert (never.leader, never.isr) == (NO_LEADER, (lost,))     # override false wins
    # The controller's sweep does not undo the override either.
    await ctl._elect_leaderless()
    assert meta.view.partition("never", 0).leader == NO_LEADER


async def test_controller_with_default_false_keeps_clean_elections() -> None:
    ctl, meta, clock = _controller(False)
    await _setup(ctl, meta)
    lost = await _let_leader_session_lapse(ctl, meta, clock)
    cmd = _fence_command(meta, lost)
    assert cmd.format_version == 1 and cmd.payload["unclean_default"] is False
    await ctl._elect_leaderless()
    for t in ("plain", "never"):
        assert meta.view.partition(t, 0).leader == NO_LEADER


async def test_controller_sweep_elects_what_an_old_format_fence_left_leaderless() -> None:
    ctl, meta, clock = _controller(True)
    await _setup(ctl, meta)
    lost = meta.view.partition("plain", 0).leader
    meta.apply_now(C.fence_broker(lost, meta.view.broker(lost).epoch))   # no field: clean only
    assert meta.view.partition("plain", 0).leader == NO_LEADER
    await ctl._elect_leaderless()
    plain = meta.view.partition("plain", 0)
    assert plain.leader not in (lost, NO_LEADER) and plain.isr == (plain.leader,)
    assert meta.view.partition("never", 0).leader == NO_LEADER


async def test_controller_alter_config_carries_its_default() -> None:
    ctl, meta, clock = _controller(True)
    await _setup(ctl, meta)
    lost = meta.view.partition("never", 0).leader
    meta.apply_now(C.fence_broker(lost, meta.view.broker(lost).epoch))
    assert meta.view.partition("never", 0).leader == NO_LEADER
    # Resetting the override to the default (true here) opts the topic in at once.
    await ctl.alter_topic_config("never", {"unclean.leader.election.enable": None})
    never = meta.view.partition("never", 0)
    assert never.leader not in (lost, NO_LEADER) and never.isr == (never.leader,)
