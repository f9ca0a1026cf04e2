#!/usr/bin/env python3
"""End-to-end latency through the client library: a `raftlog.Producer` sends at a fixed rate
while a `raftlog.Consumer` long-polls in another process; latency is the consumer's receive time
minus the record's send time (CLOCK_MONOTONIC, embedded in the value; by default the record's
scheduled creation time on the --rate timeline, see --stamp).

    .venv/bin/python benchmarks/e2e_latency.py --rate 1000 --duration 20

Starts a local 3-node cluster on 127.0.0.1 (killed at the end) unless `--bootstrap` names a
running one. The producer (this process) is `raftlog.Producer(acks=all, linger_ms=0)`,
idempotent (the library's default): a loop wakes when the next `--batch-records` records
(default 1) are due on the `--rate` timeline and send()s every record due by then, without
waiting for answers, so a late loop turn sends what piled up at once. linger 0 is what a Kafka
user sets for latency: a batch leaves on the sender's next turn, carrying the records sent in
this one. The consumer runs in its own process so neither side's event loop delays the other:
`raftlog.Consumer(fetch_max_wait_ms=--max-wait-ms, fetch_min_bytes=1)` assigned every partition
at its end, `getmany()` in a loop, each returned record stamped with the time getmany() handed
it over. A record counts once it is committed (high watermark) and fetched, so the figure
includes replication. The first `--warmup-seconds` of the timeline are left out.

No coordinated omission: with the default `--stamp scheduled` the stamp is the time the record
was due, not when the loop got round to sending it, so a stalled sender or event loop counts
against every record it delayed. The "send() lateness" line says how much of the latency that
was; "produce ack latency" is send() to the acks=all answer (Kafka's producer latency).

Progress lines every 2 s (records acknowledged, rate, ack latency); figures last, the last line
in kafka-producer-perf-test's shape for the end-to-end latency.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import struct
import sys
import time
import uuid
from operator import attrgetter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (MIB, ClientProfile, CpuMeter, ProduceStats, Router, add_cluster_args, ensure_topic, log,
                     new_session, percentile, proc_cpu_s, progress_loop, run_tool,
                     start_py_spy, stop_py_spy, wait_producible)  # noqa: E402

from raftlog import Consumer, Producer, TopicPartition  # noqa: E402

STAMP = struct.Struct(">qq")  # send time (monotonic ns), sequence number
IDEMPOTENT_IN_FLIGHT_MAX = 5  # the library's (and Kafka's) limit with idempotence on
LATE_MS = 5.0                 # a send loop turn this far behind schedule counts as late
RESULT_WAIT_S = 20.0          # how long the consumer may take after the last send
CONSUMER_GRACE_S = 15.0       # the consumer's own deadline beyond --duration


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1000.0, help="records/s (default 1000)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of producing (default 20)")
    p.add_argument("--record-size", type=int, default=100, help="value bytes (>= 16)")
    p.add_argument("--batch-records", type=int, default=1,
                   help="records per send-loop wake-up (default 1); with linger 0 they leave "
                        "as one batch")
    p.add_argument("--linger-ms", type=float, default=0.0,
                   help="producer linger_ms (default 0, as for a latency-sensitive Kafka "
                        "producer; the library's own default is 5)")
    p.add_argument("--acks", choices=["all", "1", "0"], default="all")
    p.add_argument("--no-idempotence", action="store_true",
                   help="enable_idempotence=False (default: the library's default, on)")
    p.add_argument("--partitions", type=int, default=1)
    p.add_argument("--replication-factor", type=int, default=3)
    p.add_argument("--max-in-flight", type=int, default=IDEMPOTENT_IN_FLIGHT_MAX,
                   help="producer max_in_flight: produce requests open per leader (default 5, "
                        "the maximum with idempotence)")
    p.add_argument("--max-wait-ms", type=int, default=500,
                   help="consumer fetch_max_wait_ms: the long poll's wait (default 500)")
    p.add_argument("--warmup-seconds", type=float, default=1.0)
    p.add_argument("--stamp", choices=["scheduled", "send"], default="scheduled",
                   help="send time embedded in each record: its scheduled creation time "
                        "(default; includes sender lateness) or the moment of its send() call")
    p.add_argument("--topic", default=None)
    p.add_argument("--profile", nargs="?", const="cprofile", choices=["cprofile", "py-spy"],
                   default=None,
                   help="print where the producer's and the consumer's CPU goes (cProfile, "
                        "slows them ~2x, or `--profile py-spy`); quote unprofiled figures")
    p.add_argument("--profile-top", type=int, default=12, help="functions listed by --profile")
    p.add_argument("--py-spy", metavar="DIR", default=None,
                   help="record every local node with py-spy while producing (DIR/node-N.txt)")
    add_cluster_args(p, 120.0)
    a = p.parse_args(argv)
    if a.record_size < STAMP.size:
        p.error(f"--record-size must be at least {STAMP.size}")
    if a.rate <= 0 or a.duration <= 0 or a.batch_records < 1 or a.partitions < 1:
        p.error("--rate, --duration, --batch-records and --partitions must be positive")
    idempotent = not a.no_idempotence and a.acks != "0"
    if idempotent and not 1 <= a.max_in_flight <= IDEMPOTENT_IN_FLIGHT_MAX:
        p.error(f"--max-in-flight must be 1..{IDEMPOTENT_IN_FLIGHT_MAX} with idempotence "
                "(add --no-idempotence for more)")
    return a


# -- consumer process ----------------------------------------------------------------------
def consumer_main(conn, bootstrap: list[str], topic: str, expected: int, deadline_s: float,
                  max_wait_ms: int, profile: str | None, top: int) -> None:
    """Runs in a child process: read from the end of every partition until `expected` records
    arrive or the deadline, then send back ([(seq, latency_ms)], profile lines) and own CPU
    seconds."""
    try:
        prof = ClientProfile(profile, deadline_s)
        got = asyncio.run(_consume(conn, bootstrap, topic, expected, deadline_s, max_wait_ms,
                                   prof))
        t = os.times()
        conn.send(("ok", (got, prof.report(top, len(got))), t.user + t.system))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", repr(exc), 0.0))
    finally:
        conn.close()


_VALUE = attrgetter("value")


async def _consume(conn, bootstrap, topic, expected, deadline_s, max_wait_ms, prof):
    deadline = time.monotonic() + deadline_s
    got: list[tuple[int, float]] = []
    async with Consumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=max_wait_ms,
                        fetch_min_bytes=1, auto_offset_reset="latest",
                        client_id="e2e-latency") as c:
        n = await c.client.wait_for_topic(topic, 30_000)
        tps = [TopicPartition(topic, p) for p in range(n)]
        c.assign(tps)
        await c.seek_to_end(*tps)  # positions known before the producer starts
        conn.send(("ready", None, 0.0))
        unpack, mono_ns = STAMP.unpack_from, time.monotonic_ns
        with prof:
            while len(got) < expected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                out = await c.getmany(timeout_ms=min(1000.0, left * 1000))
                now = mono_ns()
                for recs in out.values():
                    for sent, seq in map(unpack, map(_VALUE, recs)):
                        got.append((seq, (now - sent) / 1e6))
    return got


# -- producer ------------------------------------------------------------------------------
class RetryCounter(logging.Handler):
    """Counts the producer's batch retries by error code, from its "retrying" debug lines: each
    waits retry_backoff_ms, so a few of them show in the latency tail."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.by_code: dict[str, int] = {}
        self._log = logging.getLogger("raftlog.producer")

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("retrying") and len(record.args or ()) == 2:
            exc = record.args[1]  # type: ignore[index]
            code = getattr(getattr(exc, "code", None), "name", type(exc).__name__)
            self.by_code[code] = self.by_code.get(code, 0) + 1

    def attach(self) -> "RetryCounter":
        self._level = self._log.level
        self._log.setLevel(logging.DEBUG)
        self._log.addHandler(self)
        return self

    def detach(self) -> None:
        self._log.removeHandler(self)
        self._log.setLevel(self._level)


