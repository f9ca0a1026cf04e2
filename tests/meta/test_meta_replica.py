"""MetaReplica on real pysyncobj: 3 replicas on 127.0.0.1 (ports 20000-32000, checked free),
fast timing. Goal: proposals commit through leader and followers, every node converges on the
same view, failures surface as clear raftlog errors within their deadline (never a hang), and
journal + dump bring the whole state back after a full restart. Every wait has a deadline."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metatest_util import free_ports, wait_until
from raftlog import errors
from raftlog.meta import commands as C
from raftlog.meta.replica import DUMP_FILE, MetaReplica
from raftlog.meta.state import snapshot_bytes

HERE = Path(__file__).parent
REPO = HERE.parent.parent
PROPOSE_S = 3.0
UNAVAILABLE = (errors.for_code("NO_QUORUM"), errors.for_code("REQUEST_TIMED_OUT"))


class Nodes:
    """Replicas of one cluster in this process; whatever is still running is closed at the end."""

    def __init__(self, tmp: Path, n: int = 3, password: str | None = None) -> None:
        self.tmp = tmp
        self.peers = {i + 1: ("127.0.0.1", p) for i, p in enumerate(free_ports(n))}
        self.password = password
        self.live: dict[int, MetaReplica] = {}

    def start(self, *ids: int, **kw) -> None:
        for i in ids or tuple(self.peers):
            self.live[i] = MetaReplica(i, self.peers, str(self.tmp / f"node{i}"),
                                       asyncio.get_running_loop(), password=self.password,
                                       fast=True, **kw)

    async def stop(self, *ids: int) -> None:
        for i in ids:
            await self.live.pop(i).aclose()

    async def leader(self, timeout_s: float = 10.0) -> int:
        """Wait until every live replica names the same leader, which says it leads."""
        def agreed() -> bool:
            ids = {r.leader_id for r in self.live.values()}
            return (len(ids) == 1 and None not in ids and next(iter(ids)) in self.live
                    and self.live[next(iter(ids))].is_leader)
        await wait_until(agreed, timeout_s, "one agreed leader")
        return next(iter(self.live.values())).leader_id  # type: ignore[return-value]

    async def converged(self, timeout_s: float = 5.0) -> int:
        """Wait until every live replica's view has the same version and contents."""
        def same() -> bool:
            snaps = {snapshot_bytes(r.view) for r in self.live.values()}
            return len(snaps) == 1 and len({r.version for r in self.live.values()}) == 1
        await wait_until(same, timeout_s, "all views equal")
        return next(iter(self.live.values())).version

    async def close(self) -> None:
        for i in list(self.live):
            await self.stop(i)


@pytest.fixture
async def nodes(tmp_path):
    made: list[Nodes] = []

    def make(**kw) -> Nodes:
        made.append(Nodes(tmp_path / f"c{len(made)}", **kw))
        return made[-1]
    yield make
    for c in made:
        await c.close()


async def _brokers_and_topic(r: MetaReplica) -> None:
    for b in (1, 2, 3):
        C.unwrap(await r.propose(C.register_broker(b, f"h{b}", 9000 + b, "i", 1), PROPOSE_S))
        C.unwrap(await r.propose(C.unfence_broker(b, b), PROPOSE_S))
    C.unwrap(await r.propose(C.create_topic("t", "T", [[1, 2, 3], [2, 3, 1]]), PROPOSE_S))


async def test_propose_via_follower_and_leader_converges(nodes) -> None:
    c = nodes()
    c.start()
    leader = await c.leader()
    follower = next(i for i in c.live if i != leader)
    seen: list[tuple[int, int | None]] = []
    c.live[follower].add_listener(lambda v: seen.append((v.version, v.controller_id)))

    # Via a follower: the result arrives after this node applied it, so its view has it.
    res = await c.live[follower].propose(C.register_broker(1, "h1", 9001, "i", 7), PROPOSE_S)
    assert res == ("ok", {"broker_id": 1, "broker_epoch": 1, "duplicate": False, "changed": []})
    assert c.live[follower].view.broker(1).epoch == 1
    # Via the leader.
    await _brokers_and_topic(c.live[leader])
    # A rejection travels back as a result, not an exception.
    res = await c.live[follower].propose(C.create_topic("t", "other", [[1]]), PROPOSE_S)
    assert res[:2] == ("error", "TOPIC_ALREADY_EXISTS")

    version = await c.converged()
    for r in c.live.values():
        v = r.view
        assert v.version == version and v.controller_id == leader
        assert v.partition("t", 1).leader == 2 and v.partition("t", 0).isr == (1, 2, 3)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen) and seen[-1][0] == version
    # A barrier from a follower returns a view at least as new as everything before it.
    view = await c.live[follower].barrier(PROPOSE_S)
    assert view.version == version + 1
    assert c.live[follower].replicated_attributes() == ["state"]


