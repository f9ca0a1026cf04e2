#!/usr/bin/env python3
"""Producer throughput and latency, printed in kafka-producer-perf-test's shape.

    .venv/bin/python benchmarks/produce_perf.py --num-records 2000000 --record-size 100 \
        --acks all --partitions 6 --replication-factor 3 [--mode send|send_batch] [--profile]

Starts a local 3-node cluster on 127.0.0.1 (its own temp dir, killed at the end) unless
`--bootstrap` names a running one; creates the topic; produces with the client library
(`raftlog.Producer`):

- `--mode send` (default): one `send(topic, value)` call per record, null keys (the sticky
  partitioner), the producer's own batching (`--batch-bytes` -> batch_size, `--linger-ms`);
  the loop yields to the event loop every `--yield-every` records and `await drain()`s when
  the buffer is full, as an application would;
- `--mode send_batch`: `send_batch(topic, partition, records)` with `--batch-bytes` of records
  per call, round-robin over the partitions.

`--raw` uses the old minimal internal producer instead (aiohttp + msgpack POST /v1/produce
straight to the leaders, batches built with raftlog.codec.batch.encode): the broker's ceiling,
for comparison. `--profile` runs the produce phase under cProfile and prints where the client's
CPU goes (before the figures; a profiled run's rate is not the figure to quote).

Progress lines every ~2 s; the total line comes last:

    N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency,
    p50 ms 50th, p95 ms 95th, p99 ms 99th, p99.9 ms 99.9th.

Latency (Kafka's: send() to acknowledgement): with the library, per batch from the send() of
its first record (and, for half its records, of its last) to the moment its awaitable resolves;
with `--raw`, per produce request from building its batches to the answer. MB = 2^20 bytes of
record values.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (ClientProfile, CpuMeter, GcMeter, MIB, PerfProducer, ProduceStats, Router,
                     add_cluster_args, default_batch_records, ensure_topic, kafka_producer_line,
                     log, new_session, progress_loop, run_tool, start_py_spy, stop_py_spy,
                     wait_producible)  # noqa: E402

from raftlog.client import Producer, RecordFuture  # noqa: E402
from raftlog.client.producer import DEFAULT_BATCH_SIZE  # noqa: E402

SEND_BATCH_BYTES = 960 * 1024
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
    p.add_argument("--mode", choices=["send", "send_batch"], default="send",
                   help="library path: per-record send() (default) or send_batch()")
    p.add_argument("--raw", action="store_true",
                   help="use the minimal internal producer instead of the client library")
    p.add_argument("--batch-records", type=int, default=None,
                   help="records per batch for --raw and send_batch (default: --batch-bytes / "
                        "record size)")
    p.add_argument("--batch-bytes", type=int, default=None,
                   help="batch size: the producer's batch_size for --mode send (default "
                        "256 KiB, the library's), records per call for send_batch (default "
                        "960 KiB) and --raw (default 256 KiB)")
    p.add_argument("--linger-ms", type=float, default=5, help="producer linger_ms (default 5)")
    p.add_argument("--in-flight", type=int, default=None,
                   help="produce requests in flight per leader (default 5 with the library, "
                        "its idempotence maximum; 4 with --raw)")
    p.add_argument("--buffer-memory", type=int, default=32 * MIB,
                   help="producer buffer_memory (default 32 MiB)")
    p.add_argument("--max-request-size", type=int, default=None,
                   help="producer max_request_size (default max(1 MiB, 4 batches))")
    p.add_argument("--no-idempotence", action="store_true",
                   help="enable_idempotence=False (default: the library's default, on)")
    p.add_argument("--yield-every", type=int, default=1000,
                   help="--mode send: yield to the event loop every N send() calls (default 1000)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop producing after this long even if records remain (default 60)")
    p.add_argument("--profile", nargs="?", const="cprofile", choices=["cprofile", "py-spy"],
                   default=None,
                   help="print where the client's CPU goes during the produce phase: under "
                        "cProfile (default; call counts, slows the client ~2x) or sampled by "
                        "py-spy (`--profile py-spy`); quote unprofiled figures")
    p.add_argument("--profile-top", type=int, default=15, help="functions listed by --profile")
    p.add_argument("--py-spy", metavar="DIR", default=None,
                   help="record every local node with py-spy during the produce phase "
                        "(collapsed stacks in DIR/node-N.txt)")
    add_cluster_args(p, 120.0)
    a = p.parse_args(argv)
    if a.num_records < 1 or a.record_size < 1 or a.partitions < 1:
        p.error("--num-records, --record-size and --partitions must be positive")
    if a.in_flight is None:
        a.in_flight = 4 if a.raw else 5
    return a


class AckTracker:
    """Latency and counts from the awaitables the library hands back, one per batch."""

    def __init__(self, stats: ProduceStats, record_size: int) -> None:
        self.stats = stats
        self.record_size = record_size
        self.batches = 0
        self._tasks: set[asyncio.Task] = set()
        self._loop = asyncio.get_running_loop()

    def track(self, handle, t_first: float, t_last: float, n: int) -> None:
        """`handle` is any record's awaitable of a batch of `n` records sent from `t_first` to
        `t_last` (perf_counter): half its records count from each end."""
        self.batches += 1
        t = self._loop.create_task(self._wait(handle, t_first, t_last, n))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _wait(self, handle, t_first: float, t_last: float, n: int) -> None:
        st = self.stats
        try:
            await handle
        except Exception as exc:  # the record's delivery error
            name = type(exc).__name__
            st.errors[name] = st.errors.get(name, 0) + 1
            st.failed_records += n
            return
        now = time.perf_counter()
        first_ms, last_ms = (now - t_first) * 1000, (now - t_last) * 1000
        half = n // 2
        if half:
            st.lat.add(first_ms, half)
        st.lat.add(last_ms, n - half)
        st.acked_records += n
        st.acked_bytes += n * self.record_size
        st.w_records += n
        st.w_bytes += n * self.record_size
        st.w_lat_total += first_ms * half + last_ms * (n - half)
        if first_ms > st.w_lat_max:
            st.w_lat_max = first_ms

    async def wait_all(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))


async def _pace(t0: float, sent: int, throughput: float) -> None:
    if throughput > 0:
        wait = t0 + sent / throughput - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


async def send_loop(prod: Producer, topic: str, args: argparse.Namespace, acks: AckTracker,
                    t0: float, deadline: float) -> int:
    """Per-record send(): what an application's produce loop does. Returns records sent."""
    send = prod.send
    value = os.urandom(args.record_size)
    total = args.num_records
    every = max(1, args.yield_every)
    if args.throughput > 0:
        every = max(1, min(every, int(args.throughput / 100)))
    sleep, pc, mono, rf = asyncio.sleep, time.perf_counter, time.monotonic, RecordFuture
    sent = 0
    cur = cur_h = None
    t_first = 0.0
    cnt = 0
    while sent < total and mono() < deadline:
        await _pace(t0, sent, args.throughput)
        k = min(every, total - sent)
        for _ in range(k):
            h = send(topic, value)
            if h.__class__ is rf:
                b = h[0]
            else:  # buffer_memory full: it waits in the producer's line; so do we
                await prod.drain()
                b = h.batch
            if b is not cur:
                now = pc()
                if cur is not None:
                    acks.track(cur_h, t_first, now, cnt)
                cur, cur_h, t_first, cnt = b, h, now, 0
            cnt += 1
        sent += k
        await sleep(0)  # let the sender and the answers run
    if cur is not None:
        acks.track(cur_h, t_first, pc(), cnt)
    return sent


