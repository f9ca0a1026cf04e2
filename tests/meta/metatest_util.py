"""Helpers for the meta tests: free raft ports, deadline waits, a standalone replica process."""
from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable

PORT_LO, PORT_HI = 20000, 32000     # below the ephemeral range 32768-60999 (pysyncobj.md #12)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports in [20000, 32000) that could be bound just now."""
    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        port = rng.randrange(PORT_LO, PORT_HI)
        if port in out:
            continue
        s = socket.socket()
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        out.append(port)
    return out


async def wait_until(pred: Callable[[], object], timeout_s: float, what: str,
                     interval_s: float = 0.01) -> None:
    """Poll `pred` until true; fail the test with `what` after timeout_s (never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)