async def test_junk_is_refused_before_it_reaches_the_log(nodes) -> None:
    c = nodes()
    c.start()
    leader = await c.leader()
    before = (await c.live[leader].barrier(PROPOSE_S)).version
    with pytest.raises(errors.InvalidRequestError):
        await c.live[leader].propose(b"\x93\x01\xa4junk\x80", PROPOSE_S)
    assert (await c.live[leader].barrier(PROPOSE_S)).version == before + 1


async def test_leader_failover_is_seen_and_writes_resume(nodes) -> None:
    c = nodes()
    c.start()
    old = await c.leader()
    changes: list[tuple[int | None, bool]] = []
    survivor = next(i for i in c.live if i != old)
    c.live[survivor].add_leader_listener(lambda lid, me: changes.append((lid, me)))
    await _brokers_and_topic(c.live[old])
    await c.stop(old)
    new = await c.leader()
    assert new != old and changes and changes[-1][0] == new
    res = await c.live[survivor].propose(C.fence_broker(old, old), PROPOSE_S)
    assert C.is_ok(res)
    await c.converged()
    for r in c.live.values():
        assert r.view.controller_id == new and not r.view.is_active(old)


async def test_quorum_lost_fails_within_the_deadline(nodes) -> None:
    c = nodes()
    c.start()
    leader = await c.leader()
    C.unwrap(await c.live[leader].propose(C.noop(), PROPOSE_S))
    survivor = next(i for i in c.live if i != leader)
    await c.stop(*[i for i in list(c.live) if i != survivor])
    r = c.live[survivor]
    for _ in range(3):
        t0 = time.monotonic()
        with pytest.raises(UNAVAILABLE) as exc:
            await r.propose(C.noop(), 1.0)
        assert time.monotonic() - t0 < 1.5
        assert exc.value.retriable and exc.value.hint["outcome"] in ("unknown", "not_applied")
    with pytest.raises(errors.for_code("REQUEST_TIMED_OUT")):
        await r.wait_for_version(r.version + 1, 0.2)
    await wait_until(lambda: not r.has_quorum and r.leader_id is None, 5, "quorum loss seen")


async def test_lone_node_refuses_at_once(nodes) -> None:
    c = nodes()
    c.start(1)
    t0 = time.monotonic()
    with pytest.raises(errors.for_code("NO_QUORUM")) as exc:
        await c.live[1].propose(C.noop(), 5.0)
    assert time.monotonic() - t0 < 0.5 and exc.value.hint["outcome"] == "not_applied"


async def test_paused_majority_times_out_instead_of_hanging(nodes, tmp_path) -> None:
    """SIGSTOP keeps the peers' TCP connections open, so this node still believes it has a
    quorum: the proposal must end by its deadline anyway (pysyncobj.md pitfall 5)."""
    c = nodes()
    procs = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    args = [f"{i}={p}" for i, (_, p) in c.peers.items()]
    try:
        for i in (2, 3):
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE / "metatest_node.py"), str(i),
                 str(tmp_path / f"proc{i}"), *args], env=env, stdout=subprocess.PIPE))
        for p in procs:
            assert p.stdout.readline().strip() == b"bound"
        c.start(1)
        r = c.live[1]
        await wait_until(lambda: r.leader_id is not None and r.is_ready, 10, "a leader")
        C.unwrap(await r.propose(C.noop(), PROPOSE_S))
        for p in procs:
            os.kill(p.pid, signal.SIGSTOP)
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(UNAVAILABLE):
                await r.propose(C.noop(), 1.0)
            assert time.monotonic() - t0 < 1.5
    finally:
        for p in procs:
            p.kill()
            os.kill(p.pid, signal.SIGCONT) if p.poll() is None else None
            p.wait(10)