class Acks:
    """Ack latency per send-loop burst: send() of its records to their awaitable resolving."""

    def __init__(self, stats: ProduceStats, record_size: int) -> None:
        self.stats = stats
        self.record_size = record_size
        self.tasks: set[asyncio.Task] = set()

    def track(self, handle, t0: float, n: int) -> None:
        t = asyncio.get_running_loop().create_task(self._wait(handle, t0, n))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _wait(self, handle, t0: float, n: int) -> None:
        st = self.stats
        try:
            await handle
        except Exception as exc:  # the records' delivery error
            name = type(exc).__name__
            st.errors[name] = st.errors.get(name, 0) + 1
            st.failed_records += n
            return
        ms = (time.perf_counter() - t0) * 1000
        st.lat.add(ms, n)
        st.acked_records += n
        st.w_records += n
        st.w_bytes += n * self.record_size
        st.w_lat_total += ms * n
        if ms > st.w_lat_max:
            st.w_lat_max = ms


async def send_loop(args: argparse.Namespace, prod: Producer, topic: str, acks: Acks
                    ) -> tuple[int, float, list[float], int]:
    """The fixed-rate schedule. Returns (records sent, elapsed s, per-burst lateness in ms of
    its first record's send() behind its scheduled time, bursts sent > LATE_MS late)."""
    n_total = int(args.rate * args.duration)
    per = args.batch_records
    ns_per_rec = 1e9 / args.rate
    pad = os.urandom(args.record_size - STAMP.size)
    pack, send, mono_ns, pc = STAMP.pack, prod.send, time.monotonic_ns, time.perf_counter
    scheduled = args.stamp == "scheduled"
    lateness: list[float] = []
    late = 0
    seq = 0
    t_start_ns = mono_ns()
    while seq < n_total:
        # a burst leaves when its last record is due (records "arrive" one by one at --rate)
        due_ns = t_start_ns + int((min(seq + per, n_total) - 1) * ns_per_rec)
        wait_ns = due_ns - mono_ns()
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)
        now_ns = mono_ns()
        # every record due by now goes: a late turn sends what piled up meanwhile
        n = min(n_total - seq, max(per, int((now_ns - t_start_ns) / ns_per_rec) + 1 - seq))
        lag_ms = (now_ns - t_start_ns - seq * ns_per_rec) / 1e6
        lateness.append(lag_ms)
        if lag_ms - (per - 1) * ns_per_rec / 1e6 > LATE_MS:
            late += 1
        t0 = pc()
        h = None
        for s in range(seq, seq + n):
            stamp = t_start_ns + int(s * ns_per_rec) if scheduled else mono_ns()
            h = send(topic, pack(stamp, s) + pad)
        acks.track(h, t0, n)  # the last handle: its batch is the burst's last to be answered
        seq += n
        if wait_ns <= 0:
            await asyncio.sleep(0)  # behind schedule: still let the sender and answers run
    elapsed = (mono_ns() - t_start_ns) / 1e9
    return seq, elapsed, lateness, late


