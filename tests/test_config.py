"""Config loading: the example file is complete and correct; every bad input names file and key."""
import dataclasses
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
