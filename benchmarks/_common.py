"""Shared plumbing for the benchmarks: a local cluster, time limits, msgpack HTTP, routing,
percentiles and a minimal pipelined asyncio producer.

Owns nothing the server uses. The producer here is deliberately small (aiohttp + msgpack POST
/v1/produce straight to partition leaders, batches built with `raftlog.codec.batch.encode`) so
the figures measure the broker, not a client library.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import aiohttp  # noqa: E402
import msgpack  # noqa: E402

from raftlog.codec import batch as codec  # noqa: E402
from raftlog.testing.cluster import ProcessCluster  # noqa: E402

MIB = 1024 * 1024
MSGPACK = "application/msgpack"
RETRIABLE = {"NOT_LEADER_OR_FOLLOWER", "UNKNOWN_TOPIC_OR_PARTITION", "LEADER_NOT_AVAILABLE",
             "FENCED_LEADER_EPOCH", "UNKNOWN_LEADER_EPOCH", "NOT_ENOUGH_REPLICAS",
             "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "REQUEST_TIMED_OUT", "NO_QUORUM"}


def log(msg: str) -> None:
    """Progress goes to stderr-free stdout, flushed, so it interleaves sanely with figures."""
    print(msg, flush=True)


# -- time limits and cleanup ---------------------------------------------------------------
class TimeLimitExceeded(Exception):
    pass


def install_hard_limit(seconds: float) -> None:
    """SIGALRM after `seconds` raises TimeLimitExceeded in the main thread (finally blocks run
    and kill the cluster); SIGTERM/SIGHUP become SystemExit for the same reason."""
    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeLimitExceeded(f"hard time limit of {seconds:.0f} s reached")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))


def cancel_hard_limit() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


def cluster_kwargs(fast: bool) -> dict[str, Any]:
    """ProcessCluster timings: the shipped defaults of cluster.example.toml unless `fast`
    (the test suite's short Raft and session timeouts)."""
    if fast:
        return dict(session_timeout_ms=3000, heartbeat_interval_ms=300, fast_raft=True)
    return dict(session_timeout_ms=6000, heartbeat_interval_ms=1000, fast_raft=False)


@contextlib.contextmanager
def local_cluster(n: int = 3, *, fast: bool = False, extra_toml: str = "",
                  log_level: str = "WARNING", keep: bool = False,
                  ready_timeout_s: float = 60.0) -> Iterator[ProcessCluster]:
    """A fresh n-node ProcessCluster on 127.0.0.1 in its own temp dir; always stopped after."""
    workdir = tempfile.mkdtemp(prefix="raftlog-bench-")
    c = ProcessCluster(workdir, n, extra_toml=extra_toml, log_level=log_level,
                       **cluster_kwargs(fast))
    try:
        t0 = time.monotonic()
        c.start()
        st = c.wait_ready(ready_timeout_s)
        log(f"cluster: {n} nodes ready in {time.monotonic() - t0:.1f} s, controller "
            f"{st.get('controller')}, dir {workdir}, pids "
            + " ".join(f"{i}:{p.pid}" for i, p in c.procs.items()))
        yield c
    finally:
        c.stop()
        if keep:
            log(f"cluster: stopped; data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_bootstrap(s: str) -> list[str]:
    urls = []
    for part in s.split(","):
        part = part.strip()
        if not part:
            continue
        if "://" not in part:
            part = "http://" + part
        host = part.split("://", 1)[1].split(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit(f"--bootstrap: only 127.0.0.1 is allowed, got {part}")
        urls.append(part.rstrip("/"))
    if not urls:
        raise SystemExit("--bootstrap: no address")
    return urls


def add_cluster_args(p: argparse.ArgumentParser, time_limit: float = 120.0) -> None:
    p.add_argument("--bootstrap", default=None,
                   help="comma-separated 127.0.0.1:PORT of a running cluster; "
                        "default: start a local 3-node cluster")
    p.add_argument("--time-limit", type=float, default=time_limit,
                   help=f"hard limit on the whole run in seconds (default {time_limit:.0f})")
    p.add_argument("--fast-cluster", action="store_true",
                   help="local cluster with the test suite's short Raft/session timeouts "
                        "instead of cluster.example.toml's defaults")
    p.add_argument("--keep", action="store_true", help="keep the local cluster's data dir")


def run_tool(args: argparse.Namespace, run: Any) -> int:
    """The shared main of the data-plane tools: hard time limit, a cluster (started here unless
    --bootstrap names one), `await run(args, urls, node_pids)`, figures printed last."""
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


@contextlib.contextmanager
def cluster_urls(args: argparse.Namespace) -> Iterator[tuple[list[str], ProcessCluster | None]]:
    if args.bootstrap:
        yield parse_bootstrap(args.bootstrap), None
        return
    with local_cluster(3, fast=args.fast_cluster, keep=args.keep) as c:
        yield [c.url(i) for i in sorted(c.http_ports)], c


# -- statistics ----------------------------------------------------------------------------
def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class WeightedLatencies:
    """Latency samples each standing for `weight` records (one produce request's batch)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float, weight: int) -> None:
        self.samples.append((ms, weight))
        self.count += weight
        self.total += ms * weight
        if ms > self.max:
            self.max = ms

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def percentiles(self, qs: Sequence[float]) -> list[float]:
        if not self.samples:
            return [float("nan")] * len(qs)
        s = sorted(self.samples)
        out = []
        for q in qs:
            target = q / 100.0 * self.count
            acc = 0
            val = s[-1][0]
            for ms, w in s:
                acc += w
                if acc >= target:
                    val = ms
                    break
            out.append(val)
        return out


# -- HTTP ----------------------------------------------------------------------------------
def new_session(limit_per_host: int = 64) -> aiohttp.ClientSession:
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=limit_per_host, ttl_dns_cache=None)
    return aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60))


async def post_msgpack(session: aiohttp.ClientSession, url: str, body: Any,
                       timeout_s: float = 30.0) -> Any:
    data = msgpack.packb(body, use_bin_type=True)
    async with session.post(url, data=data, headers={"Content-Type": MSGPACK},
                            timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
        raw = await r.read()
        ans = msgpack.unpackb(raw, raw=False, strict_map_key=False) if raw else None
        if r.status >= 400:
            raise HttpStatusError(r.status, ans)
        return ans


async def call_json(session: aiohttp.ClientSession, method: str, url: str, body: Any = None,
                    timeout_s: float = 15.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    async with session.request(method, url, data=data,
                               headers={"Content-Type": "application/json"},
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
        raw = await r.read()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, {"raw": raw.decode(errors="replace")}


class HttpStatusError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


# -- metadata and routing ------------------------------------------------------------------
@dataclass
class Route:
    leader: int | None
    leader_epoch: int
    url: str | None


class Router:
    def __init__(self, session: aiohttp.ClientSession, bootstrap: list[str]):
        self.session = session
        self.bootstrap = list(bootstrap)
        self.brokers: dict[int, str] = {}
        self.routes: dict[tuple[str, int], Route] = {}
        self.partitions: dict[str, int] = {}

    async def refresh(self, topics: list[str]) -> None:
        last: Exception | None = None
        for url in list(self.brokers.values()) + self.bootstrap:
            try:
                md = await post_msgpack(self.session, url + "/v1/metadata", {"topics": topics},
                                        timeout_s=5)
            except Exception as exc:  # a node may be down; try the next
                last = exc
                continue
            self.brokers = {b["id"]: f"http://{b['host']}:{b['http_port']}" for b in md["brokers"]}
            for t in md["topics"]:
                if t.get("error"):
                    continue
                self.partitions[t["name"]] = len(t["partitions"])
                for p in t["partitions"]:
                    ldr = p.get("leader")
                    ok = ldr is not None and ldr >= 0
                    self.routes[(t["name"], p["partition"])] = Route(
                        ldr if ok else None, p.get("leader_epoch", -1),
                        self.brokers.get(ldr) if ok else None)
            return
        raise ConnectionError(f"no bootstrap node answered /v1/metadata: {last!r}")

    def leader_url(self, topic: str, partition: int) -> str | None:
        r = self.routes.get((topic, partition))
        return r.url if r else None

    async def wait_leaders(self, topic: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh([topic])
            n = self.partitions.get(topic)
            if n and all(self.leader_url(topic, i) for i in range(n)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic}: partitions without a leader after {timeout_s}s")
            await asyncio.sleep(0.1)


async def ensure_topic(session: aiohttp.ClientSession, urls: list[str], name: str,
                       partitions: int, rf: int, config: dict[str, Any] | None = None,
                       ) -> bool:
    """Create the topic (True) or accept an existing one (False); raise on anything else."""
    body: dict[str, Any] = {"name": name, "partitions": partitions, "replication_factor": rf}
    if config:
        body["config"] = config
    last: Any = None
    for attempt in range(40):
        url = urls[attempt % len(urls)]
        try:
            status, ans = await call_json(session, "POST", url + "/v1/topics", body)
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.25)
            continue
        if status == 201:
            return True
        if status == 409:
            return False
        last = (status, ans)
        await asyncio.sleep(0.25)
    raise RuntimeError(f"could not create topic {name}: {last}")


async def wait_producible(session: aiohttp.ClientSession, router: Router, topic: str,
                          timeout_s: float = 30.0) -> None:
    """Until every partition's leader answers list-offsets for it (the leader knows its role)."""
    deadline = time.monotonic() + timeout_s
    await router.wait_leaders(topic, timeout_s)
    pending = set(range(router.partitions[topic]))
    while pending:
        for p in sorted(pending):
            url = router.leader_url(topic, p)
            try:
                ans = await post_msgpack(session, url + "/v1/list-offsets",
                                         {"partitions": [{"topic": topic, "partition": p,
                                                          "timestamp": -1}]}, timeout_s=5)
                if not ans["partitions"][0].get("error"):
                    pending.discard(p)
            except Exception:
                pass
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic}: partitions {sorted(pending)} not ready")
        await asyncio.sleep(0.1)
        await router.refresh([topic])


# -- minimal pipelined producer ------------------------------------------------------------
@dataclass
class ProduceStats:
    sent_records: int = 0
    acked_records: int = 0
    acked_bytes: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    failed_records: int = 0
    lat: WeightedLatencies = field(default_factory=WeightedLatencies)
    # window for progress lines
    w_records: int = 0
    w_bytes: int = 0
    w_lat_total: float = 0.0
    w_lat_max: float = 0.0


class PerfProducer:
    """Produce `num_records` records of `record_size` bytes to `topic`, round-robin in batches of
    `batch_records` over its partitions. One sender task per leader keeps up to `in_flight`
    produce requests open; each request carries at most one new batch per partition that node
    leads. Latency is measured per request from the moment its batches are built to the answer
    and attributed to every record in it (Kafka's perf test measures send() to ack callback)."""

    def __init__(self, session: aiohttp.ClientSession, router: Router, topic: str, *,
                 num_records: int, record_size: int, acks: int, batch_records: int,
                 in_flight: int, throughput: float = -1, deadline: float | None = None,
                 timeout_ms: int = 30000, value_fn: Any = None, max_retries: int = 5):
        self.session = session
        self.router = router
        self.topic = topic
        self.num_records = num_records
        self.record_size = record_size
        self.acks = acks
        self.batch_records = max(1, batch_records)
        self.in_flight = max(1, in_flight)
        self.throughput = throughput
        self.deadline = deadline
        self.timeout_ms = timeout_ms
        self.value_fn = value_fn
        self.max_retries = max_retries
        self.stats = ProduceStats()
        self._payload = os.urandom(record_size)
        self._next_partition = 0
        self._retry: list[tuple[int, bytes, int, int]] = []  # (partition, batch, n, attempts)
        self._refresh_lock = asyncio.Lock()
        self._t0 = 0.0
        self._done = asyncio.Event()
        self._gen = 0  # bumped when partition leadership changes: senders restart

    def _budget(self, want: int) -> int:
        """Records this sender may take now (0 = stop), honouring count, deadline, throughput."""
        left = self.num_records - self.stats.sent_records
        if left <= 0:
            return 0
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return 0
        return min(want, left)

    async def _pace(self, reserved: int) -> None:
        """Sleep until `reserved` records (the running total including this batch) are due."""
        if self.throughput <= 0:
            return
        due = self._t0 + reserved / self.throughput
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _build(self, n: int) -> bytes:
        ts = int(time.time() * 1000)
        if self.value_fn is not None:
            recs = [(None, self.value_fn(), None, ts) for _ in range(n)]
        else:
            v = self._payload
            recs = [(None, v, None, ts)] * n
        return codec.encode(recs)

    def _mapping(self) -> dict[int, str | None]:
        return {p: self.router.leader_url(self.topic, p)
                for p in range(self.router.partitions.get(self.topic, 0))}

    async def _refresh(self) -> None:
        async with self._refresh_lock:
            before = self._mapping()
            try:
                await self.router.refresh([self.topic])
            except Exception:
                await asyncio.sleep(0.2)
            if self._mapping() != before:
                self._gen += 1

    def _leader_partitions(self) -> dict[str, list[int]]:
        by: dict[str, list[int]] = {}
        for p in range(self.router.partitions[self.topic]):
            url = self.router.leader_url(self.topic, p)
            if url:
                by.setdefault(url, []).append(p)
        return by

    async def run(self) -> ProduceStats:
        self._t0 = time.monotonic()
        while True:
            by = self._leader_partitions()
            if not by:
                await self._refresh()
                await asyncio.sleep(0.1)
                continue
            tasks = [asyncio.create_task(self._sender(url, parts)) for url, parts in by.items()]
            await asyncio.gather(*tasks)
            # senders end when the budget is spent, or when routing changed (retries pending)
            if not self._retry and (self._budget(1) == 0):
                break
            if self.deadline is not None and time.monotonic() > self.deadline + 15:
                for _, _, n, _ in self._retry:
                    self.stats.failed_records += n
                self._retry = []
                break
            await self._refresh()
            await asyncio.sleep(0.05)
        return self.stats

    async def _sender(self, url: str, parts: list[int]) -> None:
        sem = asyncio.Semaphore(self.in_flight)
        inflight: set[asyncio.Task] = set()
        rr = 0
        gen = self._gen
        while gen == self._gen:
            await sem.acquire()
            if gen != self._gen:
                sem.release()
                break
            entries: list[tuple[int, bytes, int, int]] = []
            # retries first, for partitions this node still leads
            keep = []
            for item in self._retry:
                if item[0] in parts and not any(e[0] == item[0] for e in entries):
                    entries.append(item)
                else:
                    keep.append(item)
            self._retry = keep
            for i in range(len(parts)):
                p = parts[(rr + i) % len(parts)]
                if any(e[0] == p for e in entries):
                    continue
                n = self._budget(self.batch_records)
                if n <= 0:
                    break
                self.stats.sent_records += n  # reserve before awaiting: senders run concurrently
                await self._pace(self.stats.sent_records)
                entries.append((p, self._build(n), n, 0))
            rr += 1
            if not entries:
                sem.release()
                break
            t = asyncio.create_task(self._request(url, entries, sem))
            inflight.add(t)
            t.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.gather(*inflight)

    async def _request(self, url: str, entries: list[tuple[int, bytes, int, int]],
                       sem: asyncio.Semaphore) -> None:
        body = {"acks": self.acks, "timeout_ms": self.timeout_ms,
                "partitions": [{"topic": self.topic, "partition": p, "batch": b}
                               for p, b, _, _ in entries]}
        t0 = time.perf_counter()
        st = self.stats
        try:
            try:
                ans = await post_msgpack(self.session, url + "/v1/produce", body,
                                         timeout_s=self.timeout_ms / 1000 + 10)
            except Exception as exc:
                name = type(exc).__name__
                st.errors[name] = st.errors.get(name, 0) + 1
                for e in entries:
                    self._requeue(e)
                await self._refresh()
                return
            ms = (time.perf_counter() - t0) * 1000
            st.requests += 1
            results = {r["partition"]: r for r in (ans or {}).get("partitions", [])}
            refresh = False
            for e in entries:
                p, b, n, _ = e
                r = results.get(p)
                if self.acks == 0 or (r is not None and not r.get("error")):
                    st.acked_records += n
                    st.acked_bytes += n * self.record_size
                    st.lat.add(ms, n)
                    st.w_records += n
                    st.w_bytes += n * self.record_size
                    st.w_lat_total += ms * n
                    if ms > st.w_lat_max:
                        st.w_lat_max = ms
                else:
                    code = r.get("error") if r else "NO_ANSWER"
                    st.errors[code] = st.errors.get(code, 0) + 1
                    if code in RETRIABLE:
                        self._requeue(e)
                        refresh = True
                    else:
                        st.failed_records += n
            if refresh:
                await self._refresh()
        finally:
            sem.release()

    def _requeue(self, e: tuple[int, bytes, int, int]) -> None:
        p, b, n, attempts = e
        if attempts >= self.max_retries:
            self.stats.failed_records += n
            return
        self.stats.retries += 1
        self._retry.append((p, b, n, attempts + 1))


async def progress_loop(stats: ProduceStats, record_size: int, every_s: float = 2.0) -> None:
    """Kafka-style window lines: records sent, rate, MB/s, avg and max latency in the window."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        now = time.monotonic()
        dt = now - last
        last = now
        n = stats.w_records
        avg = stats.w_lat_total / n if n else 0.0
        log(f"{n} records sent, {n / dt:.1f} records/sec ({stats.w_bytes / dt / MIB:.2f} MB/sec),"
            f" {avg:.1f} ms avg latency, {stats.w_lat_max:.1f} ms max latency.")
        stats.w_records = stats.w_bytes = 0
        stats.w_lat_total = stats.w_lat_max = 0.0


def kafka_producer_line(stats: ProduceStats, elapsed_s: float, record_size: int) -> str:
    lat = stats.lat
    p50, p95, p99, p999 = lat.percentiles([50, 95, 99, 99.9])
    n = stats.acked_records
    return (f"{n} records sent, {n / elapsed_s:.6f} records/sec "
            f"({n * record_size / elapsed_s / MIB:.2f} MB/sec), {lat.avg:.2f} ms avg latency, "
            f"{lat.max:.2f} ms max latency, {p50:.0f} ms 50th, {p95:.0f} ms 95th, "
            f"{p99:.0f} ms 99th, {p999:.0f} ms 99.9th.")


def default_batch_records(record_size: int, batch_bytes: int) -> int:
    return max(1, min(10_000, batch_bytes // (record_size + 12)))


# -- CPU accounting ------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        data = fh.read()
    rest = data[data.rindex(")") + 2:].split()
    # fields after ")" start at field 3 (state); utime is field 14, stime field 15
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        f = fh.readline().split()[1:]
    vals = [int(x) for x in f]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    busy = sum(vals[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK


class CpuMeter:
    """CPU of this process, of the given node pids and of everything else on the machine,
    between start() and stop(); `report()` is one line in % of one core."""

    def __init__(self, node_pids: dict[int, int]):
        self.node_pids = node_pids

    def start(self) -> "CpuMeter":
        self.t0 = time.monotonic()
        self.me0 = self_cpu_s()
        self.nodes0 = {n: proc_cpu_s(p) for n, p in self.node_pids.items()}
        self.all0 = machine_busy_s()
        return self

    def stop(self) -> "CpuMeter":
        self.elapsed = max(1e-9, time.monotonic() - self.t0)
        self.me = self_cpu_s() - self.me0
        self.nodes = {}
        for n, p in self.node_pids.items():
            try:
                self.nodes[n] = proc_cpu_s(p) - self.nodes0[n]
            except OSError:
                self.nodes[n] = float("nan")
        self.all = machine_busy_s() - self.all0
        return self

    def report(self, extra_s: float = 0.0) -> str:
        """`extra_s`: CPU seconds of helper processes of ours (e.g. a consumer process)."""
        e = self.elapsed
        ours = self.me + extra_s + sum(v for v in self.nodes.values() if v == v)
        other = max(0.0, self.all - ours)
        s = f"cpu (% of one core over {e:.1f} s): client {100 * (self.me + extra_s) / e:.0f}%"
        if self.nodes:
            s += ", nodes " + ", ".join(f"{n}: {100 * v / e:.0f}%"
                                        for n, v in sorted(self.nodes.items()))
        s += (f"; other processes on the machine {100 * other / e:.0f}% "
              f"({os.cpu_count()} cores)")
        return s


def broker_epochs(c: ProcessCluster) -> dict[int, int]:
    st = c.cluster()
    return {b["id"]: b.get("epoch", -1) for b in st.get("brokers", [])}


def wait_rejoined(c: ProcessCluster, node: int, old_epoch: int, timeout_s: float = 60.0) -> float:
    """After restarting `node`: until it answers itself, and the controller's view has it active
    with a broker epoch newer than `old_epoch` (re-registered and unfenced). `wait_ready` alone
    is not enough right after a kill: the dead node still looks active until its session times
    out. Returns seconds waited."""
    t0 = time.monotonic()

    def ok() -> bool:
        mine = c.get(node, "/v1/cluster", timeout_s=1.0)
        ctrl = mine.get("controller")
        if ctrl is None or not c.alive(ctrl):
            return False
        st = c.get(ctrl, "/v1/cluster", timeout_s=1.0)
        if st.get("controller") != ctrl:
            return False
        b = {x["id"]: x for x in st.get("brokers", [])}.get(node)
        return bool(b and b.get("state") == "active" and b.get("epoch", -1) > old_epoch)

    from raftlog.testing.cluster import wait_until
    wait_until(ok, timeout_s, 0.1, f"node {node} re-registered and active")
    return time.monotonic() - t0


def start_py_spy(out_dir: str, pids: dict[int, int], seconds: float) -> list[subprocess.Popen]:
    """py-spy record (non-blocking, so Raft and sessions are not paused) of each node pid into
    DIR/node-N.txt as collapsed stacks; stop with stop_py_spy."""
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    os.makedirs(out_dir, exist_ok=True)
    procs = []
    for node, pid in pids.items():
        procs.append(subprocess.Popen(
            [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "--nonblocking",
             "-f", "raw", "-o", os.path.join(out_dir, f"node-{node}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def stop_py_spy(procs: list[subprocess.Popen]) -> None:
    for sp in procs:
        if sp.poll() is None:
            sp.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for sp in procs:
        try:
            sp.wait(15)
        except subprocess.TimeoutExpired:
            sp.kill()
            sp.wait()


# -- client profiling ----------------------------------------------------------------------
def _area(filename: str, func: str) -> str:
    """Which part of the client process a profiled function belongs to."""
    f = filename.replace("\\", "/")
    if "/raftlog/client/" in f:
        return "raftlog.client"
    if "/raftlog/codec/" in f:
        return "raftlog.codec"
    if "/benchmarks/" in f:
        return "benchmark loop"
    if "/aiohttp/" in f or "/yarl/" in f or "/multidict/" in f:
        return "aiohttp"
    if "/asyncio/" in f:
        return "asyncio"
    if f == "~":  # C functions: name them by what they are
        if "msgpack" in func or "Packer" in func or "unpack" in func:
            return "msgpack (C)"
        if "crc32c" in func:
            return "crc32c (C)"
        if "epoll" in func or "select" in func:
            return "event-loop poll"
        if "socket" in func or "send" in func or "recv" in func:
            return "socket IO"
        if "zlib" in func:
            return "zlib (C)"
        return "builtins (C)"
    return "other python"


def _fn_name(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    parts = filename.replace("\\", "/").split("/")
    short = "/".join(parts[-2:])
    return f"{short}:{line}({func})"


def _is_idle(key: tuple[str, int, str]) -> bool:
    return key[0] == "~" and ("epoll" in key[2] or "select" in key[2])


class ClientProfile:
    """Where the client process's CPU goes over a phase.

    `kind` "cprofile": deterministic (call counts, self and cumulative time). Its hook runs on
    every call, so code made of many small calls is slowed ~2x and looks heavier than it is;
    time blocked in epoll (idle) is left out of the shares. `kind` "py-spy": samples this
    process at 500 Hz from outside (`py-spy record --nonblocking`), no slow-down of the
    client beyond py-spy's own CPU; shares of non-idle samples. Either way a profiled run's
    rate is not a figure to quote."""

    def __init__(self, kind: str | None, seconds: float = 120.0) -> None:
        self.kind = kind
        self.prof = None
        self.spy: subprocess.Popen | None = None
        self.spy_out = ""
        self.seconds = seconds
        if kind == "cprofile":
            import cProfile
            self.prof = cProfile.Profile()

    def __enter__(self) -> "ClientProfile":
        if self.kind == "py-spy":
            exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
            fd, self.spy_out = tempfile.mkstemp(prefix="client-pyspy-", suffix=".txt")
            os.close(fd)
            self.spy = subprocess.Popen(
                [exe, "record", "-p", str(os.getpid()), "-d", str(int(self.seconds) + 5),
                 "-r", "500", "--nonblocking", "--function", "-f", "raw", "-o", self.spy_out],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # let it attach
        if self.prof is not None:
            self.prof.enable()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.prof is not None:
            self.prof.disable()
        if self.spy is not None:
            stop_py_spy([self.spy])

    def report(self, top: int = 15, records: int = 0) -> list[str]:
        if self.kind == "cprofile":
            return self._report_cprofile(top, records)
        if self.kind == "py-spy":
            try:
                return self._report_pyspy(top, records)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(self.spy_out)
        return []

    def _report_cprofile(self, top: int, records: int) -> list[str]:
        """CPU by area, top functions by self time, top raftlog functions by cumulative time
        (shares of the non-idle profiled time; µs per record when `records` is given)."""
        import pstats
        entries = pstats.Stats(self.prof).stats  # type: ignore[attr-defined]
        idle = sum(v[2] for k, v in entries.items() if _is_idle(k))
        total = (sum(v[2] for v in entries.values()) - idle) or 1e-9

        def fmt(t: float) -> str:
            s = f"{100 * t / total:5.1f}%"
            if records > 0:
                s += f" {1e6 * t / records:6.3f} µs/rec"
            return s

        areas: dict[str, float] = {}
        for key, (_, _, tt, _, _) in entries.items():
            if not _is_idle(key):
                a = _area(key[0], key[2])
                areas[a] = areas.get(a, 0.0) + tt
        out = [f"client profile (cProfile; {total:.2f} s busy, {idle:.2f} s idle in epoll"
               + (f", {records} records, {1e6 * total / records:.2f} µs/record busy under the "
                  f"profiler" if records > 0 else "") + "):"]
        out.append("  by area (self time): " + ", ".join(
            f"{a} {100 * t / total:.0f}%" for a, t in sorted(areas.items(), key=lambda x: -x[1])
            if t / total >= 0.005))
        out.append(f"  top {top} functions by self time:")
        busy = [(k, v) for k, v in entries.items() if not _is_idle(k)]
        for key, (cc, nc, tt, ct, _) in sorted(busy, key=lambda kv: -kv[1][2])[:top]:
            out.append(f"    {fmt(tt)}  {nc:>9} calls  {_fn_name(key)}")
        out.append(f"  top {top} raftlog client/codec functions by cumulative time:")
        ours = [(k, v) for k, v in busy if _area(k[0], k[2]) in ("raftlog.client", "raftlog.codec")]
        for key, (cc, nc, tt, ct, _) in sorted(ours, key=lambda kv: -kv[1][3])[:top]:
            out.append(f"    {fmt(ct)}  {nc:>9} calls  {_fn_name(key)}")
        return out

    def _report_pyspy(self, top: int, records: int) -> list[str]:
        import collections
        incl: collections.Counter[str] = collections.Counter()
        self_: collections.Counter[str] = collections.Counter()
        areas: collections.Counter[str] = collections.Counter()
        total = 0
        try:
            fh = open(self.spy_out)
        except OSError as exc:
            return [f"client profile (py-spy): no samples ({exc})"]
        with fh:
            for line in fh:
                line = line.rstrip()
                if " " not in line:
                    continue
                stack, cnt_s = line.rsplit(" ", 1)
                frames = stack.split(";")
                if any("epoll" in f or "select (selectors.py" in f for f in frames[-2:]):
                    continue  # idle in the event loop
                cnt = int(cnt_s)
                total += cnt
                leaf = frames[-1]
                self_[leaf] += cnt
                path = leaf[leaf.find("(") + 1:leaf.rfind(":")] if "(" in leaf else "~"
                areas[_area("/" + path if path != "~" else "~", leaf)] += cnt
                for f in set(frames):
                    incl[f] += cnt
        if not total:
            return ["client profile (py-spy): no busy samples"]
        out = [f"client profile (py-spy, 500 Hz; {total} busy samples = {total / 500:.1f} s of "
               f"CPU, idle left out):"]
        out.append("  by area (self samples): " + ", ".join(
            f"{a} {100 * c / total:.0f}%" for a, c in areas.most_common() if c / total >= 0.005))
        out.append(f"  top {top} functions by self samples:")
        for f, c in self_.most_common(top):
            out.append(f"    {100 * c / total:5.1f}%  {f}")
        out.append(f"  top {top} raftlog client/codec functions by inclusive samples:")
        ours = [(f, c) for f, c in incl.items() if "raftlog/client/" in f or "raftlog/codec/" in f]
        for f, c in sorted(ours, key=lambda x: -x[1])[:top]:
            out.append(f"    {100 * c / total:5.1f}%  {f}")
        return out


class GcMeter:
    """Collections per generation and the time spent in them (gc.callbacks) over a phase."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._t = 0.0

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            g = info["generation"]
            self.count[g] += 1
            self.seconds[g] += time.perf_counter() - self._t

    def __enter__(self) -> "GcMeter":
        import gc
        # the settings of the measured phase (a tool may restore others before reporting)
        self.enabled, self.threshold = gc.isenabled(), gc.get_threshold()
        gc.callbacks.append(self._cb)
        return self

    def __exit__(self, *exc: Any) -> None:
        import gc
        gc.callbacks.remove(self._cb)

    def report(self, elapsed_s: float) -> str:
        total = sum(self.seconds)
        return (f"gc: {'enabled' if self.enabled else 'DISABLED'} threshold {self.threshold}, "
                f"collections gen0/1/2 {self.count[0]}/{self.count[1]}/{self.count[2]}, "
                f"{total:.2f} s in GC ({100 * total / max(elapsed_s, 1e-9):.0f}% of the phase; "
                f"gen2 {self.seconds[2]:.2f} s)")
