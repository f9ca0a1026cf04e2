"""Broker.stop() is bounded even when a background task ignores its cancellation."""
import asyncio
import logging

from raftlog.config import parse
from raftlog.server.broker import Broker


def _cfg(grace_ms: int):
    return parse({"cluster": {"id": "t"}, "broker": {"shutdown_grace_ms": grace_ms},
                  "nodes": [{"id": 1, "host": "127.0.0.1", "http_port": 1, "raft_port": 2,
                             "data_dir": "d"}]}, "test")


async def test_stop_leaves_a_task_that_swallows_its_cancel_behind_after_the_grace(caplog):
    b = Broker(_cfg(300), 1)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # the bug this guards against: a loop that eats its cancel

    async def polite() -> None:
        await asyncio.sleep(10)

    t1 = b._spawn(stubborn(), "stubborn")
    t2 = b._spawn(polite(), "polite")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with caplog.at_level(logging.WARNING, logger="raftlog.broker"):
        await asyncio.wait_for(b.stop(), 5)
    took = loop.time() - t0
    assert 0.25 <= took < 2, took
    assert t2.cancelled() and not t1.done()
    assert "left behind: stubborn" in caplog.text
    release.set()
    t1.cancel()
    await asyncio.wait([t1], timeout=1)
