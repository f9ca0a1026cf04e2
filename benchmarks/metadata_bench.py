#!/usr/bin/env python3
"""Metadata-plane benchmark on a fresh local 3-node cluster (127.0.0.1, own temp dir).

    .venv/bin/python benchmarks/metadata_bench.py            # full run (~4 min)
    .venv/bin/python benchmarks/metadata_bench.py --quick    # smoke run (~1 min)

Measures, in order:
  idle-fresh  idle CPU of the 3 node processes right after start (utime+stime from /proc);
  (a) replicated command latency: sequential topic creates (1 partition, RF 3) sent to the
      controller and to a follower (forwarded), sequential alter-config PATCHes likewise:
      per-call p50/p99 and ops/s; then concurrent creates and PATCHes with N in flight;
      and concurrent deletes of the topics created (cleanup, also a replicated command);
  (b) controller SIGKILL -> next successful topic creation on a survivor (1 partition, RF 2,
      since the dead broker is not yet fenced), median of --runs; the killed node is restarted
      and the cluster waited ready between runs;
  (c) non-controller broker SIGKILL -> every partition it led has a new leader (6-partition
      RF 3 topic, describe polled every 20 ms), median of --runs; restart, wait for preferred
      leaders to return between runs;
  idle-after  idle CPU again at the end (the 6-partition topic remains).
The cluster uses cluster.example.toml's timings (session timeout 6 s, heartbeat 1 s, Raft
election 300-600 ms) unless --fast-cluster. Figures are printed last.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (broker_epochs, cancel_hard_limit, install_hard_limit,  # noqa: E402
                     local_cluster, log, machine_busy_s, percentile, proc_cpu_s, wait_rejoined)
from raftlog.testing.cluster import ProcessCluster, wait_until  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=200,
                   help="sequential creates (and PATCHes) per target node (default 200)")
    p.add_argument("--concurrency", type=int, default=16, help="in flight for the concurrent phase")
    p.add_argument("--concurrent-ops", type=int, default=400,
                   help="creates (and PATCHes) in the concurrent phase (default 400)")
    p.add_argument("--runs", type=int, default=5, help="failover repetitions for (b) and (c)")
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 40 ops, 80 concurrent, 2 runs, 5 s idle")
    p.add_argument("--fast-cluster", action="store_true",
                   help="the test suite's short Raft/session timeouts instead of the defaults")
    p.add_argument("--time-limit", type=float, default=600.0,
                   help="hard limit on the whole run in seconds (default 600)")
    p.add_argument("--keep", action="store_true", help="keep the cluster's data dir")
    a = p.parse_args(argv)
    if a.quick:
        a.ops, a.concurrent_ops, a.runs, a.idle_seconds = 40, 80, 2, 5.0
    return a


# -- keep-alive JSON client (one connection per thread and node) ----------------------------
class Api:
    def __init__(self, cluster: ProcessCluster):
        self.c = cluster
        self.local = threading.local()

    def _conn(self, node: int) -> http.client.HTTPConnection:
        conns = self.local.__dict__.setdefault("conns", {})
        key = (node, self.c.http_ports[node])
        if key not in conns:
            conns[key] = http.client.HTTPConnection("127.0.0.1", key[1], timeout=10)
        return conns[key]

    def call(self, node: int, method: str, path: str, body: Any = None,
             timeout_s: float = 10.0) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (0, 1):
            conn = self._conn(node)
            conn.timeout = timeout_s
            if conn.sock is not None:
                conn.sock.settimeout(timeout_s)
            try:
                conn.request(method, path, body=data,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError, OSError):
                conn.close()
                self.local.conns.pop((node, self.c.http_ports[node]), None)
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")


def timed(fn: Callable[[], tuple[int, Any]], ok: tuple[int, ...]) -> float:
    t0 = time.perf_counter()
    status, body = fn()
    ms = (time.perf_counter() - t0) * 1000
    if status not in ok:
        raise RuntimeError(f"unexpected answer {status}: {body}")
    return ms


def summary(lat: list[float], wall_s: float, trend: bool = False) -> str:
    s = sorted(lat)
    out = (f"n={len(s)} p50 {percentile(s, 50):.1f} ms, p99 {percentile(s, 99):.1f} ms, "
           f"max {s[-1]:.1f} ms, {len(s) / wall_s:.1f} ops/s")
    if trend and len(lat) >= 20:
        k = max(10, len(lat) // 10)
        out += (f" [p50 of the first {k}: {percentile(sorted(lat[:k]), 50):.1f} ms, "
                f"of the last {k}: {percentile(sorted(lat[-k:]), 50):.1f} ms]")
    return out


# -- phases ----------------------------------------------------------------------------------
def idle_cpu(c: ProcessCluster, seconds: float, label: str) -> str:
    time.sleep(2.0)  # let any tail of work (elections, rebalances) finish
    pids = {i: p.pid for i, p in c.procs.items() if p.poll() is None}
    log(f"{label}: measuring idle CPU of nodes {sorted(pids)} for {seconds:.0f} s")
    a = {i: proc_cpu_s(pid) for i, pid in pids.items()}
    m0 = machine_busy_s()
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    b = {i: proc_cpu_s(pid) for i, pid in pids.items()}
    machine = machine_busy_s() - m0
    per = {i: 100 * (b[i] - a[i]) / dt for i in pids}
    total = sum(per.values())
    other = max(0.0, 100 * machine / dt - total)
    return (f"{label}: {total:.2f}% of one core in total over {dt:.0f} s "
            f"({', '.join(f'node {i} {v:.2f}%' for i, v in sorted(per.items()))}); "
            f"target < 3%: {'PASS' if total < 3 else 'FAIL'} "
            f"[other processes on the machine meanwhile: {other:.0f}%]")


def phase_a(c: ProcessCluster, api: Api, args: argparse.Namespace, tag: str) -> list[str]:
    out: list[str] = []
    ctrl = c.controller()
    follower = next(i for i in sorted(c.http_ports) if i != ctrl)
    created: list[str] = []
    for label, node in (("controller", ctrl), ("follower", follower)):
        lat: list[float] = []
        t0 = time.monotonic()
        for i in range(args.ops):
            name = f"mb-{tag}-{label[0]}-{i}"
            lat.append(timed(lambda: api.call(node, "POST", "/v1/topics", {
                "name": name, "partitions": 1, "replication_factor": 3}), (201,)))
            created.append(name)
            if (i + 1) % 50 == 0:
                log(f"(a) create via {label} {node}: {i + 1}/{args.ops}")
        out.append(f"(a) create topic (1 partition, RF 3) via {label} (node {node}), sequential: "
                   + summary(lat, time.monotonic() - t0, trend=True))
        log(out[-1])
    target = created[0]
    for label, node in (("controller", ctrl), ("follower", follower)):
        lat = []
        t0 = time.monotonic()
        for i in range(args.ops):
            v = 3_600_000 + i
            lat.append(timed(lambda: api.call(node, "PATCH", f"/v1/topics/{target}",
                                              {"config": {"retention.ms": v}}), (200,)))
            if (i + 1) % 50 == 0:
                log(f"(a) alter-config via {label} {node}: {i + 1}/{args.ops}")
        out.append(f"(a) alter-config PATCH via {label} (node {node}), sequential: "
                   + summary(lat, time.monotonic() - t0, trend=True))
        log(out[-1])
    # concurrent: spread over all nodes (non-controllers forward)
    nodes = sorted(c.http_ports)
    names = [f"mb-{tag}-p-{i}" for i in range(args.concurrent_ops)]

    def conc(label: str, fn: Callable[[int], float]) -> None:
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as ex:
            lat = list(ex.map(fn, range(len(names))))
        out.append(f"(a) {label}, {args.concurrency} in flight over all nodes: "
                   + summary(lat, time.monotonic() - t0))
        log(out[-1])

    conc("create topic concurrent", lambda i: timed(lambda: api.call(
        nodes[i % 3], "POST", "/v1/topics",
        {"name": names[i], "partitions": 1, "replication_factor": 3}), (201,)))
    created += names
    conc("alter-config PATCH concurrent (distinct topics)", lambda i: timed(lambda: api.call(
        nodes[i % 3], "PATCH", f"/v1/topics/{names[i]}",
        {"config": {"retention.ms": 7_200_000}}), (200,)))
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as ex:
        lat = list(ex.map(lambda n: timed(lambda: api.call(
            nodes[hash(n) % 3], "DELETE", f"/v1/topics/{n}"), (200,)), created))
    out.append(f"(a) delete topic concurrent, {args.concurrency} in flight: "
               + summary(lat, time.monotonic() - t0))
    log(out[-1])
    return out


def phase_b(c: ProcessCluster, api: Api, args: argparse.Namespace, tag: str) -> list[str]:
    times, elect = [], []
    for run in range(args.runs):
        ctrl = c.controller()
        old_epoch = broker_epochs(c)[ctrl]
        survivors = [i for i in sorted(c.http_ports) if i != ctrl]
        c.kill(ctrl)
        t0 = time.monotonic()
        new_ctrl_at = None
        attempt = 0
        while True:
            if time.monotonic() - t0 > 60:
                raise TimeoutError("no topic creation within 60 s of the controller kill")
            node = survivors[attempt % 2]
            attempt += 1
            if new_ctrl_at is None:
                try:
                    st = api.call(node, "GET", "/v1/cluster", timeout_s=1.0)[1]
                    if st.get("controller") not in (None, ctrl):
                        new_ctrl_at = time.monotonic() - t0
                except Exception:
                    pass
            try:
                status, _ = api.call(node, "POST", "/v1/topics", {
                    "name": f"mb-{tag}-b{run}-{attempt}", "partitions": 1,
                    "replication_factor": 2}, timeout_s=2.0)
            except Exception:
                status = 0
            if status == 201:
                dt = time.monotonic() - t0
                break
            time.sleep(0.01)
        times.append(dt)
        elect.append(new_ctrl_at if new_ctrl_at is not None else dt)
        log(f"(b) run {run + 1}/{args.runs}: killed controller {ctrl}; a survivor reported a new "
            f"controller after {elect[-1] * 1000:.0f} ms; first create succeeded after "
            f"{dt * 1000:.0f} ms ({attempt} attempts); restarting node {ctrl}")
        c.start(ctrl)
        w = wait_rejoined(c, ctrl, old_epoch)
        log(f"(b) node {ctrl} re-registered and active {w:.1f} s after restart")
    return [f"(b) controller SIGKILL -> next successful topic create: median "
            f"{statistics.median(times) * 1000:.0f} ms over {len(times)} runs "
            f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms); new controller "
            f"visible after median {statistics.median(elect) * 1000:.0f} ms"]


def phase_c(c: ProcessCluster, api: Api, args: argparse.Namespace, tag: str) -> list[str]:
    topic = f"mb-{tag}-failover"
    ctrl = c.controller()
    status, body = api.call(ctrl, "POST", "/v1/topics",
                            {"name": topic, "partitions": 6, "replication_factor": 3})
    if status != 201:
        raise RuntimeError(f"create {topic}: {status} {body}")

    def describe(node: int) -> dict:
        status, body = api.call(node, "GET", f"/v1/topics/{topic}", timeout_s=2.0)
        if status != 200:
            raise RuntimeError(f"describe: {status} {body}")
        return body

    def preferred(node: int) -> bool:
        d = describe(node)
        return all(p["leader"] == p["replicas"][0] and len(p["isr"]) == 3
                   for p in d["partitions"])

    wait_until(lambda: preferred(ctrl), 30, 0.1, "preferred leaders of the failover topic")
    times, unpreferred = [], 0
    for run in range(args.runs):
        ctrl = c.controller()
        d = describe(ctrl)
        others = [i for i in sorted(c.http_ports) if i != ctrl]
        candidates = [i for i in others if any(p["leader"] == i for p in d["partitions"])]
        if not candidates:
            raise RuntimeError(f"no non-controller leads a partition: {d['partitions']}")
        victim = candidates[run % len(candidates)]
        led = [p["partition"] for p in d["partitions"] if p["leader"] == victim]
        old_epoch = broker_epochs(c)[victim]
        c.kill(victim)
        t0 = time.monotonic()
        polls = 0
        while True:
            polls += 1
            try:
                parts = {p["partition"]: p for p in describe(ctrl)["partitions"]}
                if all(parts[i]["leader"] not in (None, -1, victim) for i in led):
                    dt = time.monotonic() - t0
                    break
            except Exception:
                pass
            if time.monotonic() - t0 > 60:
                raise TimeoutError(f"partitions {led} still led by {victim} after 60 s")
            time.sleep(0.02)
        times.append(dt)
        new = {i: parts[i]["leader"] for i in led}
        log(f"(c) run {run + 1}/{args.runs}: killed broker {victim} (led partitions {led}); all "
            f"had new leaders {new} after {dt * 1000:.0f} ms ({polls} polls); restarting")
        c.start(victim)
        w = wait_rejoined(c, victim, old_epoch)
        t1 = time.monotonic()
        try:
            wait_until(lambda: preferred(c.controller()), 40, 0.2, "preferred leaders back")
            log(f"(c) node {victim} active {w:.1f} s after restart; preferred leaders and full "
                f"ISRs back {time.monotonic() - t1:.1f} s later")
        except TimeoutError:
            unpreferred += 1
            log("(c) preferred leadership did not return within 40 s; continuing")
    out = [f"(c) broker SIGKILL -> all its partitions have new leaders: median "
           f"{statistics.median(times) * 1000:.0f} ms over {len(times)} runs (runs: "
           f"{', '.join(f'{t * 1000:.0f}' for t in times)} ms; session timeout "
           f"{'3000' if args.fast_cluster else '6000'} ms)"]
    if unpreferred:
        out.append(f"(c) note: preferred leadership had not returned within 40 s after "
                   f"{unpreferred} restart(s)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_hard_limit(args.time_limit)
    results: list[str] = []
    tag = uuid.uuid4().hex[:4]
    t_all = time.monotonic()
    try:
        with local_cluster(3, fast=args.fast_cluster, keep=args.keep) as c:
            api = Api(c)
            results.append(idle_cpu(c, args.idle_seconds, "idle CPU, fresh cluster"))
            log(results[-1])
            results += phase_a(c, api, args, tag)
            results += phase_b(c, api, args, tag)
            results += phase_c(c, api, args, tag)
            results.append(idle_cpu(c, args.idle_seconds,
                                    "idle CPU, after the benchmark (1 topic of 6 partitions"
                                    f" + {args.runs} failover topics)"))
            log(results[-1])
        cancel_hard_limit()
        print(f"\n== metadata_bench results ({'quick' if args.quick else 'full'}, "
              f"{'fast' if args.fast_cluster else 'default'} timings, "
              f"{time.monotonic() - t_all:.0f} s) ==", flush=True)
        for line in results:
            print(line, flush=True)
        return 0
    finally:
        cancel_hard_limit()


if __name__ == "__main__":
    sys.exit(main())
