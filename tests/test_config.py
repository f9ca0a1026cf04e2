"""Config loading: the example file is complete and correct; every bad input names file and key."""
import dataclasses
import pathlib
import subprocess
import sys
import tomllib

import pytest

from raftlog import config
from raftlog.errors import ConfigError

EXAMPLE = "cluster.example.toml"

GOOD = """
[[nodes]]
id = 1
http_port = 9091
raft_port = 19091
"""


def test_example_file_loads_with_three_nodes():
    cfg = config.load(EXAMPLE)
    assert cfg.node_ids == (1, 2, 3)
    assert cfg.node(2).http_port == 9092
    assert cfg.node(3).data_dir.endswith("data/node-3")


def test_example_file_lists_every_setting_with_its_default():
    with open(EXAMPLE, "rb") as fh:
        data = tomllib.load(fh)
    for name, cls in config._SECTIONS.items():
        for key, (default, _doc) in config.field_docs(cls).items():
            assert key in data[name], f"{EXAMPLE} lacks [{name}] {key}"
            assert data[name][key] == default, f"[{name}] {key}: example {data[name][key]!r} != default {default!r}"


def _load(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(str(p))


@pytest.mark.parametrize("extra, needle", [
    ("[log]\nsegment_bites = 5\n", "log.segment_bites: unknown setting"),
    ("[log]\nsegment_bytes = 'big'\n", "log.segment_bytes: expected int"),
    ("[log]\nsegment_bytes = 5\n", "log.segment_bytes: 5 is below the minimum"),
    ("[log]\ncleanup_policy = 'shred'\n", "log.cleanup_policy: 'shred' is not one of"),
    ("[log]\nunclean_leader_election_enable = 1\n", "expected bool"),
    ("[bogus]\nx = 1\n", "bogus: unknown section"),
    ("[raft]\nelection_timeout_min_ms = 700\n", "election_timeout_max_ms must exceed"),
])
def test_bad_values_name_file_and_key(tmp_path, extra, needle):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, GOOD + extra)
    assert needle in str(exc.value)
    assert "c.toml" in str(exc.value)


def test_missing_file_and_bad_toml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        _load(tmp_path, "[[nodes]\n")


def test_nodes_are_required_and_unique(tmp_path):
    with pytest.raises(ConfigError, match="at least one"):
        _load(tmp_path, "[log]\n")
    with pytest.raises(ConfigError, match="id 1 is also used"):
        _load(tmp_path, GOOD + GOOD.replace("9091", "9092").replace("19091", "19092"))
    with pytest.raises(ConfigError, match="http_port: required"):
        _load(tmp_path, "[[nodes]]\nid = 1\nraft_port = 5\n")


def test_off_loopback_needs_a_secret(tmp_path):
    text = GOOD.replace("id = 1", 'id = 1\nhost = "10.0.0.1"')
    with pytest.raises(ConfigError, match="cluster.secret: required"):
        _load(tmp_path, text)
    cfg = _load(tmp_path, '[cluster]\nsecret = "s3"\n' + text)
    assert cfg.cluster.secret == "s3"


def test_config_is_frozen(tmp_path):
    cfg = _load(tmp_path, GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.log.segment_bytes = 1  # type: ignore[misc]
    assert cfg.node(1).data_dir.startswith(str(tmp_path))


def test_proxy_keys_of_a_node_are_optional_and_off_by_default(tmp_path):
    n = _load(tmp_path, GOOD).node(1)
    assert (n.advertised_http_port, n.dial_http_port, n.dial_raft_port) == (0, 0, 0)
    n = _load(tmp_path, GOOD + "advertised_http_port = 7001\ndial_http_port = 7002\n"
                               "dial_raft_port = 7003\n").node(1)
    assert (n.advertised_http_port, n.dial_http_port, n.dial_raft_port) == (7001, 7002, 7003)
    with pytest.raises(ConfigError, match="dial_raft_port: 70000 is above the maximum"):
        _load(tmp_path, GOOD + "dial_raft_port = 70000\n")


# -- limits: every int bounded, storage's ranges, finite floats ----------------------------------
def test_every_int_setting_has_an_upper_bound_within_int64():
    for cls in (*config._SECTIONS.values(), config.NodeConfig):
        for f in dataclasses.fields(cls):
            if config.spec(cls, f.name).kind is int:
                hi = f.metadata["hi"]
                assert hi is not None and hi <= config.INT64_MAX, f"{cls.__name__}.{f.name}"


@pytest.mark.parametrize("key, edge", [
    ("segment_bytes", (1 << 31) - 1),      # storage's SEGMENT_BYTES_MAX
    ("segment_ms", 1 << 62),
    ("flush_interval_ms", 1 << 62),
    ("retention_ms", (1 << 63) - 1),
    ("retention_bytes", (1 << 63) - 1),
    ("delete_retention_ms", (1 << 63) - 1),
    ("min_compaction_lag_ms", (1 << 63) - 1),
    ("retention_check_interval_ms", (1 << 63) - 1),
])
def test_log_upper_bounds_accept_the_edge_and_refuse_one_past_it(tmp_path, key, edge):
    assert getattr(_load(tmp_path, GOOD + f"[log]\n{key} = {edge}\n").log, key) == edge
    with pytest.raises(ConfigError, match=f"c.toml: log.{key}: {edge + 1} is above the maximum"):
        _load(tmp_path, GOOD + f"[log]\n{key} = {edge + 1}\n")


def test_replica_fetch_max_bytes_fits_storage_max_batch(tmp_path):
    """Storage opens a log with max_batch_bytes >= replica_fetch_max_bytes, at most 256 MiB."""
    edge = 256 << 20
    cfg = _load(tmp_path, GOOD + f"[replication]\nreplica_fetch_max_bytes = {edge}\n")
    assert cfg.replication.replica_fetch_max_bytes == edge
    with pytest.raises(ConfigError, match="replica_fetch_max_bytes: 268435457 is above"):
        _load(tmp_path, GOOD + f"[replication]\nreplica_fetch_max_bytes = {edge + 1}\n")


@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "-inf"])
def test_non_finite_floats_are_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="c.toml: log.min_cleanable_dirty_ratio: must be a "
                                          "finite number"):
        _load(tmp_path, GOOD + f"[log]\nmin_cleanable_dirty_ratio = {value}\n")


