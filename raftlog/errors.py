"""Error codes and exception classes shared by the broker, the client and the CLI.

Owns: the one `ErrorCode` enum (Kafka's names and numbers), its HTTP status, and one exception
class per code carrying `retriable` / `invalid_metadata` flags. Imports nothing but the stdlib.

Hierarchy::

    RaftlogError                      base; .code, .message, .hint (dict, e.g. current leader)
    ├── CorruptBatchError             a record batch failed validation (CORRUPT_MESSAGE)
    ├── ConfigError                   a config file or value is wrong (INVALID_CONFIG)
    └── <one subclass per ErrorCode>  built below, e.g. NotLeaderOrFollowerError

The wire form of an error is ``{"error": NAME, "message": str, "hint": {...}}``; `from_wire`
turns it back into the matching class so callers can `except NotLeaderOrFollowerError`.
"""
from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.IntEnum):
    """Kafka's numeric codes where Kafka has one; raftlog-only codes start at 1000."""

    NONE = 0
    UNKNOWN_SERVER_ERROR = -1
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    ILLEGAL_GENERATION = 22
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_COMMIT_OFFSET_SIZE = 28
    INVALID_TIMESTAMP = 32
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_REQUEST = 42
    NOT_CONTROLLER = 41
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_CONFIG = 40
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    GROUP_ID_NOT_FOUND = 69
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75
    STALE_BROKER_EPOCH = 77
    NON_EMPTY_GROUP = 68
    FENCED_INSTANCE_ID = 82
    INVALID_RECORD = 87
    UNSTABLE_OFFSET_COMMIT = 88
    BROKER_NOT_AVAILABLE = 8
    # raftlog-only
    NO_QUORUM = 1000
    UNKNOWN_BROKER = 1001
    STALE_PARTITION_EPOCH = 1002
    NOT_FOUND = 1003


# Flags per code: (http_status, retriable, invalid_metadata)
_TRAITS: dict[ErrorCode, tuple[int, bool, bool]] = {
    ErrorCode.UNKNOWN_SERVER_ERROR: (500, False, False),
    ErrorCode.OFFSET_OUT_OF_RANGE: (416, False, False),
    ErrorCode.CORRUPT_MESSAGE: (400, True, False),
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: (404, True, True),
    ErrorCode.LEADER_NOT_AVAILABLE: (503, True, True),
    ErrorCode.NOT_LEADER_OR_FOLLOWER: (421, True, True),
    ErrorCode.REQUEST_TIMED_OUT: (504, True, False),
    ErrorCode.MESSAGE_TOO_LARGE: (413, False, False),
    ErrorCode.COORDINATOR_NOT_AVAILABLE: (503, True, True),
    ErrorCode.NOT_COORDINATOR: (421, True, True),
    ErrorCode.INVALID_TOPIC_EXCEPTION: (400, False, False),
    ErrorCode.RECORD_LIST_TOO_LARGE: (413, False, False),
    ErrorCode.NOT_ENOUGH_REPLICAS: (503, True, False),
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: (503, True, False),
    ErrorCode.ILLEGAL_GENERATION: (409, False, False),
    ErrorCode.UNKNOWN_MEMBER_ID: (409, False, False),
    ErrorCode.INVALID_SESSION_TIMEOUT: (400, False, False),
    ErrorCode.REBALANCE_IN_PROGRESS: (409, False, False),
    ErrorCode.INVALID_COMMIT_OFFSET_SIZE: (400, False, False),
    ErrorCode.INVALID_TIMESTAMP: (400, False, False),
    ErrorCode.TOPIC_ALREADY_EXISTS: (409, False, False),
    ErrorCode.INVALID_PARTITIONS: (400, False, False),
    ErrorCode.INVALID_REPLICATION_FACTOR: (400, False, False),
    ErrorCode.INVALID_REQUEST: (400, False, False),
    ErrorCode.NOT_CONTROLLER: (421, True, True),
    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER: (409, False, False),
    ErrorCode.DUPLICATE_SEQUENCE_NUMBER: (409, False, False),
    ErrorCode.INVALID_PRODUCER_EPOCH: (409, False, False),
    ErrorCode.INVALID_CONFIG: (400, False, False),
    ErrorCode.KAFKA_STORAGE_ERROR: (503, True, True),
    ErrorCode.UNKNOWN_PRODUCER_ID: (409, False, False),
    ErrorCode.GROUP_ID_NOT_FOUND: (404, False, False),
    ErrorCode.FENCED_LEADER_EPOCH: (409, True, True),
    ErrorCode.UNKNOWN_LEADER_EPOCH: (409, True, True),
    ErrorCode.STALE_BROKER_EPOCH: (409, False, False),
    ErrorCode.NON_EMPTY_GROUP: (409, False, False),
    ErrorCode.FENCED_INSTANCE_ID: (409, False, False),
    ErrorCode.INVALID_RECORD: (400, False, False),
    ErrorCode.UNSTABLE_OFFSET_COMMIT: (503, True, False),
    ErrorCode.BROKER_NOT_AVAILABLE: (503, True, True),
    ErrorCode.NO_QUORUM: (503, True, False),
    ErrorCode.UNKNOWN_BROKER: (404, False, False),
    ErrorCode.STALE_PARTITION_EPOCH: (409, True, True),
    ErrorCode.NOT_FOUND: (404, False, False),
}


