"""Per-link TCP proxies on 127.0.0.1: the loopback lab's network, where namespaces cannot be made.

Owns: one asyncio proxy per directed link and target port (node i -> node j's HTTP and Raft
ports, client -> node j's HTTP port), all on one event loop in one thread that `Links` starts
and stops; every proxied connection and its two pumps; and the link faults they obey:

- blocked (src, dst): bytes from src to dst stop in the proxy, as packets dropped by nft would;
  connections are held open without an answer (a blackhole, never a reset). A new connection
  reaches its target only once the link passes both ways (a dropped SYN or SYN-ACK), and one a
  client gives up on before that never reaches it. Bytes already in flight go on after the
  heal, as TCP retransmits them.
- loss (node, percent): each chunk to or from the node is "lost" with that probability and
  waits a retransmission timeout (0.2-0.6 s) before going on; a lost SYN waits 1 s. This is
  per read chunk, not per packet: an approximation of nft's numgen loss, in order and lossless.
- a target that refuses (its process is gone): the proxy resets the client and stops listening
  until the target accepts again, so a dead node's port refuses through the proxy too (the
  controller's liveness check counts only refusals).

Imports asyncio and the stdlib only: no raftlog, no other chaos module (LoopLab composes it).
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from typing import Any, Coroutine

HOST = "127.0.0.1"
CLIENT = 0                  # endpoint id of the workload and probe side
POLL_S = 0.05               # how often a held connection looks at the fault table
REFUSED_POLL_S = 0.1        # how often a proxy whose target refused tries it again
RTO_S = (0.2, 0.6)          # a lost chunk waits this long (Linux's minimum RTO is 0.2 s)
SYN_RTO_S = 1.0             # a lost SYN is retransmitted after 1 s
CHUNK = 256 * 1024


class Faults:
    """The fault table. Written only on the proxies' loop (Links applies changes there)."""

    def __init__(self) -> None:
        self.blocked: set[tuple[int, int]] = set()
        self.loss: dict[int, int] = {}

    def passes(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked

    def loss_p(self, src: int, dst: int) -> float:
        # a packet passes the sender's and the receiver's loss, as with one nft rule on each
        keep = (1 - self.loss.get(src, 0) / 100) * (1 - self.loss.get(dst, 0) / 100)
        return 1 - keep


def _reset(w: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a kernel answers for a port nobody listens on."""
    sock = w.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


class LinkProxy:
    """Link src -> dst: listens on HOST:port (ephemeral), forwards to HOST:target_port."""

    def __init__(self, src: int, dst: int, target_port: int, faults: Faults,
                 rng: random.Random, avoid: frozenset[int] = frozenset()) -> None:
        self.src, self.dst, self.target_port = src, dst, target_port
        self.faults = faults
        self.rng = rng
        self.avoid = avoid           # ports the lab hands to nodes: never take one of them
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()     # connections and the refusal watcher
        self._watching = False

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        while True:
            self._server = await asyncio.start_server(self._on_client, HOST, self.port,
                                                      reuse_address=True)
            if self.port:
                return
            self.port = self._server.sockets[0].getsockname()[1]
            if self.port not in self.avoid:
                return
            self._server.close()
            self.port = 0

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _lost(self, src: int, dst: int, wait_s: float | None = None) -> None:
        p = self.faults.loss_p(src, dst)
        if p and self.rng.random() < p:
            await asyncio.sleep(wait_s if wait_s is not None else self.rng.uniform(*RTO_S))

    def _on_client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self._spawn(self._serve(cr, cw))

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        f, a, b = self.faults, self.src, self.dst
        pending = bytearray()
        try:
            # the handshake needs both directions; until then hold the client, reading what it
            # sends so that we see it give up (then nothing ever reaches the target)
            while not (f.passes(a, b) and f.passes(b, a)):
                try:
                    chunk = await asyncio.wait_for(cr.read(CHUNK), POLL_S)
                except asyncio.TimeoutError:
                    continue
                if not chunk:
                    cw.close()
                    return
                pending += chunk
            await self._lost(a, b, SYN_RTO_S)
            try:
                ur, uw = await asyncio.open_connection(HOST, self.target_port)
            except ConnectionRefusedError:
                _reset(cw)
                self._refused()
                return
            except OSError:
                _reset(cw)
                return
            if pending:
                uw.write(bytes(pending))
            results = await asyncio.gather(self._pump(cr, uw, a, b), self._pump(ur, cw, b, a),
                                           return_exceptions=True)
            for w in (cw, uw):
                if any(isinstance(r, Exception) for r in results):
                    _reset(w)        # one side reset: pass the reset on
                else:
                    w.close()
        except asyncio.CancelledError:
            _reset(cw)
            raise

    async def _pump(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, a: int, b: int) -> None:
        try:
            while data := await r.read(CHUNK):
                while not self.faults.passes(a, b):
                    await asyncio.sleep(POLL_S)
                await self._lost(a, b)
                w.write(data)
                await w.drain()
            if w.can_write_eof():
                w.write_eof()
        except asyncio.CancelledError:
            w.transport.abort()
            raise

    # -- a dead target: refuse as it would ----------------------------------------------------
    def _refused(self) -> None:
        if self._watching or self._server is None:
            return
        self._watching = True
        self._server.close()
        self._spawn(self._watch_target())

    async def _watch_target(self) -> None:
        try:
            while True:
                await asyncio.sleep(REFUSED_POLL_S)
                try:
                    _, w = await asyncio.open_connection(HOST, self.target_port)
                except OSError:
                    continue
                w.close()
                try:
                    await self.start()          # same port again
                    return
                except OSError:
                    continue                    # rebinding raced a closing socket: next time
        finally:
            self._watching = False


class Links:
    """All link proxies of a lab on one event loop in a thread of their own.

    `links = Links(); links.start(); port = links.add(src, dst, target_port)`; faults with
    `block`, `set_loss`, `heal`; `links.stop()` closes every proxy, cancels every connection
    and joins the thread. Each call returns once the change is in effect on the proxies' loop.
    """

    def __init__(self, seed: int | None = None, avoid: frozenset[int] = frozenset()) -> None:
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.avoid = avoid
        self.proxies: list[LinkProxy] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-links",
                                        daemon=True)
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 10.0) -> Any:
        assert self._loop is not None, "Links.start() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def add(self, src: int, dst: int, target_port: int) -> int:
        """A proxy for link src -> dst in front of HOST:target_port; returns its port."""
        p = LinkProxy(src, dst, target_port, self.faults, self.rng, self.avoid)
        self._call(p.start())
        self.proxies.append(p)
        return p.port

    def block(self, src: int, dst: int) -> None:
        async def go() -> None:
            self.faults.blocked.add((src, dst))
        self._call(go())

    def set_loss(self, node: int, percent: int) -> None:
        async def go() -> None:
            self.faults.loss[node] = percent
        self._call(go())

    def heal(self) -> None:
        async def go() -> None:
            self.faults.blocked.clear()
            self.faults.loss.clear()
        self._call(go())

    def stop(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def close_all() -> None:
            await asyncio.gather(*(p.close() for p in self.proxies), return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            loop.close()
            self.proxies.clear()
