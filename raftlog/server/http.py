"""HTTP plumbing shared by every handler: body decoding, answers, the error middleware.

Owns: how a request body becomes a dict (JSON for admin paths, msgpack for the data plane),
how an answer or a RaftlogError becomes a response with Kafka's code and an HTTP status, and the
guarantee that no handler ever answers a traceback. Imports aiohttp.web, msgpack and errors only.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

import msgpack
from aiohttp import web

from raftlog.errors import ErrorCode, RaftlogError, error, is_storage_failure

log = logging.getLogger("raftlog.http")

MSGPACK = "application/msgpack"
# app key of the broker's callback for a failed disk: (exception, where) -> None
STORAGE_FAILED = web.AppKey("storage_failed", Callable[[BaseException, str], None])


def wants_msgpack(request: web.Request) -> bool:
    return request.content_type == MSGPACK or MSGPACK in request.headers.get("Accept", "")


async def read_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request body as a dict; malformed JSON/msgpack is INVALID_REQUEST, never a 500."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's client_max_size is the node's [limits] max_request_bytes: say so, with
        # Kafka's code, rather than a bare 413 that names no setting.
        raise error(ErrorCode.MESSAGE_TOO_LARGE,
                    f"request body is over this node's [limits] max_request_bytes = "
                    f"{request.client_max_size}") from None
    if not raw:
        if required:
            raise error(ErrorCode.INVALID_REQUEST, "request body is empty")
        return {}
    try:
        if request.content_type == MSGPACK:
            body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        else:
            body = json.loads(raw)
    except Exception as exc:  # json and msgpack raise unrelated types
        kind = "msgpack" if request.content_type == MSGPACK else "JSON"
        raise error(ErrorCode.INVALID_REQUEST, f"body is not valid {kind}: {exc}") from None
    if not isinstance(body, dict):
        raise error(ErrorCode.INVALID_REQUEST,
                    f"body must be an object, got {type(body).__name__}")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...,
          *, lo: int | None = None, hi: int | None = None) -> Any:
    """One checked field of a request body: missing, wrong type or out of range -> 400."""
    if name not in body or body[name] is None:
        if default is ...:
            raise error(ErrorCode.INVALID_REQUEST, f"field '{name}' is required")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = "/".join(k.__name__ for k in kinds)
        raise error(ErrorCode.INVALID_REQUEST,
                    f"field '{name}' must be {names}, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise error(ErrorCode.INVALID_REQUEST, f"field '{name}' must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise error(ErrorCode.INVALID_REQUEST, f"field '{name}' must be <= {hi}, got {value}")
    return value


def answer(request: web.Request, body: Any, status: int = 200) -> web.Response:
    """Encode an answer the way the request was made (msgpack in, msgpack out)."""
    if wants_msgpack(request):
        return web.Response(body=msgpack.packb(body, use_bin_type=True), status=status,
                            content_type=MSGPACK)
    return web.json_response(body, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def error_response(request: web.Request, exc: RaftlogError) -> web.Response:
    resp = answer(request, exc.to_wire(), status=exc.http_status)
    retry_ms = exc.hint.get("retry_after_ms") if isinstance(exc.hint, dict) else None
    if exc.http_status == 503 and isinstance(retry_ms, int) and retry_ms >= 0:
        # HTTP's own form of the hint, for curl users and proxies: whole seconds, rounded up.
        resp.headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))
    return resp


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as {"error", "message", "hint"} with a 4xx/5xx status."""
    try:
        return await handler(request)
    except RaftlogError as exc:
        return error_response(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = ErrorCode.NOT_FOUND if exc.status in (404, 405) else ErrorCode.INVALID_REQUEST
        body = {"error": code.name, "message": f"{exc.reason}: {request.method} {request.path}"}
        return answer(request, body, status=exc.status)
    except (ConnectionResetError, TimeoutError) as exc:
        return error_response(request, error(ErrorCode.REQUEST_TIMED_OUT, str(exc) or "timed out"))
    except Exception as exc:
        if is_storage_failure(exc):
            on_failure = request.app.get(STORAGE_FAILED)
            if on_failure is not None:
                on_failure(exc, f"{request.method} {request.path}")
            return error_response(request, error(
                ErrorCode.KAFKA_STORAGE_ERROR,
                f"this node's disk failed ({exc.strerror}); it is stopping, retry on the new leader"))
        # a bug: log it with its traceback, answer without one
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(request, error(ErrorCode.UNKNOWN_SERVER_ERROR,
                                             f"{type(exc).__name__}: {exc}"))