class RaftlogError(Exception):
    """Base of every raftlog error; `code` says which, `hint` says what to do next."""

    code: ErrorCode = ErrorCode.UNKNOWN_SERVER_ERROR
    retriable: bool = False
    invalid_metadata: bool = False
    http_status: int = 500

    def __init__(self, message: str = "", hint: dict[str, Any] | None = None):
        super().__init__(message or self.code.name)
        self.message = message or self.code.name
        self.hint = hint or {}

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code.name, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


def _class_name(code: ErrorCode) -> str:
    base = "".join(part.capitalize() for part in code.name.split("_"))
    return base if base.endswith(("Error", "Exception")) else base + "Error"


_BY_CODE: dict[ErrorCode, type[RaftlogError]] = {}


def _make(code: ErrorCode) -> type[RaftlogError]:
    status, retriable, invalid = _TRAITS.get(code, (500, False, False))
    cls = type(_class_name(code), (RaftlogError,), {
        "code": code, "retriable": retriable, "invalid_metadata": invalid,
        "http_status": status, "__module__": __name__,
    })
    _BY_CODE[code] = cls
    globals()[cls.__name__] = cls
    return cls


for _code in ErrorCode:
    if _code is not ErrorCode.NONE:
        _make(_code)


class CorruptBatchError(_BY_CODE[ErrorCode.CORRUPT_MESSAGE]):  # type: ignore[misc,valid-type]
    """A record batch is malformed: short, bad magic, CRC or length mismatch, bad count."""


class ConfigError(_BY_CODE[ErrorCode.INVALID_CONFIG]):  # type: ignore[misc,valid-type]
    """A configuration file or value is wrong; the message names the file and the key."""


_BY_CODE[ErrorCode.CORRUPT_MESSAGE] = CorruptBatchError
_BY_CODE[ErrorCode.INVALID_CONFIG] = ConfigError


def for_code(code: ErrorCode | str | int) -> type[RaftlogError]:
    """The exception class for a code given as enum, name or number."""
    if isinstance(code, str):
        code = ErrorCode[code] if code in ErrorCode.__members__ else ErrorCode.UNKNOWN_SERVER_ERROR
    else:
        code = ErrorCode(code)
    return _BY_CODE.get(code, RaftlogError)


def error(code: ErrorCode | str, message: str = "", hint: dict[str, Any] | None = None) -> RaftlogError:
    """Build the exception for `code`."""
    return for_code(code)(message, hint)


def from_wire(body: dict[str, Any]) -> RaftlogError:
    """Turn ``{"error": NAME, "message": ..., "hint": ...}`` back into an exception."""
    return error(str(body.get("error", "UNKNOWN_SERVER_ERROR")), str(body.get("message", "")),
                 body.get("hint") or None)


def http_status(code: ErrorCode | str) -> int:
    return for_code(code).http_status


# errno values that mean the data disk itself failed (full, quota, read-only, I/O error)
_STORAGE_ERRNOS = frozenset({28, 122, 30, 5})   # ENOSPC, EDQUOT, EROFS, EIO


def is_storage_failure(exc: BaseException) -> bool:
    """A disk failure, not a network error (ConnectionError is an OSError too)."""
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS
