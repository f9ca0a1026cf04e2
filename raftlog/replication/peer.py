"""PeerClient: the one aiohttp client a broker uses to talk to other brokers.

Owns broker-to-broker HTTP: follower fetches (msgpack), calls to the controller and forwarded
admin requests (JSON). Answers come back as dicts; error answers become the matching
RaftlogError; connection failures become BROKER_NOT_AVAILABLE. Imports aiohttp (client side
only), msgpack and errors.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgpack

from raftlog.errors import ErrorCode, error, from_wire

MSGPACK = "application/msgpack"
CONNECT_TIMEOUT_S = 2.0


class PeerClient:
    def __init__(self, limit_per_host: int = 8):
        self._limit = limit_per_host
        self._session: aiohttp.ClientSession | None = None

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=self._limit),
                auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, url: str, body: Any = None, *, timeout_s: float,
                      binary: bool = False, headers: Mapping[str, str] | None = None) -> Any:
        """One request; msgpack when `binary`, else JSON. Raises RaftlogError on failure.
        `headers` are sent too (the broker marks forwarded admin requests with one)."""
        headers = {**(headers or {}), "Content-Type": MSGPACK if binary else "application/json"}
        if binary:
            headers["Accept"] = MSGPACK
        data = None
        if body is not None:
            data = msgpack.packb(body, use_bin_type=True) if binary else json.dumps(body).encode()
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        try:
            async with self._s().request(method, url, data=data, headers=headers,
                                         timeout=timeout) as r:
                raw = await r.read()
                ctype = r.content_type
                status = r.status
        except asyncio.TimeoutError:
            raise error(ErrorCode.REQUEST_TIMED_OUT,
                        f"{method} {url} took longer than {timeout_s:.1f} s") from None
        except aiohttp.ClientError as exc:
            raise error(ErrorCode.BROKER_NOT_AVAILABLE, f"{method} {url}: {exc}") from None
        try:
            parsed = (msgpack.unpackb(raw, raw=False, strict_map_key=False) if ctype == MSGPACK
                      else json.loads(raw) if raw else None)
        except Exception as exc:
            raise error(ErrorCode.UNKNOWN_SERVER_ERROR,
                        f"{method} {url}: unreadable answer ({status}): {exc}") from None
        if status >= 400:
            if isinstance(parsed, dict) and "error" in parsed:
                raise from_wire(parsed)
            raise error(ErrorCode.UNKNOWN_SERVER_ERROR, f"{method} {url}: HTTP {status}")
        return parsed