async def test_full_restart_from_journal_and_dump(nodes) -> None:
    c = nodes()
    c.start()
    leader = await c.leader()
    await _brokers_and_topic(c.live[leader])
    for i in range(20):
        C.unwrap(await c.live[leader].propose(C.allocate_producer_ids(10), PROPOSE_S))
    await c.converged()
    dumps = [c.tmp / f"node{i}" / DUMP_FILE for i in c.live]
    for r in c.live.values():
        r.force_compaction()
    await wait_until(lambda: all(d.exists() for d in dumps), 10, "dump files on every node")
    # More entries after the dump: these exist only in the journals.
    C.unwrap(await c.live[leader].propose(C.fence_broker(3, 3), PROPOSE_S))
    C.unwrap(await c.live[leader].propose(C.alter_topic_config("t", {"a": "b"}), PROPOSE_S))
    version = await c.converged()
    snap = snapshot_bytes(c.live[leader].view)
    await c.close()

    c.start()
    await wait_until(lambda: all(r.version == version for r in c.live.values()), 10,
                     f"every node back at version {version}")
    assert {snapshot_bytes(r.view) for r in c.live.values()} == {snap}
    leader = await c.leader()
    res = C.unwrap(await c.live[leader].propose(C.allocate_producer_ids(1), PROPOSE_S))
    assert res["start"] == 200
    await c.converged()


async def test_follower_restart_catches_up(nodes) -> None:
    c = nodes()
    c.start()
    leader = await c.leader()
    follower = next(i for i in c.live if i != leader)
    await _brokers_and_topic(c.live[leader])
    await c.converged()
    await c.stop(follower)
    for _ in range(10):
        C.unwrap(await c.live[leader].propose(C.noop(), PROPOSE_S))
    c.start(follower)
    version = await c.converged(10)
    assert c.live[follower].version == version and c.live[follower].view.topic("t") is not None
    await wait_until(lambda: c.live[follower].is_ready, 5, "follower ready")


async def test_password_cluster_on_loopback(nodes) -> None:
    c = nodes(n=1, password="s3cret")
    c.start()
    await c.leader()
    res = C.unwrap(await c.live[1].propose(C.register_broker(1, "h", 1, "i", 0), PROPOSE_S))
    assert res["broker_epoch"] == 1


@pytest.mark.parametrize("peers", [{1: ("10.1.2.3", 20001)},
                                   {1: ("127.0.0.1", 20001), 2: ("192.168.7.7", 20002)},
                                   {1: ("0.0.0.0", 20001)}, {1: ("meta.example.com", 20001)}])
async def test_no_password_off_loopback_is_refused(tmp_path, peers) -> None:
    with pytest.raises(errors.ConfigError, match="password"):
        MetaReplica(1, peers, str(tmp_path), asyncio.get_running_loop())
    assert not (tmp_path / "raft.journal").exists()


async def test_busy_port_is_a_clear_error(tmp_path) -> None:
    port = free_ports(1)[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        t0 = time.monotonic()
        with pytest.raises(errors.ConfigError, match="cannot bind"):
            MetaReplica(1, {1: ("127.0.0.1", port)}, str(tmp_path), asyncio.get_running_loop())
        assert time.monotonic() - t0 < 5


async def test_unknown_node_id_is_refused(tmp_path) -> None:
    with pytest.raises(errors.ConfigError, match="not among"):
        MetaReplica(4, {1: ("127.0.0.1", 20001)}, str(tmp_path), asyncio.get_running_loop())


async def test_peers_dialled_through_proxies_keep_their_identities(nodes) -> None:
    """With `dial`, each replica connects to a peer at another address (a proxy, here one
    forwarder per directed link) while the peers still know each other by host:raft_port."""
    c = nodes(password="s3cret")
    used: dict[tuple[int, int], int] = {}
    servers = []

    async def forwarder(i: int, j: int) -> int:
        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            finally:
                w.close()

        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            used[(i, j)] = used.get((i, j), 0) + 1
            ur, uw = await asyncio.open_connection(*c.peers[j])
            await asyncio.gather(pipe(r, uw), pipe(ur, w), return_exceptions=True)
        srv = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        servers.append(srv)
        return srv.sockets[0].getsockname()[1]

    dial = {i: {j: ("127.0.0.1", await forwarder(i, j)) for j in c.peers if j != i}
            for i in c.peers}
    try:
        for i in c.peers:
            c.live[i] = MetaReplica(i, c.peers, str(c.tmp / f"node{i}"),
                                    asyncio.get_running_loop(), password=c.password,
                                    fast=True, dial=dial[i])
        leader = await c.leader()
        await _brokers_and_topic(c.live[leader])
        await c.converged()
        # pysyncobj keeps one connection per pair, dialled by the side whose address sorts
        # higher: three pairs, three links used, none bypassed
        assert len(used) == 3 and len({frozenset(k) for k in used}) == 3, used
    finally:
        await c.close()
        for srv in servers:
            srv.close()
