"""Cluster configuration: TOML file -> frozen dataclasses, checked at the edge.

Owns: every node-level setting, its default, its unit and its allowed range. Imports only the
stdlib and raftlog.errors. An unknown key, a wrong type or an out-of-range value raises
`ConfigError` naming the file and the dotted key; callers print it and exit non-zero.

Every field documents itself through `_f(default, lo, hi, choices, doc)`; `cluster.example.toml`
lists the same settings with the same defaults (a test keeps the two in step).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, get_type_hints

from raftlog.errors import ConfigError

_DAY_MS = 24 * 3600 * 1000

# -- named limits (topic_config takes its ranges from the [log] fields below) -------------------
# Metadata commands are msgpack, whose integers are at most 64-bit: a setting wider than a signed
# int64 would be accepted and then fail in the command encoder. Every int setting has a bound at
# or below this one.
INT64_MAX = (1 << 63) - 1
# The storage engine's bounds, as raftlog/storage/options.py checks them when a partition log
# opens. That module may not import this one, so it repeats the numbers; tests/test_topic_config.py
# keeps the two equal. A value accepted here must open a log on every broker, or the topic goes
# offline.
SEGMENT_BYTES_MAX = (1 << 31) - 1  # offset-index positions are u32; Kafka caps at an int32
SEGMENT_MS_MAX = 1 << 62           # LogOptions.segment_ms
FLUSH_INTERVAL_MS_MAX = 1 << 62    # LogOptions.flush_interval_ms
MAX_BATCH_BYTES_MAX = 256 << 20    # LogOptions.max_batch_bytes, which is the larger of
                                   # max.message.bytes and replica_fetch_max_bytes
# Tighter than storage on purpose: storage accepts 64-byte segments for its own tests, but a topic
# that rolls a segment per batch runs a broker out of file descriptors.
SEGMENT_BYTES_MIN = 1 << 14
MAX_MESSAGE_BYTES_MIN = 64
MAX_MESSAGE_BYTES_MAX = 64 << 20
REPLICAS_MAX = 16

CLEANUP_POLICIES = ("compact", "delete")
# The accepted values of cleanup.policy after normalisation (sorted, comma-joined).
CLEANUP_POLICY_CHOICES = ("delete", "compact", "compact,delete")

Normaliser = Callable[[Any], Any]


def normalise_cleanup_policy(value: Any) -> Any:
    """Kafka's cleanup.policy is a list: "delete,compact", " compact , delete" and
    "compact,delete" are one policy, stored in the canonical sorted form "compact,delete". As in
    Kafka (ConfigDef LIST + ValidList) items are trimmed and case-sensitive. A value with an
    unknown item comes back as given, for the choices check to refuse naming it."""
    if not isinstance(value, str):
        return value
    items = [item.strip() for item in value.strip().split(",")]
    if not all(item in CLEANUP_POLICIES for item in items):
        return value
    return ",".join(sorted(set(items)))


def _f(default: Any, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None, doc: str = "",
       norm: Normaliser | None = None) -> Any:
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc,
                                            "norm": norm})


@dataclass(frozen=True)
class ClusterSection:
    id: str = _f("raftlog-local", doc="cluster id; nodes of different clusters refuse each other")
    secret: str = _f("", doc="shared secret for the Raft port (pysyncobj password); "
                             "required when any node listens off loopback")


@dataclass(frozen=True)
class NodeConfig:
    id: int = _f(0, 1, 2**31 - 1, doc="broker id, unique in the cluster")
    host: str = _f("127.0.0.1", doc="address both ports bind to and peers dial")
    http_port: int = _f(0, 1, 65535, doc="client, admin and replication API (aiohttp)")
    raft_port: int = _f(0, 1, 65535, doc="metadata Raft (pysyncobj)")
    data_dir: str = _f("", doc="partition logs and Raft journal; relative to the config file")
    # Optional indirection for a proxy in between (the chaos harness's loopback link proxies),
    # 0 = off. Normal configs leave them out and nothing changes.
    advertised_http_port: int = _f(0, 0, 65535, doc="the HTTP port this node registers in "
                                                    "metadata, which clients are told; "
                                                    "0 = http_port")
    dial_http_port: int = _f(0, 0, 65535, doc="where the node reading this file dials this "
                                              "peer's HTTP API (at host); 0 = the registered "
                                              "address")
    dial_raft_port: int = _f(0, 0, 65535, doc="where the node reading this file dials this "
                                              "peer's Raft port (at host); its Raft identity "
                                              "stays host:raft_port; 0 = raft_port")


@dataclass(frozen=True)
class LogDefaults:
    """Node-level defaults for topic configs (Kafka's `log.*` / topic-level names)."""

    num_partitions: int = _f(3, 1, 10000, doc="partitions of a topic created without a count")
    replication_factor: int = _f(3, 1, REPLICAS_MAX,
                                 doc="capped at the number of live brokers when implicit")
    min_insync_replicas: int = _f(2, 1, REPLICAS_MAX,
                                  doc="acks=all needs this many in-sync replicas; "
                                      "capped at the replication factor")
    segment_bytes: int = _f(1 << 30, SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX,
                             doc="roll a segment at this size")
    segment_ms: int = _f(7 * _DAY_MS, 1, SEGMENT_MS_MAX,
                         doc="roll a segment this old (quiet topics too)")
    retention_ms: int = _f(7 * _DAY_MS, -1, INT64_MAX,
                           doc="delete segments older than this; -1 = never")
    retention_bytes: int = _f(-1, -1, INT64_MAX,
                              doc="delete oldest segments beyond this size; -1 = off")
    retention_check_interval_ms: int = _f(300_000, 100, INT64_MAX, doc="how often retention runs")
    cleanup_policy: str = _f("delete", choices=CLEANUP_POLICY_CHOICES,
                             norm=normalise_cleanup_policy,
                             doc="delete old segments, compact by key, or both")
    flush_policy: str = _f("interval", choices=("interval", "fsync"),
                           doc="fsync: an append is acknowledged after fsync (group commit); "
                               "interval: fsync every flush_interval_ms")
    flush_interval_ms: int = _f(1000, 1, FLUSH_INTERVAL_MS_MAX,
                                doc="fsync period under the interval policy")
    max_message_bytes: int = _f(1 << 20, MAX_MESSAGE_BYTES_MIN, MAX_MESSAGE_BYTES_MAX,
                                doc="largest record batch accepted")
    unclean_leader_election_enable: bool = _f(False, doc="elect a replica outside the ISR when "
                                                         "the ISR is all dead (loses data)")
    delete_retention_ms: int = _f(_DAY_MS, 0, INT64_MAX,
                                  doc="keep tombstones this long on compacted topics")
    min_cleanable_dirty_ratio: float = _f(0.5, 0.0, 1.0, doc="compact when this share is dirty")
    min_compaction_lag_ms: int = _f(0, 0, INT64_MAX,
                                    doc="records younger than this are not compacted")


@dataclass(frozen=True)
class ReplicationSection:
    replica_lag_time_max_ms: int = _f(10_000, 100, INT64_MAX,
                                      doc="a follower not caught up for this long leaves the ISR")
    replica_fetch_wait_max_ms: int = _f(1000, 1, 60_000, doc="follower fetch long-poll (new data answers at once)")
    replica_fetch_max_bytes: int = _f(8 << 20, 1024, MAX_BATCH_BYTES_MAX,
                                      doc="bytes per follower fetch response")


@dataclass(frozen=True)
class BrokerSection:
    heartbeat_interval_ms: int = _f(1000, 10, 60_000, doc="broker -> controller heartbeat period")
    session_timeout_ms: int = _f(6000, 100, 600_000,
                                 doc="a broker silent this long is fenced (leaves ISRs, leaderships)")
    leader_rebalance_interval_ms: int = _f(5000, 100, INT64_MAX,
                                           doc="how often leadership moves back to preferred replicas")
    shutdown_grace_ms: int = _f(1000, 0, 60_000,
                                doc="on a clean stop, how long requests in flight may finish "
                                    "before they are cancelled")


@dataclass(frozen=True)
class RaftSection:
    election_timeout_min_ms: int = _f(300, 50, 60_000, doc="pysyncobj raftMinTimeout")
    election_timeout_max_ms: int = _f(600, 100, 120_000, doc="pysyncobj raftMaxTimeout")
    append_entries_period_ms: int = _f(80, 10, 10_000, doc="leader heartbeat to followers")
    tick_ms: int = _f(100, 10, 1000, doc="Raft thread wake-up period (commands wake it at once)")
    leader_fallback_timeout_ms: int = _f(1000, 100, 600_000,
                                         doc="an isolated leader steps down after this")
    propose_timeout_ms: int = _f(5000, 100, 600_000, doc="metadata command commit timeout")


@dataclass(frozen=True)
class LimitsSection:
    max_request_bytes: int = _f(100 << 20, 1024, 1 << 31, doc="largest HTTP request body")
    request_timeout_ms: int = _f(30_000, 10, 3_600_000, doc="default produce/admin timeout")
    fetch_max_bytes: int = _f(50 << 20, 1024, 1 << 31, doc="largest fetch response")
    max_partitions_per_topic: int = _f(10_000, 1, 100_000, doc="refuse topics with more")


@dataclass(frozen=True)
class GroupsSection:
    offsets_topic_partitions: int = _f(12, 1, 1000, doc="partitions of __consumer_offsets; never "
                                                        "change it on a cluster holding groups")
    offsets_topic_replication_factor: int = _f(3, 1, 16, doc="capped at the live brokers")
    rebalance_delay_ms: int = _f(100, 0, 60_000, doc="wait this long after a membership change "
                                                      "before computing a new assignment "
                                                      "(coalesces joins)")
    min_session_timeout_ms: int = _f(500, 10, 3_600_000, doc="smallest session timeout accepted")
    max_session_timeout_ms: int = _f(300_000, 10, 3_600_000, doc="largest session timeout accepted")
    offsets_retention_ms: int = _f(7 * _DAY_MS, 1, 3650 * _DAY_MS,
                                   doc="a group without members for this long loses its "
                                       "committed offsets and disappears (Kafka's "
                                       "offsets.retention.minutes, KIP-211)")
    offsets_retention_check_interval_ms: int = _f(600_000, 10, _DAY_MS,
                                                  doc="how often the coordinator looks for "
                                                      "expired groups")


@dataclass(frozen=True)
class ClusterConfig:
    path: str
    cluster: ClusterSection
    nodes: tuple[NodeConfig, ...]
    log: LogDefaults
    replication: ReplicationSection
    broker: BrokerSection
    raft: RaftSection
    limits: LimitsSection
    groups: GroupsSection = GroupsSection()

    def node(self, node_id: int) -> NodeConfig:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"{self.path}: no node with id {node_id} "
                          f"(ids: {', '.join(str(n.id) for n in self.nodes)})")

    @property
    def node_ids(self) -> tuple[int, ...]:
        return tuple(n.id for n in self.nodes)


