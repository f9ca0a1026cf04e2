"""Node processes of a chaos run: config with the lab's addresses, `ip netns exec NS python
node.py --config ... --node-id N` per node, SIGKILL/SIGSTOP/SIGCONT/restart by pid.

With link proxies (the loopback lab: `dial` and `client_ports` given) each node gets a config
file of its own, cluster-N.toml, naming every peer's proxy ports for that node
(dial_http_port, dial_raft_port) and every node's client proxy port (advertised_http_port);
clients are then given the client proxy ports. Without them, one cluster.toml for all.

Cluster questions (leaders, controller, readiness) go through the Probe inside the client
namespace; this module never opens a socket itself.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from typing import Any, Callable

from raftlog.launcher import stop_processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_PY = os.path.join(ROOT, "node.py")
HTTP_PORT = 9092
RAFT_PORT = 19092

FAST_TOML = """
[broker]
heartbeat_interval_ms = 300
session_timeout_ms = 3000
leader_rebalance_interval_ms = 2000

[raft]
election_timeout_min_ms = 300
election_timeout_max_ms = 600
append_entries_period_ms = 80
tick_ms = 50
leader_fallback_timeout_ms = 1000

[replication]
replica_lag_time_max_ms = 3000
replica_fetch_wait_max_ms = 500
"""


class NsCluster:
    def __init__(self, workdir: str, n: int, addr: Callable[[int], str],
                 prefix: Callable[[int], list[str]], python: str, probe: Any = None,
                 extra_toml: str = "", ports: dict[int, tuple[int, int]] | None = None,
                 data_dirs: dict[int, str] | None = None,
                 dial: dict[int, dict[int, tuple[int, int]]] | None = None,
                 client_ports: dict[int, int] | None = None):
        self.workdir = workdir
        # data dir per node, relative to workdir (the disk nemesis puts them on small tmpfs)
        self.data_dirs = data_dirs or {i: f"node-{i}" for i in range(1, n + 1)}
        # (http, raft) port per node: the same everywhere in namespaces, distinct on loopback
        self.ports = ports or {i: (HTTP_PORT, RAFT_PORT) for i in range(1, n + 1)}
        self.n = n
        self.addr = addr
        self.prefix = prefix
        self.python = python
        self.probe = probe
        os.makedirs(workdir, exist_ok=True)
        # the HTTP port clients dial: the node's own, or its client proxy's
        self.client_ports = client_ports or {i: self.ports[i][0] for i in range(1, n + 1)}
        head = [f'[cluster]\nid = "chaos"\nsecret = "{secrets.token_hex(16)}"\n', FAST_TOML,
                extra_toml]

        def config(me: int | None) -> str:
            lines = list(head)
            for i in range(1, n + 1):
                lines.append(f'[[nodes]]\nid = {i}\nhost = "{addr(i)}"\n'
                             f'http_port = {self.ports[i][0]}\nraft_port = {self.ports[i][1]}\n'
                             f'data_dir = "{self.data_dirs[i]}"\n')
                if me is not None:
                    lines[-1] += f"advertised_http_port = {self.client_ports[i]}\n"
                    if i != me:
                        lines[-1] += (f"dial_http_port = {dial[me][i][0]}\n"
                                      f"dial_raft_port = {dial[me][i][1]}\n")
            return "\n".join(lines)

        self.config_path = os.path.join(workdir, "cluster.toml")
        self.config_paths = {i: self.config_path for i in range(1, n + 1)}
        if dial is None:
            with open(self.config_path, "w") as fh:
                fh.write(config(None))
        else:
            for i in range(1, n + 1):
                self.config_paths[i] = os.path.join(workdir, f"cluster-{i}.toml")
                with open(self.config_paths[i], "w") as fh:
                    fh.write(config(i))
        self.procs: dict[int, subprocess.Popen] = {}
        self.paused: set[int] = set()

    def data_dir(self, i: int) -> str:
        return os.path.join(self.workdir, self.data_dirs[i])

    def url(self, i: int, path: str = "") -> str:
        return f"http://{self.addr(i)}:{self.client_ports[i]}{path}"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.addr(i)}:{self.client_ports[i]}" for i in range(1, self.n + 1))

    # -- processes --------------------------------------------------------------------------
    def start(self, i: int | None = None) -> None:
        for k in ([i] if i else range(1, self.n + 1)):
            if k in self.procs and self.procs[k].poll() is None:
                continue
            logf = open(os.path.join(self.workdir, f"node-{k}.log"), "ab")
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            # `ip netns exec` execs the command: the pid is the node's own
            self.procs[k] = subprocess.Popen(
                self.prefix(k) + [self.python, NODE_PY, "--config", self.config_paths[k],
                                  "--node-id", str(k)],
                stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
            logf.close()
            self.paused.discard(k)

    def alive(self, i: int) -> bool:
        return i in self.procs and self.procs[i].poll() is None

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs.get(i)
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        if i in self.paused and sig != signal.SIGKILL:
            p.send_signal(signal.SIGCONT)     # a stopped process acts on SIGTERM once resumed
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.paused.discard(i)

    def pause(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def resume(self, i: int) -> None:
        if self.alive(i):
            self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def stop(self) -> None:
        stop_processes(self.procs.values())

    def log_tail(self, i: int, n: int = 30) -> str:
        try:
            with open(os.path.join(self.workdir, f"node-{i}.log"), "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    # -- questions through the probe ----------------------------------------------------------
    def ask(self, path: str, nodes: list[int] | None = None, timeout: float = 1.5) -> Any:
        last = None
        for i in nodes or [k for k in range(1, self.n + 1) if self.alive(k) and k not in self.paused]:
            try:
                return self.probe.get(self.url(i, path), timeout=timeout)
            except Exception as exc:
                last = exc
        raise ConnectionError(f"no node answered {path}: {last}")

    def controller(self) -> int | None:
        try:
            return self.ask("/v1/cluster").get("controller")
        except ConnectionError:
            return None

    def topic(self, name: str) -> dict | None:
        try:
            return self.ask(f"/v1/topics/{name}")
        except ConnectionError:
            return None

    def wait_ready(self, timeout_s: float = 40.0, nodes: list[int] | None = None) -> dict:
        want = nodes or list(range(1, self.n + 1))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                st = self.ask("/v1/cluster")
                states = {b["id"]: b["state"] for b in st.get("brokers", [])}
                if st.get("controller") is not None and all(states.get(w) == "active" for w in want):
                    return st
            except ConnectionError:
                pass
            time.sleep(0.2)
        tails = "\n".join(f"--- node {i}\n{self.log_tail(i)}" for i in self.procs)
        raise TimeoutError(f"cluster not ready in {timeout_s}s\n{tails}")
