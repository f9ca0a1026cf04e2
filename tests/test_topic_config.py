"""Topic configs: every setting's bounds, and nothing `check` accepts fails later.

A value that passes `topic_config.check` must encode into a metadata command (msgpack: at most
64-bit integers) and open a partition log on every broker (storage's LogOptions); otherwise a
create/alter answers 500 or the topic goes offline. NaN, infinities, huge integers and Kafka's
string forms are checked here, and cleanup.policy's list form is normalised.
"""
import dataclasses
import math

import pytest

from raftlog import config, topic_config
from raftlog.config import LogDefaults
from raftlog.errors import ConfigError, ErrorCode
from raftlog.meta import commands
from raftlog.storage import options as storage_options
from raftlog.storage.options import LogOptions

S = topic_config.SETTINGS
INT_SETTINGS = sorted(n for n, s in S.items() if s.kind is int)
NUMBER_SETTINGS = sorted(n for n, s in S.items() if s.kind in (int, float))


def refused(name, value, needle=""):
    with pytest.raises(ConfigError) as exc:
        topic_config.check(name, value)
    assert exc.value.code is ErrorCode.INVALID_CONFIG
    assert name in exc.value.message and needle in exc.value.message, exc.value.message
    return exc.value.message


def test_every_int_setting_is_bounded_within_a_signed_int64():
    for name in INT_SETTINGS:
        s = S[name]
        assert s.lo is not None and s.hi is not None, name
        assert -(1 << 63) <= s.lo <= s.hi <= config.INT64_MAX, name


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_int_bounds_accept_the_edge_and_refuse_one_past_it(name):
    s = S[name]
    lo, hi = int(s.lo), int(s.hi)
    assert topic_config.check(name, lo) == lo
    assert topic_config.check(name, hi) == hi
    assert topic_config.check(name, str(lo)) == lo          # Kafka's string form
    assert topic_config.check(name, f" {hi} ") == hi
    refused(name, lo - 1, "below the minimum")
    refused(name, hi + 1, "above the maximum")
    refused(name, str(lo - 1), "below the minimum")
    refused(name, str(hi + 1), "above the maximum")


def test_float_bounds_accept_the_edge_and_refuse_just_past_it():
    name = "min.cleanable.dirty.ratio"
    assert topic_config.check(name, 0) == 0.0
    assert topic_config.check(name, 1) == 1.0
    assert topic_config.check(name, "0.0") == 0.0
    assert topic_config.check(name, "1.0") == 1.0
    refused(name, math.nextafter(0.0, -1.0), "below the minimum")
    refused(name, math.nextafter(1.0, 2.0), "above the maximum")
    refused(name, "1.0000001", "above the maximum")


@pytest.mark.parametrize("value", [float("nan"), "nan", "NaN", " nan ", float("inf"),
                                   float("-inf"), "inf", "-inf", "Infinity", "1e999"])
def test_nan_and_infinities_are_refused(value):
    refused("min.cleanable.dirty.ratio", value, "finite")


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize("value", [10 ** 29, "100000000000000000000000000000", 1 << 63,
                                   1 << 64, -(10 ** 29)])
def test_huge_integers_are_refused(name, value):
    refused(name, value)


def test_a_huge_integer_for_a_float_setting_is_refused_not_an_overflow():
    refused("min.cleanable.dirty.ratio", 10 ** 400, "range of a double")


@pytest.mark.parametrize("value", ["5.0", "1e3", "0x10", "--5", "5-", "", "  ", "abc",
                                   "\uff15", "\u00b2", "1" * 65, True, 5.0, None, [5]])
def test_malformed_integers_are_refused(value):
    refused("retention.ms", value, "expected an integer")


@pytest.mark.parametrize("value, want", [("604800000", 604800000), ("-1", -1), ("+5", 5),
                                         (" 7 ", 7), ("0" * 40 + "9", 9)])
def test_integer_strings_kafka_style(value, want):
    assert topic_config.check("retention.ms", value) == want