_SECTIONS: dict[str, type] = {
    "cluster": ClusterSection, "log": LogDefaults, "replication": ReplicationSection,
    "broker": BrokerSection, "raft": RaftSection, "limits": LimitsSection,
    "groups": GroupsSection,
}


class FieldSpec(NamedTuple):
    """What one setting accepts; topic_config reads the [log] fields' specs through `spec()`."""

    kind: type
    lo: float | None
    hi: float | None
    choices: tuple[str, ...] | None
    norm: Normaliser | None


def spec(cls: type, name: str) -> FieldSpec:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    m = f.metadata
    return FieldSpec(get_type_hints(cls)[name], m["lo"], m["hi"], m["choices"], m["norm"])


def check_bounds(where: str, value: Any, s: FieldSpec) -> Any:
    """`value` (already of the setting's type) normalised, or ConfigError naming `where`.
    Shared by the config file and topic configs, so both refuse the same values."""
    if s.norm is not None:
        value = s.norm(value)
    # NaN fails every comparison, so the range checks below would let it through.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if s.lo is not None and value < s.lo:
        raise ConfigError(f"{where}: {value!r:.80} is below the minimum {s.lo}")
    if s.hi is not None and value > s.hi:
        raise ConfigError(f"{where}: {value!r:.80} is above the maximum {s.hi}")
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{where}: {value!r:.80} is not one of {', '.join(s.choices)}")
    return value


