"""The connection to a cluster: bootstrap, metadata refresh, routing to leaders, admin calls.

Owns: the bootstrap list, one `Transport` (one aiohttp session), one `ClusterMetadata`, and the
background task that refreshes metadata when asked (after NOT_LEADER_OR_FOLLOWER, a connection
error, an unknown topic) or when it is older than `metadata_max_age_ms`. The Producer, Consumer
and Admin each own one Client and close it on stop. Imports errors, the client's own modules and
(through transport.py) aiohttp; never raftlog.server/meta/storage/replication.

Bootstrap never hangs: every attempt has a timeout, and `start()` gives up after
`bootstrap_timeout_ms` with NoBrokersAvailableError naming the addresses and the last error
(connection refused, NO_QUORUM, ...).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Iterable

from raftlog.aio import wait_event, within
from raftlog.client.errors import NoBrokersAvailableError
from raftlog.client.metadata import ClusterMetadata
from raftlog.client.transport import Transport
from raftlog.errors import ErrorCode, RaftlogError, error, from_wire

log = logging.getLogger("raftlog.client")

DEFAULT_PORT = 9091
# Backoff between bootstrap rounds grows from retry_backoff_ms up to this.
BOOTSTRAP_BACKOFF_MS_MAX = 1_000
# Admin errors that mean "not applied, try again (maybe elsewhere)".
_ADMIN_RETRY = {ErrorCode.NO_QUORUM, ErrorCode.NOT_CONTROLLER, ErrorCode.LEADER_NOT_AVAILABLE,
                ErrorCode.BROKER_NOT_AVAILABLE, ErrorCode.COORDINATOR_NOT_AVAILABLE}


def parse_bootstrap(servers: str | Iterable[str]) -> list[str]:
    """"host:port,host:port" (or a list; "http://" optional; port defaults to 9091) -> URLs."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    urls = []
    for raw in items:
        s = raw.strip().rstrip("/")
        if not s:
            continue
        if s.startswith(("http://", "https://")):
            scheme, _, rest = s.partition("://")
        else:
            scheme, rest = "http", s
        if rest.startswith("["):  # [ipv6]:port
            host, _, port = rest[1:].partition("]")
            port = port.lstrip(":")
            host = f"[{host}]"
        else:
            host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if not port:
            port = str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise error(ErrorCode.INVALID_REQUEST,
                        f"bad bootstrap address {raw.strip()!r} (expected host:port)")
        urls.append(f"{scheme}://{host}:{int(port)}")
    if not urls:
        raise error(ErrorCode.INVALID_REQUEST, "empty bootstrap list (expected host:port,...)")
    return urls


