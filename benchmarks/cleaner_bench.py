"""Log cleaner benchmark (issue 7).

1. Cleaner throughput: write a log of `--mb` MiB (default 1024) of 1 KiB records in batches of
   100 whose keys are drawn from a key space of 10% of the record count (so ~10% of the records
   are live after compaction), roll, then time one full `cleaner.clean` (offset map + rewrite +
   fsync + crash-safe swap + index rebuild). MB/s = bytes of log read / wall time.
2. Produce throughput with and without the cleaner: the leader append path (PartitionLog.append
   of client batches, as the produce handler does, on an asyncio loop) for `--seconds`, alone
   and then while the cleaner compacts a second copy of the log in a worker thread (as the broker
   runs it, asyncio.to_thread). Target ratio >= 0.8.

Figures are printed last. Usage: .venv/bin/python benchmarks/cleaner_bench.py [--mb 1024]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftlog.codec import batch as B  # noqa: E402
from raftlog.storage import LogOptions, PartitionLog  # noqa: E402
from raftlog.replication.manager import CLEANER_BUSY_SHARE, Pacer  # noqa: E402
from raftlog.storage import cleaner  # noqa: E402

RECORD_BYTES = 1024
BATCH_RECORDS = 100
OPTS = LogOptions(segment_bytes=128 << 20, flush_policy="interval")
BUSY_SHARE = CLEANER_BUSY_SHARE   # what the broker uses
CFG = cleaner.CleanConfig(delete_retention_ms=0, min_cleanable_dirty_ratio=0.0,
                          min_compaction_lag_ms=0)


def build_log(d: str, mb: int, seed: int = 1) -> tuple[int, int]:
    rng = random.Random(seed)
    n_records = mb * (1 << 20) // (RECORD_BYTES + 20)
    n_keys = max(1, n_records // 10)
    value = rng.randbytes(RECORD_BYTES)
    log = PartitionLog.open(d, OPTS, now_ms=0)
    written = 0
    while written < n_records:
        recs = [(b"key-%08d" % rng.randrange(n_keys), value, None, 1000)
                for _ in range(BATCH_RECORDS)]
        log.append(bytearray(B.encode(recs)), 0, 1000)
        written += BATCH_RECORDS
    log.roll(2000)
    log.flush()
    size = sum(s.size_bytes for s in log.segments())
    log.close()
    return written, size


def run_clean(d: str) -> tuple[float, cleaner.CleanStats]:
    log = PartitionLog.open(d, OPTS, now_ms=0)
    plan = cleaner.plan_clean(log.segments(), log.log_start_offset, log.log_end_offset,
                              cleaner.CleanerState(0, None), 10**12, CFG)
    assert plan is not None
    t0 = time.perf_counter()
    segs, stats = cleaner.clean(d, plan, 10**12, CFG, log.options)
    dt = time.perf_counter() - t0
    log.install_cleaned(segs)
    log.close()
    return dt, stats


async def produce_for(log: PartitionLog, seconds: float, stop: asyncio.Event | None = None
                      ) -> tuple[int, float]:
    """Append 16 KiB client batches for `seconds`, yielding to the loop after each (as a broker
    serving requests does). Returns bytes appended and elapsed time."""
    payload = B.encode([(b"key-%d" % i, b"v" * 150, None, 1000) for i in range(100)])
    total, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds and not (stop and stop.is_set()):
        for _ in range(20):
            log.append(bytearray(payload), 0, 1000)
            total += len(payload)
        await asyncio.sleep(0)
    return total, time.perf_counter() - t0


async def produce_compare(d: str, seconds: float, tmp: str) -> tuple[float, float, float]:
    os.sync()
    plog = PartitionLog.open(os.path.join(tmp, "produce-a"), OPTS, now_ms=0)
    b0, t0 = await produce_for(plog, seconds)
    plog.close()
    shutil.rmtree(os.path.join(tmp, "produce-a"))
    os.sync()
    base = b0 / t0 / 1e6
    plog = PartitionLog.open(os.path.join(tmp, "produce-b"), OPTS, now_ms=0)
    log = PartitionLog.open(d, OPTS, now_ms=0)
    plan = cleaner.plan_clean(log.segments(), 0, log.log_end_offset,
                              cleaner.CleanerState(0, None), 10**12, CFG)
    assert plan is not None
    clean_task = asyncio.ensure_future(asyncio.to_thread(
        cleaner.clean, d, plan, 10**12, CFG, log.options, pace=Pacer(BUSY_SHARE)))
    await asyncio.sleep(0.05)
    b1, t1 = await produce_for(plog, seconds)
    overlapped = not clean_task.done()
    segs, _stats = await clean_task
    log.install_cleaned(segs)
    log.close()
    plog.close()
    with_cleaner = b1 / t1 / 1e6
    if not overlapped:
        print("note: the cleaner finished before the produce window ended; use a larger --mb")
    return base, with_cleaner, with_cleaner / base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="log size in MiB (default 1024)")
    ap.add_argument("--seconds", type=float, default=5.0, help="produce window per run")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cleaner-bench-", dir=args.dir)
    try:
        d1, d2 = os.path.join(tmp, "log1"), os.path.join(tmp, "log2")
        t0 = time.perf_counter()
        records, size = build_log(d1, args.mb)
        shutil.copytree(d1, d2)
        print(f"built {size / 1e6:.0f} MB log of {records} records in "
              f"{time.perf_counter() - t0:.1f} s")
        dt, stats = run_clean(d1)
        base, with_cleaner, ratio = asyncio.run(produce_compare(d2, args.seconds, tmp))
        print("--- figures ---")
        print(f"cleaner: {stats.read_bytes / 1e6:.0f} MB log -> {stats.written_bytes / 1e6:.0f} MB"
              f" in {dt:.2f} s = {stats.read_bytes / 1e6 / dt:.1f} MB/s "
              f"({stats.records_kept}/{stats.records_read} records kept = "
              f"{100 * stats.records_kept / max(stats.records_read, 1):.1f}% live)")
        print(f"produce without cleaner: {base:.1f} MB/s")
        print(f"produce while cleaning:  {with_cleaner:.1f} MB/s")
        print(f"ratio: {ratio:.2f} (target >= 0.8)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
