"""Topic configuration: Kafka's names, their types and ranges, and the node-level defaults.

Owns: which per-topic settings exist, how a value given by a user (JSON value or Kafka-style
string) is checked and normalised, and how a topic's overrides combine with the defaults of the
config file. Pure: imports config and errors only.

A topic stores only its overrides (as Kafka does); `effective()` fills in the rest from `[log]`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from raftlog import config
from raftlog.config import LogDefaults
from raftlog.errors import ConfigError, ErrorCode, error


@dataclass(frozen=True)
class Setting:
    name: str          # Kafka's name, e.g. "retention.ms"
    default_attr: str  # attribute of config.LogDefaults holding the node default
    kind: type
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    doc: str = ""
    spec: config.FieldSpec | None = None   # the [log] field's spec these were taken from


def _setting(name: str, default_attr: str, doc: str = "") -> Setting:
    """A topic setting takes its type, range and choices from the `[log]` field that holds its
    node default: one definition, so a topic can never be given what the node default may not
    hold (and both stay within what storage opens, see the limits in config.py)."""
    s = config.spec(LogDefaults, default_attr)
    return Setting(name, default_attr, s.kind, s.lo, s.hi, s.choices, doc, s)


_SETTINGS = (
    _setting("retention.ms", "retention_ms", doc="-1 keeps forever"),
    _setting("retention.bytes", "retention_bytes", doc="-1 = no size limit"),
    _setting("segment.bytes", "segment_bytes"),
    _setting("segment.ms", "segment_ms"),
    _setting("cleanup.policy", "cleanup_policy", doc="delete, compact or both, in either order"),
    _setting("min.insync.replicas", "min_insync_replicas"),
    _setting("max.message.bytes", "max_message_bytes"),
    _setting("delete.retention.ms", "delete_retention_ms"),
    _setting("min.cleanable.dirty.ratio", "min_cleanable_dirty_ratio"),
    _setting("min.compaction.lag.ms", "min_compaction_lag_ms"),
    _setting("unclean.leader.election.enable", "unclean_leader_election_enable"),
    _setting("flush.policy", "flush_policy"),
    _setting("flush.ms", "flush_interval_ms"),
)
SETTINGS: dict[str, Setting] = {s.name: s for s in _SETTINGS}

_BOOL_WORDS = {"true": True, "false": False}
# Kafka's string form of a long: optional sign, ASCII digits. Longer strings are refused before
# int() (whose own limit is thousands of digits) so the message stays short.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_INT_TEXT_MAX_CHARS = 64


def _coerce(s: Setting, value: Any) -> Any:
    """Accept the JSON type or Kafka's string form ("604800000", "true")."""
    if s.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise ValueError("expected true or false")
    if s.kind is int:
        return _coerce_int(value)
    if s.kind is float:
        return _coerce_float(value)
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip()   # Kafka trims string values; cleanup.policy's items are trimmed later


def _coerce_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _INT_TEXT_MAX_CHARS:
            raise ValueError(f"expected an integer of at most {_INT_TEXT_MAX_CHARS} characters")
        if _INT_TEXT.fullmatch(text):
            return int(text)
    raise ValueError("expected an integer")


def _coerce_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number")
    try:
        v = float(value)
    except OverflowError:       # an int too large for a float
        raise ValueError("expected a number within the range of a double") from None
    except ValueError:
        raise ValueError("expected a number") from None
    # float("nan") and float("1e999") parse; NaN would then pass every range check.
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


def check(name: str, value: Any) -> Any:
    """The normalised value of one setting, or INVALID_CONFIG naming it."""
    s = SETTINGS.get(name)
    if s is None:
        raise error(ErrorCode.INVALID_CONFIG,
                    f"unknown topic config '{name}' (known: {', '.join(sorted(SETTINGS))})")
    try:
        v = _coerce(s, value)
    except ValueError as exc:
        raise error(ErrorCode.INVALID_CONFIG, f"{name}: {exc}, got {value!r:.80}") from None
    assert s.spec is not None
    return config.check_bounds(name, v, s.spec)


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
    return {name: (_stored(name, overrides[name], defaults) if name in overrides
                   else getattr(defaults, s.default_attr))
            for name, s in SETTINGS.items()}


def _stored(name: str, value: Any, defaults: LogDefaults) -> Any:
    """A stored override as `check` reads it. A value stored before a limit was tightened (e.g.
    segment.bytes = 2^31, which no broker could open) must not stop every broker from applying
    metadata: an out-of-range number is clamped to the nearest bound, anything else unreadable
    falls back to the node default; `describe` shows the value in use."""
    try:
        return check(name, value)
    except ConfigError:
        pass
    s = SETTINGS[name]
    try:
        v = _coerce(s, value)
    except ValueError:
        return getattr(defaults, s.default_attr)
    if s.kind in (int, float):
        if s.lo is not None and v < s.lo:
            return s.kind(s.lo)
        if s.hi is not None and v > s.hi:
            return s.kind(s.hi)
    return getattr(defaults, s.default_attr)


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