def test_huge_integers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="log.retention_ms: 100000000000000000000000000000 is "
                                          "above the maximum"):
        _load(tmp_path, GOOD + "[log]\nretention_ms = 100000000000000000000000000000\n")
    with pytest.raises(ConfigError, match="log.min_cleanable_dirty_ratio: .* too large"):
        _load(tmp_path, GOOD + "[log]\nmin_cleanable_dirty_ratio = " + "9" * 400 + "\n")
    with pytest.raises(ConfigError, match="c.toml: not valid TOML"):
        _load(tmp_path, GOOD + "[log]\nretention_ms = " + "1" * 5000 + "\n")


def test_deeply_nested_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="c.toml: not valid TOML: .* nested too deeply"):
        _load(tmp_path, "x = " + "[" * 100_000 + "\n")


@pytest.mark.parametrize("value", ["delete,compact", "compact,delete", " delete , compact "])
def test_cleanup_policy_either_order_is_normalised(tmp_path, value):
    cfg = _load(tmp_path, GOOD + f'[log]\ncleanup_policy = "{value}"\n')
    assert cfg.log.cleanup_policy == "compact,delete"


# -- pairs of settings that must be ordered -----------------------------------------------------
@pytest.mark.parametrize("small, large, bad, ok", [
    ("groups.min_session_timeout_ms", "groups.max_session_timeout_ms", (6000, 5999), (6000, 6000)),
    ("broker.heartbeat_interval_ms", "broker.session_timeout_ms", (3000, 3000), (2999, 3000)),
    ("replication.replica_fetch_wait_max_ms", "replication.replica_lag_time_max_ms",
     (2000, 2000), (1999, 2000)),
    ("raft.election_timeout_min_ms", "raft.election_timeout_max_ms", (700, 700), (700, 701)),
    ("raft.append_entries_period_ms", "raft.leader_fallback_timeout_ms", (150, 150), (150, 151)),
    ("log.max_message_bytes", "limits.max_request_bytes", (4096, 4095), (4096, 4096)),
])
def test_ordered_pairs_are_checked_naming_file_and_both_keys(tmp_path, small, large, bad, ok):
    def toml(a, b):
        (s1, k1), (s2, k2) = small.split("."), large.split(".")
        if s1 == s2:
            # Raft periods this long need a longer election timeout (checked first).
            extra = "election_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\n" \
                if k1 == "append_entries_period_ms" else ""
            return f"[{s1}]\n{k1} = {a}\n{k2} = {b}\n{extra}"
        return f"[{s1}]\n{k1} = {a}\n[{s2}]\n{k2} = {b}\n"
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, GOOD + toml(*bad))
    msg = str(exc.value)
    assert "c.toml" in msg and small in msg and large in msg, msg
    cfg = _load(tmp_path, GOOD + toml(*ok))
    assert config._get(cfg, small) == ok[0] and config._get(cfg, large) == ok[1]


def test_raft_multiples_name_both_keys(tmp_path):
    with pytest.raises(ConfigError, match="raft.election_timeout_min_ms must exceed 3 x "
                                          "raft.append_entries_period_ms"):
        _load(tmp_path, GOOD + "[raft]\nappend_entries_period_ms = 100\n")
    with pytest.raises(ConfigError, match="raft.election_timeout_min_ms must be at least 3 x "
                                          "raft.tick_ms"):
        _load(tmp_path, GOOD + "[raft]\ntick_ms = 101\n")


# -- a file that is not UTF-8 -------------------------------------------------------------------
BAD_UTF8 = GOOD.encode() + b'[cluster]\nid = "caf\xe9"\n'   # Latin-1, not UTF-8


def test_non_utf8_file_is_a_config_error_naming_the_file(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(BAD_UTF8)
    with pytest.raises(ConfigError) as exc:
        config.load(str(p))
    assert str(p) in exc.value.message and "not UTF-8" in exc.value.message
    assert f"byte 0xe9 at offset {BAD_UTF8.index(0xe9)}" in exc.value.message


def test_node_py_exits_2_with_one_line_for_a_non_utf8_file(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(BAD_UTF8)
    node_py = pathlib.Path(__file__).resolve().parents[1] / "node.py"
    r = subprocess.run([sys.executable, str(node_py), "--config", str(p), "--node-id", "1"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and str(p) in lines[0] and "not UTF-8" in lines[0]
