"""Metadata commands: the only things ever written to the Raft log, and their results.

Owns: the wire form of a command (`encode`/`decode`), the payload schema of every op, one typed
builder per op, and the result shapes. Pure: imports msgpack and raftlog.errors only (no time,
random, os, asyncio, pysyncobj, storage).

Wire form: ``msgpack([format_version, op, payload])`` where payload is a map with str keys.
Every node of a cluster must run code that understands the same format versions and ops: a node
that rejected an entry its peers accepted would diverge. A new format therefore ships behind a
cluster-wide switch, never by a rolling restart alone.

Format versions: 1 is the original; 2 adds the fields of `V2_FIELDS`. A command is written in
the lowest format that can say it: format-2 fields are left out while they hold their default,
and the command is then byte-identical to format 1. So journals and snapshots written before
format 2 replay unchanged (a missing field means its default, today's behaviour), and a cluster
whose commands never need format 2 never writes it. A format-1 command carrying a format-2
field is malformed. Format 2 is written only by a controller whose config file sets
`[log] unclean_leader_election_enable = true`: that setting is the cluster-wide switch, to be
turned on once every node runs code that reads format 2.

Ops, payload fields (``?`` = optional, with its default) -> ok payload; rejection codes:

    register_broker       broker_id, host, http_port, incarnation, now_ms, unclean_default? false
                          -> {broker_id, broker_epoch, duplicate, changed: [[topic, p]]}
                          A new broker starts fenced; the same incarnation again is a duplicate
                          (same epoch); a new incarnation gets a higher epoch and loses its ISR
                          places and leaderships like a fence.  INVALID_REQUEST
    unfence_broker        broker_id, broker_epoch, unclean_default? false
                          -> {broker_id, broker_epoch, elected}
                          Also elects it where partitions it replicates are leaderless.
                          UNKNOWN_BROKER, STALE_BROKER_EPOCH
    fence_broker          broker_id, broker_epoch, unclean_default? false
                          -> {broker_id, broker_epoch, changed}
                          UNKNOWN_BROKER, STALE_BROKER_EPOCH
    create_topic          topic, topic_id, replicas [[int]], config? {}
                          -> {topic, topic_id, partitions, duplicate}
                          INVALID_TOPIC_EXCEPTION, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS,
                          INVALID_REPLICATION_FACTOR, UNKNOWN_BROKER, BROKER_NOT_AVAILABLE
    delete_topic          topic, topic_id? "" ("" = any id)  -> {topic, topic_id}
                          UNKNOWN_TOPIC_OR_PARTITION
    alter_topic_config    topic, set? {}, delete? [], replace? nil, expected? nil,
                          unclean_default? false
                          -> {topic, config, elected}   UNKNOWN_TOPIC_OR_PARTITION,
                          INVALID_REQUEST (also when `expected` is not the current config)

`unclean_default` (format 2) is the proposing controller's `[log] unclean_leader_election_enable`:
the commands that elect leaders inside apply use a topic's `unclean.leader.election.enable`
override if it has one, else this carried default. The state machine never reads a config file;
every node applies the value the command carries.
    change_partition      topic, partition, partition_epoch, leader, isr [int],
                          leader_epoch? -1 (-1 = unchecked), isr_broker_epochs? [] (unchecked)
                          -> {topic, partition, leader, leader_epoch, isr, partition_epoch,
                              changed}   UNKNOWN_TOPIC_OR_PARTITION, STALE_PARTITION_EPOCH,
                          FENCED_LEADER_EPOCH, STALE_BROKER_EPOCH, UNKNOWN_BROKER,
                          BROKER_NOT_AVAILABLE (fenced ISR member), INVALID_REQUEST
    elect_leaders         changes [change_partition payloads]
                          -> {results: [one change_partition result per change, in order]}
    allocate_producer_ids count, broker_id? -1, broker_epoch? -1 (-1 = unchecked)
                          -> {start, count}   INVALID_REQUEST, UNKNOWN_BROKER, STALE_BROKER_EPOCH
    noop                  (nothing) -> {version}: the version this command was applied at
    set_group_assignment  group, generation, expected_generation, protocol,
                          assignment {member: [[topic, partition]]}
                          -> {group, generation, duplicate}   ILLEGAL_GENERATION,
                          UNKNOWN_TOPIC_OR_PARTITION, INVALID_REQUEST
    delete_group          group, expected_generation -> {group, generation}
                          GROUP_ID_NOT_FOUND, ILLEGAL_GENERATION

Any op: INVALID_REQUEST for a malformed command; UNKNOWN_SERVER_ERROR for a bug.

Results are small msgpack-able tuples: ``("ok", {..})`` or ``("error", CODE_NAME, message)``
where CODE_NAME is an `ErrorCode` name. Every command is a compare-and-set or idempotent,
because a command whose caller timed out may still commit later (pysyncobj.md pitfall 4).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgpack

from raftlog import errors

FORMAT_VERSION = 2                     # the newest format this code reads and writes
FORMAT_VERSIONS = (1, 2)               # every format this code reads
COMMAND_BYTES_MAX = 1 << 20            # pysyncobj chunks entries > 64 KiB; 1 MiB is a hard stop
LIST_ITEMS_MAX = 100_000               # partitions, changes, assignment entries per command
CONFIG_KEYS_MAX = 1000
STRING_BYTES_MAX = 4096

Result = tuple[Any, ...]
ConfigValue = str | int | bool
_FORMAT_1 = 1

# One field spec: (kind, required, default). Kinds are checked by `_check_value`.
_REQ = True
_OPT = False
_CHANGE_FIELDS: dict[str, tuple[str, bool, Any]] = {
    "topic": ("str", _REQ, None),
    "partition": ("nat", _REQ, None),
    "partition_epoch": ("nat", _REQ, None),
    "leader": ("int", _REQ, None),
    "isr": ("ints", _REQ, None),
    "leader_epoch": ("int", _OPT, -1),
    "isr_broker_epochs": ("ints", _OPT, ()),
}
SCHEMAS: dict[str, dict[str, tuple[str, bool, Any]]] = {
    "register_broker": {"broker_id": ("nat", _REQ, None), "host": ("str", _REQ, None),
                        "http_port": ("port", _REQ, None), "incarnation": ("str", _REQ, None),
                        "now_ms": ("nat", _REQ, None), "unclean_default": ("bool", _OPT, False)},
    "unfence_broker": {"broker_id": ("nat", _REQ, None), "broker_epoch": ("nat", _REQ, None),
                       "unclean_default": ("bool", _OPT, False)},
    "fence_broker": {"broker_id": ("nat", _REQ, None), "broker_epoch": ("nat", _REQ, None),
                     "unclean_default": ("bool", _OPT, False)},
    "create_topic": {"topic": ("str", _REQ, None), "topic_id": ("str", _REQ, None),
                     "replicas": ("int_lists", _REQ, None), "config": ("config", _OPT, {})},
    "delete_topic": {"topic": ("str", _REQ, None), "topic_id": ("str", _OPT, "")},
    "alter_topic_config": {"topic": ("str", _REQ, None), "set": ("config", _OPT, {}),
                           "delete": ("strs", _OPT, ()), "replace": ("config?", _OPT, None),
                           "expected": ("config?", _OPT, None),
                           "unclean_default": ("bool", _OPT, False)},
    "change_partition": _CHANGE_FIELDS,
    "elect_leaders": {"changes": ("changes", _REQ, None)},
    "allocate_producer_ids": {"count": ("nat", _REQ, None), "broker_id": ("int", _OPT, -1),
                              "broker_epoch": ("int", _OPT, -1)},
    "noop": {},
    "set_group_assignment": {"group": ("str", _REQ, None), "generation": ("nat", _REQ, None),
                             "expected_generation": ("nat", _REQ, None),
                             "protocol": ("str", _REQ, None),
                             "assignment": ("assignment", _REQ, None)},
    "delete_group": {"group": ("str", _REQ, None), "expected_generation": ("nat", _REQ, None)},
}
OPS = frozenset(SCHEMAS)
# Fields that format 1 does not have; each is optional and written only when not its default.
V2_FIELDS = frozenset({"unclean_default"})


class Command(NamedTuple):
    op: str
    payload: dict[str, Any]          # checked: every field present (defaults filled), right kinds
    format_version: int = FORMAT_VERSION


def _bad(message: str) -> errors.RaftlogError:
    return errors.error("INVALID_REQUEST", message)


def _is_int(v: Any) -> bool:
    return type(v) is int            # bool is an int subclass; a bool where an int goes is a bug


def _check_str(v: Any, where: str) -> str:
    if not isinstance(v, str) or len(v) > STRING_BYTES_MAX:
        raise _bad(f"{where}: expected a string of at most {STRING_BYTES_MAX} chars, got {v!r:.80}")
    return v


def _check_list(v: Any, where: str) -> Sequence[Any]:
    if not isinstance(v, (list, tuple)) or len(v) > LIST_ITEMS_MAX:
        raise _bad(f"{where}: expected a list of at most {LIST_ITEMS_MAX} items")
    return v


def _check_config(v: Any, where: str) -> dict[str, ConfigValue]:
    # Floats are refused: state stays ints and strings so every node compares it identically.
    if not isinstance(v, Mapping) or len(v) > CONFIG_KEYS_MAX:
        raise _bad(f"{where}: expected a map of at most {CONFIG_KEYS_MAX} keys")
    out: dict[str, ConfigValue] = {}
    for k in sorted(v, key=str):
        if not isinstance(k, str) or not k:
            raise _bad(f"{where}: config keys must be non-empty strings, got {k!r:.80}")
        val = v[k]
        if not isinstance(val, (str, int)) or (isinstance(val, str) and len(val) > STRING_BYTES_MAX):
            raise _bad(f"{where}.{k}: config values must be str, int or bool, got {val!r:.80}")
        out[k] = val
    return out


def _check_value(kind: str, v: Any, where: str) -> Any:
    if kind in ("int", "nat", "port"):
        if not _is_int(v) or not -(2**63) <= v < 2**63:
            raise _bad(f"{where}: expected an integer, got {v!r:.80}")
        if kind == "nat" and v < 0:
            raise _bad(f"{where}: must be >= 0, got {v}")
        if kind == "port" and not 1 <= v <= 65535:
            raise _bad(f"{where}: not a port number: {v}")
        return v
    if kind == "bool":
        if type(v) is not bool:
            raise _bad(f"{where}: expected true or false, got {v!r:.80}")
        return v
    if kind == "str":
        return _check_str(v, where)
    if kind == "ints":
        return tuple(_check_value("int", x, f"{where}[{i}]")
                     for i, x in enumerate(_check_list(v, where)))
    if kind == "int_lists":
        return tuple(_check_value("ints", x, f"{where}[{i}]")
                     for i, x in enumerate(_check_list(v, where)))
    if kind == "strs":
        return tuple(_check_str(x, f"{where}[{i}]") for i, x in enumerate(_check_list(v, where)))
    if kind == "config":
        return _check_config(v, where)
    if kind == "config?":
        return None if v is None else _check_config(v, where)
    if kind == "changes":
        return tuple(_check_payload("change_partition", x, f"{where}[{i}]")
                     for i, x in enumerate(_check_list(v, where)))
    if kind == "assignment":
        if not isinstance(v, Mapping) or len(v) > LIST_ITEMS_MAX:
            raise _bad(f"{where}: expected a map member -> [[topic, partition]]")
        out: dict[str, tuple[tuple[str, int], ...]] = {}
        for member in sorted(v, key=str):
            _check_str(member, f"{where} member")
            tps = []
            for i, tp in enumerate(_check_list(v[member], f"{where}.{member}")):
                if not isinstance(tp, (list, tuple)) or len(tp) != 2:
                    raise _bad(f"{where}.{member}[{i}]: expected [topic, partition]")
                tps.append((_check_str(tp[0], f"{where}.{member}[{i}]"),
                            _check_value("nat", tp[1], f"{where}.{member}[{i}]")))
            out[member] = tuple(sorted(tps))
        return out
    raise AssertionError(f"unknown field kind {kind}")


def _check_payload(op: str, payload: Any, where: str) -> dict[str, Any]:
    schema = SCHEMAS[op]
    if not isinstance(payload, Mapping):
        raise _bad(f"{where}: payload must be a map")
    extra = sorted(str(k) for k in payload if k not in schema)
    if extra:
        raise _bad(f"{where}: unknown fields {extra}")
    out: dict[str, Any] = {}
    for name, (kind, required, default) in schema.items():
        if name not in payload:
            if required:
                raise _bad(f"{where}: missing field {name!r}")
            out[name] = default
        else:
            out[name] = _check_value(kind, payload[name], f"{where}.{name}")
    return out


def _plain(v: Any) -> Any:
    """Tuples -> lists and maps with sorted keys, so equal commands encode to equal bytes."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _plain(v[k]) for k in sorted(v)}
    return v


