"""Start raftlog nodes: one in the foreground, or every node of a config as child processes.

Owns process supervision for `node.py` and `raftlog node start`: spawning children, prefixing
their log lines, waiting until the cluster is ready, and stopping every child on Ctrl-C/SIGTERM.
Imports the config loader and the server entry point; no storage, meta or replication logic.
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Iterable

from raftlog import config as config_mod
from raftlog.errors import ConfigError

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


def _relay(prefix: str, stream, out) -> None:
    """Copy a child's output line by line with a `[node N]` prefix (a thread per child)."""
    for raw in iter(stream.readline, b""):
        out.write(f"{prefix} {raw.decode(errors='replace').rstrip()}\n")
        out.flush()


def stop_processes(procs: Iterable[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every live process (SIGCONT first, in case it is paused), wait up to `grace_s` in
    total, then SIGKILL what is left. The one way nodes are stopped: launcher, tests, chaos."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cluster_status(host: str, port: int, timeout_s: float = 1.0) -> dict | None:
    """GET /v1/cluster from one node, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/cluster", timeout=timeout_s) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def is_ready(cfg: config_mod.ClusterConfig) -> bool:
    """A controller is elected and every node of the config is registered and unfenced."""
    for n in cfg.nodes:
        st = cluster_status(n.host, n.http_port)
        if not st or st.get("controller") is None:
            continue
        brokers = {b["id"]: b for b in st.get("brokers", [])}
        if all(i in brokers and brokers[i]["state"] == "active" for i in cfg.node_ids):
            return True
    return False


def run_all(cfg_path: str, cfg: config_mod.ClusterConfig, extra_args: list[str]) -> int:
    children: dict[int, subprocess.Popen] = {}
    stopping = threading.Event()

    def stop(*_a) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for n in cfg.nodes:
        cmd = [sys.executable, "-m", "raftlog.server", "--config", cfg_path,
               "--node-id", str(n.id), *extra_args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        children[n.id] = p
        threading.Thread(target=_relay, args=(f"[node {n.id}]", p.stdout, sys.stdout),
                         daemon=True).start()
    print(f"raftlog: starting {len(cfg.nodes)} nodes of {cfg_path} ...", flush=True)
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = False
    code = 0
    try:
        while not stopping.is_set():
            dead = {i: p.returncode for i, p in children.items() if p.poll() is not None}
            if dead:
                print(f"raftlog: node(s) exited: {dead}; stopping the others", flush=True)
                code = 1
                break
            if not ready:
                if is_ready(cfg):
                    ready = True
                    addrs = " ".join(f"http://{n.host}:{n.http_port}" for n in cfg.nodes)
                    print(f"raftlog: cluster {cfg.cluster.id} ready: {addrs} (Ctrl-C stops it)",
                          flush=True)
                elif time.monotonic() > deadline:
                    print(f"raftlog: cluster not ready after {READY_TIMEOUT_S:.0f} s; "
                          "see the node logs above", flush=True)
            stopping.wait(0.2)
    finally:
        stop_processes(children.values())
        print("raftlog: all nodes stopped", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="node.py", description=(
        "Start raftlog: every node of the config as child processes, or one node with --node-id."))
    ap.add_argument("--config", default="cluster.example.toml", help="cluster TOML file")
    ap.add_argument("--node-id", type=int, default=None, help="run only this node, in the foreground")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = ap.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        if args.node_id is not None:
            cfg.node(args.node_id)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.node_id is None:
        return run_all(args.config, cfg, ["--log-level", args.log_level])
    from raftlog.server.__main__ import run_node  # heavy imports only for the node process
    return run_node(args.config, args.node_id, args.log_level)
