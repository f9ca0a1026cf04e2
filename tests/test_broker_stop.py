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


async def _stop_with_a_request_in_flight(failed: bool) -> list[str]:
    """What stop() ended first, in order: "task" (a background task, the heartbeat's
    stand-in) or "request" (an HTTP request in flight that nothing wakes)."""
    import aiohttp
    from aiohttp import web

    b = Broker(_cfg(800), 1)
    entered = asyncio.Event()
    ended: list[str] = []

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        try:
            await asyncio.sleep(30)
        finally:
            ended.append("request")
        return web.Response(text="late")

    async def heartbeat() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            ended.append("task")

    app = web.Application()
    app.router.add_get("/hang", hang)
    b._runner = web.AppRunner(app, shutdown_timeout=0.8)
    await b._runner.setup()
    await web.TCPSite(b._runner, "127.0.0.1", 0).start()
    host, port = b._runner.addresses[0][:2]
    b._spawn(heartbeat(), "lifecycle")
    async with aiohttp.ClientSession() as s:
        req = asyncio.ensure_future(s.get(f"http://{host}:{port}/hang"))
        await asyncio.wait_for(entered.wait(), 5)
        if failed:
            b.storage_failed(OSError(28, "No space left on device"), "test")
        await asyncio.wait_for(b.stop(), 5)
        req.cancel()
        await asyncio.gather(req, return_exceptions=True)
    return ended


async def test_a_normal_stop_gives_requests_in_flight_the_grace_before_cancelling_tasks():
    # replication (and heartbeats) run on while requests in flight may still finish
    assert await _stop_with_a_request_in_flight(failed=False) == ["request", "task"]


async def test_after_a_disk_failure_tasks_stop_before_requests_in_flight():
    # Heartbeats that go on through the grace keep this node's leaderships (and the outage)
    # alive that much longer.
    assert await _stop_with_a_request_in_flight(failed=True) == ["task", "request"]
