#!/usr/bin/env python3
"""Consumer throughput, printed in kafka-consumer-perf-test's shape.

    .venv/bin/python benchmarks/consume_perf.py --num-records 2000000 --record-size 100 [--profile]

Starts a local 3-node cluster on 127.0.0.1 (killed at the end) unless `--bootstrap` names a
running one. Without `--topic` (or when the named topic is empty) it first produces
`--num-records` records (acks=all, not timed) with `raftlog.Producer.send_batch`. Then one
`raftlog.Consumer` is assigned every partition, seeks to the log start and calls
`getmany()` until it has every record below the high watermark seen at the start; every record
is a decoded ConsumerRecord (CRC checked), counted with its key and value bytes.

`--raw` uses the old internal path for both phases instead: the benchmark producer, and POST
/v1/fetch straight to the leaders (one fetch in flight per leader, the next one sent before the
previous answer is decoded) with raftlog.codec.batch.decode: the ceiling without the client
library, for comparison. `--profile` (cProfile, or `--profile py-spy`) prints where the
client's CPU goes while consuming, before the figures. Figures last:

    start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
    rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec

MB = 2^20 bytes of record keys and values.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import os
import sys
import time
import uuid
from dataclasses import dataclass
from operator import attrgetter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (ClientProfile, CpuMeter, GcMeter, MIB, PerfProducer, ProduceStats, Router,
                     WeightedLatencies, add_cluster_args, codec, default_batch_records,
                     ensure_topic, kafka_producer_line, log, new_session, post_msgpack, run_tool,
                     start_py_spy, stop_py_spy, wait_producible)  # noqa: E402

from raftlog.client import Consumer, Producer, TopicPartition  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topic", default=None, help="consume this topic (produce first if empty)")
    p.add_argument("--num-records", type=int, default=1_000_000,
                   help="records to produce first when the topic is new or empty")
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--replication-factor", type=int, default=3)
    p.add_argument("--fetch-max-bytes", type=int, default=50 * 1024 * 1024,
                   help="max bytes per fetch answer (Kafka's fetch.max.bytes, default 50 MiB)")
    p.add_argument("--partition-max-bytes", type=int, default=4 * 1024 * 1024,
                   help="max bytes per partition per fetch (default 4 MiB)")
    p.add_argument("--max-records", type=int, default=None,
                   help="getmany(max_records=N) (Kafka's max.poll.records; default: all buffered, "
                        "the library's default)")
    p.add_argument("--raw", action="store_true",
                   help="fill and read with the internal minimal producer/fetch loop instead of "
                        "the client library")
    p.add_argument("--no-decode", action="store_true",
                   help="--raw only: count records from batch headers only (diagnosis: isolates "
                        "client decode cost); the default decodes every record")
    p.add_argument("--gc-off", action="store_true",
                   help="disable Python's cyclic GC while consuming (decode allocates a tuple "
                        "per record; GC passes over them cost ~30-50%% of decode time)")
    p.add_argument("--gc-threshold", default="50000,20,50",
                   help="the consuming process's gc.set_threshold while consuming (default "
                        "50000,20,50, as docs/client.md suggests for applications that hold "
                        "many records; 700,10,10 is CPython's default)")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop consuming after this long (default 60)")
    p.add_argument("--profile", nargs="?", const="cprofile", choices=["cprofile", "py-spy"],
                   default=None,
                   help="print where the client's CPU goes while consuming: cProfile (default; "
                        "call counts, slows the client ~2x) or py-spy samples; quote "
                        "unprofiled figures")
    p.add_argument("--profile-top", type=int, default=15, help="functions listed by --profile")
    p.add_argument("--py-spy", metavar="DIR", default=None,
                   help="record every local node with py-spy while consuming (DIR/node-N.txt)")
    add_cluster_args(p, 120.0)
    return p.parse_args(argv)


_VALUE = attrgetter("value")
_KEY = attrgetter("key")


@dataclass
class Totals:
    records: int = 0
    bytes: int = 0
    fetches: int = 0
    wire_bytes: int = 0


async def offsets(session, router: Router, topic: str, ts: int) -> dict[int, int]:
    by: dict[str, list[int]] = {}
    for p in range(router.partitions[topic]):
        by.setdefault(router.leader_url(topic, p), []).append(p)
    out: dict[int, int] = {}
    for url, parts in by.items():
        ans = await post_msgpack(session, url + "/v1/list-offsets", {"partitions": [
            {"topic": topic, "partition": p, "timestamp": ts} for p in parts]})
        for r in ans["partitions"]:
            if r.get("error"):
                raise RuntimeError(f"list-offsets {topic}-{r['partition']}: {r}")
            out[r["partition"]] = r["offset"]
    return out


async def has_data(session, router: Router, topic: str) -> bool:
    """Whether any partition holds a non-control batch (each new leader writes an epoch marker
    batch, so a high watermark above 0 alone does not mean data). Walks past control batches."""
    for p in range(router.partitions[topic]):
        offset = 0
        for _ in range(1000):
            ans = await post_msgpack(session, router.leader_url(topic, p) + "/v1/fetch", {
                "max_wait_ms": 0, "min_bytes": 0, "max_bytes": 16 << 20,
                "partitions": [{"topic": topic, "partition": p, "offset": offset,
                                "max_bytes": 16 << 20}]})
            r = ans["partitions"][0]
            if r.get("error") == "OFFSET_OUT_OF_RANGE":
                return True  # the log start moved past 0: retention deleted data, so some exists
            if r.get("error"):
                raise RuntimeError(f"fetch {topic}-{p}: {r}")
            last = offset
            for _, h in codec.iter_batches(r.get("records") or b""):
                if not h.is_control:
                    return True
                last = h.next_offset
            if last == offset:
                break  # nothing more below the high watermark
            offset = last
    return False


async def consume_leader(session, url: str, topic: str, parts: list[int], pos: dict[int, int],
                         end: dict[int, int], args: argparse.Namespace, tot: Totals,
                         deadline: float) -> None:
    """One fetch in flight per leader; the next is sent before this answer is decoded."""
    def request() -> asyncio.Task | None:
        want = [p for p in parts if pos[p] < end[p]]
        if not want or time.monotonic() > deadline:
            return None
        body = {"max_wait_ms": 500, "min_bytes": 1, "max_bytes": args.fetch_max_bytes,
                "partitions": [{"topic": topic, "partition": p, "offset": pos[p],
                                "max_bytes": args.partition_max_bytes} for p in want]}
        return asyncio.ensure_future(post_msgpack(session, url + "/v1/fetch", body))

    task = request()
    while task is not None:
        ans = await task
        tot.fetches += 1
        todo: list[tuple[int, int, int, bytes]] = []
        for r in ans["partitions"]:
            if r.get("error"):
                raise RuntimeError(f"fetch {topic}-{r['partition']}: {r}")
            p = r["partition"]
            recs = r.get("records") or b""
            if not recs:
                continue
            tot.wire_bytes += len(recs)
            start = pos[p]
            last = start
            for _, h in codec.iter_batches(recs):
                last = h.next_offset
            todo.append((p, start, end[p], recs))
            pos[p] = max(pos[p], last)
        task = request()  # prefetch: the broker works while we decode
        for p, start, stop, recs in todo:
            if args.no_decode:
                for _, h in codec.iter_batches(recs):
                    if h.is_control:
                        continue
                    lo = max(start, h.base_offset)
                    hi = min(stop, h.next_offset)
                    if hi > lo:
                        tot.records += hi - lo
                        tot.bytes += (hi - lo) * args.record_size
                continue
            decoded = codec.decode(recs)
            if decoded and not (start <= decoded[0].offset and decoded[-1].offset < stop):
                decoded = [r for r in decoded if start <= r.offset < stop]
            tot.records += len(decoded)
            # per-record sizes via C-level map; keys are None in benchmark data
            tot.bytes += sum(map(len, filter(None, map(_VALUE, decoded))))
            tot.bytes += sum(map(len, filter(None, map(_KEY, decoded))))


async def progress(tot: Totals) -> None:
    last_t, last_n, last_b = time.monotonic(), 0, 0
    while True:
        await asyncio.sleep(2.0)
        now = time.monotonic()
        dt = now - last_t
        log(f"consumed {tot.records} records; window {(tot.records - last_n) / dt:.0f} "
            f"records/sec ({(tot.bytes - last_b) / dt / MIB:.2f} MB/sec)")
        last_t, last_n, last_b = now, tot.records, tot.bytes


def ts_str(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S:%f")[:-3]


async def fill_with_library(urls: list[str], topic: str, n_parts: int,
                            args: argparse.Namespace) -> ProduceStats:
    """Untimed fill: send_batch() of ~256 KiB per call, round-robin, acks=all."""
    st = ProduceStats()
    per = default_batch_records(args.record_size, 256 * 1024)
    value = os.urandom(args.record_size)
    recs = [(None, value)] * per
    deadline = time.monotonic() + args.max_seconds
    pending: list[tuple[float, int, object]] = []
    async with Producer(urls, acks="all", max_request_size=4 * MIB) as prod:
        await prod.client.wait_for_topic(topic, 30_000)
        sent, p = 0, 0
        while sent < args.num_records and time.monotonic() < deadline:
            k = min(per, args.num_records - sent)
            pending.append((time.perf_counter(), k,
                            prod.send_batch(topic, p, recs if k == per else recs[:k])))
            await prod.drain()
            p = (p + 1) % n_parts
            sent += k
            await asyncio.sleep(0)
        await prod.flush()
        for t, k, h in pending:
            try:
                await h
            except Exception as exc:
                st.errors[type(exc).__name__] = st.errors.get(type(exc).__name__, 0) + 1
                st.failed_records += k
                continue
            st.acked_records += k
            st.lat.add(0.0, k)  # the fill is not a latency measurement
    st.lat = WeightedLatencies()
    return st


async def consume_with_library(urls: list[str], topic: str, start: dict[int, int],
                               end: dict[int, int], args: argparse.Namespace, tot: Totals,
                               deadline: float) -> dict[int, int]:
    """One Consumer, every partition assigned, from `start` until `end` (exclusive)."""
    consumer = Consumer(bootstrap_servers=urls, auto_offset_reset="earliest",
                        fetch_max_bytes=args.fetch_max_bytes,
                        max_partition_fetch_bytes=args.partition_max_bytes)
    pos = dict(start)
    async with consumer:
        tps = {TopicPartition(topic, p): p for p in start}
        consumer.assign(list(tps))
        for tp, p in tps.items():
            consumer.seek(tp, start[p])
        todo = {tp for tp, p in tps.items() if start[p] < end[p]}
        getmany = consumer.getmany
        while todo and time.monotonic() < deadline:
            got = await getmany(timeout_ms=50, max_records=args.max_records)
            for tp, recs in got.items():
                p = tps[tp]
                stop = end[p]
                if recs[-1].offset >= stop:
                    recs = [r for r in recs if r.offset < stop]
                n = len(recs)
                tot.records += n
                tot.fetches += 1
                tot.bytes += sum(map(len, filter(None, map(_VALUE, recs))))
                if n and recs[0].key is not None:
                    tot.bytes += sum(map(len, filter(None, map(_KEY, recs))))
            for tp in list(todo):
                p = tps[tp]
                pos[p] = await consumer.position(tp)
                if pos[p] >= end[p]:
                    todo.discard(tp)
    return pos


async def run(args: argparse.Namespace, urls: list[str], node_pids: dict[int, int]) -> str:
    topic = args.topic or f"consume-perf-{uuid.uuid4().hex[:8]}"
    lines: list[str] = []
    async with new_session() as session:
        router = Router(session, urls)
        created = False
        await router.refresh([topic])
        if topic not in router.partitions:
            created = await ensure_topic(session, urls, topic, args.partitions,
                                         args.replication_factor)
        await wait_producible(session, router, topic)
        n_parts = router.partitions[topic]
        hw = await offsets(session, router, topic, -1)
        produced = None
        if not await has_data(session, router, topic):
            log(f"topic {topic} ({'created' if created else 'empty'}): producing "
                f"{args.num_records} records of {args.record_size} B first (acks=all, "
                f"{'internal producer' if args.raw else 'raftlog.Producer.send_batch'})")
            t0 = time.monotonic()
            if args.raw:
                prod = PerfProducer(session, router, topic, num_records=args.num_records,
                                    record_size=args.record_size, acks=-1,
                                    batch_records=default_batch_records(args.record_size,
                                                                        256 * 1024),
                                    in_flight=4, deadline=time.monotonic() + args.max_seconds)
                st = await prod.run()
            else:
                st = await fill_with_library(urls, topic, n_parts, args)
            produced = st.acked_records
            line = kafka_producer_line(st, time.monotonic() - t0, args.record_size)
            lines.append("produce phase: " + line.split(" ms avg latency")[0].rsplit(",", 1)[0]
                         + (f"; errors {st.errors}" if st.errors else ""))
            await router.refresh([topic])
            hw = await offsets(session, router, topic, -1)
        start = await offsets(session, router, topic, -2)
        log(f"consuming {topic} with {'the raw fetch loop' if args.raw else 'raftlog.Consumer'}:"
            f" {n_parts} partitions, offsets "
            + " ".join(f"{p}:{start[p]}-{hw[p]}" for p in range(n_parts)))
        by: dict[str, list[int]] = {}
        for p in range(n_parts):
            by.setdefault(router.leader_url(topic, p), []).append(p)
        pos = dict(start)
        tot = Totals()
        spies = (start_py_spy(args.py_spy, node_pids, args.max_seconds)
                 if args.py_spy and node_pids else [])
        gc_before = gc.get_threshold()
        gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
        if args.gc_off:
            gc.collect()
            gc.disable()
        profile = ClientProfile(args.profile, args.max_seconds)
        gcm = GcMeter()
        meter = CpuMeter(node_pids).start()
        wall0 = time.time()
        t0 = time.monotonic()
        prog = asyncio.create_task(progress(tot))
        try:
            with profile, gcm:
                if args.raw:
                    await asyncio.gather(*(consume_leader(session, url, topic, parts, pos, hw,
                                                          args, tot, t0 + args.max_seconds)
                                           for url, parts in by.items()))
                else:
                    pos = await consume_with_library(urls, topic, start, hw, args, tot,
                                                     t0 + args.max_seconds)
        finally:
            prog.cancel()
            gc.enable()
            gc.set_threshold(*gc_before)
        elapsed = time.monotonic() - t0
        wall1 = time.time()
        meter.stop()
        stop_py_spy(spies)
    if args.raw:
        what = (f"{tot.fetches} fetch requests, {tot.wire_bytes / MIB:.1f} MiB of batches on the "
                f"wire, {'headers only (--no-decode)' if args.no_decode else 'every record decoded'}")
    else:
        what = (f"raftlog.Consumer: {tot.fetches} non-empty getmany() partition lists, "
                f"max_records {args.max_records}")
    lines.append(what + f"{', GC off' if args.gc_off else ''}, elapsed {elapsed:.2f} s")
    if produced is not None:
        lines.append(f"check: consumed {tot.records} records, produced {produced} "
                     f"({'match' if tot.records == produced else 'MISMATCH'})")
    if any(pos[p] < hw[p] for p in pos):
        lines.append("note: stopped at --max-seconds before reaching the high watermark")
    lines.append(gcm.report(elapsed))
    lines += profile.report(args.profile_top, tot.records)
    lines.append(meter.report() + f"; client CPU {1e6 * meter.me / max(1, tot.records):.2f} µs/record")
    mb = tot.bytes / MIB
    lines.append("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, "
                 "nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")
    lines.append(f"{ts_str(wall0)}, {ts_str(wall1)}, {mb:.4f}, {mb / elapsed:.4f}, {tot.records}, "
                 f"{tot.records / elapsed:.4f}, 0, {elapsed * 1000:.0f}, {mb / elapsed:.4f}, "
                 f"{tot.records / elapsed:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_tool(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
