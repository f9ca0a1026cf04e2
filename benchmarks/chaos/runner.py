"""One chaos run end to end: lab up, cluster, topic, workload, nemeses, heal, final read,
replica comparison, check, report, teardown (also at exit and on SIGINT/SIGTERM)."""
from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.chaos import checker, disks, looplab, netlab, replicas, report
from benchmarks.chaos.nemesis import Nemesis, expand
from benchmarks.chaos.nscluster import ROOT, NsCluster
from benchmarks.chaos.nsguard import ENV as NETNS_ENV
from benchmarks.chaos.nsguard import LOOPBACK_ENV
from benchmarks.chaos.probe import Probe

PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable


@dataclass
class RunConfig:
    nodes: int = 3
    nemesis: str = "kill,partition"
    time: float = 60.0
    seed: int = 7
    partitions: int = 4
    producers: int = 2
    group_consumers: int = 2         # in one group, committing after each poll
    rate: float = 200.0
    topic: str = "chaos"
    results: str = os.path.join(ROOT, "results", "chaos")
    keep_data: bool = False
    quiet: bool = False
    hold: tuple[float, float] = (3.0, 8.0)
    gap: tuple[float, float] = (3.0, 6.0)
    loopback: bool = False          # force the 127.0.0.1 fallback (per-link TCP proxies)
    allow_fallback: bool = True     # fall back when namespaces cannot be made
    extra: dict = field(default_factory=dict)


class Unavailable(RuntimeError):
    """Namespaces cannot be used here (the reason is the message)."""


