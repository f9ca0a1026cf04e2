"""High watermark and ISR verdicts as tables: each row is a situation a leader meets."""
import pytest

from raftlog.replication.progress import FollowerProgress, high_watermark, isr_changes, record_fetch


def fp(leo, caught_up_ms=0):
    return FollowerProgress(log_end_offset=leo, last_caught_up_ms=caught_up_ms)


@pytest.mark.parametrize("leo, isr, progress, hw, epoch_start, expect", [
    # single replica: the leader alone commits
    (10, (1,), {}, 0, 0, 10),
    # min over the ISR
    (10, (1, 2, 3), {2: fp(7), 3: fp(9)}, 0, 0, 7),
    # a follower outside the ISR does not hold the HW back
    (10, (1, 2), {2: fp(10), 3: fp(1)}, 0, 0, 10),
    # an ISR member not yet heard from in this epoch: stay
    (10, (1, 2), {2: fp(-1)}, 4, 0, 4),
    (10, (1, 2), {}, 4, 0, 4),
    # never backwards (a follower that truncated reports less)
    (10, (1, 2), {2: fp(3)}, 5, 0, 5),
    # nothing of the current epoch covered yet: stay (KIP-101 / new-leader rule)
    (10, (1, 2), {2: fp(8)}, 5, 8, 5),
    (10, (1, 2), {2: fp(9)}, 5, 8, 9),
])
def test_high_watermark(leo, isr, progress, hw, epoch_start, expect):
    assert high_watermark(1, leo, isr, progress, hw, epoch_start) == expect


def test_caught_up_follows_kafka_rule():
    p = FollowerProgress()
    record_fetch(p, 0, leader_leo=0, now_ms=100)       # at the end: caught up now
    assert p.last_caught_up_ms == 100
    record_fetch(p, 0, leader_leo=50, now_ms=200)      # leader moved on, follower at old end
    assert p.last_caught_up_ms == 100                  # reached end-as-of-previous-fetch (0 >= 0)...
    record_fetch(p, 50, leader_leo=80, now_ms=300)     # reached what the leader had at 200
    assert p.last_caught_up_ms == 200
    record_fetch(p, 60, leader_leo=100, now_ms=400)    # fell behind the previous end (80)
    assert p.last_caught_up_ms == 200


def test_isr_shrinks_laggard_and_expands_caught_up_follower():
    now = 20_000
    prog = {2: fp(100, caught_up_ms=now - 100), 3: fp(50, caught_up_ms=now - 15_000)}
    assert isr_changes(1, (1, 2, 3), (1, 2, 3), prog, 100, 0, now, 10_000,
                       frozenset({1, 2, 3})) == (1, 2)
    # 3 catches up to the HW: joins again
    prog[3] = fp(100, caught_up_ms=now)
    assert isr_changes(1, (1, 2, 3), (1, 2), prog, 100, 0, now, 10_000,
                       frozenset({1, 2, 3})) == (1, 2, 3)
    # but not while fenced
    assert isr_changes(1, (1, 2, 3), (1, 2), prog, 100, 0, now, 10_000,
                       frozenset({1, 2})) is None
    # nor before it reached the current epoch's start
    assert isr_changes(1, (1, 2, 3), (1, 2), prog, 100, 101, now, 10_000,
                       frozenset({1, 2, 3})) is None
