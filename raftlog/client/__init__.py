"""raftlog's Python client: Producer, Consumer, Admin (aiokafka's names and shapes).

Imports are lazy (module `__getattr__`): `import raftlog.client` costs nothing until a name is
used, and modules that only need `raftlog.client.partitioner` never load aiohttp.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Producer": "raftlog.client.producer",
    "Consumer": "raftlog.client.consumer",
    "Admin": "raftlog.client.admin",
    "NewTopic": "raftlog.client.admin",
    "Client": "raftlog.client.client",
    "TopicPartition": "raftlog.client.structs",
    "RecordMetadata": "raftlog.client.structs",
    "ConsumerRecord": "raftlog.client.structs",
    "OffsetAndTimestamp": "raftlog.client.structs",
    "RecordFuture": "raftlog.client.accumulator",
    "DefaultPartitioner": "raftlog.client.partitioner",
    "murmur2": "raftlog.client.partitioner",
    "KafkaTimeoutError": "raftlog.client.errors",
    "BufferFullError": "raftlog.client.errors",
    "DeliveryTimeoutError": "raftlog.client.errors",
    "NoBrokersAvailableError": "raftlog.client.errors",
    "IllegalStateError": "raftlog.client.errors",
    "NoOffsetForPartitionError": "raftlog.client.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raftlog.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from raftlog.client.accumulator import RecordFuture
    from raftlog.client.admin import Admin, NewTopic
    from raftlog.client.client import Client
    from raftlog.client.consumer import Consumer
    from raftlog.client.errors import (BufferFullError, DeliveryTimeoutError, IllegalStateError,
                                       KafkaTimeoutError, NoBrokersAvailableError,
                                       NoOffsetForPartitionError)
    from raftlog.client.partitioner import DefaultPartitioner, murmur2
    from raftlog.client.producer import Producer
    from raftlog.client.structs import (ConsumerRecord, OffsetAndTimestamp, RecordMetadata,
                                        TopicPartition)
