"""Name rules for topics and groups (Kafka's), shared by the state machine and the admin API.

Owns: what a legal topic or group name is, and when two topic names collide. Pure: imports only
the stdlib (no time, random, os, asyncio, pysyncobj, storage). Each check returns an error
message or None, so the state machine can turn it into a rejection result instead of raising.
"""
from __future__ import annotations

import re

OFFSETS_TOPIC = "__consumer_offsets"   # the groups' committed offsets; internal
TOPIC_NAME_BYTES_MAX = 249          # Kafka's limit: a topic dir name plus suffixes must fit 255
GROUP_NAME_BYTES_MAX = 255
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")


def topic_name_error(name: object) -> str | None:
    """Why `name` is not a legal topic name, or None. Kafka: [a-zA-Z0-9._-]{1,249}, not . or .."""
    if not isinstance(name, str) or not name:
        return "topic name must be a non-empty string"
    if name in (".", ".."):
        return f"topic name cannot be {name!r}"
    if len(name) > TOPIC_NAME_BYTES_MAX:
        return f"topic name is {len(name)} chars, the limit is {TOPIC_NAME_BYTES_MAX}"
    if not _LEGAL_TOPIC.fullmatch(name):
        return f"topic name {name!r} has characters outside [a-zA-Z0-9._-]"
    return None


def collision_key(name: str) -> str:
    """Kafka refuses topics that differ only by '.' vs '_' (their metric names would clash)."""
    return name.replace(".", "_")


def group_name_error(name: object) -> str | None:
    """Why `name` is not a legal consumer group id, or None (non-empty, printable, bounded)."""
    if not isinstance(name, str) or not name:
        return "group id must be a non-empty string"
    if len(name) > GROUP_NAME_BYTES_MAX:
        return f"group id is {len(name)} chars, the limit is {GROUP_NAME_BYTES_MAX}"
    if not name.isprintable():
        return "group id has non-printable characters"
    return None
