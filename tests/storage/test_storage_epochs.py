"""Leader-epoch cache: KIP-101/KIP-279 answers, Kafka's assign/truncate rules, persistence.

Goal: the cache must answer OffsetsForLeaderEpoch exactly as Kafka's LeaderEpochFileCache
(`endOffsetFor`) does, keep its entries monotonic under every change, and persist each change
atomically in Kafka's checkpoint format. Method: hand-built tables of (request -> answer), the
file bytes, and reloads.
"""
from __future__ import annotations

import os

import pytest

from raftlog.storage.epochs import EpochEntry, LeaderEpochCache


def cache(tmp_path, *pairs: tuple[int, int]) -> LeaderEpochCache:
    c = LeaderEpochCache(str(tmp_path / "leader-epoch-checkpoint"))
    for e, o in pairs:
        c.assign(e, o)
    return c


# (requested epoch) -> (epoch, end offset) for entries (0,0) (2,10) (5,20) and LEO 30
KIP279_TABLE = [
    (-1, (-1, -1)),   # undefined epoch
    (0, (0, 10)),     # known epoch: ends where the next one starts
    (1, (0, 10)),     # unknown epoch between: largest epoch <= 1 and its end
    (2, (2, 20)),
    (3, (2, 20)),
    (4, (2, 20)),
    (5, (5, 30)),     # the latest epoch ends at the log end
    (6, (-1, -1)),    # above every known epoch
]


@pytest.mark.parametrize("requested,answer", KIP279_TABLE)
def test_end_offset_for_epoch_kip279(tmp_path, requested: int, answer: tuple[int, int]) -> None:
    c = cache(tmp_path, (0, 0), (2, 10), (5, 20))
    assert c.end_offset_for_epoch(requested, 30) == answer


def test_requested_epoch_below_first_answers_first_start_as_kafka(tmp_path) -> None:
    # Kafka (LeaderEpochFileCache.endOffsetFor, floorEntry == null): (requested, first start).
    c = cache(tmp_path, (3, 100), (4, 150))
    assert c.end_offset_for_epoch(1, 200) == (1, 100)
    assert c.end_offset_for_epoch(3, 200) == (3, 150)


def test_empty_cache_knows_nothing(tmp_path) -> None:
    c = cache(tmp_path)
    assert c.latest_epoch == -1 and c.latest_entry() is None
    assert [c.end_offset_for_epoch(e, 10) for e in (-1, 0, 5)] == [(-1, -1)] * 3


def test_assign_same_epoch_later_offset_is_a_no_op(tmp_path) -> None:
    c = cache(tmp_path, (2, 6))
    assert c.assign(2, 7) is False
    assert c.entries == (EpochEntry(2, 6),)


def test_assign_same_epoch_earlier_offset_moves_it(tmp_path) -> None:
    c = cache(tmp_path, (1, 0), (2, 6))
    assert c.assign(2, 4) is True
    assert c.entries == ((1, 0), (2, 4))


def test_assign_non_monotonic_removes_conflicting_tail(tmp_path) -> None:
    c = cache(tmp_path, (2, 6), (3, 8))
    c.assign(4, 7)                      # start 7 < 8: (3, 8) goes
    assert c.entries == ((2, 6), (4, 7))
    c.assign(1, 10)                     # epoch 1 below both: both go
    assert c.entries == ((1, 10),)


def test_assign_rejects_negative(tmp_path) -> None:
    with pytest.raises(ValueError):
        cache(tmp_path).assign(-1, 0)


def test_truncate_from_end(tmp_path) -> None:
    c = cache(tmp_path, (2, 6), (3, 8), (4, 11))
    c.truncate_from_end(100)
    assert len(c.entries) == 3
    c.truncate_from_end(9)
    assert c.entries == ((2, 6), (3, 8))
    c.truncate_from_end(8)              # an epoch starting at the new end has no batch left
    assert c.entries == ((2, 6),)
    c.truncate_from_end(0)
    assert c.entries == ()


@pytest.mark.parametrize("start,expected", [
    (5, ((2, 6), (3, 8), (4, 11))),     # before every entry: unchanged
    (6, ((2, 6), (3, 8), (4, 11))),
    (8, ((3, 8), (4, 11))),
    (9, ((3, 9), (4, 11))),             # the epoch holding the new start moves to it
    (11, ((4, 11),)),
    (50, ((4, 50),)),
])
def test_truncate_from_start(tmp_path, start: int, expected: tuple) -> None:
    c = cache(tmp_path, (2, 6), (3, 8), (4, 11))
    c.truncate_from_start(start)
    assert c.entries == expected


def test_epoch_for_offset(tmp_path) -> None:
    c = cache(tmp_path, (2, 6), (3, 8))
    assert [c.epoch_for_offset(o) for o in (0, 5, 6, 7, 8, 1000)] == [-1, -1, 2, 2, 3, 3]


def test_assign_many_persists_once_with_all_entries(tmp_path) -> None:
    c = cache(tmp_path, (1, 0))
    assert c.assign_many([(1, 5), (3, 10), (4, 12)]) is True
    assert LeaderEpochCache.load(str(tmp_path / "leader-epoch-checkpoint"))[0].entries == (
        (1, 0), (3, 10), (4, 12))


def test_file_is_kafkas_format_and_reloads(tmp_path) -> None:
    path = tmp_path / "leader-epoch-checkpoint"
    cache(tmp_path, (2, 6), (3, 8))
    assert path.read_text() == "0\n2\n2 6\n3 8\n"
    loaded, trusted = LeaderEpochCache.load(str(path))
    assert trusted and loaded.entries == ((2, 6), (3, 8))
    assert not os.path.exists(str(path) + ".tmp")


@pytest.mark.parametrize("content", [
    b"", b"0\n", b"1\n1\n2 6\n", b"0\n2\n2 6\n", b"0\n1\n2\n", b"0\n1\nx 6\n",
    b"0\n2\n3 8\n2 6\n",   # not monotonic
    b"\xff\xfe",
])
def test_unreadable_file_gives_untrusted_empty_cache(tmp_path, content: bytes) -> None:
    path = tmp_path / "leader-epoch-checkpoint"
    path.write_bytes(content)
    loaded, trusted = LeaderEpochCache.load(str(path))
    assert not trusted and loaded.entries == ()


def test_missing_file_is_untrusted(tmp_path) -> None:
    loaded, trusted = LeaderEpochCache.load(str(tmp_path / "nope"))
    assert not trusted and loaded.entries == ()