class Run:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.families = expand(cfg.nemesis)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.name = f"{stamp}-n{cfg.nodes}-{cfg.nemesis.replace(',', '+')}-s{cfg.seed}"
        self.outdir = os.path.join(cfg.results, self.name)
        self.workdir = f"/tmp/raftlog-chaos-{os.getpid()}"
        self.lab: netlab.NetLab | looplab.LoopLab | None = None
        self.probe: Probe | None = None
        self.cluster: NsCluster | None = None
        self.disks: disks.Disks | None = None
        self.workload: subprocess.Popen | None = None
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._cleaned = False
        self._old_handlers: dict[int, Any] = {}

    def say(self, msg: str) -> None:
        if not self.cfg.quiet:
            print(f"[chaos +{time.time() - self.t0:6.1f}s] {msg}", flush=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        atexit.unregister(self.cleanup)
        os.environ.pop(LOOPBACK_ENV, None)
        for s, h in self._old_handlers.items():
            signal.signal(s, h)
        self._old_handlers.clear()
        for p in (self.workload,):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if self.cluster is not None:
            self.cluster.stop()
        if self.disks is not None:
            self.disks.down()
        if self.probe is not None:
            self.probe.close()
        if self.lab is not None:
            self.lab.down()

    def _signal(self, signum: int, _frame: Any) -> None:
        self.cleanup()
        raise SystemExit(128 + signum)

    def setup(self) -> None:
        why = "--loopback given" if self.cfg.loopback else netlab.preflight()
        err = None if why else netlab.ensure_nft()
        self.t0 = time.time()
        self.loopback = bool(why or err)
        if self.loopback:
            if not self.cfg.allow_fallback:
                raise Unavailable(why or err or "")
            self.say(f"network namespaces unusable ({why or err}): falling back to 127.0.0.1 "
                     "with an in-process TCP proxy per link (network faults are link-proxy "
                     "faults: blackhole, one-way cut, chunk loss)")
        stale = [] if self.loopback else netlab.remove_stale()
        if stale:
            self.say(f"removed stale namespaces: {' '.join(stale)}")
        want_disks = any(f.startswith("disk") for f in self.families)
        if want_disks and os.geteuid() != 0:
            self.say("not root: cannot mount tmpfs disks; dropping the disk nemesis")
            self.families = [f for f in self.families if not f.startswith("disk")]
            want_disks = False
            if not self.families:
                raise Unavailable("the disk nemesis needs root to mount tmpfs")
        gone = disks.remove_stale() if os.geteuid() == 0 else []
        if gone:
            self.say(f"unmounted stale chaos disks: {' '.join(gone)}")
        atexit.register(self.cleanup)
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[s] = signal.signal(s, self._signal)
        os.environ[NETNS_ENV] = os.readlink("/proc/self/ns/net")
        if self.loopback:
            os.environ[LOOPBACK_ENV] = "1"
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)
        os.makedirs(self.outdir, exist_ok=True)
        n = self.cfg.nodes
        self.lab = looplab.LoopLab(n, self.cfg.seed) if self.loopback else netlab.NetLab(n)
        self.lab.up()
        self.probe = Probe(self.lab.exec_prefix(self.lab.client_ns), PYTHON, ROOT)
        lab = self.lab
        links: dict[str, Any] = {}
        if isinstance(lab, looplab.LoopLab):
            links = {"ports": lab.ports, "dial": lab.dial, "client_ports": lab.client_ports}
        data_dirs = None
        if want_disks:
            self.disks = disks.Disks(self.workdir, n)
            self.disks.up()
            data_dirs = {i: self.disks.data_dir(i) for i in range(1, n + 1)}
        self.cluster = NsCluster(self.workdir, n, lab.addr,
                                 lambda i: lab.exec_prefix(lab.node_ns(i)), PYTHON, self.probe,
                                 data_dirs=data_dirs, **links)

    def _log(self, ev: dict) -> None:
        with self._lock:
            self.events.append(ev)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        self.t0 = time.time()
        self.setup()
        c, cfg = self.cluster, self.cfg
        assert c is not None and self.lab is not None and self.probe is not None
        self.say(f"lab {self.lab.family}: {cfg.nodes} nodes at {c.bootstrap}, "
                 f"client {self.lab.client_addr}")
        c.start()
        c.wait_ready(60)
        r = self.probe.call("POST", c.url(1, "/v1/topics"),
                            {"name": cfg.topic, "partitions": cfg.partitions,
                             "replication_factor": 3, "config": {"min.insync.replicas": 2}},
                            timeout=10)
        if r.get("status") not in (200, 201):
            raise RuntimeError(f"create topic: {r}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            t = c.topic(cfg.topic)
            if t and all(p.get("leader") is not None and len(p["isr"]) == 3
                         for p in t["partitions"]):
                break
            time.sleep(0.2)
        hist_path = os.path.join(self.outdir, "history.jsonl")
        final_path = os.path.join(self.outdir, "final.jsonl")
        wl = [PYTHON, "-m", "benchmarks.chaos.workload"]
        common = ["--bootstrap", c.bootstrap, "--topic", cfg.topic,
                  "--partitions", str(cfg.partitions)]
        self.say(f"workload for {cfg.time:.0f}s, nemesis {','.join(self.families)}, seed {cfg.seed}")
        wl_log = open(os.path.join(self.outdir, "workload.log"), "ab")
        self.workload = subprocess.Popen(
            self.lab.exec_prefix(self.lab.client_ns) + wl + ["run"] + common +
            ["--time", str(cfg.time), "--producers", str(cfg.producers), "--rate", str(cfg.rate),
             "--group-consumers", str(cfg.group_consumers),
             "--seed", str(cfg.seed), "--out", hist_path],
            cwd=ROOT, stdout=wl_log, stderr=subprocess.STDOUT)
        run_start = time.time()
        stop_progress = threading.Event()
        prog = threading.Thread(target=self._progress, args=(hist_path, stop_progress), daemon=True)
        prog.start()
        nem = Nemesis(c, self.lab, cfg.topic, cfg.partitions, random.Random(cfg.seed), self._log,
                      self.say, disks=self.disks)
        # faults stop early enough for the tail of the run to be healthy
        until = run_start + max(cfg.time - max(5.0, cfg.time * 0.15), 1.0)
        try:
            faults = nem.schedule(self.families, until, hold=cfg.hold, quiet=cfg.gap)
        finally:
            nem.heal_all()
        self.say(f"{len(faults)} faults done; healed")
        try:
            self.workload.wait(cfg.time + 60)
        except subprocess.TimeoutExpired:
            self.say("workload overran; killing it")
            self.workload.kill()
            self.workload.wait()
        stop_progress.set()
        prog.join(3)
        # final read after heal
        self.say("final read of every partition")
        fin = subprocess.run(self.lab.exec_prefix(self.lab.client_ns) + wl + ["final"] + common +
                             ["--time", "60", "--out", final_path],
                             cwd=ROOT, stdout=wl_log, stderr=subprocess.STDOUT, timeout=150)
        wl_log.close()
        events = _read_jsonl(hist_path) + _read_jsonl(final_path)
        finals = {e["partition"]: e for e in events if e.get("type") == "final"}
        conv = []
        data_dirs = {i: c.data_dir(i) for i in range(1, cfg.nodes + 1)}
        for p, fe in sorted(finals.items()):
            if fe.get("hw") is None:
                continue
            cmp_, took = replicas.wait_identical(data_dirs, cfg.topic, p, fe["hw"],
                                                 fe.get("replicas"), timeout_s=10)
            conv.append(took)
            events.append({"type": "replicas", "partition": p, "hw": fe["hw"],
                           "nodes": cmp_["nodes"], "detail": cmp_["bytes"]})
        events += self.events
        check = checker.check(events)
        avail = checker.availability(events)
        t0 = min([e["time"] for e in events if e.get("type") == "invoke"] or [run_start])
        res = {"name": self.name, "nodes": cfg.nodes,
               "network": "loopback" if self.loopback else "namespaces", "nemesis": cfg.nemesis, "seed": cfg.seed,
               "time": cfg.time, "t0": t0, "final_rc": fin.returncode,
               "faults": [e for e in events if e.get("type") == "nemesis"],
               "check": check, "availability": avail,
               "replica_convergence_s": (None if not conv or None in conv
                                         else round(max(conv), 3)),
               "outdir": self.outdir}
        png = report.plot(events, res["faults"], t0, os.path.join(self.outdir, "plot.png"),
                          f"raftlog chaos {self.name}")
        res["plot"] = png
        with open(os.path.join(self.outdir, "result.json"), "w") as fh:
            json.dump(res, fh, indent=1, default=str)
        with open(os.path.join(self.outdir, "nemesis.jsonl"), "w") as fh:
            for e in self.events:
                fh.write(json.dumps(e) + "\n")
        for i in range(1, cfg.nodes + 1):
            src = os.path.join(self.workdir, f"node-{i}.log")
            if os.path.exists(src):
                shutil.copy(src, self.outdir)
        if self.disks is not None and (cfg.keep_data or not check["valid"]):
            self.disks.preserve()
        self.cleanup()
        if check["valid"] and not cfg.keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            res["data_kept"] = self.workdir
        for line in report.summary_lines(res):
            print(line, flush=True) if not cfg.quiet else None
        if not cfg.quiet:
            print(f"result: {os.path.join(self.outdir, 'result.json')}  plot: {png}", flush=True)
        return res

    def _progress(self, path: str, stop: threading.Event) -> None:
        pos = 0
        inv = ok = info = 0
        while not stop.wait(2.0):
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except OSError:
                continue
            cut = chunk.rfind(b"\n") + 1
            pos += cut
            for line in chunk[:cut].splitlines():
                if b'"type":"invoke"' in line:
                    inv += 1
                elif b'"type":"ok"' in line:
                    ok += 1
                elif b'"type":"info"' in line or b'"type":"fail"' in line:
                    info += 1
            self.say(f"ops {inv}  acked {ok}  indeterminate/failed {info}  "
                     f"nodes up {sum(self.cluster.alive(i) for i in range(1, self.cfg.nodes + 1))}"
                     f"  paused {sorted(self.cluster.paused)}  "
                     f"{'links' if self.loopback else 'nft'} {sorted(self.lab.faults)}")


def _read_jsonl(path: str) -> list[dict]:
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass   # a line cut by a kill
    except OSError:
        pass
    return out