async def run(args: argparse.Namespace, urls: list[str], node_pids: dict[int, int]) -> str:
    topic = args.topic or f"e2e-{uuid.uuid4().hex[:8]}"
    n_total = int(args.rate * args.duration)
    async with new_session() as session:
        await ensure_topic(session, urls, topic, args.partitions, args.replication_factor)
        await wait_producible(session, Router(session, urls), topic)
    prod = Producer(urls, acks=args.acks, linger_ms=args.linger_ms,
                    max_in_flight=args.max_in_flight,
                    enable_idempotence=not args.no_idempotence, client_id="e2e-latency")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    cons = ctx.Process(target=consumer_main, daemon=True,
                       args=(child, urls, topic, n_total, args.duration + CONSUMER_GRACE_S,
                             args.max_wait_ms, args.profile, args.profile_top))
    stats = ProduceStats()
    retries = RetryCounter().attach()
    cons.start()
    try:
        async with prod:
            await prod.client.wait_for_topic(topic, 30_000)
            loop = asyncio.get_running_loop()
            kind, detail, _ = await loop.run_in_executor(None, parent.recv)
            if kind != "ready":
                raise RuntimeError(f"consumer failed to start: {detail}")
            log(f"topic {topic}: consumer (pid {cons.pid}) ready; producing {n_total} records "
                f"of {args.record_size} B at {args.rate:.0f}/s, {args.batch_records} per "
                f"send-loop turn, for {args.duration:g} s with raftlog.Producer(acks="
                f"{args.acks}, linger_ms={args.linger_ms:g}, max_in_flight="
                f"{args.max_in_flight}, idempotence {'on' if prod.idempotent else 'off'}); "
                f"raftlog.Consumer fetch_max_wait_ms={args.max_wait_ms}")
            spies = (start_py_spy(args.py_spy, node_pids, args.duration + 5)
                     if args.py_spy and node_pids else [])
            meter = CpuMeter(node_pids).start()
            cons_cpu0 = proc_cpu_s(cons.pid)
            acks = Acks(stats, args.record_size)
            prog = asyncio.create_task(progress_loop(stats, args.record_size))
            profile = ClientProfile(args.profile, args.duration)
            try:
                with profile:
                    sent, elapsed, lateness, late = await send_loop(args, prod, topic, acks)
                    await prod.flush()
                    if acks.tasks:
                        await asyncio.gather(*acks.tasks)
                has = await loop.run_in_executor(None, parent.poll, RESULT_WAIT_S)
            finally:
                prog.cancel()
                meter.stop()
                stop_py_spy(spies)
        if not has:
            raise RuntimeError(f"consumer sent no result within {RESULT_WAIT_S:.0f} s of the "
                               "last send")
        kind, answer, cons_cpu_total = parent.recv()
        if kind != "ok":
            raise RuntimeError(f"consumer failed: {answer}")
        got, cons_profile = answer
        cons_cpu = max(0.0, cons_cpu_total - cons_cpu0)
    finally:
        retries.detach()
        if cons.is_alive():
            cons.terminate()
        cons.join(5)
        if cons.is_alive():
            cons.kill()
            cons.join()
    profiles = []
    if args.profile:
        profiles = (["producer process:"] + profile.report(args.profile_top, sent)
                    + ["consumer process:"] + cons_profile)
    return report(args, stats, sent, elapsed, lateness, late, got, retries.by_code, profiles,
                  meter.report(extra_s=cons_cpu) + " (client = producer + consumer process)")


