"""Record batch codec: round trips, Kafka-v2 layout golden checks, and every malformed input.

Goal: prove the header sits at Kafka RecordBatch v2's byte offsets, that the CRC is CRC-32C over
[21:] (so stamping offset and epoch leaves it valid), that encode/decode round-trip any records,
and that every malformed buffer raises CorruptBatchError, never another exception or a silent
success. Method: a pinned golden encoding, field-by-field struct reads at Kafka's offsets,
hypothesis round trips, and one hand-built corruption per failure mode.
"""
from __future__ import annotations

import struct
import zlib

import msgpack
import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from raftlog.codec import batch as B
from raftlog.errors import CorruptBatchError, ErrorCode

TS = 1_700_000_000_000
GOLDEN_RECORDS = [(b"key", b"value", [("h", b"x")], TS), (None, b"v2", None, TS + 5)]
# Pinned encoding of GOLDEN_RECORDS at base offset 0, epoch -1: any change to the layout,
# the CRC or the msgpack record shape breaks stored data and must be deliberate.
GOLDEN_HEX = (
    "00000000000000000000004fffffffff026b0d33720000000000010000018bcfe568000000018bcfe56805"
    "ffffffffffffffffffffffffffff00000002929400c4036b6579c40576616c75659192a168c401789405c0"
    "c4027632c0")


def golden() -> bytes:
    return B.encode(GOLDEN_RECORDS)


# -- golden layout ----------------------------------------------------------------------------
def test_golden_bytes_are_pinned() -> None:
    assert golden().hex() == GOLDEN_HEX


def test_crc32c_is_the_castagnoli_polynomial() -> None:
    # The standard check value of CRC-32C (RFC 3720 / Kafka's Crc32C) for "123456789".
    assert crc32c(b"123456789") == 0xE3069283
    assert zlib.crc32(b"123456789") != 0xE3069283  # not plain CRC-32


def test_header_fields_sit_at_kafka_v2_offsets() -> None:
    b = B.encode(GOLDEN_RECORDS, base_offset=1234, leader_epoch=7, producer_id=99,
                 producer_epoch=3, base_sequence=41)
    assert B.HEADER_SIZE == 61
    assert struct.unpack_from(">q", b, 0)[0] == 1234            # baseOffset
    assert struct.unpack_from(">i", b, 8)[0] == len(b) - 12     # batchLength
    assert struct.unpack_from(">i", b, 12)[0] == 7              # partitionLeaderEpoch
    assert b[16] == 2                                           # magic
    assert struct.unpack_from(">I", b, 17)[0] == crc32c(b[21:])  # crc over attributes..end
    assert struct.unpack_from(">h", b, 21)[0] == 0              # attributes
    assert struct.unpack_from(">i", b, 23)[0] == 1              # lastOffsetDelta
    assert struct.unpack_from(">q", b, 27)[0] == TS             # firstTimestamp
    assert struct.unpack_from(">q", b, 35)[0] == TS + 5         # maxTimestamp
    assert struct.unpack_from(">q", b, 43)[0] == 99             # producerId
    assert struct.unpack_from(">h", b, 51)[0] == 3              # producerEpoch
    assert struct.unpack_from(">i", b, 53)[0] == 41             # baseSequence
    assert struct.unpack_from(">i", b, 57)[0] == 2              # records count


def test_stamp_changes_only_offset_and_epoch_and_keeps_crc_valid() -> None:
    b = bytearray(golden())
    before = bytes(b)
    B.stamp(b, 10_000_000_000, 42)
    assert b[16:] == before[16:]  # magic, CRC and everything covered by it untouched
    assert b[8:12] == before[8:12]
    h = B.validate(b)
    assert (h.base_offset, h.leader_epoch, h.last_offset, h.next_offset) == (
        10_000_000_000, 42, 10_000_000_001, 10_000_000_002)
    assert [r.offset for r in B.decode(b)] == [10_000_000_000, 10_000_000_001]


def test_stamp_at_position_in_concatenated_buffer() -> None:
    one, two = B.encode(GOLDEN_RECORDS), B.encode([(b"a", b"b", None, TS)])
    buf = bytearray(one + two)
    B.stamp(buf, 2, 5, pos=len(one))
    assert [(p, h.base_offset, h.leader_epoch) for p, h in B.iter_batches(buf)] == [
        (0, 0, -1), (len(one), 2, 5)]