def _check_value(cls: type, name: str, value: Any, where: str) -> Any:
    s = spec(cls, name)
    ok = (type(value) is s.kind) or (s.kind is float and type(value) is int)
    if not ok:
        raise ConfigError(f"{where}: expected {s.kind.__name__}, got {type(value).__name__} "
                          f"{value!r:.80}")
    if s.kind is float:
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{where}: {value!r:.80} is too large for a number") from None
    return check_bounds(where, value, s)


def build_section(cls: type, table: Any, where: str) -> Any:
    """Instantiate `cls` from a TOML table, refusing unknown keys, wrong types and bad ranges."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting "
                          f"(known: {', '.join(sorted(names))})")
    return cls(**{k: _check_value(cls, k, v, f"{where}.{k}") for k, v in table.items()})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(data: dict[str, Any], path: str) -> ClusterConfig:
    """Build a ClusterConfig from already-parsed TOML; `path` names the file in errors."""
    known = set(_SECTIONS) | {"nodes"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown section (known: {', '.join(sorted(known))})")
    sections = {name: build_section(cls, data.get(name, {}), f"{path}: {name}")
                for name, cls in _SECTIONS.items()}
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(f"{path}: nodes: at least one [[nodes]] entry is required")
    base = os.path.dirname(os.path.abspath(path))
    nodes = []
    for i, raw in enumerate(raw_nodes):
        where = f"{path}: nodes[{i}]"
        n = build_section(NodeConfig, raw, where)
        for key in ("id", "http_port", "raft_port"):
            if key not in raw:
                raise ConfigError(f"{where}.{key}: required")
        data_dir = n.data_dir or f"data/node-{n.id}"
        nodes.append(dataclasses.replace(n, data_dir=os.path.normpath(os.path.join(base, data_dir))))
    seen: dict[Any, str] = {}
    for i, n in enumerate(nodes):
        for what, key in (("id", n.id), ("address", (n.host, n.http_port)),
                          ("address", (n.host, n.raft_port)), ("data_dir", n.data_dir)):
            if (what, key) in seen:
                raise ConfigError(f"{path}: nodes[{i}]: {what} {key!r} is also used by {seen[(what, key)]}")
            seen[(what, key)] = f"nodes[{i}]"
    cfg = ClusterConfig(path=path, nodes=tuple(nodes), **sections)
    if not cfg.cluster.secret and not all(_is_loopback(n.host) for n in nodes):
        raise ConfigError(f"{path}: cluster.secret: required when a node listens off loopback "
                          "(the Raft port speaks pickle; without a secret anyone who reaches it "
                          "can run code)")
    _check_relations(cfg, path)
    return cfg


# Pairs of settings that must be ordered: (smaller, larger, strictly, why). Each is refused at
# load with both dotted keys named, rather than misbehaving at run time.
_ORDERED: tuple[tuple[str, str, bool, str], ...] = (
    ("raft.election_timeout_min_ms", "raft.election_timeout_max_ms", True,
     "pysyncobj draws election timeouts from this range"),
    ("raft.append_entries_period_ms", "raft.leader_fallback_timeout_ms", True,
     "a leader would step down between two of its own heartbeats"),
    ("broker.heartbeat_interval_ms", "broker.session_timeout_ms", True,
     "every broker would be fenced between two heartbeats"),
    ("groups.min_session_timeout_ms", "groups.max_session_timeout_ms", False,
     "no session timeout would be accepted"),
    ("replication.replica_fetch_wait_max_ms", "replication.replica_lag_time_max_ms", True,
     "an idle follower's long-poll would outlast the lag allowed and shrink the ISR "
     "(Kafka's rule for replica.fetch.wait.max.ms)"),
    ("log.max_message_bytes", "limits.max_request_bytes", False,
     "a batch of the largest size allowed would not fit in a request"),
)


def _get(cfg: ClusterConfig, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def _check_relations(cfg: ClusterConfig, path: str) -> None:
    for small, large, strict, why in _ORDERED:
        a, b = _get(cfg, small), _get(cfg, large)
        if (a >= b) if strict else (a > b):
            rel = "exceed" if strict else "be at least"
            raise ConfigError(f"{path}: {large} must {rel} {small} ({b} vs {a}): {why}")
    r = cfg.raft
    if r.election_timeout_min_ms <= 3 * r.append_entries_period_ms:
        raise ConfigError(f"{path}: raft.election_timeout_min_ms must exceed 3 x "
                          f"raft.append_entries_period_ms ({r.election_timeout_min_ms} vs "
                          f"{r.append_entries_period_ms})")
    if r.election_timeout_min_ms < 3 * r.tick_ms:
        raise ConfigError(f"{path}: raft.election_timeout_min_ms must be at least 3 x "
                          f"raft.tick_ms ({r.election_timeout_min_ms} vs {r.tick_ms})")


def load(path: str) -> ClusterConfig:
    """Read and check a TOML config file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        # TOML files are UTF-8 (tomllib decodes before parsing); say where the first bad byte is.
        raise ConfigError(f"{path}: not UTF-8 text (TOML files must be UTF-8): "
                          f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValueError as exc:
        # tomllib lets int() refuse an integer literal of thousands of digits.
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    return parse(data, path)


def field_docs(cls: type) -> dict[str, tuple[Any, str]]:
    """name -> (default, doc) of a section; used to keep the example file in step."""
    return {f.name: (f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)}
