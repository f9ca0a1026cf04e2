"""Model-based test: random operation sequences against a plain in-memory model.

Goal: whatever the sequence of leader appends, replica appends, reads, truncations, deletions,
rolls, flushes, clean reopens and crash reopens, the log answers exactly as a list of batches
would: same offsets, same bytes for every read (Kafka's read rules: whole batches from the one
holding the offset, first batch even over max_bytes, one segment, nothing at/after the upper
bound), same epoch answers (KIP-279) and time lookups. Method: hypothesis RuleBasedStateMachine
with tiny segments and index intervals so every rule crosses segment and index boundaries;
invariants checked after every step.
"""
from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from raftlog.codec import batch as B
from raftlog.storage import LogOptions, OffsetOutOfRangeError, PartitionLog
from storagetest_util import LogModel, make_batch, restamp

batch_spec = st.tuples(st.integers(1, 4),            # records
                       st.integers(0, 120),          # value bytes
                       st.integers(0, 2000),         # first timestamp
                       st.integers(0, 50))           # timestamp step


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="raftlog-model-")
        self.generation = 0
        self.model = LogModel()
        self.now_ms = 0
        self.seed = 0

    @initialize(segment_bytes=st.sampled_from([200, 700, 5000]),
                interval=st.sampled_from([1, 64, 300, 4096]))
    def open_log(self, segment_bytes: int, interval: int) -> None:
        self.opts = LogOptions(segment_bytes=segment_bytes, index_interval_bytes=interval)
        self.dir = f"{self.root}/g0"
        self.log = PartitionLog.open(self.dir, self.opts, self.now_ms)

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _batch(self, spec: tuple[int, int, int, int]) -> bytes:
        self.seed += 1
        records, value_bytes, ts, step = spec
        return make_batch(records, ts=ts, value_bytes=value_bytes, seed=self.seed, ts_step=step)

    # -- writes ---------------------------------------------------------------------------------
    @rule(specs=st.lists(batch_spec, min_size=1, max_size=3), bump=st.integers(0, 2),
          dt=st.integers(0, 100))
    def append(self, specs: list, bump: int, dt: int) -> None:
        self.now_ms += dt
        epoch = max(self.model.latest_epoch(), 0) + bump
        buf = bytearray(b"".join(self._batch(s) for s in specs))
        leo = self.model.log_end
        r = self.log.append(buf, epoch, self.now_ms)
        for _, h in B.iter_batches(buf):
            self.model.append(bytes(buf[_:_ + h.size]))
        assert (r.base_offset, r.log_end_offset, r.batch_count) == (
            leo, self.model.log_end, len(specs))

    @rule(specs=st.lists(st.tuples(batch_spec, st.integers(0, 1)), min_size=1, max_size=3))
    def append_replica(self, specs: list) -> None:
        parts, offset, epoch = [], self.model.log_end, max(self.model.latest_epoch(), 0)
        for spec, bump in specs:
            epoch += bump
            b = restamp(self._batch(spec), offset, epoch)
            parts.append(b)
            offset = B.peek(b).next_offset
        r = self.log.append_replica(b"".join(parts), self.now_ms)
        for b in parts:
            self.model.append(b)
        assert r.log_end_offset == self.model.log_end

    @rule(data=st.data())
    def truncate_to(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.model.log_start, self.model.log_end + 2))
        assert self.log.truncate_to(offset) == self.model.truncate_to(offset)
        self.log.finish_deletes()   # what every caller does next (in a worker thread)

    @rule(extra=st.integers(0, 5))
    def truncate_fully(self, extra: int) -> None:
        offset = self.model.log_end + extra
        self.log.truncate_fully_and_start_at(offset)
        self.log.finish_deletes()
        self.model.batches.clear()
        self.model.log_start = self.model.log_end = offset
        self.model.epochs.clear()

    @rule(data=st.data())
    def delete_before(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.model.log_start, self.model.log_end))
        self.log.delete_before(offset)
        self.log.finish_deletes()
        self.model.delete_before(offset)

    @rule(dt=st.integers(0, 100))
    def roll(self, dt: int) -> None:
        self.now_ms += dt
        self.log.roll(self.now_ms)

    @rule()
    def flush(self) -> None:
        assert self.log.flush() == self.model.log_end == self.log.flushed_offset

    @rule(crash=st.booleans())
    def reopen(self, crash: bool) -> None:
        """Clean close and reopen, or reopen a copy of the directory taken while open (what a
        process crash leaves: all written bytes, stale checkpoints, unwritten index buffers)."""
        if crash:
            self.generation += 1
            new_dir = f"{self.root}/g{self.generation}"
            shutil.copytree(self.dir, new_dir)
            self.log.close()
            self.dir = new_dir
        else:
            self.log.close()
        self.log = PartitionLog.open(self.dir, self.opts, self.now_ms)
        self.model.reopened()
        assert self.log.recovery_report.truncated_bytes == 0

    # -- reads ----------------------------------------------------------------------------------
    @rule(data=st.data(), max_bytes=st.sampled_from([1, 100, 400, 1500, 1 << 20]),
          bounded=st.booleans())
    def read(self, data: st.DataObject, max_bytes: int, bounded: bool) -> None:
        m = self.model
        offset = data.draw(st.integers(m.log_start - 2, m.log_end + 2))
        upper = data.draw(st.integers(m.log_start, m.log_end + 1)) if bounded else None
        if offset < m.log_start or offset > m.log_end:
            with pytest.raises(OffsetOutOfRangeError):
                self.log.read(offset, max_bytes, upper)
            return
        got = bytes(self.log.read(offset, max_bytes, upper))
        assert got == self._expected_read(offset, max_bytes, upper)

    def _expected_read(self, offset: int, max_bytes: int, upper: int | None) -> bytes:
        cands = self.model.read_candidates(offset, upper)
        if not cands:
            return b""
        seg = next(s for s in self.log.segments()
                   if s.base_offset <= cands[0].base_offset < s.next_offset)
        out, total = [cands[0]], len(cands[0].data)
        if total < max_bytes:
            for b in cands[1:]:
                if b.base_offset >= seg.next_offset or total + len(b.data) > max_bytes:
                    break
                out.append(b)
                total += len(b.data)
        return b"".join(b.data for b in out)

    @precondition(lambda self: self.model.log_end > self.model.log_start)
    @rule()
    def read_every_offset(self) -> None:
        for off in range(self.model.log_start, self.model.log_end):
            b = self.model.batches[self.model.containing(off)]
            assert bytes(self.log.read(off, 1)) == b.data

    @rule(ts=st.integers(0, 2300))
    def offset_for_timestamp(self, ts: int) -> None:
        assert self.log.offset_for_timestamp(ts) == self.model.offset_for_timestamp(ts)

    @rule(epoch=st.integers(-1, 12))
    def end_offset_for_epoch(self, epoch: int) -> None:
        assert self.log.end_offset_for_epoch(epoch) == self.model.end_offset_for_epoch(epoch)

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def offsets_match(self) -> None:
        if not hasattr(self, "log"):
            return
        m = self.model
        assert (self.log.log_start_offset, self.log.log_end_offset) == (m.log_start, m.log_end)
        assert self.log.epoch_entries == tuple(m.epochs)
        assert self.log.flushed_offset <= self.log.log_end_offset
        segs = self.log.segments()
        assert segs[0].base_offset <= m.log_start and segs[-1].next_offset == m.log_end
        assert all(a.next_offset == b.base_offset for a, b in zip(segs, segs[1:]))
        last = self.log.last_batch_header()
        live = [b for b in m.batches if b.next_offset > m.log_start]
        assert (last.base_offset if last else None) == (live[-1].base_offset if live else None)


LogMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_log_matches_model = LogMachine.TestCase