# -- round trips ------------------------------------------------------------------------------
def test_decode_returns_absolute_offsets_and_timestamps() -> None:
    recs = B.decode(B.encode(GOLDEN_RECORDS, base_offset=100))
    assert recs == [B.Record(100, TS, b"key", b"value", (("h", b"x"),)),
                    B.Record(101, TS + 5, None, b"v2", ())]


def test_gzip_round_trip_and_codec_bits() -> None:
    b = B.encode([(b"k", b"v" * 1000, None, TS)] * 5, codec=B.CODEC_GZIP)
    h = B.validate(b)
    assert h.codec == B.CODEC_GZIP and len(b) < 1000
    assert [r.value for r in B.decode(b)] == [b"v" * 1000] * 5


record = st.tuples(st.one_of(st.none(), st.binary(max_size=20)),
                   st.one_of(st.none(), st.binary(max_size=200)),
                   st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=5),
                                                           st.one_of(st.none(), st.binary(max_size=5))),
                                                 max_size=3)),
                   st.integers(min_value=0, max_value=1 << 50))


@settings(max_examples=150, deadline=None)
@given(st.lists(record, min_size=1, max_size=20), st.integers(0, 1 << 40),
       st.sampled_from([B.CODEC_NONE, B.CODEC_GZIP]))
def test_round_trip_any_records(records: list, base: int, codec: int) -> None:
    b = B.encode(records, base_offset=base, codec=codec)
    h = B.validate(b, max_bytes=1 << 30)
    assert h.record_count == len(records) and h.first_timestamp == records[0][3]
    assert h.max_timestamp == max(r[3] for r in records)
    out = B.decode(b)
    assert [(r.offset, r.timestamp, r.key, r.value) for r in out] == [
        (base + i, ts, k, v) for i, (k, v, _, ts) in enumerate(records)]
    assert [r.headers for r in out] == [tuple(tuple(x) for x in (hd or ()))
                                        for _, _, hd, _ in records]


def test_iter_batches_stops_at_incomplete_tail() -> None:
    one, two = B.encode(GOLDEN_RECORDS), B.encode([(b"a", b"b", None, TS)])
    buf = one + two + two[:30]
    assert [p for p, _ in B.iter_batches(buf)] == [0, len(one)]
    assert [p for p, _ in B.iter_batches(buf, end=len(one) + 5)] == [0]


# -- malformed input: every case is CorruptBatchError -----------------------------------------
def corrupt(b: bytes, at: int, value: bytes) -> bytearray:
    out = bytearray(b)
    out[at:at + len(value)] = value
    return out


def with_valid_crc(buf: bytearray) -> bytearray:
    struct.pack_into(">I", buf, 17, crc32c(bytes(buf[21:])))
    return buf


