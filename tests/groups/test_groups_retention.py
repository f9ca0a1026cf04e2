"""Offset retention for empty groups (KIP-211): the pure rule and the records that carry its
clock across a coordinator move."""
from raftlog.groups import offsets as off
from raftlog.groups.retention import Retention

RET = 1000


def test_group_without_members_expires_after_retention_from_last_activity():
    r = Retention(RET)
    r.touch("g", 5_000)              # last commit
    r.touch("g", 4_000)              # an older record read later never moves the clock back
    none = lambda g: False           # noqa: E731
    assert r.expired(5_999, none) == []
    assert r.expired(6_000, none) == ["g"]


def test_group_with_members_never_expires():
    r = Retention(RET)
    r.touch("g", 0)
    assert r.expired(10 ** 9, lambda g: g == "g") == []


def test_becoming_empty_restarts_the_clock():
    r = Retention(RET)
    r.touch("g", 0)                  # committed long ago, had members since
    r.touch("g", 50_000)             # became empty now
    assert r.expired(50_500, lambda g: False) == []
    assert r.expired(51_000, lambda g: False) == ["g"]


def test_forget_and_several_groups():
    r = Retention(RET)
    for i, g in enumerate(["a", "b", "c"]):
        r.touch(g, i * 1000)
    r.forget(["b"])
    assert r.expired(2_500, lambda g: False) == ["a"]
    assert r.expired(3_000, lambda g: False) == ["a", "c"]


def test_empty_since_record_round_trip_and_is_not_an_offset():
    k, v = off.empty_key("g1"), off.empty_value(1234)
    assert off.decode_empty(k, v) == ("g1", 1234)
    assert off.decode_empty(k, None) == ("g1", None)
    assert off.decode(k, v) is None                         # not an offset record
    ok = off.offset_key("g1", "t", 0)
    assert off.decode_empty(ok, off.offset_value(off.OffsetAndMetadata(3))) is None
    assert off.decode_empty(b"\xc1garbage", b"x") is None
