"""Command encoding: round trips, canonical bytes, schema refusals, result helpers.
Goal: a command that encodes is one every node decodes to the same payload; anything else is
refused at the proposer already."""
from __future__ import annotations

import msgpack
import pytest

from raftlog import errors
from raftlog.meta import commands as C

BUILT = {
    "register_broker": C.register_broker(1, "h", 9001, "inc", 5),
    "unfence_broker": C.unfence_broker(1, 2),
    "fence_broker": C.fence_broker(1, 2),
    "create_topic": C.create_topic("t", "T", [[1, 2], [2, 1]], {"a": "b", "n": 3, "f": True}),
    "delete_topic": C.delete_topic("t", "T"),
    "alter_topic_config": C.alter_topic_config("t", {"a": "c"}, ["n"]),
    "change_partition": C.change_partition("t", 0, 3, 1, [1, 2], leader_epoch=4,
                                           isr_broker_epochs=[7, 8]),
    "elect_leaders": C.elect_leaders([C.partition_change("t", 0, 3, 2, [2])]),
    "allocate_producer_ids": C.allocate_producer_ids(100, 1, 2),
    "noop": C.noop(),
    "set_group_assignment": C.set_group_assignment("g", 2, 1, {"m": [("t", 1), ("t", 0)]}, "range"),
    "delete_group": C.delete_group("g", 2),
}


def test_every_op_has_a_builder() -> None:
    assert set(BUILT) == C.OPS


# Commands carrying a format-2 field (the controller's unclean-election default).
BUILT_V2 = {
    "register_broker": C.register_broker(1, "h", 9001, "inc", 5, unclean_default=True),
    "unfence_broker": C.unfence_broker(1, 2, unclean_default=True),
    "fence_broker": C.fence_broker(1, 2, unclean_default=True),
    "alter_topic_config": C.alter_topic_config("t", {"a": "c"}, ["n"], unclean_default=True),
}


@pytest.mark.parametrize("op", sorted(BUILT))
def test_round_trip(op: str) -> None:
    cmd = C.decode(BUILT[op])
    assert cmd.op == op and cmd.format_version == 1         # nothing here needs format 2
    assert set(cmd.payload) == set(C.SCHEMAS[op])          # defaults filled in
    assert C.encode(op, cmd.payload) == BUILT[op]           # decode/encode is stable


@pytest.mark.parametrize("op", sorted(BUILT_V2))
def test_round_trip_format_2(op: str) -> None:
    cmd = C.decode(BUILT_V2[op])
    assert cmd.op == op and cmd.format_version == 2 == C.FORMAT_VERSION
    assert cmd.payload["unclean_default"] is True
    assert C.encode(op, cmd.payload) == BUILT_V2[op]


@pytest.mark.parametrize("op", sorted(BUILT_V2))
def test_default_commands_are_byte_identical_to_format_1(op: str) -> None:
    # What a node of the previous release wrote and reads: [1, op, payload without the field].
    version, wire_op, payload = msgpack.unpackb(BUILT[op])
    assert (version, wire_op) == (1, op) and "unclean_default" not in payload
    assert C.decode(BUILT[op]).payload["unclean_default"] is False


def test_old_journal_entries_mean_no_unclean_default() -> None:
    old = msgpack.packb([1, "fence_broker", {"broker_epoch": 2, "broker_id": 1}])  # sorted keys
    assert C.decode(old).payload == {"broker_id": 1, "broker_epoch": 2, "unclean_default": False}
    assert C.fence_broker(1, 2) == old


def test_payload_values() -> None:
    p = C.decode(BUILT["change_partition"]).payload
    assert p == {"topic": "t", "partition": 0, "partition_epoch": 3, "leader": 1, "isr": (1, 2),
                 "leader_epoch": 4, "isr_broker_epochs": (7, 8)}
    d = C.decode(C.delete_topic("t")).payload
    assert d == {"topic": "t", "topic_id": ""}
    g = C.decode(BUILT["set_group_assignment"]).payload
    assert g["assignment"] == {"m": (("t", 0), ("t", 1))}   # partitions sorted


