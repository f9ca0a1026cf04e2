"""Network lab: one namespace per node plus a client namespace, joined by a bridge that lives in a
namespace of its own, and nft faults inside the node namespaces.

Nothing here ever opens a socket: it only runs `ip` and `nft`. Addresses are 10.77.0.N inside
the lab; the root namespace never talks to them (it would route them off the machine).

Names: `rlc<tag>sw` (bridge), `rlc<tag>n<i>` (node i), `rlc<tag>c` (clients). A pid file
/run/raftlog-chaos/rlc<tag>.pid names the harness that owns them; stale families (owner dead)
are removed at start, our own at exit (atexit and SIGTERM/SIGINT handlers in the runner).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Iterable

FAMILY = "rlc"
SUBNET = "10.77.0"
CLIENT_HOST = 100
PID_DIR = "/run/raftlog-chaos"
_NAME_RE = re.compile(rf"^{FAMILY}(\d+)(sw|c|n\d+)$")
TABLE = "chaos"


class LabUnavailable(RuntimeError):
    pass


def _run(args: list[str], check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(args, capture_output=True, text=True, input=input, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: rc={p.returncode} {p.stderr.strip()}")
    return p


def list_netns() -> list[str]:
    p = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(ns: str) -> None:
    p = _run(["ip", "netns", "pids", ns], check=False)
    for tok in p.stdout.split():
        try:
            os.kill(int(tok), 9)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def remove_stale() -> list[str]:
    """Delete every namespace of our family whose owning harness is gone; return their names."""
    removed = []
    owners: dict[str, bool] = {}
    for ns in list_netns():
        m = _NAME_RE.match(ns)
        if not m:
            continue
        fam = FAMILY + m.group(1)
        if fam not in owners:
            alive = False
            try:
                with open(os.path.join(PID_DIR, fam + ".pid")) as fh:
                    alive = _pid_alive(int(fh.read().strip() or 0))
            except (OSError, ValueError):
                alive = False
            owners[fam] = alive
        if not owners[fam]:
            _kill_inside(ns)     # node processes a crashed harness left behind
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
    for fam, alive in owners.items():
        if not alive:
            try:
                os.unlink(os.path.join(PID_DIR, fam + ".pid"))
            except OSError:
                pass
    return removed


def preflight() -> str | None:
    """Why a namespace lab cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_SYS_ADMIN/CAP_NET_ADMIN"
    if not shutil.which("ip"):
        return "iproute2 (`ip`) is not installed"
    probe = f"{FAMILY}probe{os.getpid() % 1000}"
    p = _run(["ip", "netns", "add", probe], check=False)
    if p.returncode != 0:
        return f"`ip netns add` failed: {p.stderr.strip()}"
    _run(["ip", "netns", "del", probe], check=False)
    return None


def ensure_nft() -> str | None:
    """Install nftables with apt-get when missing; return an error text or None."""
    if shutil.which("nft"):
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nftables"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if p.returncode != 0 and cmd[1] == "install":
            return f"apt-get install nftables failed: {p.stderr.strip()[-300:]}"
    return None if shutil.which("nft") else "nft still missing after apt-get"


class TopologyFaults:
    """Partitions composed from one-way cuts; shared by NetLab (nft) and LoopLab (proxies),
    which supply `drop_from(src, dst)` and `block_clients(i)`."""

    n: int

    def drop_from(self, src: int, dst: int) -> None:
        raise NotImplementedError

    def block_clients(self, i: int) -> None:
        raise NotImplementedError

    def drop_between(self, i: int, j: int) -> None:
        """Cut i<->j in both directions."""
        self.drop_from(i, j)
        self.drop_from(j, i)

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        gs = [set(g) for g in groups]
        for a in range(len(gs)):
            for b in range(a + 1, len(gs)):
                for i in gs[a]:
                    for j in gs[b]:
                        self.drop_between(i, j)

    def isolate(self, i: int, include_clients: bool = False) -> None:
        for j in range(1, self.n + 1):
            if j != i:
                self.drop_between(i, j)
        if include_clients:
            self.block_clients(i)


