"""ProcessCluster: real raftlog nodes as OS processes on loopback, for tests and benchmarks.

Owns: writing a config with free ports under a temp dir, starting each node through `node.py
--node-id N` (so SIGKILL hits exactly one node), waiting on conditions with deadlines, and
killing every process it started. No production module imports this.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

from raftlog.launcher import stop_processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_PY = os.path.join(ROOT, "node.py")

# Raft ports stay below the ephemeral range (32768+): pysyncobj.md pitfall 12 saw collisions there.
RAFT_PORT_RANGE = (20000, 32000)


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int, lo: int = RAFT_PORT_RANGE[0], hi: int = RAFT_PORT_RANGE[1]) -> list[int]:
    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        p = rng.randrange(lo, hi)
        if p not in out and _free(p):
            out.append(p)
    return out


def wait_until(pred: Callable[[], Any], timeout_s: float, interval_s: float = 0.05,
               what: str = "condition") -> Any:
    """Poll `pred` until it returns a truthy value; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as exc:  # a node may be restarting; keep polling until the deadline
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}"
                               + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval_s)


async def eventually(pred: Callable[[], Any], timeout_s: float, what: str,
                     interval_s: float = 0.05) -> Any:
    """`wait_until` for async tests: `pred` may be sync or async; errors keep it polling."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            v = pred()
            if inspect.isawaitable(v):
                v = await v
            if v:
                return v
        except Exception as exc:  # nodes move and restart: keep polling until the deadline
            last = exc
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}"
                               + (f" (last error: {last!r})" if last else ""))
        await asyncio.sleep(interval_s)


class HttpError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def http_json(method: str, url: str, body: Any = None, timeout_s: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"raw": raw.decode(errors="replace")}
        raise HttpError(exc.code, parsed) from None


# Followers leave the ISR after 1.5 s and long-poll 300 ms: failover tests finish quickly.
LAG_TOML = "[replication]\nreplica_lag_time_max_ms = 1500\nreplica_fetch_wait_max_ms = 300\n"


class ProcessCluster:
    """N nodes on 127.0.0.1 with ephemeral HTTP ports; `with ProcessCluster(tmp, 3) as c:`."""

    def __init__(self, workdir: str, n: int = 3, *, extra_toml: str = "",
                 session_timeout_ms: int = 3000, heartbeat_interval_ms: int = 300,
                 fast_raft: bool = True, log_level: str = "INFO"):
        self.workdir = workdir
        self.n = n
        self.log_level = log_level
        os.makedirs(workdir, exist_ok=True)
        ports = free_ports(2 * n)
        self.http_ports = {i + 1: ports[i] for i in range(n)}
        self.raft_ports = {i + 1: ports[n + i] for i in range(n)}
        raft = ("[raft]\nelection_timeout_min_ms = 150\nelection_timeout_max_ms = 300\n"
                "append_entries_period_ms = 40\ntick_ms = 40\nleader_fallback_timeout_ms = 1000\n"
                if fast_raft else "")
        lines = [
            '[cluster]\nid = "test"\n',
            f"[broker]\nheartbeat_interval_ms = {heartbeat_interval_ms}\n"
            f"session_timeout_ms = {session_timeout_ms}\nleader_rebalance_interval_ms = 1000\n",
            raft, extra_toml,
        ]
        for i in range(1, n + 1):
            lines.append(f"[[nodes]]\nid = {i}\nhost = \"127.0.0.1\"\nhttp_port = {self.http_ports[i]}\n"
                         f"raft_port = {self.raft_ports[i]}\ndata_dir = \"node-{i}\"\n")
        self.config_path = os.path.join(workdir, "cluster.toml")
        with open(self.config_path, "w") as fh:
            fh.write("\n".join(lines))
        self.procs: dict[int, subprocess.Popen] = {}
        self.logs: dict[int, Any] = {}

    # -- processes ------------------------------------------------------------------------
    def start(self, node_id: int | None = None) -> "ProcessCluster":
        for i in ([node_id] if node_id else range(1, self.n + 1)):
            assert i not in self.procs or self.procs[i].poll() is not None, f"node {i} is running"
            logf = open(os.path.join(self.workdir, f"node-{i}.log"), "ab")
            self.logs[i] = logf
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.procs[i] = subprocess.Popen(
                [sys.executable, NODE_PY, "--config", self.config_path, "--node-id", str(i),
                 "--log-level", self.log_level],
                stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        return self

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[node_id]
        if p.poll() is None:
            p.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                p.wait(15)

    def pause(self, node_id: int) -> None:
        self.procs[node_id].send_signal(signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.procs[node_id].send_signal(signal.SIGCONT)

    def alive(self, node_id: int) -> bool:
        return node_id in self.procs and self.procs[node_id].poll() is None

    def stop(self) -> None:
        stop_processes(self.procs.values())
        for f in self.logs.values():
            f.close()

    def __enter__(self) -> "ProcessCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def log_tail(self, node_id: int, n: int = 40) -> str:
        try:
            with open(os.path.join(self.workdir, f"node-{node_id}.log"), "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    # -- HTTP -------------------------------------------------------------------------------
    def url(self, node_id: int, path: str = "") -> str:
        return f"http://127.0.0.1:{self.http_ports[node_id]}{path}"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.http_ports.values())

    def get(self, node_id: int, path: str, timeout_s: float = 5.0) -> Any:
        return http_json("GET", self.url(node_id, path), timeout_s=timeout_s)

    def call(self, node_id: int, method: str, path: str, body: Any = None,
             timeout_s: float = 10.0) -> Any:
        return http_json(method, self.url(node_id, path), body, timeout_s=timeout_s)

    def cluster(self, node_id: int | None = None) -> dict:
        for i in ([node_id] if node_id else self.live_nodes()):
            try:
                return self.get(i, "/v1/cluster", timeout_s=2.0)
            except Exception:
                continue
        raise ConnectionError("no node answered /v1/cluster")

    def live_nodes(self) -> list[int]:
        return [i for i in range(1, self.n + 1) if self.alive(i)]

    def controller(self, timeout_s: float = 15.0) -> int | None:
        """The controller every live node names, twice in a row.

        One node's answer can be stale just after an election; a test that kills "the
        controller" on such an answer would kill a follower and then see the real controller
        (which heard from the victim a moment ago) place replicas on it.
        """
        def agreed() -> int | None:
            named = set()
            for i in self.live_nodes():
                try:
                    named.add(self.get(i, "/v1/cluster", timeout_s=2.0).get("controller"))
                except Exception:
                    return None
            return named.pop() if len(named) == 1 and None not in named else None

        def stable() -> int | None:
            first = agreed()
            if first is None:
                return None
            time.sleep(0.2)
            return first if agreed() == first else None

        return wait_until(stable, timeout_s, what="one controller named by every live node")

    def wait_ready(self, timeout_s: float = 30.0, nodes: list[int] | None = None) -> dict:
        """Until every live node sees a controller and the given nodes (default: live ones) active.

        Every node, not any one: a node just restarted replays its own journal and may, for a
        moment, still show itself active under its previous broker epoch.
        """
        want = nodes or self.live_nodes()

        def ready() -> dict | None:
            seen = None
            for i in self.live_nodes():
                try:
                    st = self.get(i, "/v1/cluster", timeout_s=1.0)
                except Exception:
                    return None
                states = {b["id"]: b["state"] for b in st.get("brokers", [])}
                if st.get("controller") is None or not all(states.get(w) == "active" for w in want):
                    return None
                seen = st
            return seen
        try:
            return wait_until(ready, timeout_s, 0.1, "cluster ready")
        except TimeoutError:
            tails = "\n".join(f"--- node {i}\n{self.log_tail(i)}" for i in self.procs)
            raise TimeoutError(f"cluster not ready in {timeout_s}s\n{tails}") from None


# Answers of a node whose metadata (or partition state) is behind: a client retries them.
METADATA_LAG_ERRORS = ("LEADER_NOT_AVAILABLE", "UNKNOWN_TOPIC_OR_PARTITION",
                       "NOT_LEADER_OR_FOLLOWER")


def post_msgpack(url: str, body: Any, timeout_s: float = 20.0) -> Any:
    """POST a msgpack body; answers (errors included) come back decoded."""
    import msgpack
    req = urllib.request.Request(url, data=msgpack.packb(body, use_bin_type=True), method="POST",
                                 headers={"Content-Type": "application/msgpack",
                                          "Accept": "application/msgpack"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return msgpack.unpackb(r.read(), raw=False)
    except urllib.error.HTTPError as exc:
        raise HttpError(exc.code, msgpack.unpackb(exc.read(), raw=False)) from None


class DataClient:
    """A minimal synchronous data-plane client for tests: route to leaders, produce, fetch."""

    def __init__(self, cluster: ProcessCluster):
        self.c = cluster

    def partition(self, topic: str, p: int, node: int | None = None) -> dict:
        for n in ([node] if node else self.c.live_nodes()):
            try:
                t = self.c.get(n, f"/v1/topics/{topic}", timeout_s=2.0)
                return t["partitions"][p]
            except Exception:
                continue
        raise ConnectionError("no node described the topic")

    def leader(self, topic: str, p: int) -> int:
        return self.partition(topic, p)["leader"]

    def produce(self, topic: str, p: int, records: list[tuple[bytes | None, bytes]],
                acks: int = -1, timeout_ms: int = 10_000, node: int | None = None) -> dict:
        import time as _t

        from raftlog.codec import batch
        now = int(_t.time() * 1000)
        b = batch.encode([(k, v, None, now) for k, v in records])
        # Like a real producer, retry while a just-created partition is still being opened or
        # the node asked has not applied the topic (or its leader) yet.
        deadline = _t.monotonic() + 10
        while True:
            target = node or self.leader(topic, p)
            out = post_msgpack(self.c.url(target, "/v1/produce"),
                               {"acks": acks, "timeout_ms": timeout_ms,
                                "partitions": [{"topic": topic, "partition": p, "batch": b}]},
                               timeout_s=timeout_ms / 1000 + 10)
            res = out["partitions"][0] if out["partitions"] else {}
            if res.get("error") not in METADATA_LAG_ERRORS or _t.monotonic() > deadline:
                return res
            _t.sleep(0.05)

    def fetch(self, topic: str, p: int, offset: int, node: int | None = None,
              max_wait_ms: int = 0, max_bytes: int = 1 << 20) -> dict:
        node = node or self.leader(topic, p)
        out = post_msgpack(self.c.url(node, "/v1/fetch"),
                           {"max_wait_ms": max_wait_ms, "min_bytes": 1, "max_bytes": max_bytes,
                            "partitions": [{"topic": topic, "partition": p, "offset": offset}]},
                           timeout_s=max_wait_ms / 1000 + 10)
        return out["partitions"][0]

    def read_all(self, topic: str, p: int, node: int | None = None) -> list:
        """Every committed record of a partition, from the leader (or `node`)."""
        from raftlog.codec import batch
        out: list = []
        offset = 0
        while True:
            r = self.fetch(topic, p, offset, node)
            if r.get("error"):
                raise HttpError(200, r)
            recs = [x for x in batch.decode(r["records"]) if x.offset >= offset]
            if not r["records"]:
                return out
            out.extend(recs)
            last = None
            for _pos, h in batch.iter_batches(r["records"]):
                last = h
            offset = last.next_offset if last else offset

    def segment_bytes(self, node: int, topic: str, p: int) -> bytes:
        d = os.path.join(self.c.workdir, f"node-{node}", "partitions", f"{topic}-{p}")
        names = sorted(n for n in os.listdir(d) if n.endswith(".log"))
        data = b""
        for n in names:
            with open(os.path.join(d, n), "rb") as fh:
                data += fh.read()
        return data


@contextlib.contextmanager
def running_cluster(workdir: str, n: int = 3, **kwargs: Any) -> Iterator[ProcessCluster]:
    """A started, ready cluster; every process it started is stopped on exit."""
    c = ProcessCluster(workdir, n, **kwargs)
    try:
        c.start()
        c.wait_ready(40)
        yield c
    finally:
        c.stop()