def test_bool_and_string_settings():
    assert topic_config.check("unclean.leader.election.enable", " TRUE ") is True
    assert topic_config.check("unclean.leader.election.enable", False) is False
    refused("unclean.leader.election.enable", 1, "expected true or false")
    assert topic_config.check("flush.policy", " fsync ") == "fsync"
    refused("flush.policy", "fs ync", "is not one of")
    refused("flush.policy", 1, "expected a string")


@pytest.mark.parametrize("value", ["compact,delete", "delete,compact", " delete , compact ",
                                   "compact, delete", "delete,compact,delete",
                                   "\tcompact,delete\n"])
def test_cleanup_policy_is_a_list_in_either_order(value):
    assert topic_config.check("cleanup.policy", value) == "compact,delete"


@pytest.mark.parametrize("value, want", [("delete", "delete"), (" compact ", "compact"),
                                         ("compact,compact", "compact")])
def test_cleanup_policy_single_values(value, want):
    assert topic_config.check("cleanup.policy", value) == want


@pytest.mark.parametrize("value", ["Delete", "COMPACT,delete", "delete,", ",compact", "",
                                   "delete;compact", "delete,shred", "compact delete"])
def test_cleanup_policy_refuses_unknown_items(value):
    refused("cleanup.policy", value, "is not one of")


def test_unknown_setting_and_non_object():
    refused("retention.mss", 1, "unknown topic config")
    with pytest.raises(ConfigError, match="config must be an object"):
        topic_config.check_all(["retention.ms"])


# -- nothing accepted fails later ---------------------------------------------------------------
def _edges(which):
    """Every setting at its lower or upper edge (strings and bools at a valid choice)."""
    out = {}
    for name, s in S.items():
        if s.kind in (int, float):
            out[name] = s.kind(s.lo if which == "lo" else s.hi)
        elif s.kind is bool:
            out[name] = which == "hi"
        else:
            out[name] = s.choices[0 if which == "lo" else -1]
    return out


@pytest.mark.parametrize("which", ["lo", "hi"])
def test_values_at_the_edges_encode_into_metadata_commands(which):
    values = topic_config.check_all(_edges(which))
    state = topic_config.for_state(values)
    create = commands.create_topic("t", "T", [[1, 2, 3]], state)
    alter = commands.alter_topic_config("t", state)
    assert isinstance(create, bytes) and isinstance(alter, bytes)
    # What the state stores reads back to the same values.
    assert topic_config.effective(state, LogDefaults()) == values


@pytest.mark.parametrize("name, option", [("segment.bytes", "segment_bytes"),
                                          ("segment.ms", "segment_ms"),
                                          ("flush.ms", "flush_interval_ms")])
def test_storage_opens_every_accepted_value(name, option):
    """segment.bytes = 2^31 used to pass check and then fail every partition open."""
    s = S[name]
    for edge in (s.lo, s.hi):
        assert edge is not None, f"{name} has no bound"
        LogOptions(**{option: topic_config.check(name, int(edge))})


def _replica_fetch_max_bytes_range():
    f = {f.name: f for f in dataclasses.fields(config.ReplicationSection)}
    return f["replica_fetch_max_bytes"].metadata["lo"], f["replica_fetch_max_bytes"].metadata["hi"]


@pytest.mark.parametrize("which", ["lo", "hi"])
@pytest.mark.parametrize("fetch_edge", [0, 1])
def test_values_at_the_edges_open_a_storage_log(which, fetch_edge):
    values = topic_config.effective(topic_config.check_all(_edges(which)), LogDefaults())
    fetch_bytes = _replica_fetch_max_bytes_range()[fetch_edge]
    # The same construction as replication/manager.py's _open.
    opts = LogOptions(segment_bytes=values["segment.bytes"], segment_ms=values["segment.ms"],
                      flush_policy=values["flush.policy"], flush_interval_ms=values["flush.ms"],
                      max_batch_bytes=max(values["max.message.bytes"], fetch_bytes))
    assert opts.segment_bytes == values["segment.bytes"]