class Client:
    """Bootstrap + metadata + routing. `await start()` before use, `await close()` after."""

    def __init__(self, bootstrap_servers: str | Iterable[str], *,
                 request_timeout_ms: int = 30_000,
                 bootstrap_timeout_ms: int = 10_000,
                 metadata_max_age_ms: int = 300_000,
                 retry_backoff_ms: int = 100,
                 transport: Transport | None = None) -> None:
        self.bootstrap_urls = parse_bootstrap(bootstrap_servers)
        self.request_timeout_ms = request_timeout_ms
        self.bootstrap_timeout_ms = bootstrap_timeout_ms
        self.metadata_max_age_ms = metadata_max_age_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.transport = transport or Transport()
        self.metadata = ClusterMetadata()
        self._topics: set[str] = set()
        self._update_requested = asyncio.Event()
        self._update_waiters: list[asyncio.Future[bool]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._last_good_url: str | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.transport.start()
        try:
            await self.bootstrap()
        except BaseException:
            await self.transport.close()
            raise
        self._sync_task = asyncio.get_running_loop().create_task(
            self._sync_metadata(), name="raftlog-metadata")

    async def close(self) -> None:
        self._closed = True
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
            self._sync_task = None
        for f in self._update_waiters:
            if not f.done():
                f.set_result(False)
        self._update_waiters.clear()
        await self.transport.close()

    async def bootstrap(self) -> None:
        """Fetch the first metadata from any bootstrap address, retrying until the deadline."""
        deadline = time.monotonic() + self.bootstrap_timeout_ms / 1000
        backoff_ms = float(self.retry_backoff_ms)
        last: RaftlogError | None = None
        while True:
            for url in self.bootstrap_urls:
                remaining_ms = (deadline - time.monotonic()) * 1000
                if remaining_ms <= 0:
                    break
                try:
                    await self._refresh_from(url, min(self.request_timeout_ms, remaining_ms))
                    return
                except RaftlogError as exc:
                    last = exc
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                break
            await asyncio.sleep(min(backoff_ms, remaining_ms) / 1000)
            backoff_ms = min(backoff_ms * 2, BOOTSTRAP_BACKOFF_MS_MAX)
        addrs = ",".join(u.split("://", 1)[1] for u in self.bootstrap_urls)
        raise NoBrokersAvailableError(
            f"could not bootstrap from {addrs} within {self.bootstrap_timeout_ms} ms"
            + (f"; last error: {last}" if last else "")
            + "; check the address and that the cluster is running")

    # -- metadata ---------------------------------------------------------------------------
    def add_topic(self, topic: str) -> None:
        """Track `topic` in future refreshes; asks for a refresh when it is not known yet."""
        if topic not in self._topics:
            self._topics.add(topic)
            if self.metadata.partition_count(topic) is None:
                self.request_update()

    def request_update(self) -> asyncio.Future[bool]:
        """Ask the background task for a refresh; the future says whether it succeeded."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._closed:
            fut.set_result(False)
            return fut
        self._update_waiters.append(fut)
        self._update_requested.set()
        return fut

    async def force_metadata_update(self) -> bool:
        return await self.request_update()

    async def wait_for_topic(self, topic: str, timeout_ms: float) -> int:
        """Partition count of `topic`, refreshing until it appears or `timeout_ms` passes."""
        self.add_topic(topic)
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            n = self.metadata.partition_count(topic)
            if n is not None:
                return n
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                err = self.metadata.topic_error(topic)
                what = "does not exist" if err is not None else "is not in the cluster metadata"
                raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                            f"topic '{topic}' {what} (waited {timeout_ms:.0f} ms); create it "
                            f"first (raftlog topic create {topic})")
            try:
                await within(asyncio.shield(self.request_update()), remaining)
            except TimeoutError:
                pass

    async def _sync_metadata(self) -> None:
        """Owned by the Client: refresh on request (rate-limited by retry_backoff_ms) or age."""
        max_age_s = self.metadata_max_age_ms / 1000
        while True:
            await wait_event(self._update_requested, max_age_s)
            self._update_requested.clear()
            waiters, self._update_waiters = self._update_waiters, []
            ok = True
            try:
                await self.refresh()
            except RaftlogError as exc:
                ok = False
                log.debug("metadata refresh failed: %s", exc)
            except Exception:  # a bug; keep refreshing so waiters are never stranded
                ok = False
                log.exception("metadata refresh crashed")
            for f in waiters:
                if not f.done():
                    f.set_result(ok)
            await asyncio.sleep(self.retry_backoff_ms / 1000)

    async def refresh(self) -> None:
        """One metadata round trip: the last good broker first, then the others, then bootstrap."""
        candidates = self._candidate_urls()
        last: RaftlogError | None = None
        for url in candidates:
            try:
                await self._refresh_from(url, self.request_timeout_ms)
                return
            except RaftlogError as exc:
                last = exc
        assert last is not None
        raise last

    async def _refresh_from(self, url: str, timeout_ms: float) -> None:
        body = {"topics": sorted(self._topics)}
        answer = await self.transport.post_msgpack(url, "/v1/metadata", body, timeout_ms)
        if not isinstance(answer, dict) or not answer.get("brokers"):
            raise error(ErrorCode.NO_QUORUM,
                        f"{url} knows no brokers yet (cluster starting or without quorum)")
        self.metadata.update(answer, time.monotonic())
        self._last_good_url = url

    def _candidate_urls(self) -> list[str]:
        known = list(self.metadata.brokers.values())
        random.shuffle(known)  # spread metadata load over the brokers
        out: list[str] = []
        for url in ([self._last_good_url] if self._last_good_url else []) + known \
                + self.bootstrap_urls:
            if url not in out:
                out.append(url)
        return out

    # -- requests ---------------------------------------------------------------------------
    async def send(self, node_id: int, path: str, body: dict[str, Any],
                   timeout_ms: float | None = None) -> Any:
        """A msgpack data-plane request to broker `node_id` (a partition leader)."""
        url = self.metadata.broker_url(node_id)
        if url is None:
            raise error(ErrorCode.BROKER_NOT_AVAILABLE,
                        f"broker {node_id} is not in the cluster metadata")
        return await self.transport.post_msgpack(
            url, path, body, self.request_timeout_ms if timeout_ms is None else timeout_ms)

    async def send_any(self, path: str, body: dict[str, Any],
                       timeout_ms: float | None = None) -> Any:
        """A msgpack request any broker can answer (init-producer-id); fails over on errors."""
        return await self._any(lambda url, t: self.transport.post_msgpack(url, path, body, t),
                               timeout_ms, idempotent=True)

    async def admin(self, method: str, path: str, body: Any = None,
                    timeout_ms: float | None = None) -> Any:
        """A JSON admin call on any broker (writes are forwarded to the controller)."""
        return await self._any(
            lambda url, t: self.transport.request_json(method, url, path, body, t),
            timeout_ms, idempotent=method == "GET")

    async def list_offsets(self, timestamps: dict[tuple[str, int], int],
                           timeout_ms: float | None = None) -> dict[tuple[str, int], tuple[int, int]]:
        """`/v1/list-offsets` on each partition's leader: {(topic, partition): timestamp} ->
        {(topic, partition): (offset, timestamp or -1)}. Timestamp -1 = latest (the high
        watermark), -2 = earliest; offset -1 = no record that new.

        Leader moves and unknown partitions are retried after a metadata refresh until the
        timeout; other errors are raised.
        """
        total_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + total_ms / 1000
        pending = dict(timestamps)
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, _ in pending:
            self.add_topic(topic)
        last: RaftlogError | None = None
        while pending:
            by_node: dict[int, list[tuple[str, int]]] = {}
            for tp in pending:
                by_node.setdefault(self.metadata.leader_for(*tp), []).append(tp)
            for node, tps in by_node.items():
                if node < 0:
                    last = error(ErrorCode.LEADER_NOT_AVAILABLE,
                                 f"no known leader for {', '.join(f'{t}-{p}' for t, p in tps)}")
                    continue
                body = {"partitions": [{"topic": t, "partition": p, "timestamp": pending[(t, p)]}
                                       for t, p in tps]}
                remaining_ms = max(1.0, (deadline - time.monotonic()) * 1000)
                try:
                    answer = await self.send(node, "/v1/list-offsets", body,
                                             min(self.request_timeout_ms, remaining_ms))
                except RaftlogError as exc:
                    if not exc.retriable:
                        raise
                    last = exc
                    continue
                for e in (answer or {}).get("partitions") or ():
                    tp = (e.get("topic"), e.get("partition"))
                    if tp not in pending:
                        continue
                    if e.get("error"):
                        exc = from_wire(e)
                        if not exc.retriable:
                            raise exc
                        last = exc
                        if exc.hint:
                            self.metadata.apply_leader_hint(tp[0], tp[1], exc.hint)
                        continue
                    out[tp] = (int(e["offset"]), int(e.get("timestamp", -1)))
                    del pending[tp]
            if not pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                assert last is not None
                raise type(last)(f"list offsets: {last.message} (gave up after {total_ms:.0f} ms)",
                                 last.hint)
            try:
                await within(asyncio.shield(self.request_update()), remaining)
            except TimeoutError:
                pass
        return out

    async def _any(self, call: Any, timeout_ms: float | None, *, idempotent: bool) -> Any:
        """Try brokers in turn; retry "not applied" errors with backoff until the deadline."""
        total_ms = self.request_timeout_ms if timeout_ms is None else timeout_ms
        deadline = time.monotonic() + total_ms / 1000
        backoff_ms = float(self.retry_backoff_ms)
        last: RaftlogError | None = None
        while True:
            for url in self._candidate_urls():
                remaining_ms = (deadline - time.monotonic()) * 1000
                if remaining_ms <= 0:
                    break
                try:
                    result = await call(url, remaining_ms)
                    self._last_good_url = url
                    return result
                except RaftlogError as exc:
                    last = exc
                    retry = exc.code in _ADMIN_RETRY or (
                        idempotent and exc.code is ErrorCode.REQUEST_TIMED_OUT)
                    if not retry:
                        raise
                    hinted = exc.hint.get("controller_url")
                    if hinted:
                        self._last_good_url = str(hinted).rstrip("/")
                        break
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                if last is None:
                    raise error(ErrorCode.REQUEST_TIMED_OUT,
                                f"no broker tried within {total_ms:.0f} ms")
                if last.retriable:
                    raise type(last)(f"{last.message} (gave up after {total_ms:.0f} ms)",
                                     last.hint)
                raise last
            wait_ms = (last.hint.get("retry_after_ms") if last else None) or backoff_ms
            await asyncio.sleep(min(float(wait_ms), remaining_ms) / 1000)
            backoff_ms = min(backoff_ms * 2, BOOTSTRAP_BACKOFF_MS_MAX)
