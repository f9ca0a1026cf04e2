"""wait_event: wait for an asyncio.Event with a timeout, without losing a cancellation.

Owns one small pattern every long-lived task uses. asyncio.wait_for in Python 3.11 swallows a
cancellation that lands in the same loop turn as the awaited result (fixed in 3.12); in a task's
loop that means stop() cancels, the task carries on, and stop() hangs. asyncio.timeout does not
have that flaw. Imports asyncio only.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """True when `event` was set within `timeout_s`, False on timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
        return True
    except TimeoutError:
        return False


async def within(aw: Awaitable[T], timeout_s: float) -> T:
    """`aw` with a deadline (TimeoutError past it); wait_for's job without its 3.11 flaw."""
    async with asyncio.timeout(timeout_s):
        return await aw