MALFORMED = {
    "short buffer": lambda g: g[:60],
    "empty buffer": lambda g: b"",
    "bad magic": lambda g: corrupt(g, 16, b"\x01"),
    "crc mismatch (payload byte flipped)": lambda g: corrupt(g, len(g) - 1, bytes([g[-1] ^ 1])),
    "crc mismatch (crc field)": lambda g: corrupt(g, 17, b"\x00\x00\x00\x00"),
    "length says longer": lambda g: corrupt(g, 8, struct.pack(">i", len(g) - 12 + 1)),
    "length says shorter": lambda g: corrupt(g, 8, struct.pack(">i", len(g) - 12 - 1)),
    "length below a header": lambda g: corrupt(g, 8, struct.pack(">i", 10)),
    "trailing bytes": lambda g: g + b"\x00",
    "record-count mismatch": lambda g: with_valid_crc(corrupt(g, 57, struct.pack(">i", 3))),
    "zero record count": lambda g: with_valid_crc(corrupt(corrupt(g, 57, struct.pack(">i", 0)),
                                                          23, struct.pack(">i", -1))),
    "control batch from a client": lambda g: with_valid_crc(corrupt(g, 21, b"\x00\x20")),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_validate_rejects(case: str) -> None:
    bad = MALFORMED[case](golden())
    with pytest.raises(CorruptBatchError) as info:
        B.validate(bad)
    assert info.value.code == ErrorCode.CORRUPT_MESSAGE and info.value.message


def test_validate_rejects_over_size_limit() -> None:
    g = golden()
    assert B.validate(g, max_bytes=len(g)).size == len(g)
    with pytest.raises(CorruptBatchError, match="over the limit"):
        B.validate(g, max_bytes=len(g) - 1)


def test_validate_accepts_control_batch_from_broker() -> None:
    b = B.encode([(b"x", None, None, TS)], attributes=B.CONTROL)
    assert B.validate(b, from_client=False).is_control
    with pytest.raises(CorruptBatchError, match="control"):
        B.validate(b)


def test_crc_ok_detects_flip_and_short_buffer() -> None:
    g = golden()
    h = B.peek(g)
    assert B.crc_ok(g, 0, h)
    assert not B.crc_ok(corrupt(g, 40, bytes([g[40] ^ 0x80])), 0, h)
    assert not B.crc_ok(g[:-1], 0, h)


def payload_batch(payload: bytes, count: int = 1, codec: int = B.CODEC_NONE) -> bytes:
    return B.encode_payload(payload, count, TS, TS, attributes=codec)


@pytest.mark.parametrize("payload,count", [
    (b"\xc1", 1),                                   # msgpack: reserved byte, never valid
    (b"\x92\x01", 2),                               # truncated array
    (msgpack.packb({"not": "a list"}), 1),          # a map, not an array of records
    (msgpack.packb([[0, b"k", b"v", None]]), 2),    # count says 2, payload holds 1
    (msgpack.packb([[0, b"k"]]), 1),                # a record with missing fields
    (msgpack.packb([["x", b"k", b"v", None]]), 1),  # timestamp delta not an int
])
def test_decode_rejects_garbage_records(payload: bytes, count: int) -> None:
    b = payload_batch(payload, count)
    with pytest.raises(CorruptBatchError):
        B.decode(b)


# -- validate checks the records payload, per batch (audit: CRC-valid poison batches) -------
ONE = B.pack([(0, None, b"x", None)])                       # one record, 8 bytes
REC = B.pack((0, None, b"0123456789", None))                # one record without the array


def _gz(payload: bytes) -> bytes:
    return zlib.compress(payload, 1)


# (payload, record_count, attributes) of batches whose CRC is valid but whose records are wrong;
# each was acknowledged by the broker before and then failed every consumer of its partition.
POISON = {
    "count lie: says 1000, holds 1": (ONE, 1000, 0),
    "count lie within the payload's size: says 2, holds 3":
        (b"\x93" + REC * 3, 2, 0),
    "count lie: says 3, holds 2 (padding after)": (b"\x92" + REC * 2 + b"\xc0" * 10, 3, 0),
    "count 2**31-1": (ONE, 2**31 - 1, 0),
    "garbage payload": (b"\xc1\xc1\xc1", 1, 0),
    "garbage after a right array header": (b"\x91" + b"\xc1" * 10, 1, 0),
    "not an array": (msgpack.packb({"a": b"0123456789"}), 1, 0),
    "truncated array": (b"\x92" + REC + REC[:-3], 2, 0),
    "bytes after the array": (ONE + b"\xc0", 1, 0),
    "a record nested too deep": (b"\x91" + b"\x91" * 5000 + b"\xc0", 1, 0),
    "unknown codec 5": (ONE, 1, 5),
    "snappy (2), not supported": (ONE, 1, 2),
    "codec 7": (ONE, 1, 7),
    "gzip bit on an uncompressed payload": (ONE, 1, B.CODEC_GZIP),
    "gzip: count lie": (_gz(ONE), 2, B.CODEC_GZIP),
    "gzip: garbage inside": (_gz(b"\x91\xc1\xc1\xc1\xc1\xc1"), 1, B.CODEC_GZIP),
    "gzip: truncated stream": (_gz(REC * 50)[:-6], 1, B.CODEC_GZIP),
    "gzip: bytes after the stream": (_gz(ONE) + b"\x00", 1, B.CODEC_GZIP),
    "gzip: count 2**31-1": (_gz(ONE), 2**31 - 1, B.CODEC_GZIP),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_validate_rejects_crc_valid_batches_whose_records_are_wrong(case: str) -> None:
    payload, count, attributes = POISON[case]
    b = B.encode_payload(payload, count, TS, TS, attributes=attributes)
    assert B.crc_ok(b, 0, B.peek(b)) and B.peek(b).last_offset_delta == count - 1
    with pytest.raises(CorruptBatchError) as info:
        B.validate(b)
    assert info.value.code == ErrorCode.CORRUPT_MESSAGE and info.value.message


def test_validate_rejects_a_gzip_payload_inflating_past_the_limit(monkeypatch) -> None:
    records = [(None, b"\x00" * 1000, None, TS)] * 50           # ~50 KB, compresses to ~few 100 B
    b = B.encode(records, codec=B.CODEC_GZIP)
    assert B.validate(b).record_count == 50
    monkeypatch.setattr(B, "MAX_UNCOMPRESSED_BYTES", 10_000)
    with pytest.raises(CorruptBatchError, match="inflates past"):
        B.validate(b)


@pytest.mark.parametrize("count", [1, 15, 16, 65_535, 65_536])
@pytest.mark.parametrize("codec", [B.CODEC_NONE, B.CODEC_GZIP])
def test_validate_accepts_every_array_header_form(count: int, codec: int) -> None:
    # fixarray (< 16), array 16 (< 65,536) and array 32 headers, smallest records possible
    payload = B.pack([(0, None, None, None)] * count)
    assert len(payload) < count * B.MIN_RECORD_BYTES + 6
    b = B.encode_payload(B.compress(codec, payload), count, TS, TS, attributes=codec)
    assert B.validate(b, max_bytes=1 << 30).record_count == count


def test_validate_accepts_what_the_clients_build() -> None:
    for b in (golden(), B.encode(GOLDEN_RECORDS, codec=B.CODEC_GZIP),
              B.encode_payload(B.pack_values([b"v" * 100] * 2000), 2000, TS, TS),
              B.encode_wire([(0, b"k", b"v", [["h", None]])] * 3, TS, TS, codec=B.CODEC_GZIP)):
        assert B.validate(b).record_count == len(B.decode(b))


@pytest.mark.parametrize("payload", [
    msgpack.packb([[0, b"k"]]),                     # a record with missing fields
    msgpack.packb([["x", b"k", b"v", None]]),       # timestamp delta not an int
])
def test_validate_checks_syntax_not_record_shapes(payload: bytes) -> None:
    # Documented limit (check_records): a shape check would build objects per record.
    b = payload_batch(payload, 1)
    assert B.validate(b).record_count == 1
    with pytest.raises(CorruptBatchError):
        B.decode(b)


def test_decode_rejects_bad_gzip_and_unknown_codec() -> None:
    with pytest.raises(CorruptBatchError, match="gzip"):
        B.decode(payload_batch(b"not gzip", 1, B.CODEC_GZIP))
    with pytest.raises(CorruptBatchError, match="codec"):
        B.decode(payload_batch(msgpack.packb([[0, None, b"v", None]]), 1, 5))


def test_decode_rejects_truncated_and_corrupt_concatenations() -> None:
    one, two = B.encode(GOLDEN_RECORDS), B.encode([(b"a", b"b", None, TS)])
    assert len(B.decode(one + two)) == 3
    with pytest.raises(CorruptBatchError, match="length mismatch"):
        B.decode(one + two[:-1])
    flipped = bytearray(one + two)
    flipped[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="CRC"):
        B.decode(flipped)


@pytest.mark.parametrize("length", [0, 1, 100, 255, 256, 65_535, 65_536])
@pytest.mark.parametrize("count", [1, 15, 16, 300])
def test_pack_values_is_byte_for_byte_msgpack_of_the_wire_tuples(length, count):
    # pack_values skips msgpack for fixed-size values; the bytes must not change.
    values = [bytes([i % 251]) * length for i in range(count)]
    assert B.pack_values(values) == B.pack([(0, None, v, None) for v in values])


def test_pack_values_with_mixed_lengths_falls_back_to_msgpack():
    values = [b"a", b"bb", b"c" * 300]
    assert B.pack_values(values) == B.pack([(0, None, v, None) for v in values])