def _wire_form(op: str, checked: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(format version, payload to write): the lowest format that can say the command."""
    schema = SCHEMAS[op]
    out = {k: v for k, v in checked.items() if k not in V2_FIELDS or v != schema[k][2]}
    return (FORMAT_VERSION if V2_FIELDS & out.keys() else _FORMAT_1), out


def encode(op: str, payload: Mapping[str, Any] | None = None) -> bytes:
    """Check `payload` against op's schema and return the command bytes; raises InvalidRequest."""
    if op not in SCHEMAS:
        raise _bad(f"unknown op {op!r}")
    version, wire = _wire_form(op, _check_payload(op, payload or {}, op))
    blob: bytes = msgpack.packb([version, op, _plain(wire)], use_bin_type=True)
    if len(blob) > COMMAND_BYTES_MAX:
        raise _bad(f"{op}: command is {len(blob)} bytes, the limit is {COMMAND_BYTES_MAX}")
    return blob


def decode(blob: bytes) -> Command:
    """Parse and check command bytes; raises InvalidRequestError (a RaftlogError) if malformed."""
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) > COMMAND_BYTES_MAX:
        raise _bad("a command must be bytes of at most COMMAND_BYTES_MAX")
    try:
        raw = msgpack.unpackb(blob, raw=False, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise _bad(f"not a msgpack command: {e!r:.120}") from None
    if not isinstance(raw, list) or len(raw) != 3:
        raise _bad("a command is [format_version, op, payload]")
    version, op, payload = raw
    if not _is_int(version) or version not in FORMAT_VERSIONS:
        raise _bad(f"command format {version!r:.20} is not one of {list(FORMAT_VERSIONS)}: "
                   "nodes run mixed code?")
    if not isinstance(op, str) or op not in SCHEMAS:
        raise _bad(f"unknown op {op!r:.80}")
    if version == _FORMAT_1 and isinstance(payload, Mapping):
        newer = sorted(str(k) for k in payload if k in V2_FIELDS)
        if newer:
            raise _bad(f"{op}: fields {newer} need command format {FORMAT_VERSION}, not 1")
    return Command(op, _check_payload(op, payload, op), version)


# --- typed builders: what the controller, the admin API and the group coordinator call ---

def register_broker(broker_id: int, host: str, http_port: int, incarnation: str,
                    now_ms: int, unclean_default: bool = False) -> bytes:
    return encode("register_broker", {"broker_id": broker_id, "host": host, "http_port": http_port,
                                      "incarnation": incarnation, "now_ms": now_ms,
                                      "unclean_default": unclean_default})


def unfence_broker(broker_id: int, broker_epoch: int, unclean_default: bool = False) -> bytes:
    return encode("unfence_broker", {"broker_id": broker_id, "broker_epoch": broker_epoch,
                                     "unclean_default": unclean_default})


def fence_broker(broker_id: int, broker_epoch: int, unclean_default: bool = False) -> bytes:
    return encode("fence_broker", {"broker_id": broker_id, "broker_epoch": broker_epoch,
                                   "unclean_default": unclean_default})


def create_topic(topic: str, topic_id: str, replicas: Sequence[Sequence[int]],
                 config: Mapping[str, ConfigValue] | None = None) -> bytes:
    return encode("create_topic", {"topic": topic, "topic_id": topic_id,
                                   "replicas": [list(r) for r in replicas], "config": config or {}})


def delete_topic(topic: str, topic_id: str = "") -> bytes:
    return encode("delete_topic", {"topic": topic, "topic_id": topic_id})


def alter_topic_config(topic: str, set_keys: Mapping[str, ConfigValue] | None = None,
                       delete_keys: Sequence[str] = (),
                       replace: Mapping[str, ConfigValue] | None = None,
                       expected: Mapping[str, ConfigValue] | None = None,
                       unclean_default: bool = False) -> bytes:
    return encode("alter_topic_config", {"topic": topic, "set": set_keys or {},
                                         "delete": list(delete_keys), "replace": replace,
                                         "expected": expected,
                                         "unclean_default": unclean_default})


def partition_change(topic: str, partition: int, partition_epoch: int, leader: int,
                     isr: Sequence[int], leader_epoch: int = -1,
                     isr_broker_epochs: Sequence[int] = ()) -> dict[str, Any]:
    """One change_partition payload; a list of them makes an elect_leaders command."""
    return {"topic": topic, "partition": partition, "partition_epoch": partition_epoch,
            "leader": leader, "isr": list(isr), "leader_epoch": leader_epoch,
            "isr_broker_epochs": list(isr_broker_epochs)}


def change_partition(topic: str, partition: int, partition_epoch: int, leader: int,
                     isr: Sequence[int], leader_epoch: int = -1,
                     isr_broker_epochs: Sequence[int] = ()) -> bytes:
    return encode("change_partition", partition_change(topic, partition, partition_epoch, leader,
                                                       isr, leader_epoch, isr_broker_epochs))


def elect_leaders(changes: Sequence[Mapping[str, Any]]) -> bytes:
    return encode("elect_leaders", {"changes": list(changes)})


def allocate_producer_ids(count: int, broker_id: int = -1, broker_epoch: int = -1) -> bytes:
    return encode("allocate_producer_ids", {"count": count, "broker_id": broker_id,
                                            "broker_epoch": broker_epoch})


def noop() -> bytes:
    return encode("noop", {})


def set_group_assignment(group: str, generation: int, expected_generation: int,
                         assignment: Mapping[str, Sequence[Sequence[Any]]],
                         protocol: str) -> bytes:
    return encode("set_group_assignment", {
        "group": group, "generation": generation, "expected_generation": expected_generation,
        "protocol": protocol,
        "assignment": {m: [list(tp) for tp in tps] for m, tps in assignment.items()}})


def delete_group(group: str, expected_generation: int) -> bytes:
    return encode("delete_group", {"group": group, "expected_generation": expected_generation})


# --- results ---

def ok(payload: Mapping[str, Any] | None = None) -> Result:
    return ("ok", dict(payload or {}))


def rejected(code: str, message: str) -> Result:
    return ("error", code, message)


def is_ok(result: Result) -> bool:
    return bool(result) and result[0] == "ok"


def unwrap(result: Result) -> dict[str, Any]:
    """The payload of an ok result; raises the matching RaftlogError for an error result."""
    if is_ok(result):
        return dict(result[1])
    if len(result) == 3 and result[0] == "error":
        raise errors.error(str(result[1]), str(result[2]))
    raise errors.error("UNKNOWN_SERVER_ERROR", f"malformed result {result!r:.200}")