async def send_batch_loop(prod: Producer, topic: str, n_parts: int, batch_records: int,
                          args: argparse.Namespace, acks: AckTracker, t0: float,
                          deadline: float) -> int:
    """send_batch(): one call per `batch_records` records, round-robin over partitions."""
    value = os.urandom(args.record_size)
    recs = [(None, value)] * batch_records
    total = args.num_records
    sent = 0
    p = 0
    pc, rf = time.perf_counter, RecordFuture
    while sent < total and time.monotonic() < deadline:
        await _pace(t0, sent, args.throughput)
        k = min(batch_records, total - sent)
        t = pc()
        h = prod.send_batch(topic, p, recs if k == batch_records else recs[:k])
        if h.__class__ is not rf:
            await prod.drain()
        acks.track(h, t, t, k)
        p = (p + 1) % n_parts
        sent += k
        await asyncio.sleep(0)
    return sent


async def run_client(args: argparse.Namespace, urls: list[str], topic: str, n_parts: int,
                     node_pids: dict[int, int]) -> str:
    send_mode = args.mode == "send"
    # send(): the producer's own default batch_size; send_batch(): calls of just under the
    # brokers' 1 MiB max.message.bytes (record overhead included).
    batch_bytes = args.batch_bytes or (DEFAULT_BATCH_SIZE if send_mode else SEND_BATCH_BYTES)
    batch_records = args.batch_records or default_batch_records(args.record_size, batch_bytes)
    max_request = args.max_request_size or max(MIB, 4 * batch_bytes)
    prod = Producer(urls, acks=args.acks if args.acks != "-1" else "all",
                    linger_ms=args.linger_ms, batch_size=batch_bytes,
                    max_in_flight=args.in_flight, buffer_memory=args.buffer_memory,
                    max_request_size=max_request,
                    enable_idempotence=not args.no_idempotence)
    stats = ProduceStats()
    async with prod:
        await prod.client.wait_for_topic(topic, 30_000)
        how = (f"send() per record, batch_size {batch_bytes} B, linger {args.linger_ms:g} ms, "
               f"yield every {args.yield_every}" if send_mode else
               f"send_batch() of {batch_records} records, round-robin")
        log(f"producing {args.num_records} records of {args.record_size} B with raftlog.Producer "
            f"({how}), acks={args.acks}, idempotence {'on' if prod.idempotent else 'off'}, "
            f"{args.in_flight} requests in flight per leader, max_request_size {max_request}, "
            f"throughput cap {args.throughput if args.throughput > 0 else 'none'}, "
            f"at most {args.max_seconds:.0f} s")
        acks = AckTracker(stats, args.record_size)
        spies = (start_py_spy(args.py_spy, node_pids, args.max_seconds)
                 if args.py_spy and node_pids else [])
        profile = ClientProfile(args.profile, args.max_seconds)
        gcm = GcMeter()
        meter = CpuMeter(node_pids).start()
        t0 = time.monotonic()
        prog = asyncio.create_task(progress_loop(stats, args.record_size))
        try:
            with profile, gcm:
                deadline = t0 + args.max_seconds
                if send_mode:
                    sent = await send_loop(prod, topic, args, acks, t0, deadline)
                else:
                    sent = await send_batch_loop(prod, topic, n_parts, batch_records, args,
                                                 acks, t0, deadline)
                await prod.flush()
                await acks.wait_all()
        finally:
            prog.cancel()
        elapsed = time.monotonic() - t0
        meter.stop()
        stop_py_spy(spies)
    stats.sent_records = sent
    lines = [f"topic {topic}: {acks.batches} batches, "
             f"{stats.acked_records / max(1, acks.batches):.0f} records/batch, "
             f"elapsed {elapsed:.2f} s ({args.mode}, raftlog.Producer)"]
    if stats.errors or stats.failed_records:
        lines.append(f"errors: {stats.errors}; records failed {stats.failed_records}")
    if stats.acked_records < args.num_records:
        lines.append(f"note: {args.num_records - stats.acked_records} records not sent/acked "
                     f"(--max-seconds {args.max_seconds:.0f} or failures)")
    lines.append(gcm.report(elapsed))
    lines += profile.report(args.profile_top, stats.acked_records)
    lines.append(meter.report() + f"; client CPU {1e6 * meter.me / max(1, stats.acked_records):.2f} µs/record")
    if spies:
        lines.append(f"py-spy stacks in {args.py_spy}/node-N.txt")
    lines.append(kafka_producer_line(stats, elapsed, args.record_size))
    return "\n".join(lines)


