#!/usr/bin/env python3
"""Producer throughput and latency, printed in kafka-producer-perf-test's shape.

    .venv/bin/python benchmarks/produce_perf.py --num-records 2000000 --record-size 100 \
        --acks all --partitions 6 --replication-factor 3

Starts a local 3-node cluster on 127.0.0.1 (its own temp dir, killed at the end) unless
`--bootstrap` names a running one; creates the topic; produces with a minimal pipelined asyncio
producer (aiohttp + msgpack POST /v1/produce straight to partition leaders, batches built with
raftlog.codec.batch.encode). Progress lines every ~2 s; the total line comes last:

    N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency,
    p50 ms 50th, p95 ms 95th, p99 ms 99th, p99.9 ms 99.9th.

Latency is per produce request, from building its batches to the answer, attributed to every
record in it. MB = 2^20 bytes of record values.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (CpuMeter, PerfProducer, Router, add_cluster_args,  # noqa: E402
                     cancel_hard_limit, cluster_urls, default_batch_records, ensure_topic,
                     install_hard_limit, kafka_producer_line, log, new_session, progress_loop,
                     start_py_spy, stop_py_spy, wait_producible)

ACKS = {"all": -1, "-1": -1, "1": 1, "0": 0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topic", default=None, help="default: a fresh perf-<id> topic")
    p.add_argument("--num-records", type=int, default=1_000_000)
    p.add_argument("--record-size", type=int, default=100, help="value bytes per record")
    p.add_argument("--acks", choices=sorted(ACKS), default="all")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--replication-factor", type=int, default=3)
    p.add_argument("--throughput", type=float, default=-1,
                   help="records/s cap; -1 = unlimited")
    p.add_argument("--batch-records", type=int, default=None,
                   help="records per batch (default: --batch-bytes / record size)")
    p.add_argument("--batch-bytes", type=int, default=256 * 1024,
                   help="target batch size when --batch-records is not given (default 256 KiB)")
    p.add_argument("--in-flight", type=int, default=4,
                   help="produce requests in flight per leader (default 4)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop producing after this long even if records remain (default 60)")
    p.add_argument("--py-spy", metavar="DIR", default=None,
                   help="record every local node with py-spy during the produce phase "
                        "(collapsed stacks in DIR/node-N.txt)")
    add_cluster_args(p, 120.0)
    a = p.parse_args(argv)
    if a.num_records < 1 or a.record_size < 1 or a.partitions < 1:
        p.error("--num-records, --record-size and --partitions must be positive")
    return a


async def run(args: argparse.Namespace, urls: list[str], node_pids: dict[int, int]) -> str:
    topic = args.topic or f"perf-{uuid.uuid4().hex[:8]}"
    acks = ACKS[args.acks]
    batch_records = args.batch_records or default_batch_records(args.record_size, args.batch_bytes)
    async with new_session(limit_per_host=args.in_flight + 4) as session:
        created = await ensure_topic(session, urls, topic, args.partitions,
                                     args.replication_factor)
        router = Router(session, urls)
        await wait_producible(session, router, topic)
        log(f"topic {topic}: {'created' if created else 'exists'}, "
            f"{router.partitions[topic]} partitions, RF {args.replication_factor}, leaders "
            + " ".join(f"{p}:{router.routes[(topic, p)].leader}"
                       for p in range(router.partitions[topic])))
        log(f"producing {args.num_records} records of {args.record_size} B, acks={args.acks}, "
            f"{batch_records} records/batch, {args.in_flight} requests in flight per leader, "
            f"throughput cap {args.throughput if args.throughput > 0 else 'none'}, "
            f"at most {args.max_seconds:.0f} s")
        prod = PerfProducer(session, router, topic, num_records=args.num_records,
                            record_size=args.record_size, acks=acks,
                            batch_records=batch_records, in_flight=args.in_flight,
                            throughput=args.throughput,
                            deadline=time.monotonic() + args.max_seconds)
        spies = (start_py_spy(args.py_spy, node_pids, args.max_seconds)
                 if args.py_spy and node_pids else [])
        meter = CpuMeter(node_pids).start()
        t0 = time.monotonic()
        prog = asyncio.create_task(progress_loop(prod.stats, args.record_size))
        try:
            stats = await prod.run()
        finally:
            prog.cancel()
        elapsed = time.monotonic() - t0
        meter.stop()
        stop_py_spy(spies)
        lines = [f"topic {topic}: {stats.requests} produce requests, "
                 f"{stats.acked_records / max(1, stats.requests):.0f} records/request, "
                 f"elapsed {elapsed:.2f} s"]
        if stats.errors or stats.failed_records:
            lines.append(f"errors: {stats.errors}; retries {stats.retries}; "
                         f"records failed {stats.failed_records}")
        if stats.acked_records < args.num_records:
            lines.append(f"note: {args.num_records - stats.acked_records} records not sent/acked "
                         f"(--max-seconds {args.max_seconds:.0f} or failures)")
        lines.append(meter.report())
        if spies:
            lines.append(f"py-spy stacks in {args.py_spy}/node-N.txt")
        lines.append(kafka_producer_line(stats, elapsed, args.record_size))
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_hard_limit(args.time_limit)
    try:
        with cluster_urls(args) as (urls, cluster):
            pids = {i: p.pid for i, p in cluster.procs.items()} if cluster else {}
            out = asyncio.run(run(args, urls, pids))
        cancel_hard_limit()
        print(out, flush=True)
        return 0
    finally:
        cancel_hard_limit()


if __name__ == "__main__":
    sys.exit(main())
