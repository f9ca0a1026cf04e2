"""Consumer-group benchmark on a real 3-node cluster (one command, figures last).

    .venv/bin/python benchmarks/groups_bench.py [--consumers 10] [--groups 600] [--seconds 5]
        [--per-commit 1,50] [--commits-only] [--py-spy DIR]

1. Time to a stable assignment: `--consumers` Consumers (one process, asyncio) join a 12-partition
   topic at once; measured from the first start() until every partition is owned by exactly one
   consumer and each owns floor/ceil(12/n). Then one consumer stops (leaves cleanly) and we time
   until the survivors own everything again. The group's rebalance delay ([groups]
   rebalance_delay_ms, 100 ms default) is included and reported.
2. Committed-offset throughput: `--groups` groups, each with one member, commit concurrently
   (one commit in flight per member, `--per-commit` offsets each; the process's concurrent
   commits are coalesced per coordinator node into offset-commit-batch requests, whose count is
   reported) for `--seconds`; every commit is acknowledged only after the offsets topic's high
   watermark passes it. As Kafka's figures, the rate counts commits across many
   committers: a single committer is bound by the replication round trip, not by the server.
   Prints the CPU of the client and of each node and the client's time in GC; `--py-spy DIR`
   samples the nodes during the commit phase (summarise with benchmarks/pyspy_top.py).

The client process holds hundreds of consumers' worth of long-lived objects, so CPython's default
GC thresholds (700, 10, 10) spend about a quarter of its CPU re-walking them; like the brokers
(raftlog/server/__main__.py) it runs with `--gc-threshold 50000,20,50` and freezes what exists
once the consumers have joined. `--gc-threshold 700,10,10` measures the default.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import ClientProfile, CpuMeter, GcMeter, start_py_spy, stop_py_spy  # noqa: E402
from raftlog.client import Admin, Consumer, TopicPartition  # noqa: E402
from raftlog.testing.cluster import ProcessCluster  # noqa: E402


def stable(cs: list[Consumer], total: int) -> bool:
    sets = [c.assignment() for c in cs]
    union = set().union(*sets)
    lo, hi = total // len(cs), -(-total // len(cs))
    return (len(union) == total == sum(len(s) for s in sets)
            and all(lo <= len(s) <= hi for s in sets))


async def wait_stable(cs: list[Consumer], total: int, timeout_s: float = 30) -> float:
    t0 = time.perf_counter()
    while not stable(cs, total):
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("no stable assignment")
        await asyncio.sleep(0.005)
    return time.perf_counter()


async def bench_rebalance(c: ProcessCluster, n: int, strategy: str) -> tuple[float, float]:
    topic = f"rb-{strategy}"
    async with Admin(c.bootstrap) as a:
        await a.create_topic(topic, partitions=12, replication_factor=3)
    cs = [Consumer(topic, bootstrap_servers=c.bootstrap, group_id=f"bench-{strategy}",
                   session_timeout_ms=6000, heartbeat_interval_ms=500,
                   partition_assignment_strategy=strategy) for _ in range(n)]
    # warm the coordinator (offsets topic creation, state load) outside the measurement
    async with Admin(c.bootstrap) as a:
        await a.describe_group(f"bench-{strategy}")
    t0 = time.perf_counter()
    await asyncio.gather(*(x.start() for x in cs))
    join = await wait_stable(cs, 12) - t0
    leaver = cs.pop()
    t1 = time.perf_counter()
    await leaver.stop()
    leave = await wait_stable(cs, 12) - t1
    await asyncio.gather(*(x.stop() for x in cs))
    return join, leave


async def bench_commits(c: ProcessCluster, groups: int, per_commit: int, seconds: float,
                        py_spy: str | None, profile: str | None
                        ) -> tuple[int, int, float, str, list[float], int]:
    topic = f"commits-{per_commit}"
    async with Admin(c.bootstrap) as a:
        await a.create_topic(topic, partitions=per_commit, replication_factor=3)
    cs = [Consumer(topic, bootstrap_servers=c.bootstrap, group_id=f"cg-{i}",
                   enable_auto_commit=False, session_timeout_ms=10_000,
                   heartbeat_interval_ms=1000) for i in range(groups)]
    await asyncio.gather(*(x.start() for x in cs))
    for x in cs:
        await x.wait_for_assignment()
    await asyncio.gather(*(wait_stable([x], per_commit) for x in cs))
    gc.collect()
    gc.freeze()
    for x in cs:
        # Committers that read nothing: without this each keeps an idle long-poll fetch
        # cycling (2/s per consumer), which is the fetch path's cost, not the commit path's.
        x.pause(*x.assignment())
    requests = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def loop(x: Consumer) -> None:
        nonlocal requests
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            t = time.perf_counter()
            await x.commit({TopicPartition(topic, p): i for p in range(per_commit)})
            latencies.append(time.perf_counter() - t)
            requests += 1

    def batch_requests() -> int:
        b = cs[0]._group._batcher if cs[0]._group else None
        return b.commits.requests if b is not None else 0
    sent0 = batch_requests()
    pids = {n: p.pid for n, p in c.procs.items()}
    spies = start_py_spy(os.path.join(py_spy, f"per{per_commit}"), pids, seconds + 5) \
        if py_spy else []
    cpu = CpuMeter(pids).start()
    with ClientProfile(profile, seconds) as prof, GcMeter() as gcm:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(x) for x in cs))
        elapsed = time.perf_counter() - t0
    cpu.stop()
    gc.unfreeze()
    batches = batch_requests() - sent0
    stop_py_spy(spies)
    for line in prof.report(15, requests):
        print(line)
    await asyncio.gather(*(x.stop() for x in cs))
    return (requests, requests * per_commit, elapsed,
            f"{cpu.report()}; client {gcm.report(elapsed)}", sorted(latencies), batches)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--consumers", type=int, default=10)
    ap.add_argument("--groups", type=int, default=600)
    ap.add_argument("--per-commit", default="1,50",
                    help="offsets per commit request, comma-separated: one run each")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--commits-only", action="store_true", help="skip the rebalance timings")
    ap.add_argument("--py-spy", default=None, metavar="DIR",
                    help="py-spy the nodes during each commit run into DIR/perN/node-M.txt")
    ap.add_argument("--profile", nargs="?", const="cprofile", choices=("cprofile", "py-spy"),
                    default=None, help="where the client's CPU goes during the commit runs")
    ap.add_argument("--gc-threshold", default="50000,20,50",
                    help="the client process's gc.set_threshold (default 50000,20,50)")
    args = ap.parse_args()
    gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
    with tempfile.TemporaryDirectory() as d, \
            ProcessCluster(d, 3, log_level="WARNING") as c:
        c.start()
        c.wait_ready(40)
        figures = []
        for strategy in () if args.commits_only else ("range", "sticky"):
            join, leave = await bench_rebalance(c, args.consumers, strategy)
            figures.append(f"stable assignment, {args.consumers} consumers joining at once "
                           f"({strategy}): {join * 1000:.0f} ms")
            figures.append(f"stable assignment after one of {args.consumers} leaves "
                           f"({strategy}): {leave * 1000:.0f} ms")
        for per in [int(x) for x in args.per_commit.split(",")]:
            reqs, offs, el, cpu, lat, batches = await bench_commits(c, args.groups, per, args.seconds,
                                                           args.py_spy, args.profile)
            p50, p99 = (lat[len(lat) // 2], lat[int(len(lat) * 0.99)]) if lat else (0.0, 0.0)
            figures.append(f"offset commits, {args.groups} groups, {per} offset(s) per commit: "
                           f"{reqs / el:,.0f} commits/s ({offs / el:,.0f} offsets/s), latency "
                           f"p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms, "
                           f"{batches} batch requests ({reqs / max(1, batches):.1f} commits "
                           f"each); {cpu}")
        print("\n--- figures (3 nodes on one machine, RF=3, acks=all; rebalance_delay_ms=100 "
              "included) ---")
        for f in figures:
            print(f)


if __name__ == "__main__":
    asyncio.run(main())
