"""Errors the client raises on its own, next to the wire errors of `raftlog.errors`.

Owns: failures that no broker reported (a full buffer, a delivery deadline, a closed producer, a
bootstrap that found nobody). Each subclasses the wire class of the nearest code so one
`except RequestTimedOutError` / `except BrokerNotAvailableError` catches both. Imports only
`raftlog.errors`.

Hierarchy::

    RequestTimedOutError (REQUEST_TIMED_OUT)
    └── KafkaTimeoutError             the client gave up waiting; not retried by the client
        ├── BufferFullError           send() found no room in buffer_memory within max_block_ms
        └── DeliveryTimeoutError      a record was not acknowledged within delivery_timeout_ms
    BrokerNotAvailableError (BROKER_NOT_AVAILABLE)
    └── NoBrokersAvailableError       no bootstrap address answered within the bootstrap timeout
    InvalidRequestError (INVALID_REQUEST)
    └── IllegalStateError             a call that the object's state forbids (send after stop)
    OffsetOutOfRangeError (OFFSET_OUT_OF_RANGE)
    └── NoOffsetForPartitionError     no position and auto_offset_reset="none"
"""
from __future__ import annotations

from raftlog import errors as _e

RaftlogError = _e.RaftlogError


class KafkaTimeoutError(_e.for_code(_e.ErrorCode.REQUEST_TIMED_OUT)):  # type: ignore[misc]
    """The client stopped waiting; the operation may or may not have happened on the broker."""

    retriable = False


class BufferFullError(KafkaTimeoutError):
    """`send()` waited `max_block_ms` for room in `buffer_memory` (or for topic metadata)."""


class DeliveryTimeoutError(KafkaTimeoutError):
    """A batch was not acknowledged within `delivery_timeout_ms` (retries included)."""


class NoBrokersAvailableError(_e.for_code(_e.ErrorCode.BROKER_NOT_AVAILABLE)):  # type: ignore[misc]
    """Bootstrap reached no broker (dead addresses, or a cluster without a metadata quorum)."""

    retriable = False


class IllegalStateError(_e.for_code(_e.ErrorCode.INVALID_REQUEST)):  # type: ignore[misc]
    """The call is not allowed now, e.g. `send()` on a producer that was never started."""


class NoOffsetForPartitionError(_e.for_code(_e.ErrorCode.OFFSET_OUT_OF_RANGE)):  # type: ignore[misc]
    """A partition has no position and `auto_offset_reset="none"` forbids choosing one."""
