"""Committed offsets as records of `__consumer_offsets`: the key/value encoding and the hash.

Owns: which partition of the offsets topic a group lives on (a stable hash: Kafka's murmur2 of
the UTF-8 group id, never Python's salted hash()), and the record format:

    key   = msgpack(["offset", group, topic, partition])
    value = msgpack({"offset": int, "metadata": str, "commit_ms": int})   (None = tombstone)

and when a group loses its last member, the wall-clock ms it became empty (offset retention,
raftlog/groups/retention.py):

    key   = msgpack(["empty", group])
    value = msgpack({"since_ms": int})                                     (None = tombstone)

The topic is compacted by key, so the last record of a key is the committed offset. Pure.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from raftlog.client.partitioner import partition_for_key
from raftlog.meta import names

OFFSETS_TOPIC = names.OFFSETS_TOPIC
KEY_KIND = "offset"
EMPTY_KIND = "empty"


class OffsetAndMetadata(NamedTuple):
    offset: int
    metadata: str = ""
    commit_ms: int = -1


def partition_for_group(group: str, partitions: int) -> int:
    return partition_for_key(group.encode("utf-8"), partitions)


# Every commit re-encodes the same few keys: remember them (bounded; cleared when full).
KEY_CACHE_MAX = 100_000
_key_cache: dict[tuple[str, str, int], bytes] = {}
_pack = msgpack.Packer(use_bin_type=True).pack     # one Packer, not one per packb() call


def offset_key(group: str, topic: str, partition: int) -> bytes:
    k = (group, topic, partition)
    b = _key_cache.get(k)
    if b is None:
        if len(_key_cache) >= KEY_CACHE_MAX:
            _key_cache.clear()
        b = _key_cache[k] = _pack([KEY_KIND, group, topic, partition])
    return b


def offset_value(om: OffsetAndMetadata | None) -> bytes | None:
    if om is None:
        return None
    return _pack({"offset": om.offset, "metadata": om.metadata, "commit_ms": om.commit_ms})


def decode(key: bytes | None, value: bytes | None
           ) -> tuple[tuple[str, str, int], OffsetAndMetadata | None] | None:
    """((group, topic, partition), offset or None for a tombstone); None for a foreign record."""
    if key is None:
        return None
    try:
        k: Any = msgpack.unpackb(key, raw=False)
        if not (isinstance(k, list) and len(k) == 4 and k[0] == KEY_KIND):
            return None
        gtp = (str(k[1]), str(k[2]), int(k[3]))
        if value is None:
            return gtp, None
        v: Any = msgpack.unpackb(value, raw=False)
        return gtp, OffsetAndMetadata(int(v["offset"]), str(v.get("metadata") or ""),
                                      int(v.get("commit_ms", -1)))
    except Exception:  # a record this version does not understand: skip it
        return None


def empty_key(group: str) -> bytes:
    return msgpack.packb([EMPTY_KIND, group], use_bin_type=True)


def empty_value(since_ms: int | None) -> bytes | None:
    return None if since_ms is None else msgpack.packb({"since_ms": since_ms}, use_bin_type=True)


def decode_empty(key: bytes | None, value: bytes | None) -> tuple[str, int | None] | None:
    """(group, ms it became empty, or None for a tombstone); None for any other record."""
    if key is None:
        return None
    try:
        k: Any = msgpack.unpackb(key, raw=False)
        if not (isinstance(k, list) and len(k) == 2 and k[0] == EMPTY_KIND):
            return None
        if value is None:
            return str(k[1]), None
        return str(k[1]), int(msgpack.unpackb(value, raw=False)["since_ms"])
    except Exception:  # a record this version does not understand: skip it
        return None