async def run(args: argparse.Namespace, urls: list[str], node_pids: dict[int, int]) -> str:
    topic = args.topic or f"perf-{uuid.uuid4().hex[:8]}"
    async with new_session(limit_per_host=args.in_flight + 4) as session:
        created = await ensure_topic(session, urls, topic, args.partitions,
                                     args.replication_factor)
        router = Router(session, urls)
        await wait_producible(session, router, topic)
        n_parts = router.partitions[topic]
        log(f"topic {topic}: {'created' if created else 'exists'}, "
            f"{n_parts} partitions, RF {args.replication_factor}, leaders "
            + " ".join(f"{p}:{router.routes[(topic, p)].leader}" for p in range(n_parts)))
        if args.raw:
            return await run_raw(args, session, router, topic, node_pids)
    return await run_client(args, urls, topic, n_parts, node_pids)


async def run_raw(args: argparse.Namespace, session, router: Router, topic: str,
                  node_pids: dict[int, int]) -> str:
    acks = ACKS[args.acks]
    batch_records = args.batch_records or default_batch_records(
        args.record_size, args.batch_bytes or 256 * 1024)
    log(f"producing {args.num_records} records of {args.record_size} B with the internal "
        f"producer (--raw), acks={args.acks}, "
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
    profile = ClientProfile(args.profile, args.max_seconds)
    gcm = GcMeter()
    meter = CpuMeter(node_pids).start()
    t0 = time.monotonic()
    prog = asyncio.create_task(progress_loop(prod.stats, args.record_size))
    try:
        with profile, gcm:
            stats = await prod.run()
    finally:
        prog.cancel()
    elapsed = time.monotonic() - t0
    meter.stop()
    stop_py_spy(spies)
    lines = [f"topic {topic}: {stats.requests} produce requests, "
             f"{stats.acked_records / max(1, stats.requests):.0f} records/request, "
             f"elapsed {elapsed:.2f} s (--raw internal producer)"]
    if stats.errors or stats.failed_records:
        lines.append(f"errors: {stats.errors}; retries {stats.retries}; "
                     f"records failed {stats.failed_records}")
    if stats.acked_records < args.num_records:
        lines.append(f"note: {args.num_records - stats.acked_records} records not sent/acked "
                     f"(--max-seconds {args.max_seconds:.0f} or failures)")
    lines.append(gcm.report(elapsed))
    lines += profile.report(args.profile_top, stats.acked_records)
    lines.append(meter.report() + f"; client CPU {1e6 * meter.me / max(1, stats.acked_records):.2f} µs/record")
    if spies:
        lines.append(f"py-spy stacks in {args.py_spy}/node-N.txt")
    lines.append(kafka_producer_line(stats, elapsed, args.record_size))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_tool(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
