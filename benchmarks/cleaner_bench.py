"""Log cleaner benchmark (issue 7).

1. Cleaner throughput: write a log of `--mb` MiB (default 1024) of 1 KiB records in batches of
   100 whose keys are drawn from a key space of 10% of the record count (so ~10% of the records
   are live after compaction), roll, then time one full `cleaner.clean` (offset map + rewrite +
   fsync + crash-safe swap + index rebuild). MB/s = bytes of log read / wall time.
2. Produce throughput with and without the cleaner, in process: the leader append path
   (PartitionLog.append of client batches, as the produce handler does, on an asyncio loop)
   while the cleaner compacts a second copy of the log in a worker thread (as the broker runs it,
   asyncio.to_thread, paced by the broker's Pacer), in alternating `--seconds` windows with the
   cleaner paused and running until the clean ends. Target ratio >= 0.8.
3. The same on real brokers: a 3-node ProcessCluster (local_cluster) and `--server-topics` topics
   (1 partition, RF 3, so every broker cleans its own replica; segment.bytes 1 MiB) pre-loaded
   with `--server-mb` MiB in all of 1 KiB records over a key space of 10% of them while their
   policy is still `delete`. raftlog.Producer (send_batch of 64 KiB batches of 100-byte values,
   acks=all, round-robin over 3 partitions of topic `perf`) produces in `--server-seconds`
   windows: one idle, then per big topic one while every broker cleans it (just after it is
   altered to cleanup.policy=compact, min.cleanable.dirty.ratio 0.01) and one idle after the
   passes end. This machine's load drifts by +-50% within a minute, hence the interleaving:
   each cleaning window is compared with its two idle neighbours. Target ratio >= 0.8.

Figures are printed last. Usage:
    .venv/bin/python benchmarks/cleaner_bench.py [--mb 1024] [--server-mb 384] [--parts in,server]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import local_cluster  # noqa: E402
from raftlog.client import Admin, Producer, RecordFuture  # noqa: E402
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


async def produce_compare(d: str, window_s: float, tmp: str) -> tuple[float, float, float]:
    """Alternate produce windows with the cleaner paused and running (its pace callable blocks
    while paused) until the clean ends: the machine's load drifts too much for one run of
    each to mean anything. Returns (MB/s paused, MB/s cleaning, ratio)."""
    plog = PartitionLog.open(os.path.join(tmp, "produce"), OPTS, now_ms=0)
    log = PartitionLog.open(d, OPTS, now_ms=0)
    plan = cleaner.plan_clean(log.segments(), 0, log.log_end_offset,
                              cleaner.CleanerState(0, None), 10**12, CFG)
    assert plan is not None
    running = threading.Event()
    pacer = Pacer(BUSY_SHARE)

    def pace() -> None:
        pacer()
        if not running.is_set():
            running.wait()
            pacer.t0 = time.perf_counter()

    clean_task = asyncio.ensure_future(asyncio.to_thread(
        cleaner.clean, d, plan, 10**12, CFG, log.options, pace=pace))
    totals = {False: [0, 0.0], True: [0, 0.0]}
    on = False
    while not clean_task.done():
        (running.set if on else running.clear)()
        await asyncio.sleep(0.02)    # let a paused cleaner reach its pace() call
        b, t = await produce_for(plog, window_s)
        if not clean_task.done():    # a window the clean ended in is neither
            totals[on][0] += b
            totals[on][1] += t
        on = not on
    segs, _stats = await clean_task
    log.install_cleaned(segs)
    log.close()
    plog.close()
    paused, cleaning = (totals[k][0] / max(totals[k][1], 1e-9) / 1e6 for k in (False, True))
    return paused, cleaning, cleaning / paused if paused else 0.0


# -- 3: on real brokers ---------------------------------------------------------------------
SERVER_TOML = "[log]\nretention_check_interval_ms = 500\n"   # the cleaner looks every 0.5 s
BIG_SEGMENT_BYTES = 1 << 20
PRELOAD_BATCH_RECORDS = 200          # 200 KiB batches for the pre-load
PERF_VALUE_BYTES = 100
PERF_BATCH_BYTES = 64 * 1024
PERF_PARTITIONS = 3
CLEAN_WAIT_S = 120.0                 # longest wait for the cleaners before the last baseline


async def preload(bootstrap: str, topic: str, mb: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    n_records = mb * (1 << 20) // (RECORD_BYTES + 20)
    n_keys = max(1, n_records // 10)
    value = rng.randbytes(RECORD_BYTES)
    sent = 0
    async with Producer(bootstrap, acks="all", max_request_size=4 << 20,
                        buffer_memory=64 << 20) as p:
        while sent < n_records:
            recs = [(b"key-%08d" % rng.randrange(n_keys), value)
                    for _ in range(PRELOAD_BATCH_RECORDS)]
            if p.send_batch(topic, 0, recs).__class__ is not RecordFuture:
                await p.drain()
            sent += PRELOAD_BATCH_RECORDS
        await p.flush()
    return sent


async def produce_window(bootstrap: str, seconds: float) -> float:
    """MB/s (1e6 bytes of values) acknowledged with acks=all over `seconds` of send_batch."""
    recs = [(None, os.urandom(PERF_VALUE_BYTES))] * (PERF_BATCH_BYTES // PERF_VALUE_BYTES)
    sent = part = 0
    async with Producer(bootstrap, acks="all", max_request_size=4 * PERF_BATCH_BYTES) as p:
        await p.client.wait_for_topic("perf", 30_000)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if p.send_batch("perf", part, recs).__class__ is not RecordFuture:
                await p.drain()
            part = (part + 1) % PERF_PARTITIONS
            sent += len(recs)
            await asyncio.sleep(0)
        await p.flush()
        dt = time.perf_counter() - t0
    return sent * PERF_VALUE_BYTES / dt / 1e6


def cleaned_on(c, topic: str) -> int:
    """How many brokers have finished a cleaner pass over `topic` (its checkpoint exists)."""
    return sum(os.path.exists(os.path.join(c.workdir, f"node-{i}", "partitions", f"{topic}-0",
                                           cleaner.OFFSET_CHECKPOINT)) for i in (1, 2, 3))


async def server_compare(c, mb: int, n_topics: int, window_s: float) -> dict:
    """Idle window, then per big topic: flip it to compact, a window while every broker cleans
    it, wait for the passes to end, an idle window. Each cleaning window sits between two idle
    ones, so the load drift of this shared machine cancels out of the ratio."""
    names = [f"big{i}" for i in range(n_topics)]
    async with Admin(c.bootstrap) as a:
        for name in names:
            await a.create_topic(name, partitions=1, replication_factor=3,
                                 config={"segment.bytes": BIG_SEGMENT_BYTES})
        await a.create_topic("perf", partitions=PERF_PARTITIONS, replication_factor=3)
    t0 = time.perf_counter()
    records = 0
    for i, name in enumerate(names):
        records += await preload(c.bootstrap, name, mb // n_topics, seed=i)
    print(f"server: pre-loaded {records} records (~{mb} MiB) into {n_topics} topics in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    await produce_window(c.bootstrap, 1.0)                     # warm-up, not measured
    idle = [await produce_window(c.bootstrap, window_s)]
    cleaning, busy, pass_s = [], [], []
    for name in names:
        async with Admin(c.bootstrap) as a:
            await a.alter_configs(name, {"cleanup.policy": "compact",
                                         "min.cleanable.dirty.ratio": 0.01,
                                         "delete.retention.ms": 0})
        t_flip = time.perf_counter()
        await asyncio.sleep(1.0)                               # two cleaner rounds: started
        cleaning.append(await produce_window(c.bootstrap, window_s))
        busy.append(3 - cleaned_on(c, name))
        while cleaned_on(c, name) < 3 and time.perf_counter() - t_flip < CLEAN_WAIT_S:
            await asyncio.sleep(0.2)
        pass_s.append(time.perf_counter() - t_flip)
        idle.append(await produce_window(c.bootstrap, window_s))
        print(f"server: {name}: idle {idle[-2]:.1f}, cleaning {cleaning[-1]:.1f} "
              f"(busy to the end on {busy[-1]}/3 brokers), idle {idle[-1]:.1f} MB/s; passes "
              f"done {pass_s[-1]:.1f} s after the flip", flush=True)
    pairs = [cl / ((idle[i] + idle[i + 1]) / 2) for i, cl in enumerate(cleaning)]
    return {"records": records, "idle": sum(idle) / len(idle),
            "cleaning": sum(cleaning) / len(cleaning),
            "ratio": sum(cleaning) / len(cleaning) / (sum(idle) / len(idle)),
            "pairs": pairs, "busy": busy, "pass_s": pass_s}


def run_server(mb: int, n_topics: int, window_s: float) -> dict:
    with local_cluster(3, extra_toml=SERVER_TOML) as c:
        return asyncio.run(server_compare(c, mb, n_topics, window_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024, help="in-process log size in MiB (1024)")
    ap.add_argument("--seconds", type=float, default=0.5,
                    help="in-process produce window, alternately paused/cleaning (default 0.5)")
    ap.add_argument("--server-mb", type=int, default=384,
                    help="MiB pre-loaded into the brokers' compacted topics (default 384)")
    ap.add_argument("--server-topics", type=int, default=3,
                    help="big topics, one cleaning window each (default 3): a pass over one "
                         "must outlast a window")
    ap.add_argument("--server-seconds", type=float, default=4.0,
                    help="produce window on the brokers (default 4)")
    ap.add_argument("--parts", default="in,server",
                    help="which parts to run: in (1 and 2), server (3); default both")
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    lines = []
    if "in" in parts:
        lines += run_in_process(args)
    if "server" in parts:
        r = run_server(args.server_mb, args.server_topics, args.server_seconds)
        lines += [
            f"server (3 brokers, RF 3, acks=all, send_batch 64 KiB of {PERF_VALUE_BYTES} B "
            f"values; {args.server_topics} compacted topics, {r['records']} records, "
            f"~{args.server_mb} MiB per replica):",
            f"  produce without cleaner: {r['idle']:.1f} MB/s (mean of "
            f"{args.server_topics + 1} windows of {args.server_seconds:g} s)",
            f"  produce while cleaning:  {r['cleaning']:.1f} MB/s (mean of "
            f"{args.server_topics}; brokers still cleaning at each window's end: "
            f"{', '.join(f'{b}/3' for b in r['busy'])}; passes took "
            f"{', '.join(f'{x:.0f}' for x in r['pass_s'])} s)",
            f"  per-window ratios vs the neighbouring idle windows: "
            f"{', '.join(f'{x:.2f}' for x in r['pairs'])}",
            f"  ratio: {r['ratio']:.2f} (target >= 0.8)"]
    print("--- figures ---")
    print("\n".join(lines))


def run_in_process(args: argparse.Namespace) -> list[str]:
    tmp = tempfile.mkdtemp(prefix="cleaner-bench-", dir=args.dir)
    try:
        d1, d2 = os.path.join(tmp, "log1"), os.path.join(tmp, "log2")
        t0 = time.perf_counter()
        records, size = build_log(d1, args.mb)
        shutil.copytree(d1, d2)
        print(f"built {size / 1e6:.0f} MB log of {records} records in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        dt, stats = run_clean(d1)
        base, with_cleaner, ratio = asyncio.run(produce_compare(d2, args.seconds, tmp))
        return [
            f"cleaner: {stats.read_bytes / 1e6:.0f} MB log -> {stats.written_bytes / 1e6:.0f} MB"
            f" in {dt:.2f} s = {stats.read_bytes / 1e6 / dt:.1f} MB/s "
            f"({stats.records_kept}/{stats.records_read} records kept = "
            f"{100 * stats.records_kept / max(stats.records_read, 1):.1f}% live)",
            f"in-process produce, cleaner paused:  {base:.1f} MB/s (alternating "
            f"{args.seconds:g} s windows while one clean runs)",
            f"in-process produce while cleaning:  {with_cleaner:.1f} MB/s",
            f"in-process ratio: {ratio:.2f} (target >= 0.8)"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
