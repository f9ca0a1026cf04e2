"""Seeded, composable fault schedule. Each fault is applied, held, healed, and logged as
{"type": "nemesis", "f", "targets", "start", "end"} (wall-clock seconds, like the history).

Names (`--nemesis` takes a comma list; a family name picks one of its members each time):
  kill        = kill-leader | kill-controller | kill-random      SIGKILL, restart after the hold
  pause       = pause-leader | pause-random                      SIGSTOP, SIGCONT after the hold
  partition   = partition-leader | partition-halves | partition-bridge | partition-oneway
                (nft drop rules inside the node namespaces; heal = delete the tables; in the
                loopback lab, blocked directions in the link proxies: looplab.py)
  loss        random loss of 20-40 % of every node's packets (nft numgen; in the loopback
                lab, delayed chunks in the link proxies)
  rolling     rolling restart: SIGTERM each node in turn, restart, wait until active
  disk        = disk-full-leader | disk-full-random                fill the node's tmpfs data
                disk (ENOSPC on every write), free it after the hold; a node that died of it
                is restarted
"""
from __future__ import annotations

import random
import signal
import time
from typing import Any, Callable

FAMILIES = {
    "kill": ["kill-leader", "kill-controller", "kill-random"],
    "pause": ["pause-leader", "pause-random"],
    "partition": ["partition-leader", "partition-halves", "partition-bridge", "partition-oneway"],
    "loss": ["loss"],
    "rolling": ["rolling"],
    "disk": ["disk-full-leader", "disk-full-random"],
}
ALL = sorted({m for ms in FAMILIES.values() for m in ms})


def expand(spec: str) -> list[str]:
    out: list[str] = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        if name in FAMILIES:
            out.append(name)
        elif name in ALL:
            out.append(name)
        else:
            raise ValueError(f"unknown nemesis {name!r}; choose from "
                             f"{', '.join(sorted(FAMILIES) + ALL)}")
    return out


