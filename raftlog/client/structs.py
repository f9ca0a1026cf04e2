"""Value types the client hands to and returns from its users (aiokafka's names).

Owns: TopicPartition, RecordMetadata, ConsumerRecord, OffsetAndTimestamp. Immutable NamedTuples,
cheap to build and hash. Imports only the stdlib.
"""
from __future__ import annotations

from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed. `offset` is -1 when acks=0 (nothing was awaited);
    `timestamp` is the broker's log-append time when the topic uses it, else the create time."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


class OffsetAndTimestamp(NamedTuple):
    """Answer of `offsets_for_times`: the earliest offset whose timestamp is >= the one asked.
    `timestamp` is the record's when the broker reports it, else -1."""

    offset: int
    timestamp: int
