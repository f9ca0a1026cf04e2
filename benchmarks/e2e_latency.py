#!/usr/bin/env python3
"""End-to-end latency: produce at a fixed rate while a consumer long-polls; latency is the
consumer's receive time minus the record's send time (CLOCK_MONOTONIC, embedded in the value;
by default the record's scheduled creation time on the --rate timeline, see --stamp).

    .venv/bin/python benchmarks/e2e_latency.py --rate 1000 --duration 20

Starts a local 3-node cluster on 127.0.0.1 (killed at the end) unless `--bootstrap` names a
running one. The producer (this process, asyncio + aiohttp) sends `--batch-records` records per
produce request (default 1) with acks=all on a schedule of `--rate` records/s, without waiting
for answers (at most `--max-in-flight` open). The consumer runs in its own process so neither
side's event loop delays the other: it long-polls POST /v1/fetch on the leader (min_bytes 1),
decodes every batch with raftlog.codec.batch.decode and stamps each record on arrival. A record
counts once it is committed (high watermark) and fetched, so the figure includes replication.
The first `--warmup-seconds` of sends are left out. Figures last.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (CpuMeter, Router, WeightedLatencies, add_cluster_args, codec, ensure_topic,
                     log, new_session, percentile, post_msgpack, proc_cpu_s, run_tool,
                     start_py_spy, stop_py_spy, wait_producible)  # noqa: E402

STAMP = struct.Struct(">qq")  # send time (monotonic ns), sequence number


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1000.0, help="records/s (default 1000)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of producing (default 20)")
    p.add_argument("--record-size", type=int, default=100, help="value bytes (>= 16)")
    p.add_argument("--batch-records", type=int, default=1, help="records per produce request")
    p.add_argument("--acks", choices=["all", "1", "0"], default="all")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--replication-factor", type=int, default=3)
    p.add_argument("--max-in-flight", type=int, default=512)
    p.add_argument("--max-wait-ms", type=int, default=500, help="consumer long-poll max wait")
    p.add_argument("--warmup-seconds", type=float, default=1.0)
    p.add_argument("--stamp", choices=["scheduled", "send"], default="scheduled",
                   help="send time embedded in each record: its scheduled creation time "
                        "(default; includes batching and sender lateness) or the request's "
                        "build time")
    p.add_argument("--topic", default=None)
    p.add_argument("--py-spy", metavar="DIR", default=None,
                   help="record every local node with py-spy while producing (DIR/node-N.txt)")
    add_cluster_args(p, 120.0)
    a = p.parse_args(argv)
    if a.record_size < STAMP.size:
        p.error(f"--record-size must be at least {STAMP.size}")
    return a


# -- consumer process ----------------------------------------------------------------------
def consumer_main(conn, bootstrap: list[str], topic: str, expected: int, deadline_s: float,
                  max_wait_ms: int) -> None:
    """Runs in a child process: fetch from the high watermark until `expected` records arrive
    or the deadline, then send back [(seq, latency_ms)] and own CPU seconds."""
    try:
        out = asyncio.run(_consume(conn, bootstrap, topic, expected, deadline_s, max_wait_ms))
        t = os.times()
        conn.send(("ok", out, t.user + t.system))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", repr(exc), 0.0))
    finally:
        conn.close()


async def _consume(conn, bootstrap, topic, expected, deadline_s, max_wait_ms):
    deadline = time.monotonic() + deadline_s
    async with new_session() as session:
        router = Router(session, bootstrap)
        await router.wait_leaders(topic)
        by: dict[str, list[int]] = {}
        for p in range(router.partitions[topic]):
            by.setdefault(router.leader_url(topic, p), []).append(p)
        pos: dict[int, int] = {}
        for url, parts in by.items():
            ans = await post_msgpack(session, url + "/v1/list-offsets", {"partitions": [
                {"topic": topic, "partition": p, "timestamp": -1} for p in parts]})
            for r in ans["partitions"]:
                pos[r["partition"]] = r["offset"]
        got: list[tuple[int, float]] = []
        done = asyncio.Event()
        conn.send(("ready", None, 0.0))

        async def poll(url: str, parts: list[int]) -> None:
            while not done.is_set() and time.monotonic() < deadline:
                body = {"max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": 1 << 20,
                        "partitions": [{"topic": topic, "partition": p, "offset": pos[p]}
                                       for p in parts]}
                ans = await post_msgpack(session, url + "/v1/fetch", body)
                now = time.monotonic_ns()
                for r in ans["partitions"]:
                    if r.get("error"):
                        raise RuntimeError(f"fetch: {r}")
                    recs = r.get("records")
                    if not recs:
                        continue
                    p = r["partition"]
                    start = pos[p]
                    for rec in codec.decode(recs):
                        if rec.offset >= start:
                            sent, seq = STAMP.unpack_from(rec.value)
                            got.append((seq, (now - sent) / 1e6))
                    for _, h in codec.iter_batches(recs):
                        pos[p] = max(pos[p], h.next_offset)
                if len(got) >= expected:
                    done.set()

        await asyncio.gather(*(poll(u, ps) for u, ps in by.items()))
        return got


# -- producer ------------------------------------------------------------------------------
async def produce(args, session, router: Router, topic: str, acks: int):
    n_total = int(args.rate * args.duration)
    per = max(1, args.batch_records)
    n_req = (n_total + per - 1) // per
    interval = per / args.rate
    pad = os.urandom(args.record_size - STAMP.size)
    sem = asyncio.Semaphore(args.max_in_flight)
    ack_lat = WeightedLatencies()
    errors: dict[str, int] = {}
    send_times: dict[int, float] = {}
    tasks: set[asyncio.Task] = set()
    n_parts = router.partitions[topic]
    late = 0

    async def one(p: int, b: bytes, n: int, t0: float) -> None:
        try:
            ans = await post_msgpack(session, router.leader_url(topic, p) + "/v1/produce",
                                     {"acks": acks, "timeout_ms": 30000,
                                      "partitions": [{"topic": topic, "partition": p, "batch": b}]})
            r = (ans.get("partitions") or [{}])[0] if acks != 0 else {}
            if r.get("error"):
                errors[r["error"]] = errors.get(r["error"], 0) + 1
            else:
                ack_lat.add((time.perf_counter() - t0) * 1000, n)
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            sem.release()

    seq = 0
    t_start_ns = time.monotonic_ns()
    t_start = t_start_ns / 1e9
    ns_per_rec = 1e9 / args.rate
    for i in range(n_req):
        n = min(per, n_total - seq)
        # a request leaves when its last record is due (records "arrive" one by one at --rate)
        due = t_start + (seq + n - 1) * ns_per_rec / 1e9
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.005:
            late += 1
        await sem.acquire()
        ts = int(time.time() * 1000)
        now_ns = time.monotonic_ns()
        recs = []
        for _ in range(n):
            # stamp: the record's scheduled creation time, so time spent waiting for the rest of
            # its batch or for a late sender counts (no coordinated omission); --stamp send uses
            # the moment the request is built instead
            stamp = (t_start_ns + int(seq * ns_per_rec)) if args.stamp == "scheduled" else now_ns
            recs.append((None, STAMP.pack(stamp, seq) + pad, None, ts))
            send_times[seq] = seq * ns_per_rec / 1e9
            seq += 1
        b = codec.encode(recs)
        t = asyncio.create_task(one(i % n_parts, b, n, time.perf_counter()))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return seq, time.monotonic() - t_start, ack_lat, errors, send_times, late


async def run(args: argparse.Namespace, urls: list[str], node_pids: dict[int, int]) -> str:
    topic = args.topic or f"e2e-{uuid.uuid4().hex[:8]}"
    acks = {"all": -1, "1": 1, "0": 0}[args.acks]
    n_total = int(args.rate * args.duration)
    async with new_session() as session:
        await ensure_topic(session, urls, topic, args.partitions, args.replication_factor)
        router = Router(session, urls)
        await wait_producible(session, router, topic)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        cons = ctx.Process(target=consumer_main, daemon=True,
                           args=(child, urls, topic, n_total, args.duration + 15,
                                 args.max_wait_ms))
        cons.start()
        try:
            loop = asyncio.get_running_loop()
            kind, _, _ = await loop.run_in_executor(None, parent.recv)
            if kind != "ready":
                raise RuntimeError(f"consumer failed to start: {_}")
            log(f"topic {topic}: consumer (pid {cons.pid}) ready; producing {n_total} records "
                f"of {args.record_size} B at {args.rate:.0f}/s, {args.batch_records} per "
                f"request, acks={args.acks}, for {args.duration:.0f} s")
            spies = (start_py_spy(args.py_spy, node_pids, args.duration + 5)
                     if args.py_spy and node_pids else [])
            meter = CpuMeter(node_pids).start()
            cons_cpu0 = proc_cpu_s(cons.pid)
            prog_stop = asyncio.Event()

            async def progress() -> None:
                while not prog_stop.is_set():
                    await asyncio.sleep(2.0)
                    if not prog_stop.is_set():
                        log(f"... {time.monotonic() - meter.t0:.0f} s")
            pt = asyncio.create_task(progress())
            sent, elapsed, ack_lat, errors, send_times, late = await produce(
                args, session, router, topic, acks)
            has = await loop.run_in_executor(None, parent.poll, 20.0)
            meter.stop()
            stop_py_spy(spies)
            prog_stop.set()
            pt.cancel()
            if not has:
                raise RuntimeError("consumer sent no result within 20 s of the last send")
            kind, got, cons_cpu_total = parent.recv()
            if kind != "ok":
                raise RuntimeError(f"consumer failed: {got}")
            cons_cpu = max(0.0, cons_cpu_total - cons_cpu0)
        finally:
            if cons.is_alive():
                cons.terminate()
            cons.join(5)
            if cons.is_alive():
                cons.kill()
                cons.join()
    warm = [ms for s, ms in got if send_times.get(s, 0.0) >= args.warmup_seconds]
    warm.sort()
    recv = {s for s, _ in got}
    lines = [f"sent {sent} records in {elapsed:.2f} s ({sent / elapsed:.0f} records/s, "
             f"{late} requests sent >5 ms late); received {len(recv)}"
             f"{'' if len(recv) == sent else f' (MISSING {sent - len(recv)})'}; "
             f"{len(got) - len(recv)} duplicates",
             f"produce ack latency (send -> acks={args.acks} answer): avg {ack_lat.avg:.2f} ms, "
             + ", ".join(f"p{q:g} {v:.2f} ms" for q, v in
                         zip([50, 99, 99.9], ack_lat.percentiles([50, 99, 99.9])))
             + f", max {ack_lat.max:.2f} ms"]
    if errors:
        lines.append(f"errors: {errors}")
    lines.append(meter.report(extra_s=cons_cpu))
    if warm:
        avg = sum(warm) / len(warm)
        lines.append(
            f"end-to-end latency (consumer receive - {args.stamp} time) over {len(warm)} "
            f"records (first {args.warmup_seconds:g} s excluded): avg {avg:.2f} ms, p50 {percentile(warm, 50):.2f} ms, "
            f"p99 {percentile(warm, 99):.2f} ms, p99.9 {percentile(warm, 99.9):.2f} ms, "
            f"max {warm[-1]:.2f} ms")
    else:
        lines.append("end-to-end latency: no records received")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_tool(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
