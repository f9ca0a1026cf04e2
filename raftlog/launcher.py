"""Start raftlog nodes: one in the foreground, or every node of a config as child processes.

Owns process supervision for `node.py` and `raftlog node start`: spawning children, prefixing
their log lines, waiting until the cluster is ready, reporting a child that exits (the others keep
running), and stopping every child on Ctrl-C/SIGTERM/SIGHUP or when the launcher itself dies.
Imports the config loader and the server entry point; no storage, meta or replication logic.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Callable, Iterable

from raftlog import config as config_mod
from raftlog.errors import ConfigError

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
POLL_S = 0.2                 # how often the launcher checks its nodes
RELAY_DRAIN_S = 2.0          # at stop: how long to wait for the nodes' last log lines
# SIGHUP too: closing the terminal must stop the nodes, which run in their own session
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1         # <linux/prctl.h>


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


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGTERM when the launcher dies, even by SIGKILL.

    The nodes run in their own session (Ctrl-C reaches only the launcher, which stops them in
    order), so nothing else would stop them: a SIGKILLed launcher left the whole cluster
    running. Linux only (prctl PR_SET_PDEATHSIG); elsewhere None. The signal fires when the
    *thread* that forked the child exits, so the Popen must run on the launcher's main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl   # looked up here, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        # The launcher's own SIGTERM handler is inherited until exec: a death signal caught
        # by it here would be lost, so the default (die) comes first.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:        # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


def _spawn_nodes(cfg_path: str, cfg: config_mod.ClusterConfig,
                 extra_args: list[str]) -> dict[int, subprocess.Popen]:
    """Start every node; call on the main thread (see _die_with_parent). Relay threads start
    only after the last fork, so no child is forked while a relay holds a lock."""
    assert threading.current_thread() is threading.main_thread(), "PDEATHSIG needs the main thread"
    preexec = _die_with_parent()
    children: dict[int, subprocess.Popen] = {}
    for n in cfg.nodes:
        cmd = [sys.executable, "-m", "raftlog.server", "--config", cfg_path,
               "--node-id", str(n.id), *extra_args]
        children[n.id] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=preexec)
    return children


def _supervise(cfg: config_mod.ClusterConfig, children: dict[int, subprocess.Popen],
               stopping: threading.Event) -> int:
    """Until the launcher is signalled (0) or every node has exited (1).

    A node that exits is reported once and the others keep running, as Kafka's brokers do:
    killing one node of `make run` shows a failover instead of stopping the cluster.
    """
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = warned = False
    exited: set[int] = set()
    while not stopping.is_set():
        new = [i for i, p in children.items() if i not in exited and p.poll() is not None]
        exited.update(new)
        alive = [str(j) for j in children if j not in exited]
        rest = f"node(s) {', '.join(alive)} keep running" if alive else "no node is left"
        for i in new:
            print(f"raftlog: node {i} exited ({_describe_exit(children[i].returncode)}); {rest}",
                  flush=True)
        if len(exited) == len(children):
            return 1
        if not ready:
            if is_ready(cfg):
                ready = True
                addrs = " ".join(f"http://{n.host}:{n.http_port}" for n in cfg.nodes)
                print(f"raftlog: cluster {cfg.cluster.id} ready: {addrs} (Ctrl-C stops it)",
                      flush=True)
            elif not warned and time.monotonic() > deadline:
                # once: a line every poll buried the node logs that say why; the ready line
                # still follows if the cluster gets there later
                warned = True
                print(f"raftlog: cluster not ready after {READY_TIMEOUT_S:.0f} s; "
                      "see the node logs above (still waiting)", flush=True)
        stopping.wait(POLL_S)
    return 0


def run_all(cfg_path: str, cfg: config_mod.ClusterConfig, extra_args: list[str]) -> int:
    """Every node of the config as children; stops them all on SIGINT, SIGTERM or SIGHUP."""
    stopping = threading.Event()

    def stop(*_a) -> None:
        stopping.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    children = _spawn_nodes(cfg_path, cfg, extra_args)
    relays = [threading.Thread(target=_relay, args=(f"[node {i}]", p.stdout, sys.stdout),
                               daemon=True) for i, p in children.items()]
    for t in relays:
        t.start()
    print(f"raftlog: starting {len(cfg.nodes)} nodes of {cfg_path} ...", flush=True)
    code = 0
    try:
        code = _supervise(cfg, children, stopping)
    finally:
        stop_processes(children.values())
        end = time.monotonic() + RELAY_DRAIN_S
        for t in relays:            # the nodes' last lines before ours
            t.join(max(0.0, end - time.monotonic()))
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
