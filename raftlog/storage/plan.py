"""Append planning: turn an append buffer into the list of batches it holds and their offsets.

Owns the per-batch walk over an append buffer (headers only, never records): for the leader it
stamps each batch with its offsets and epoch in place; for a follower it checks that each batch
continues the log exactly, passes its CRC (one C call per batch) and never lowers the epoch.
The result is a plan of plain tuples that log.py writes. Imports only the stdlib, crc32c,
raftlog.codec.batch, raftlog.errors and storage.errors; never asyncio, aiohttp, pysyncobj or
anything from raftlog.meta/server/replication.
"""
from __future__ import annotations

from crc32c import crc32c

from raftlog.codec.batch import (CRC_START, HEADER, HEADER_SIZE, LENGTH_OVERHEAD, MAGIC, peek,
                                 stamp)
from raftlog.errors import CorruptBatchError
from raftlog.storage.errors import (EpochOrderError, MessageTooLargeError,
                                    UnexpectedAppendOffsetError)

# One batch of an append buffer, as a plain tuple (built per batch on the hot path):
# (position in the buffer, base offset, next offset, size in bytes, max timestamp)
Planned = tuple[int, int, int, int, int]
P_POS, P_BASE, P_NEXT, P_SIZE, P_MAX_TS = range(5)
# Indexes into batch.HEADER.unpack_from(...), the fields of BatchHeader in order.
_BASE, _LENGTH, _EPOCH, _MAGIC, _CRC, _DELTA, _MAX_TS, _COUNT = 0, 1, 2, 3, 4, 6, 8, 12
_LENGTH_MIN = HEADER_SIZE - LENGTH_OVERHEAD


def plan_leader(buf: bytearray | memoryview, log_end_offset: int, leader_epoch: int,
                max_batch_bytes: int) -> list[Planned]:
    """Stamp every batch of `buf` in place with consecutive offsets from `log_end_offset` and
    `leader_epoch`; raises before stamping anything past a malformed or oversized batch."""
    plan: list[Planned] = []
    pos, offset, total = 0, log_end_offset, len(buf)
    while pos < total:
        f = whole_batch_header(buf, pos, total)
        size = f[_LENGTH] + LENGTH_OVERHEAD
        if size > max_batch_bytes:
            raise MessageTooLargeError(f"batch of {size} bytes is over the limit of "
                                       f"{max_batch_bytes}")
        stamp(buf, offset, leader_epoch, pos)
        nxt = offset + f[_COUNT]
        plan.append((pos, offset, nxt, size, f[_MAX_TS]))
        pos, offset = pos + size, nxt
    if not plan:
        raise CorruptBatchError("empty append: no batch in the buffer")
    return plan


def plan_replica(mv: memoryview, log_end_offset: int,
                 latest_epoch: int) -> tuple[list[Planned], list[tuple[int, int]]]:
    """Check a follower's buffer of leader-stamped batches; returns the plan and the
    (epoch, start offset) pairs new to the epoch cache."""
    plan: list[Planned] = []
    new_epochs: list[tuple[int, int]] = []
    pos, expected, total = 0, log_end_offset, len(mv)
    while pos < total:
        f = whole_batch_header(mv, pos, total, compacted_ok=True)
        base, epoch, size = f[_BASE], f[_EPOCH], f[_LENGTH] + LENGTH_OVERHEAD
        if base != expected:
            raise UnexpectedAppendOffsetError(
                f"replica batch at offset {base}, log continues at {expected}",
                {"expected_offset": expected, "got_offset": base})
        if crc32c(mv[pos + CRC_START:pos + size]) != f[_CRC]:
            raise CorruptBatchError(f"CRC mismatch in replica batch at offset {base}")
        if epoch < max(latest_epoch, 0):
            raise EpochOrderError(f"replica batch at offset {base} has epoch {epoch} after "
                                  f"epoch {latest_epoch}", {"latest_epoch": latest_epoch})
        if epoch > latest_epoch:
            new_epochs.append((epoch, base))
            latest_epoch = epoch
        expected = base + f[_DELTA] + 1
        plan.append((pos, base, expected, size, f[_MAX_TS]))
        pos += size
    return plan, new_epochs


def whole_batch_header(buf: bytes | bytearray | memoryview, pos: int,
                       total: int, compacted_ok: bool = False) -> tuple[int, ...]:
    """The raw header fields of the batch at `pos`, checked for what offsets and positions
    depend on (magic, length, lying wholly in the buffer, record count): batch.peek's checks
    without building a BatchHeader, since this runs once per appended batch. `compacted_ok`
    (replica appends) also accepts a cleaned batch: fewer records than offsets, maybe none."""
    if total - pos >= HEADER_SIZE:
        f = HEADER.unpack_from(buf, pos)
        if f[_MAGIC] == MAGIC and f[_LENGTH] >= _LENGTH_MIN \
                and pos + f[_LENGTH] + LENGTH_OVERHEAD <= total \
                and ((f[_COUNT] >= 1 and f[_DELTA] == f[_COUNT] - 1)
                     or (compacted_ok and f[_DELTA] >= 0 and 0 <= f[_COUNT] <= f[_DELTA])):
            return f
    h = peek(buf, pos)  # raises the precise error for a short buffer, bad magic or length
    if pos + h.size > total:
        raise CorruptBatchError(f"length mismatch: batch at byte {pos} needs {h.size} bytes, "
                                f"{total - pos} left")
    raise CorruptBatchError(f"record-count mismatch: last_offset_delta "
                            f"{h.last_offset_delta} with record_count {h.record_count}")
