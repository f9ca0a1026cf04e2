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
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from raftlog.errors import ConfigError

_DAY_MS = 24 * 3600 * 1000


def _f(default: Any, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc})


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
    replication_factor: int = _f(3, 1, 16, doc="capped at the number of live brokers when implicit")
    min_insync_replicas: int = _f(2, 1, 16, doc="acks=all needs this many in-sync replicas; "
                                                "capped at the replication factor")
    segment_bytes: int = _f(1 << 30, 1 << 14, 1 << 31, doc="roll a segment at this size")
    segment_ms: int = _f(7 * _DAY_MS, 1, None, doc="roll a segment this old (quiet topics too)")
    retention_ms: int = _f(7 * _DAY_MS, -1, None, doc="delete segments older than this; -1 = never")
    retention_bytes: int = _f(-1, -1, None, doc="delete oldest segments beyond this size; -1 = off")
    retention_check_interval_ms: int = _f(300_000, 100, None, doc="how often retention runs")
    cleanup_policy: str = _f("delete", choices=("delete", "compact", "compact,delete"),
                             doc="delete old segments, compact by key, or both")
    flush_policy: str = _f("interval", choices=("interval", "fsync"),
                           doc="fsync: an append is acknowledged after fsync (group commit); "
                               "interval: fsync every flush_interval_ms")
    flush_interval_ms: int = _f(1000, 1, None, doc="fsync period under the interval policy")
    max_message_bytes: int = _f(1 << 20, 64, 64 << 20, doc="largest record batch accepted")
    unclean_leader_election_enable: bool = _f(False, doc="elect a replica outside the ISR when "
                                                         "the ISR is all dead (loses data)")
    delete_retention_ms: int = _f(_DAY_MS, 0, None, doc="keep tombstones this long on compacted topics")
    min_cleanable_dirty_ratio: float = _f(0.5, 0.0, 1.0, doc="compact when this share is dirty")
    min_compaction_lag_ms: int = _f(0, 0, None, doc="records younger than this are not compacted")


@dataclass(frozen=True)
class ReplicationSection:
    replica_lag_time_max_ms: int = _f(10_000, 100, None,
                                      doc="a follower not caught up for this long leaves the ISR")
    replica_fetch_wait_max_ms: int = _f(1000, 1, 60_000, doc="follower fetch long-poll (new data answers at once)")
    replica_fetch_max_bytes: int = _f(8 << 20, 1024, 1 << 30,
                                      doc="bytes per follower fetch response")


@dataclass(frozen=True)
class BrokerSection:
    heartbeat_interval_ms: int = _f(1000, 10, 60_000, doc="broker -> controller heartbeat period")
    session_timeout_ms: int = _f(6000, 100, 600_000,
                                 doc="a broker silent this long is fenced (leaves ISRs, leaderships)")
    leader_rebalance_interval_ms: int = _f(5000, 100, None,
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


def _check_value(cls: type, name: str, value: Any, where: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    want = get_type_hints(cls)[name]
    ok = (type(value) is want) or (want is float and type(value) is int)
    if not ok:
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__} "
                          f"{value!r}")
    lo, hi, choices = f.metadata["lo"], f.metadata["hi"], f.metadata["choices"]
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is above the maximum {hi}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return float(value) if want is float else value


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
    r = cfg.raft
    if r.election_timeout_max_ms <= r.election_timeout_min_ms:
        raise ConfigError(f"{path}: raft.election_timeout_max_ms must exceed election_timeout_min_ms")
    if r.election_timeout_min_ms <= 3 * r.append_entries_period_ms:
        raise ConfigError(f"{path}: raft.election_timeout_min_ms must exceed 3 x append_entries_period_ms")
    if r.election_timeout_min_ms < 3 * r.tick_ms:
        raise ConfigError(f"{path}: raft.election_timeout_min_ms must be at least 3 x tick_ms")
    if cfg.broker.session_timeout_ms <= cfg.broker.heartbeat_interval_ms:
        raise ConfigError(f"{path}: broker.session_timeout_ms must exceed heartbeat_interval_ms")
    return cfg


def load(path: str) -> ClusterConfig:
    """Read and check a TOML config file."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)


def field_docs(cls: type) -> dict[str, tuple[Any, str]]:
    """name -> (default, doc) of a section; used to keep the example file in step."""
    return {f.name: (f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)}
