"""Fixtures for client tests: an in-process FakeCluster (raftlog.testing.fake_broker) per test.

Tests here must be fast (the whole directory well under 60 s) and must wait on conditions with
deadlines (`eventually`), never on bare sleeps.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

import pytest

from raftlog.testing.fake_broker import FakeCluster


@pytest.fixture
async def fake():
    async with FakeCluster(nodes=1) as fc:
        fc.create_topic("t", partitions=3)
        yield fc


@pytest.fixture
async def fake2():
    """Two nodes sharing one state; partition i of "t" starts on node 1 + i % 2."""
    async with FakeCluster(nodes=2) as fc:
        fc.create_topic("t", partitions=2)
        yield fc


@pytest.fixture
def eventually():
    """`await eventually(pred, timeout_s, what)` (a fixture: test modules here import nothing
    from each other, as tests/ has no packages)."""
    return _eventually


async def _eventually(pred: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition",
                     interval_s: float = 0.01) -> Any:
    """Poll `pred` (sync or async) until truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if isinstance(v, Awaitable):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)