def test_storage_limits_equal_the_config_limits():
    """storage/options.py may not import config.py and repeats these numbers; keep them equal."""
    assert config.SEGMENT_BYTES_MAX == storage_options.SEGMENT_BYTES_MAX
    assert config.MAX_BATCH_BYTES_MAX == storage_options.MAX_BATCH_BYTES_MAX
    assert config.SEGMENT_BYTES_MIN >= storage_options.SEGMENT_BYTES_MIN
    for field_name, hi in (("segment_ms", config.SEGMENT_MS_MAX),
                           ("flush_interval_ms", config.FLUSH_INTERVAL_MS_MAX)):
        LogOptions(**{field_name: hi})
        with pytest.raises(ConfigError):
            LogOptions(**{field_name: hi + 1})
    LogOptions(segment_bytes=config.SEGMENT_BYTES_MAX)
    with pytest.raises(ConfigError):
        LogOptions(segment_bytes=config.SEGMENT_BYTES_MAX + 1)


def test_topic_ranges_are_the_log_section_ranges():
    for name, s in S.items():
        f = config.spec(LogDefaults, s.default_attr)
        assert (s.kind, s.lo, s.hi, s.choices) == (f.kind, f.lo, f.hi, f.choices), name


def test_a_value_stored_before_a_limit_was_tightened_still_reads():
    """A topic created with segment.bytes = 2^31 (accepted before) must not stop a broker from
    applying metadata: the value in use is clamped into range; unreadable values use the default."""
    d = LogDefaults()
    values = topic_config.effective({"segment.bytes": 1 << 31, "flush.ms": (1 << 62) + 1,
                                     "min.cleanable.dirty.ratio": "nan",
                                     "cleanup.policy": "shred"}, d)
    assert values["segment.bytes"] == config.SEGMENT_BYTES_MAX
    assert values["flush.ms"] == config.FLUSH_INTERVAL_MS_MAX
    assert values["min.cleanable.dirty.ratio"] == d.min_cleanable_dirty_ratio
    assert values["cleanup.policy"] == d.cleanup_policy


# -- through the controller: INVALID_CONFIG, never an encoder error -----------------------------
def _controller():
    from raftlog.meta.controller import Controller
    from raftlog.meta.local import LocalMetaLog
    cfg = config.parse({"nodes": [{"id": i, "http_port": 9000 + i, "raft_port": 9100 + i}
                                  for i in (1, 2, 3)]}, "test.toml")
    meta = LocalMetaLog()
    ctl = Controller(meta, cfg, mono_ms=lambda: 1_000_000, port_refuses=None)
    return ctl, meta


async def _active(ctl, meta):
    ctl._become_active()
    for b in (1, 2, 3):
        await ctl.register(b, "127.0.0.1", 9000 + b, f"inc-{b}")
        await ctl.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)


@pytest.mark.parametrize("value", [10 ** 29, "100000000000000000000000000000"])
async def test_create_and_alter_with_a_huge_integer_answer_invalid_config(value):
    ctl, meta = _controller()
    await _active(ctl, meta)
    with pytest.raises(ConfigError, match="retention.ms: .* is above the maximum"):
        await ctl.create_topic("huge", 1, 3, {"retention.ms": value})
    assert meta.view.topic("huge") is None
    await ctl.create_topic("ok", 1, 3, {"cleanup.policy": "delete,compact"})
    assert dict(meta.view.topic("ok").config) == {"cleanup.policy": "compact,delete"}
    with pytest.raises(ConfigError, match="retention.ms: .* is above the maximum"):
        await ctl.alter_topic_config("ok", {"retention.ms": value})
    with pytest.raises(ConfigError, match="finite"):
        await ctl.alter_topic_config("ok", {"min.cleanable.dirty.ratio": "nan"})
    assert dict(meta.view.topic("ok").config) == {"cleanup.policy": "compact,delete"}
