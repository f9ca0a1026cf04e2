"""Storage benchmark: PartitionLog append/read throughput against plain os.write/os.pread.

    .venv/bin/python benchmarks/storage_bench.py            # ~1 GiB per batch size
    .venv/bin/python benchmarks/storage_bench.py --quick    # a few seconds

For each batch size (16 KiB, 256 KiB, 1 MiB of 1 KiB records) it appends `--total-mb` of
pre-built batches (built once with codec.batch.encode, outside the timed loop, as the broker
appends batches it received), and times plain os.write of the same bytes to a file in the same
directory; with flush_policy "interval" (no fsync per append) and with an fsync per append
(`--fsync-mb`, as much by default). Then it reads everything back
with read(offset, 1 MiB) in a loop and compares with os.pread of the raw file in 1 MiB chunks.
Raw and raftlog alternate in rounds of `--round-mb` (who goes first alternates too), so noise
from other processes on a shared machine hits both alike; between phases the page cache is
synced (untimed) so no phase pays for the previous one's writeback. Progress goes to stderr as it runs; the figures table is printed last, and one JSON
line is appended to results/storage_bench.jsonl (gitignored).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftlog.codec import batch as B  # noqa: E402
from raftlog.storage import LogOptions, PartitionLog  # noqa: E402

MIB = 1 << 20
KIB = 1 << 10
RECORD_BYTES = 1 * KIB
BATCH_SIZES = (16 * KIB, 256 * KIB, 1 * MIB)
READ_MAX_BYTES = 1 * MIB


def progress(msg: str) -> None:
    print(f"[storage_bench] {msg}", file=sys.stderr, flush=True)


def build_batch(batch_bytes: int, seed: int) -> bytearray:
    """One batch of batch_bytes / 1 KiB records of 1 KiB random (incompressible) values."""
    rng = random.Random(seed)
    n = batch_bytes // RECORD_BYTES
    return bytearray(B.encode([(None, rng.randbytes(RECORD_BYTES), None, 1_700_000_000_000 + i)
                               for i in range(n)]))


class Clock:
    """Accumulates the time of one contender across interleaved rounds."""

    def __init__(self) -> None:
        self.secs = 0.0

    def run(self, fn: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        fn()
        self.secs += time.perf_counter() - t0


def write_phase(root: str, tag: str, buf: bytearray, count: int, fsync: bool,
                round_batches: int) -> tuple[float, float, str, str]:
    """Append `count` copies of `buf` to a PartitionLog and os.write them to a raw file, in
    interleaved rounds (alternating who goes first) so background noise hits both alike."""
    raw_path = os.path.join(root, f"raw-{tag}.bin")
    log_dir = os.path.join(root, f"log-{tag}")
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                 0o644)
    opts = LogOptions(flush_policy="fsync" if fsync else "interval", max_batch_bytes=2 * MIB)
    log = PartitionLog.open(log_dir, opts, 0)
    raw, plog = Clock(), Clock()
    done, rnd = 0, 0
    next_report = count // 4

    def raw_round(n: int) -> Callable[[], None]:
        def go() -> None:
            for _ in range(n):
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view):]
                if fsync:
                    os.fdatasync(fd)
        return go

    def log_round(n: int, first: int) -> Callable[[], None]:
        def go() -> None:
            for i in range(first, first + n):
                log.append(buf, 0, i)
                if fsync:
                    log.flush()
        return go

    try:
        while done < count:
            n = min(round_batches, count - done)
            order = [(raw, raw_round(n)), (plog, log_round(n, done))]
            for clock, fn in order if rnd % 2 == 0 else reversed(order):
                clock.run(fn)
            done, rnd = done + n, rnd + 1
            if done >= next_report and done < count:
                progress(f"  {tag}: {done}/{count} batches")
                next_report += count // 4
        leo = log.log_end_offset
    finally:
        log.close()  # untimed: its final flush is not part of the append path
        os.close(fd)
    assert leo == count * B.peek(buf).record_count, leo
    return raw.secs, plog.secs, raw_path, log_dir


def read_phase(raw_path: str, log_dir: str, batch_bytes: int, records: int,
               round_batches: int, passes: int) -> tuple[float, float, int]:
    """Read everything back `passes` times; median seconds of each contender."""
    runs = [read_pass(raw_path, log_dir, batch_bytes, records, round_batches)
            for _ in range(passes)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            runs[0][2])


def read_pass(raw_path: str, log_dir: str, batch_bytes: int, records: int,
              round_batches: int) -> tuple[float, float, int]:
    """One read of everything: os.pread in 1 MiB chunks vs PartitionLog.read(offset, 1 MiB),
    interleaved in rounds of the same data."""
    fd = os.open(raw_path, os.O_RDONLY | os.O_CLOEXEC)
    log = PartitionLog.open(log_dir, LogOptions(max_batch_bytes=2 * MIB), 0)
    raw, plog = Clock(), Clock()
    state = {"raw_pos": 0, "raw_total": 0, "offset": 0, "log_total": 0}
    end = log.log_end_offset
    size = os.fstat(fd).st_size

    def raw_round() -> None:
        stop = min(size, state["raw_pos"] + round_batches * batch_bytes)
        pos, total = state["raw_pos"], 0
        while pos < stop:
            data = os.pread(fd, min(READ_MAX_BYTES, stop - pos), pos)
            pos += len(data)
            total += len(data)
        state["raw_pos"], state["raw_total"] = pos, state["raw_total"] + total

    def log_round() -> None:
        offset, total = state["offset"], 0
        stop = min(end, offset + round_batches * records)
        while offset < stop:
            data = log.read(offset, READ_MAX_BYTES)
            total += len(data)
            # every batch here has the same size and count: no header walk needed to go on
            offset += len(data) // batch_bytes * records
        state["offset"], state["log_total"] = offset, state["log_total"] + total

    try:
        rnd = 0
        while state["raw_pos"] < size or state["offset"] < end:
            order = [(raw, raw_round), (plog, log_round)]
            for clock, fn in order if rnd % 2 == 0 else reversed(order):
                clock.run(fn)
            rnd += 1
    finally:
        log.close()
        os.close(fd)
    assert state["raw_total"] == state["log_total"] == size, state
    return raw.secs, plog.secs, size


def bench_size(root: str, batch_size: int, total_mb: int, fsync_mb: int, round_mb: int,
               read_passes: int) -> dict:
    buf = build_batch(batch_size, batch_size)
    records = B.peek(buf).record_count
    real = len(buf)
    out: dict = {"batch_bytes": real, "records_per_batch": records}
    for mode, mb in (("interval", total_mb), ("fsync", fsync_mb)):
        count = max(1, mb * MIB // real)
        data_mb = count * real / MIB
        round_batches = max(1, round_mb * MIB // real)
        tag = f"{batch_size // KIB}KiB-{mode}"
        progress(f"{batch_size // KIB} KiB batches, {mode}: {data_mb:.0f} MiB ({count} batches) "
                 f"raw and PartitionLog, interleaved in rounds of {round_batches} ...")
        sync_untimed()
        raw_secs, log_secs, raw_path, log_dir = write_phase(root, tag, buf, count,
                                                            mode == "fsync", round_batches)
        sync_untimed()
        entry = {"mb": data_mb, "batches": count,
                 "raw_mb_s": data_mb / raw_secs, "log_mb_s": data_mb / log_secs,
                 "raw_batches_s": count / raw_secs, "log_batches_s": count / log_secs}
        if mode == "interval":
            progress(f"{batch_size // KIB} KiB batches: reading back {data_mb:.0f} MiB, "
                     f"{read_passes} passes ...")
            rs, ls, nbytes = read_phase(raw_path, log_dir, real, records, round_batches,
                                        read_passes)
            entry.update(raw_read_mb_s=nbytes / MIB / rs, log_read_mb_s=nbytes / MIB / ls)
        out[mode] = entry
        os.unlink(raw_path)
        shutil.rmtree(log_dir)
    return out


def sync_untimed() -> None:
    os.sync()


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(__file__)).stdout.strip()
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--total-mb", type=int, default=1024, help="MiB appended per batch size "
                    "without fsync (default 1024)")
    ap.add_argument("--fsync-mb", type=int, default=1024, help="MiB appended per batch size "
                    "with an fsync per append (default 1024; about a minute in all here)")
    ap.add_argument("--round-mb", type=int, default=64, help="raw and raftlog alternate in "
                    "rounds of this many MiB (default 64)")
    ap.add_argument("--read-passes", type=int, default=3, help="read everything back this "
                    "many times and report the median (default 3)")
    ap.add_argument("--quick", action="store_true", help="small run: 32 MiB, 8 MiB with fsync")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir in /tmp)")
    args = ap.parse_args()
    if args.quick:
        args.total_mb, args.fsync_mb, args.round_mb = 32, 8, 4
    root = tempfile.mkdtemp(prefix="raftlog-bench-", dir=args.dir)
    progress(f"writing under {root}; {os.cpu_count()} CPUs")
    results = {}
    try:
        for size in BATCH_SIZES:
            results[size] = bench_size(root, size, args.total_mb, args.fsync_mb, args.round_mb,
                                       args.read_passes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(results, args, root)


def report(results: dict, args: argparse.Namespace, root: str) -> None:
    lines = [
        "",
        f"raftlog storage benchmark ({git_sha()}, {os.cpu_count()} CPUs, dir {root})",
        f"1 KiB records; batches built once outside the timed loop; read max_bytes "
        f"{READ_MAX_BYTES // KIB} KiB; MB = MiB; raw and raftlog interleaved in "
        f"{args.round_mb} MiB rounds; reads: median of {args.read_passes} passes",
        f"no fsync: {args.total_mb} MiB per batch size; fsync per append: "
        f"{args.fsync_mb} MiB per size (each fsync waits for the disk)",
        "",
        f"{'batch':>8} {'mode':>9} {'raw MB/s':>10} {'log MB/s':>10} {'log/raw':>8}"
        f" {'raw batch/s':>12} {'log batch/s':>12} {'read raw':>10} {'read log':>10}"
        f" {'read log/raw':>12}",
    ]
    for size, res in results.items():
        for mode in ("interval", "fsync"):
            e = res[mode]
            read = ""
            if "raw_read_mb_s" in e:
                read = (f" {e['raw_read_mb_s']:>10.0f} {e['log_read_mb_s']:>10.0f}"
                        f" {e['log_read_mb_s'] / e['raw_read_mb_s']:>12.2f}")
            lines.append(
                f"{size // KIB:>5} KiB {mode:>9} {e['raw_mb_s']:>10.0f} {e['log_mb_s']:>10.0f}"
                f" {e['log_mb_s'] / e['raw_mb_s']:>8.2f} {e['raw_batches_s']:>12.0f}"
                f" {e['log_batches_s']:>12.0f}{read}")
    small = results[BATCH_SIZES[0]]
    lines += ["",
              f"16 KiB batches/s: {small['interval']['log_batches_s']:.0f} appended without "
              f"fsync (raw {small['interval']['raw_batches_s']:.0f}), "
              f"{small['fsync']['log_batches_s']:.0f} with fsync per append "
              f"(raw {small['fsync']['raw_batches_s']:.0f})"]
    results_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "results")
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "storage_bench.jsonl"), "a") as f:
        f.write(json.dumps({"bench": "storage", "sha": git_sha(), "cpus": os.cpu_count(),
                            "total_mb": args.total_mb, "fsync_mb": args.fsync_mb,
                            "results": {str(k): v for k, v in results.items()}}) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
