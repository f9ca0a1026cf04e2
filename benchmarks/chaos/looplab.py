"""Loopback lab: the fallback where network namespaces cannot be made (not root, no `ip netns`).

Every node runs on 127.0.0.1 with ports of its own and reaches each peer only through a link
proxy of its own (benchmarks/chaos/linkproxy.py): node i's config file names peer j at j's
real identity (host, http_port, raft_port) plus `dial_http_port`/`dial_raft_port`, the ports of
the i -> j proxies. Each node registers (`advertised_http_port`) the port of its client -> node
proxy, so the workload and the probe, which learn broker addresses from metadata, go through
client links too. Network faults are link faults in those proxies, with NetLab's interface
(isolate, partition, drop_between, drop_from, loss, heal, faults).

What it cannot fake: a blackholed link still accepts connections (the proxy's kernel does), and
loss is per read chunk; see linkproxy.py. Owns the Links thread (stopped in down()). Imports
linkproxy and raftlog.testing.cluster.free_ports only; never runs `ip` or `nft`.
"""
from __future__ import annotations

from benchmarks.chaos.linkproxy import CLIENT, Links
from benchmarks.chaos.netlab import TopologyFaults


class LoopLab(TopologyFaults):
    """`lab = LoopLab(3); lab.up(); ...; lab.down()`. Node i listens on 127.0.0.1:ports[i]."""

    family = "loopback"
    client_ns = None
    client_addr = "127.0.0.1"

    def __init__(self, n: int, seed: int | None = None):
        self.n = n
        self.seed = seed
        self.links: Links | None = None
        self.ports: dict[int, tuple[int, int]] = {}        # node -> (http, raft) it listens on
        self.client_ports: dict[int, int] = {}             # node -> client -> node proxy port
        self.dial: dict[int, dict[int, tuple[int, int]]] = {}   # i -> j -> (http, raft) proxies
        self.faults: dict[int, list[str]] = {}             # node -> faults (as NetLab's rules)

    def up(self) -> None:
        from raftlog.testing.cluster import free_ports
        ps = free_ports(2 * self.n)
        nodes = range(1, self.n + 1)
        self.ports = {i: (ps[i - 1], ps[self.n + i - 1]) for i in nodes}
        self.links = Links(self.seed, avoid=frozenset(ps))
        self.links.start()
        for j in nodes:
            self.client_ports[j] = self.links.add(CLIENT, j, self.ports[j][0])
            for i in nodes:
                if i != j:
                    self.dial.setdefault(i, {})[j] = (self.links.add(i, j, self.ports[j][0]),
                                                      self.links.add(i, j, self.ports[j][1]))

    def down(self) -> None:
        if self.links is not None:
            self.links.stop()
            self.links = None

    def addr(self, i: int) -> str:
        return "127.0.0.1"

    def node_ns(self, i: int) -> None:
        return None

    def exec_prefix(self, ns: str | None) -> list[str]:
        return []

    # -- link faults (same names and meaning as NetLab's nft rules) ---------------------------
    def _note(self, i: int, what: str) -> None:
        self.faults.setdefault(i, []).append(what)

    def drop_from(self, src: int, dst: int) -> None:
        """One-way cut: bytes src -> dst stop (on every connection between them)."""
        assert self.links is not None
        self.links.block(src, dst)
        self._note(src, f"out: to {dst} blocked")
        self._note(dst, f"in: from {src} blocked")

    def block_clients(self, i: int) -> None:
        assert self.links is not None
        self.links.block(i, CLIENT)
        self.links.block(CLIENT, i)
        self._note(i, "client links blocked")

    def loss(self, i: int, percent: int) -> None:
        """Loss of `percent` % of node i's chunks, to and from peers and clients."""
        assert self.links is not None
        self.links.set_loss(i, percent)
        self._note(i, f"loss {percent}%")

    def heal(self) -> None:
        if self.links is not None:
            self.links.heal()
        self.faults.clear()
