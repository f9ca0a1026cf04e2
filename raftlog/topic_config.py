"""Topic configuration: Kafka's names, their types and ranges, and the node-level defaults.

Owns: which per-topic settings exist, how a value given by a user (JSON value or Kafka-style
string) is checked and normalised, and how a topic's overrides combine with the defaults of the
config file. Pure: imports config and errors only.

A topic stores only its overrides (as Kafka does); `effective()` fills in the rest from `[log]`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from raftlog.config import LogDefaults
from raftlog.errors import ErrorCode, error


@dataclass(frozen=True)
class Setting:
    name: str          # Kafka's name, e.g. "retention.ms"
    default_attr: str  # attribute of config.LogDefaults holding the node default
    kind: type
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    doc: str = ""


_SETTINGS = (
    Setting("retention.ms", "retention_ms", int, -1, None, doc="-1 keeps forever"),
    Setting("retention.bytes", "retention_bytes", int, -1, None, doc="-1 = no size limit"),
    Setting("segment.bytes", "segment_bytes", int, 1 << 14, 1 << 31),
    Setting("segment.ms", "segment_ms", int, 1, None),
    Setting("cleanup.policy", "cleanup_policy", str,
            choices=("delete", "compact", "compact,delete")),
    Setting("min.insync.replicas", "min_insync_replicas", int, 1, 16),
    Setting("max.message.bytes", "max_message_bytes", int, 64, 64 << 20),
    Setting("delete.retention.ms", "delete_retention_ms", int, 0, None),
    Setting("min.cleanable.dirty.ratio", "min_cleanable_dirty_ratio", float, 0.0, 1.0),
    Setting("min.compaction.lag.ms", "min_compaction_lag_ms", int, 0, None),
    Setting("unclean.leader.election.enable", "unclean_leader_election_enable", bool),
    Setting("flush.policy", "flush_policy", str, choices=("interval", "fsync")),
    Setting("flush.ms", "flush_interval_ms", int, 1, None),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in _SETTINGS}

_BOOL_WORDS = {"true": True, "false": False}


def _coerce(s: Setting, value: Any) -> Any:
    """Accept the JSON type or Kafka's string form ("604800000", "true")."""
    if s.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise ValueError("expected true or false")
    if s.kind is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ValueError("expected an integer")
    if s.kind is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError("expected a number")
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.replace(" ", "")


def check(name: str, value: Any) -> Any:
    """The normalised value of one setting, or INVALID_CONFIG naming it."""
    s = SETTINGS.get(name)
    if s is None:
        raise error(ErrorCode.INVALID_CONFIG,
                    f"unknown topic config '{name}' (known: {', '.join(sorted(SETTINGS))})")
    try:
        v = _coerce(s, value)
    except ValueError as exc:
        raise error(ErrorCode.INVALID_CONFIG, f"{name}: {exc}, got {value!r}") from None
    if s.lo is not None and v < s.lo:
        raise error(ErrorCode.INVALID_CONFIG, f"{name}: {v!r} is below the minimum {s.lo}")
    if s.hi is not None and v > s.hi:
        raise error(ErrorCode.INVALID_CONFIG, f"{name}: {v!r} is above the maximum {s.hi}")
    if s.choices is not None and v not in s.choices:
        raise error(ErrorCode.INVALID_CONFIG, f"{name}: {v!r} is not one of {', '.join(s.choices)}")
    return v


def check_all(overrides: Any) -> dict[str, Any]:
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise error(ErrorCode.INVALID_CONFIG, "config must be an object of name -> value")
    return {k: check(str(k), v) for k, v in sorted(overrides.items())}


def for_state(values: dict[str, Any]) -> dict[str, Any]:
    """Values as the metadata state stores them: floats become strings, so every node compares
    state identically (the state machine holds only ints, bools and strings)."""
    return {k: (repr(v) if isinstance(v, float) else v) for k, v in values.items()}


def effective(overrides: dict[str, Any], defaults: LogDefaults) -> dict[str, Any]:
    """Every setting's typed value for a topic: its override, else the node default."""
    return {name: (check(name, overrides[name]) if name in overrides
                   else getattr(defaults, s.default_attr))
            for name, s in SETTINGS.items()}


def describe(overrides: dict[str, Any], defaults: LogDefaults) -> list[dict[str, Any]]:
    """Rows for `topic describe`: name, value, source (topic or default)."""
    values = effective(overrides, defaults)
    return [{"name": name, "value": values[name],
             "source": "topic" if name in overrides else "default"} for name in SETTINGS]


Validator = Callable[[dict[str, Any]], None]


def check_against_rf(values: dict[str, Any], replication_factor: int) -> None:
    """min.insync.replicas above the replication factor would refuse every acks=all write."""
    mir = values.get("min.insync.replicas")
    if mir is not None and mir > replication_factor:
        raise error(ErrorCode.INVALID_CONFIG,
                    f"min.insync.replicas={mir} exceeds the replication factor "
                    f"{replication_factor}: every acks=all write would fail")
