"""HTTP to brokers: one aiohttp ClientSession per client, msgpack or JSON bodies, errors mapped.

Owns: the session and its connection pool, per-request timeouts, and turning every failure into
a `RaftlogError` so callers only ever see raftlog errors:

- an error answer (`{"error", "message", "hint"}`) -> the class of that code (`from_wire`);
- a refused/reset connection or a connect timeout -> BrokerNotAvailableError (retriable, and it
  invalidates metadata: the broker may be gone);
- no answer within the request timeout -> RequestTimedOutError (retriable; the request may or
  may not have been applied, which is why the producer is idempotent);
- any other non-2xx answer -> UnknownServerError with the status and the first bytes.

This is the only client module that imports aiohttp. It must not import raftlog.server, meta,
storage or replication.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgpack

from raftlog.errors import ErrorCode, RaftlogError, error, from_wire

MSGPACK = "application/msgpack"
JSON = "application/json"

# Connections kept per broker: enough for max_in_flight produce requests plus fetches and
# metadata, small enough that a client never floods a broker with sockets.
CONNECTIONS_PER_HOST_MAX = 32
# Dialling a broker that does not exist should fail fast even when the request timeout is long.
CONNECT_TIMEOUT_MS_MAX = 5_000
# How much of a non-raftlog error body goes into the message.
ERROR_SNIPPET_CHARS = 200

_MSGPACK_HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
_JSON_HEADERS = {"Content-Type": JSON, "Accept": JSON}


class Transport:
    """aiohttp client; `start()` inside a running loop, `close()` when done."""

    def __init__(self, *, connections_per_host: int = CONNECTIONS_PER_HOST_MAX) -> None:
        self._connections_per_host = connections_per_host
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self._connections_per_host,
                                             ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector,
                                                  timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def closed(self) -> bool:
        return self._session is None

    async def post_msgpack(self, url: str, path: str, body: dict[str, Any],
                           timeout_ms: float) -> Any:
        """POST a msgpack body to `url + path`; the decoded msgpack answer, or a RaftlogError."""
        data = msgpack.packb(body, use_bin_type=True)
        return await self._request("POST", url, path, data, _MSGPACK_HEADERS, timeout_ms)

    async def request_json(self, method: str, url: str, path: str, body: Any = None,
                           timeout_ms: float = 30_000) -> Any:
        """An admin call with a JSON body (or none); the decoded JSON answer, or a RaftlogError."""
        data = None if body is None else json.dumps(body).encode()
        return await self._request(method, url, path, data, _JSON_HEADERS, timeout_ms)

    async def _request(self, method: str, url: str, path: str, data: bytes | None,
                       headers: dict[str, str], timeout_ms: float) -> Any:
        session = self._session
        if session is None:
            raise error(ErrorCode.INVALID_REQUEST, "client transport is not started (or closed)")
        timeout_s = max(timeout_ms, 1) / 1000
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(timeout_s, CONNECT_TIMEOUT_MS_MAX / 1000))
        where = f"{url}{path}"
        try:
            async with session.request(method, where, data=data, headers=headers,
                                       timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
                ctype = resp.content_type
        except aiohttp.ConnectionTimeoutError:
            raise error(ErrorCode.BROKER_NOT_AVAILABLE,
                        f"cannot connect to broker at {url} (no answer to connect within "
                        f"{min(timeout_ms, CONNECT_TIMEOUT_MS_MAX):.0f} ms)") from None
        except asyncio.TimeoutError:
            raise error(ErrorCode.REQUEST_TIMED_OUT,
                        f"no answer from {where} within {timeout_ms:.0f} ms") from None
        except aiohttp.ClientConnectorError as exc:
            why = "connection refused" if isinstance(exc.os_error, ConnectionRefusedError) \
                else (exc.os_error.strerror or str(exc.os_error))
            raise error(ErrorCode.BROKER_NOT_AVAILABLE,
                        f"cannot connect to broker at {url}: {why}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise error(ErrorCode.BROKER_NOT_AVAILABLE,
                        f"lost connection to broker at {url}: "
                        f"{str(exc) or type(exc).__name__}") from None
        try:
            body = _decode(raw, ctype)
        except ValueError:
            if status < 400:
                raise error(ErrorCode.UNKNOWN_SERVER_ERROR,
                            f"{where} answered HTTP {status} with a body that is neither "
                            f"msgpack nor JSON ({ctype or 'no content type'})") from None
            body = None
        if status >= 400:
            raise _error_from(status, body, raw, where)
        return body


def _decode(raw: bytes, ctype: str) -> Any:
    """The answer body; ValueError when it is not what its content type says."""
    if not raw:
        return None
    try:
        if ctype == MSGPACK:
            return msgpack.unpackb(raw, raw=False, strict_map_key=False)
        return json.loads(raw)
    except Exception as exc:  # msgpack and json raise unrelated types
        raise ValueError(str(exc)) from None


def _error_from(status: int, body: Any, raw: bytes, where: str) -> RaftlogError:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return from_wire(body)
    snippet = raw[:ERROR_SNIPPET_CHARS].decode("utf-8", "replace").strip()
    return error(ErrorCode.UNKNOWN_SERVER_ERROR,
                 f"{where} answered HTTP {status}" + (f": {snippet}" if snippet else ""))
