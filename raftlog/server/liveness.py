"""Is a broker's process still there? One TCP connect to its HTTP port.

Owns the only network question the controller asks about liveness. A refused connect means
nobody listens on the port — the process died or is shutting down — so the controller may end
its session at once instead of waiting out session_timeout_ms. A timeout or any other error
proves nothing (a paused process, a full backlog and a network partition all look alike), so
only a refusal counts. Imports asyncio and raftlog.aio only.
"""
from __future__ import annotations

import asyncio
import contextlib

from raftlog.aio import within


async def port_refuses(host: str, port: int, timeout_s: float) -> bool:
    """True only when the connect was actively refused."""
    try:
        _, writer = await within(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError:
        return True
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return False
