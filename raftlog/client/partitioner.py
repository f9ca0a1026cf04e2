"""Which partition a record goes to: Kafka's default partitioner, byte for byte.

Owns: `murmur2` (Kafka's `Utils.murmur2`, 32-bit wraparound, seed 0x9747b28c), `to_positive`
(`h & 0x7fffffff`, not abs), the keyed choice `murmur2 % n`, and the sticky choice for null keys
(KIP-480: stay on one partition until its batch is closed, then switch, which gives bigger batches
than round-robin). Pure: imports only the stdlib; no IO, no asyncio.

A keyed record lands on the same partition as it would with Kafka's Java client, so a topic can
move between Kafka and raftlog without reshuffling keys (vectors in tests/client/test_partitioner.py).
"""
from __future__ import annotations

import random
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF
_WORDS_LE = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` as a *signed* 32-bit int (what Java returns)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    n4 = length & ~3
    # Body: 4-byte little-endian words. Python ints are unbounded, so mask after every multiply
    # to reproduce Java's int overflow.
    for (k,) in _WORDS_LE.iter_unpack(data[:n4]) if n4 else ():
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    rem = length & 3
    if rem:
        if rem == 3:
            h ^= data[n4 + 2] << 16
        if rem >= 2:
            h ^= data[n4 + 1] << 8
        h ^= data[n4]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def to_positive(h: int) -> int:
    """Kafka's `Utils.toPositive`: clear the sign bit (abs would differ for negative hashes)."""
    return h & 0x7FFFFFFF


# Keys repeat (a user id, a device id) and murmur2 in Python costs ~4 µs for a short key against
# ~0.05 µs for a dict hit, so the positive hash of short keys is remembered (bounded: cleared
# when full; long keys are hashed every time rather than kept alive).
HASH_CACHE_MAX_KEYS = 65_536
HASH_CACHE_MAX_KEY_BYTES = 256
_hash_cache: dict[bytes, int] = {}


def positive_murmur2(key: bytes) -> int:
    """`to_positive(murmur2(key))`, remembered for short bytes keys."""
    h = _hash_cache.get(key) if key.__class__ is bytes else None
    if h is None:
        h = to_positive(murmur2(key))
        if key.__class__ is bytes and len(key) <= HASH_CACHE_MAX_KEY_BYTES:
            if len(_hash_cache) >= HASH_CACHE_MAX_KEYS:
                _hash_cache.clear()
            _hash_cache[key] = h
    return h


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    return positive_murmur2(key) % num_partitions


class StickyPartitioner:
    """Null-key records of a topic stick to one partition until that partition's batch closes.

    The accumulator calls `on_batch_closed(topic, partition)` when a batch is full or drained;
    if it was the sticky one, the next null-key record picks a new partition (a different one
    when there are several), as Kafka's KIP-480 partitioner does.
    """

    __slots__ = ("current", "_rng")

    def __init__(self, rng: random.Random | None = None) -> None:
        # topic -> sticky partition; the producer's send() reads it directly (hot path).
        self.current: dict[str, int] = {}
        self._rng = rng or random.Random()

    def partition(self, topic: str, num_partitions: int) -> int:
        p = self.current.get(topic)
        if p is None or p >= num_partitions:
            p = self._rng.randrange(num_partitions)
            self.current[topic] = p
        return p

    def on_batch_closed(self, topic: str, partition: int, num_partitions: int) -> None:
        if self.current.get(topic) != partition:
            return
        if num_partitions <= 1:
            return
        # Pick uniformly among the *other* partitions so a switch always moves.
        p = self._rng.randrange(num_partitions - 1)
        self.current[topic] = p if p < partition else p + 1


class DefaultPartitioner:
    """Keyed: murmur2 positive modulo; null key: sticky. Callable like aiokafka's partitioner."""

    __slots__ = ("sticky",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self.sticky = StickyPartitioner(rng)

    def __call__(self, topic: str, key: bytes | None, num_partitions: int) -> int:
        if key is None:
            return self.sticky.partition(topic, num_partitions)
        return positive_murmur2(key) % num_partitions

    def on_batch_closed(self, topic: str, partition: int, num_partitions: int) -> None:
        self.sticky.on_batch_closed(topic, partition, num_partitions)