def _figures(vals: list[float]) -> tuple[float, ...]:
    """(avg, p50, p95, p99, p99.9, max) of an ascending list."""
    return (sum(vals) / len(vals), *(percentile(vals, q) for q in (50, 95, 99, 99.9)), vals[-1])


def report(args: argparse.Namespace, stats: ProduceStats, sent: int, elapsed: float,
           lateness: list[float], late: int, got: list[tuple[int, float]],
           retries: dict[str, int], profiles: list[str], cpu: str) -> str:
    warm_seq = int(args.warmup_seconds * args.rate)  # the timeline's first records
    warm = sorted(ms for s, ms in got if s >= warm_seq)
    recv = {s for s, _ in got}
    lines = [f"sent {sent} records in {elapsed:.2f} s ({sent / elapsed:.0f} records/s, "
             f"{len(lateness)} send-loop turns, {late} more than {LATE_MS:g} ms late); "
             f"received {len(recv)}"
             f"{'' if len(recv) == sent else f' (MISSING {sent - len(recv)})'}; "
             f"{len(got) - len(recv)} duplicates"]
    lag = sorted(lateness)
    if lag:
        a, p50, p95, p99, p999, mx = _figures(lag)
        lines.append(f"send() lateness (first record of a turn vs its scheduled time): avg "
                     f"{a:.2f} ms, p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms, "
                     f"p99.9 {p999:.2f} ms, max {mx:.2f} ms")
    lat = stats.lat
    if lat.count:
        p50, p95, p99, p999 = lat.percentiles([50, 95, 99, 99.9])
        lines.append(f"produce ack latency (send() -> acks={args.acks} answer): {lat.count} "
                     f"records, avg {lat.avg:.2f} ms, p50 {p50:.2f} ms, p95 {p95:.2f} ms, "
                     f"p99 {p99:.2f} ms, p99.9 {p999:.2f} ms, max {lat.max:.2f} ms")
    # An overtaken batch (OUT_OF_ORDER) goes again once the one ahead is answered; others
    # after retry_backoff_ms.
    lines.append(f"producer batch retries by error: {sum(retries.values())} "
                 f"{retries or ''}".rstrip())
    if stats.errors or stats.failed_records:
        lines.append(f"errors: {stats.errors}; records failed {stats.failed_records}")
    lines += profiles
    lines.append(cpu)
    if not warm:
        lines.append("end-to-end latency: no records received")
        return "\n".join(lines)
    a, p50, p95, p99, p999, mx = _figures(warm)
    rate = len(recv) / elapsed
    lines.append(
        f"{len(warm)} records end-to-end (consumer receive - {args.stamp} time; first "
        f"{args.warmup_seconds:g} s excluded), {rate:.1f} records/sec "
        f"({rate * args.record_size / MIB:.2f} MB/sec), {a:.2f} ms avg latency, "
        f"{mx:.2f} ms max latency, {p50:.2f} ms 50th, {p95:.2f} ms 95th, {p99:.2f} ms 99th, "
        f"{p999:.2f} ms 99.9th.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_tool(parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
