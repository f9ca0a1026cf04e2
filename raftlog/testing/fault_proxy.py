"""FaultProxy: HTTP proxies on 127.0.0.1 in front of a cluster's brokers, with injectable faults.

Owns: one listening socket per broker, forwarding every request to that broker unchanged and
rewriting broker addresses in the answers (`http_port` fields next to a broker's host, and
`http://127.0.0.1:PORT` URLs such as `leader_url` hints), so a client that bootstraps through
the proxies keeps talking through them after every metadata refresh and leader hint. Faults:
`drop_produce_response(node)` lets the next `/v1/produce` to that broker *reach the broker*,
reads its answer, runs an optional hook (e.g. SIGKILL the broker) and then resets the client's
connection instead of answering, which is what a lost response looks like to the client.

For tests only: no production module imports this. Speaks just enough HTTP/1.1 for aiohttp's
client (Content-Length bodies, keep-alive). A broker that cannot be reached resets the client's
connection, as a dead broker would.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
import msgpack

from raftlog.client.transport import _decode
from raftlog.codec import batch as codec

HOST = "127.0.0.1"
# Long-polls (fetch, replica fetch) may wait up to a minute on the broker.
UPSTREAM_TIMEOUT_S = 120.0
MSGPACK = "application/msgpack"


@dataclass
class ProducedBatch:
    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int


@dataclass
class Exchange:
    """One proxied request and what became of it."""

    node: int
    method: str
    path: str
    batches: list[ProducedBatch] = field(default_factory=list)  # /v1/produce only
    status: int | None = None        # the broker's HTTP status (None: the broker was unreachable)
    answer: Any = None               # the broker's decoded answer (before rewriting)
    dropped: bool = False            # the answer was withheld and the connection reset
    held: bool = False               # the request waited in the proxy before going on
    error: str | None = None         # why the broker could not be reached


Hook = Callable[[Exchange], Awaitable[None]]
Match = Callable[[Exchange], bool]


class FaultProxy:
    """`proxy = FaultProxy({node_id: broker_http_port}); await proxy.start()`; bootstrap clients
    at `proxy.bootstrap`; `await proxy.close()` at the end."""

    def __init__(self, brokers: dict[int, int]) -> None:
        self.brokers = dict(brokers)                 # node -> real HTTP port
        self.ports: dict[int, int] = {}              # node -> proxy port
        self.exchanges: list[Exchange] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._session: aiohttp.ClientSession | None = None
        self._drops: dict[int, list[tuple[Match | None, Hook | None]]] = {}
        self._holds: dict[int, list[tuple[Match | None, asyncio.Event]]] = {}
        self._conns: set[asyncio.Task[Any]] = set()
        self.dropped = asyncio.Event()               # set after each withheld answer
        self.hook_errors: list[BaseException] = []

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> "FaultProxy":
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S),
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=True)
        for node in self.brokers:
            server = await asyncio.start_server(
                lambda r, w, node=node: self._serve(node, r, w), HOST, 0)
            self._servers.append(server)
            self.ports[node] = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for s in self._servers:
            await s.wait_closed()
        self._servers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "FaultProxy":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{p}" for p in self.ports.values())

    # -- faults -------------------------------------------------------------------------------
    def drop_produce_response(self, node: int, before_drop: Hook | None = None,
                              match: Match | None = None) -> None:
        """The next /v1/produce to `node` (that `match(exchange)` accepts, e.g. by its
        `batches`) reaches the broker, but its answer is withheld: after
        `await before_drop(exchange)` the client's connection is reset."""
        self._drops.setdefault(node, []).append((match, before_drop))

    def hold_produce_request(self, node: int, match: Match | None = None) -> asyncio.Event:
        """The next /v1/produce to `node` (that `match(exchange)` accepts) waits in the proxy,
        before reaching the broker, until the returned event is set: later requests overtake it
        (the client sends its in-flight requests on separate connections)."""
        release = asyncio.Event()
        self._holds.setdefault(node, []).append((match, release))
        return release

    def produced(self, node: int | None = None) -> list[tuple[Exchange, ProducedBatch]]:
        """Every produce batch seen (to `node`, or to any broker), in arrival order."""
        return [(x, b) for x in self.exchanges if node is None or x.node == node
                for b in x.batches]

    # -- serving ------------------------------------------------------------------------------
    async def _serve(self, node: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                req = await _read_request(reader)
                if req is None:
                    return
                method, path, headers, body = req
                if not await self._exchange(node, method, path, headers, body, writer):
                    writer.transport.abort()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            writer.transport.abort()
        finally:
            self._conns.discard(task)
            writer.close()

    async def _exchange(self, node: int, method: str, path: str, headers: dict[str, str],
                        body: bytes, writer: asyncio.StreamWriter) -> bool:
        """Forward one request; False when the client's connection must be reset."""
        x = Exchange(node, method, path)
        self.exchanges.append(x)
        if path == "/v1/produce" and body:
            x.batches = _produce_batches(body)
        holds = self._holds.get(node)
        held = next((r for r in holds or () if r[0] is None or r[0](x)), None)
        if path == "/v1/produce" and held is not None:
            holds.remove(held)  # type: ignore[union-attr]
            x.held = True
            await held[1].wait()
        assert self._session is not None
        fwd = {k: v for k, v in headers.items() if k in ("content-type", "accept")}
        url = f"http://{HOST}:{self.brokers[node]}{path}"
        try:
            async with self._session.request(method, url, data=body or None,
                                             headers=fwd) as resp:
                raw = await resp.read()
                x.status = resp.status
                ctype = resp.content_type
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            x.error = f"{type(exc).__name__}: {exc}"
            return False
        try:
            x.answer = _decode(raw, ctype)
        except ValueError:
            x.answer = None
        drops = self._drops.get(node)
        rule = next((r for r in drops or () if r[0] is None or r[0](x)), None)
        if path == "/v1/produce" and rule is not None:
            drops.remove(rule)  # type: ignore[union-attr]
            hook = rule[1]
            x.dropped = True
            if hook is not None:
                try:
                    await hook(x)
                except Exception as exc:  # surfaced to the test through hook_errors
                    self.hook_errors.append(exc)
            self.dropped.set()
            return False
        if x.answer is not None:
            raw = _encode(self._rewrite(x.answer), ctype)
        head = (f"HTTP/1.1 {x.status} X\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(raw)}\r\n\r\n").encode()
        writer.write(head + raw)
        await writer.drain()
        return True

    def _rewrite(self, v: Any) -> Any:
        """Broker addresses -> proxy addresses, anywhere in an answer."""
        if isinstance(v, dict):
            out = {k: self._rewrite(x) for k, x in v.items()}
            port = out.get("http_port")
            if isinstance(port, int):
                for node, real in self.brokers.items():
                    if port == real:
                        out["http_port"] = self.ports[node]
                        if "host" in out:
                            out["host"] = HOST
            return out
        if isinstance(v, list):
            return [self._rewrite(x) for x in v]
        if isinstance(v, str) and v.startswith("http://"):
            for node, real in self.brokers.items():
                for host in (HOST, "localhost"):
                    base = f"http://{host}:{real}"
                    if v == base or v.startswith(base + "/"):
                        return f"http://{HOST}:{self.ports[node]}" + v[len(base):]
        return v


async def _read_request(reader: asyncio.StreamReader
                        ) -> tuple[str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("chunked request bodies are not supported by FaultProxy")
    n = int(headers.get("content-length") or 0)
    body = await reader.readexactly(n) if n else b""
    return method, path, headers, body


def _produce_batches(body: bytes) -> list[ProducedBatch]:
    try:
        req = msgpack.unpackb(body, raw=False, strict_map_key=False)
        out = []
        for e in req.get("partitions") or ():
            h = codec.peek(e["batch"])
            out.append(ProducedBatch(e["topic"], e["partition"], h.producer_id, h.producer_epoch,
                                     h.base_sequence, h.record_count))
        return out
    except Exception:  # not ours to judge: the broker answers a malformed request
        return []



def _encode(v: Any, ctype: str) -> bytes:
    if ctype == MSGPACK:
        return msgpack.packb(v, use_bin_type=True)
    return json.dumps(v).encode()