def test_equal_commands_encode_to_equal_bytes() -> None:
    a = C.encode("create_topic", {"topic": "t", "topic_id": "T", "replicas": [[1]],
                                  "config": {"b": "1", "a": "2"}})
    b = C.encode("create_topic", {"config": {"a": "2", "b": "1"}, "replicas": ((1,),),
                                  "topic_id": "T", "topic": "t"})
    assert a == b


@pytest.mark.parametrize("op,payload,fragment", [
    ("nope", {}, "unknown op"),
    ("fence_broker", {"broker_id": 1}, "missing field 'broker_epoch'"),
    ("fence_broker", {"broker_id": True, "broker_epoch": 1}, "expected an integer"),
    ("fence_broker", {"broker_id": -1, "broker_epoch": 1}, "must be >= 0"),
    ("fence_broker", {"broker_id": 1, "broker_epoch": 1, "x": 1}, "unknown fields"),
    ("register_broker", {"broker_id": 1, "host": "h", "http_port": 0, "incarnation": "i",
                         "now_ms": 0}, "not a port"),
    ("create_topic", {"topic": "t", "topic_id": "T", "replicas": [[1.0]]}, "expected an integer"),
    ("create_topic", {"topic": "t", "topic_id": "T", "replicas": [[1]], "config": {"a": 0.5}},
     "config values"),
    ("create_topic", {"topic": "t", "topic_id": "T", "replicas": [[1]], "config": {"": "x"}},
     "non-empty strings"),
    ("set_group_assignment", {"group": "g", "generation": 1, "expected_generation": 0,
                              "protocol": "r", "assignment": {"m": [["t"]]}}, "[topic, partition]"),
    ("noop", {"x": 1}, "unknown fields"),
])
def test_encode_refuses(op: str, payload: dict, fragment: str) -> None:
    with pytest.raises(errors.InvalidRequestError) as exc:
        C.encode(op, payload)
    assert fragment in exc.value.message


def test_oversized_command_is_refused() -> None:
    big = {f"k{i}": "x" * 4000 for i in range(300)}
    with pytest.raises(errors.InvalidRequestError, match="limit"):
        C.create_topic("t", "T", [[1]], big)


@pytest.mark.parametrize("blob,fragment", [
    (b"\xc1", "not a msgpack command"),
    (msgpack.packb({"op": "noop"}), "a command is"),
    (msgpack.packb([0, "noop", {}]), "command format 0"),
    (msgpack.packb([1, "noop", []]), "payload must be a map"),
    (msgpack.packb([3, "noop", {}]), "command format 3"),
    (msgpack.packb([True, "noop", {}]), "command format True"),
    (msgpack.packb([1, "fence_broker", {"broker_id": 1, "broker_epoch": 2,
                                        "unclean_default": True}]), "need command format 2"),
    (msgpack.packb([2, "fence_broker", {"broker_id": 1, "broker_epoch": 2,
                                        "unclean_default": 1}]), "expected true or false"),
    (msgpack.packb([2, "noop", {"unclean_default": True}]), "unknown fields"),
])
def test_decode_refuses(blob: bytes, fragment: str) -> None:
    with pytest.raises(errors.InvalidRequestError) as exc:
        C.decode(blob)
    assert fragment in exc.value.message


def test_unwrap() -> None:
    assert C.unwrap(("ok", {"a": 1})) == {"a": 1}
    with pytest.raises(errors.for_code("STALE_PARTITION_EPOCH")) as exc:
        C.unwrap(("error", "STALE_PARTITION_EPOCH", "t/0 is at 4"))
    assert exc.value.code == errors.ErrorCode.STALE_PARTITION_EPOCH and exc.value.retriable
    assert "t/0 is at 4" in str(exc.value)
    with pytest.raises(errors.RaftlogError):
        C.unwrap(("weird",))
    assert C.is_ok(C.ok()) and not C.is_ok(C.rejected("X", "y"))