class NetLab(TopologyFaults):
    """`lab = NetLab(3); lab.up(); ...; lab.down()`. Node i lives at 10.77.0.i."""

    def __init__(self, n: int, tag: int | None = None):
        self.n = n
        self.tag = os.getpid() % 1000 if tag is None else tag
        self.family = f"{FAMILY}{self.tag}"
        self.sw = f"{self.family}sw"
        self.client_ns = f"{self.family}c"
        self.created: list[str] = []
        self.faults: dict[int, list[str]] = {}  # node -> nft rules currently installed

    def node_ns(self, i: int) -> str:
        return f"{self.family}n{i}"

    def addr(self, i: int) -> str:
        return f"{SUBNET}.{i}"

    @property
    def client_addr(self) -> str:
        return f"{SUBNET}.{CLIENT_HOST}"

    def up(self) -> None:
        os.makedirs(PID_DIR, exist_ok=True)
        with open(os.path.join(PID_DIR, self.family + ".pid"), "w") as fh:
            fh.write(str(os.getpid()))
        for ns in list_netns():          # same tag, left over by a dead harness with our pid%1000
            if _NAME_RE.match(ns) and ns.startswith(self.family) and \
                    _NAME_RE.match(ns).group(1) == str(self.tag):
                _run(["ip", "netns", "del", ns], check=False)
        self._add_ns(self.sw)
        _run(["ip", "-n", self.sw, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.sw, "link", "set", "br0", "up"])
        for i in list(range(1, self.n + 1)) + [CLIENT_HOST]:
            ns = self.client_ns if i == CLIENT_HOST else self.node_ns(i)
            self._add_ns(ns)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # the veth is created inside the namespace, its peer inside the switch: never in root
            _run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                  "netns", self.sw])
            _run(["ip", "-n", self.sw, "link", "set", f"p{i}", "master", "br0"])
            _run(["ip", "-n", self.sw, "link", "set", f"p{i}", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _add_ns(self, ns: str) -> None:
        _run(["ip", "netns", "add", ns])
        self.created.append(ns)

    def down(self) -> None:
        for ns in reversed(self.created):
            _kill_inside(ns)     # normally none: the runner stopped its processes first
            _run(["ip", "netns", "del", ns], check=False)
        self.created.clear()
        try:
            os.unlink(os.path.join(PID_DIR, self.family + ".pid"))
        except OSError:
            pass

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    # -- nft faults (one table `inet chaos` per node namespace; heal = delete it) -----------
    def _ensure_table(self, i: int) -> None:
        if i in self.faults:
            return
        ns = self.node_ns(i)
        script = (f"add table inet {TABLE}\n"
                  f"add chain inet {TABLE} in {{ type filter hook input priority -10; policy accept; }}\n"
                  f"add chain inet {TABLE} out {{ type filter hook output priority -10; policy accept; }}\n")
        _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)
        self.faults[i] = []

    def _rule(self, i: int, chain: str, rule: str) -> None:
        self._ensure_table(i)
        _run(["ip", "netns", "exec", self.node_ns(i), "nft", "add", "rule", "inet", TABLE, chain]
             + rule.split())
        self.faults[i].append(f"{chain}: {rule}")


    def drop_from(self, src: int, dst: int) -> None:
        """One-way cut: packets src -> dst are dropped (output of src, input of dst)."""
        self._rule(src, "out", f"ip daddr {self.addr(dst)} drop")
        self._rule(dst, "in", f"ip saddr {self.addr(src)} drop")

    def block_clients(self, i: int) -> None:
        self._rule(i, "out", f"ip daddr {self.client_addr} drop")
        self._rule(i, "in", f"ip saddr {self.client_addr} drop")

    def loss(self, i: int, percent: int) -> None:
        """Random loss of `percent` % of node i's incoming and outgoing lab packets."""
        self._rule(i, "in", f"ip saddr {SUBNET}.0/24 numgen random mod 100 < {percent} drop")
        self._rule(i, "out", f"ip daddr {SUBNET}.0/24 numgen random mod 100 < {percent} drop")

    def heal(self) -> None:
        for i in list(self.faults):
            ns = self.node_ns(i)
            _run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", TABLE], check=False)
        self.faults.clear()
        for i in list(range(1, self.n + 1)):
            _run(["ip", "-n", self.node_ns(i), "neigh", "flush", "all"], check=False)
        _run(["ip", "-n", self.client_ns, "neigh", "flush", "all"], check=False)

