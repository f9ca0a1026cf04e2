"""raftlog: a Kafka-class distributed commit log in Python, with Raft metadata and no ZooKeeper.

The public client API is importable from here (`from raftlog import Producer, Consumer, Admin,
TopicPartition, errors`). The exports are lazy (module `__getattr__`), so importing
`raftlog.config`, `raftlog.errors` or the storage layer never loads aiohttp or the client.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_CLIENT = ("Producer", "Consumer", "Admin", "NewTopic", "TopicPartition", "RecordMetadata",
           "ConsumerRecord", "OffsetAndTimestamp")
__all__ = [*_CLIENT, "errors", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        value = getattr(importlib.import_module("raftlog.client"), name)
    elif name == "errors":
        value = importlib.import_module("raftlog.errors")
    else:
        raise AttributeError(f"module 'raftlog' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from raftlog import errors
    from raftlog.client import (Admin, Consumer, ConsumerRecord, NewTopic, OffsetAndTimestamp,
                                Producer, RecordMetadata, TopicPartition)
