"""Goal: the default partitioner puts a keyed record on the same partition as Kafka's Java
client, and null keys stick to one partition until its batch closes (KIP-480).
Method: Kafka's published vectors (kafka-reference.md §2) plus a seeded sticky sequence."""
import random

import pytest

from raftlog.client.partitioner import (DefaultPartitioner, StickyPartitioner, murmur2,
                                        partition_for_key, to_positive)

# Kafka UtilsTest.testMurmur2 (signed 32-bit results), plus "" computed in the research.
RAW = [(b"21", -973932308), (b"foobar", -790332482),
       (b"a-little-bit-long-string", -985981536),
       (b"a-little-bit-longer-string", -1486304829),
       (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
       (b"abc", 479470107), (b"", 275646681)]
# kafka-python test_partitioner.py, "compare with output from Kafka's ... Partitioner".
MOD_1000 = [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566),
            (b"\x00 ", 742)]


@pytest.mark.parametrize("key,expected", RAW)
def test_murmur2_matches_kafka(key, expected):
    assert murmur2(key) == expected


@pytest.mark.parametrize("key,expected", MOD_1000)
def test_partition_for_key_matches_kafka_with_1000_partitions(key, expected):
    assert partition_for_key(key, 1000) == expected
    assert DefaultPartitioner()("t", key, 1000) == expected


def test_to_positive_masks_sign_bit_not_abs():
    h = murmur2(b"21")
    assert h < 0
    assert to_positive(h) == h & 0x7FFFFFFF == 3321034988 & 0x7FFFFFFF
    assert to_positive(h) != abs(h)


def test_every_tail_length_is_covered():
    # 0..3 trailing bytes take different branches; keys of length 4..7 cross them all.
    for key, expected in RAW + [(b"\x00 ", None)]:
        assert 0 <= partition_for_key(key, 7) < 7


def test_sticky_partition_holds_until_its_batch_closes_then_moves():
    s = StickyPartitioner(random.Random(1))
    first = s.partition("t", 6)
    assert all(s.partition("t", 6) == first for _ in range(50))
    s.on_batch_closed("t", (first + 1) % 6, 6)  # another partition's batch: no switch
    assert s.partition("t", 6) == first
    seen = {first}
    cur = first
    for _ in range(40):
        s.on_batch_closed("t", cur, 6)
        nxt = s.partition("t", 6)
        assert nxt != cur, "a closed sticky batch must move to another partition"
        seen.add(nxt)
        cur = nxt
    assert seen == set(range(6))


def test_sticky_single_partition_and_shrunk_topic():
    s = StickyPartitioner(random.Random(2))
    assert s.partition("t", 1) == 0
    s.on_batch_closed("t", 0, 1)
    assert s.partition("t", 1) == 0
    s.current["t"] = 9  # topic re-created with fewer partitions
    assert 0 <= s.partition("t", 3) < 3


def test_remembered_hashes_equal_computed_ones_and_stay_bounded(monkeypatch):
    from raftlog.client import partitioner as pt
    monkeypatch.setattr(pt, "HASH_CACHE_MAX_KEYS", 8)
    monkeypatch.setattr(pt, "_hash_cache", {})
    keys = [b"key-%d" % i for i in range(50)] + [b"x" * 300]
    for _round in range(2):                     # computed, then (partly) remembered
        for k in keys:
            assert pt.positive_murmur2(k) == pt.to_positive(pt.murmur2(k))
            assert len(pt._hash_cache) <= 8
    assert b"x" * 300 not in pt._hash_cache     # long keys are not kept
    assert pt.positive_murmur2(bytearray(b"key-1")) == pt.positive_murmur2(b"key-1")