class Nemesis:
    def __init__(self, cluster: Any, lab: Any, topic: str, partitions: int, rng: random.Random,
                 log: Callable[[dict], None], say: Callable[[str], None] = lambda s: None,
                 disks: Any = None):
        self.c = cluster
        self.lab = lab
        self.disks = disks
        self.topic = topic
        self.partitions = partitions
        self.rng = rng
        self.log = log
        self.say = say
        self.killed: set[int] = set()

    # -- targets ---------------------------------------------------------------------------
    def nodes(self) -> list[int]:
        return list(range(1, self.c.n + 1))

    def leader(self) -> int:
        t = self.c.topic(self.topic)
        if t:
            p = self.rng.choice(t["partitions"])
            if p.get("leader") in self.nodes():
                return p["leader"]
        return self.rng.choice(self.nodes())

    def controller(self) -> int:
        ctl = self.c.controller()
        return ctl if ctl in self.nodes() else self.rng.choice(self.nodes())

    # -- one fault --------------------------------------------------------------------------
    def run_one(self, family: str, hold_s: float) -> dict:
        name = self.rng.choice(FAMILIES.get(family, [family]))
        start = time.time()
        targets: Any = None
        if name.startswith("kill"):
            n = {"kill-leader": self.leader, "kill-controller": self.controller,
                 "kill-random": lambda: self.rng.choice(self.nodes())}[name]()
            targets = [n]
            self.say(f"{name} node {n}")
            old = self._broker_epoch(n)
            self.c.kill(n, signal.SIGKILL)
            time.sleep(hold_s)
            self.c.start(n)
            end = time.time()
            self._wait_rejoined(n, old, 15, full_isr=False)
        elif name.startswith("pause"):
            n = self.leader() if name == "pause-leader" else self.rng.choice(self.nodes())
            targets = [n]
            self.say(f"{name} node {n}")
            self.c.pause(n)
            time.sleep(hold_s)
            self.c.resume(n)
            end = time.time()
        elif name.startswith("partition"):
            nodes = self.nodes()
            self.rng.shuffle(nodes)
            if name == "partition-leader":
                n = self.leader()
                targets = {"isolated": [n]}
                self.lab.isolate(n)
            elif name == "partition-halves":
                k = len(nodes) // 2
                targets = {"minority": sorted(nodes[:k]), "majority": sorted(nodes[k:])}
                self.lab.partition([nodes[:k], nodes[k:]])
            elif name == "partition-bridge":
                # a bridge node sees both sides; the sides do not see each other
                b, rest = nodes[0], nodes[1:]
                k = len(rest) // 2
                a_side, b_side = rest[:k], rest[k:]
                targets = {"bridge": b, "sides": [sorted(a_side), sorted(b_side)]}
                for i in a_side:
                    for j in b_side:
                        self.lab.drop_between(i, j)
            else:
                src, dst = nodes[0], nodes[1]
                targets = {"from": src, "to": dst}
                self.lab.drop_from(src, dst)
            self.say(f"{name} {targets}")
            time.sleep(hold_s)
            self.lab.heal()
            end = time.time()
        elif name == "loss":
            pct = self.rng.randint(20, 40)
            targets = {"percent": pct}
            self.say(f"loss {pct}%")
            for n in self.nodes():
                self.lab.loss(n, pct)
            time.sleep(hold_s)
            self.lab.heal()
            end = time.time()
        elif name.startswith("disk-full"):
            n = self.leader() if name == "disk-full-leader" else self.rng.choice(self.nodes())
            old = self._broker_epoch(n)
            took = self.disks.fill(n)
            targets = {"node": n, "filled_mb": round(took / 2**20, 1)}
            self.say(f"{name} node {n} ({targets['filled_mb']} MB filler)")
            time.sleep(hold_s)
            self.disks.free(n)
            end = time.time()
            if not self.c.alive(n):
                targets["stopped"] = True
                self.say(f"node {n} stopped on its full disk: restarting it")
                self.c.start(n)
                self._wait_rejoined(n, old, 20, full_isr=False)
        elif name == "rolling":
            targets = self.nodes()
            self.say("rolling restart")
            for n in targets:
                # as an operator would: the next node goes only once this one re-registered
                # (a new broker epoch, not the stale registration of the stopped process) and
                # every partition has its full ISR again
                old = self._broker_epoch(n)
                self.c.kill(n, signal.SIGTERM)
                self.c.start(n)
                self._wait_rejoined(n, old, 30)
            end = time.time()
        else:
            raise ValueError(name)
        ev = {"type": "nemesis", "f": name, "targets": targets, "start": start, "end": end}
        self.log(ev)
        return ev

    def _broker_epoch(self, n: int) -> int:
        try:
            st = self.c.ask("/v1/cluster")
        except ConnectionError:
            return -1
        return next((b.get("epoch", -1) for b in st.get("brokers", []) if b["id"] == n), -1)

    def _wait_rejoined(self, n: int, old_epoch: int, timeout_s: float,
                       full_isr: bool = True) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                st = self.c.ask("/v1/cluster")
                b = next((b for b in st.get("brokers", []) if b["id"] == n), {})
                t = self.c.topic(self.topic)
                if (b.get("state") == "active" and b.get("epoch", -1) > old_epoch and t
                        and (not full_isr or all(len(p["isr"]) == len(p["replicas"])
                                                 for p in t["partitions"]))):
                    return True
            except ConnectionError:
                pass
            time.sleep(0.2)
        self.say(f"node {n} not back{' with a full ISR' if full_isr else ''} after {timeout_s}s")
        return False

    def heal_all(self) -> None:
        self.lab.heal()
        for n in list(self.disks.full if self.disks else ()):
            self.disks.free(n)
        for n in self.nodes():
            if n in self.c.paused:
                self.c.resume(n)
            if not self.c.alive(n):
                self.c.start(n)

    def schedule(self, families: list[str], until: float, hold: tuple[float, float] = (3, 8),
                 quiet: tuple[float, float] = (3, 6)) -> list[dict]:
        """Faults one after another, each followed by a quiet gap, until wall time `until`."""
        done = []
        while True:
            gap = self.rng.uniform(*quiet)
            hold_s = self.rng.uniform(*hold)
            if time.time() + gap + hold_s > until:
                break
            time.sleep(gap)
            done.append(self.run_one(self.rng.choice(families), hold_s))
        return done
