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


async def _stop_with_a_request_in_flight(failed: bool) -> tuple[float, float]:
    """Seconds from stop() until a background task (the heartbeat's stand-in) was cancelled,
    and until stop() returned, while an HTTP request that nothing wakes is in flight."""
    import aiohttp
    from aiohttp import web

    b = Broker(_cfg(800), 1)
    entered = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(30)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/hang", hang)
    b._runner = web.AppRunner(app, shutdown_timeout=0.8)
    await b._runner.setup()
    site = web.TCPSite(b._runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    cancelled_at: list[float] = []

    async def heartbeat() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled_at.append(loop.time())
            raise

    b._spawn(heartbeat(), "lifecycle")
    async with aiohttp.ClientSession() as s:
        req = asyncio.ensure_future(s.get(f"http://127.0.0.1:{port}/hang"))
        await asyncio.wait_for(entered.wait(), 5)
        if failed:
            b.storage_failed(OSError(28, "No space left on device"), "test")
        t0 = loop.time()
        await asyncio.wait_for(b.stop(), 5)
        took = loop.time() - t0
        req.cancel()
        await asyncio.gather(req, return_exceptions=True)
    assert cancelled_at, "the background task was never cancelled"
    return cancelled_at[0] - t0, took


async def test_a_normal_stop_gives_requests_in_flight_the_grace_before_cancelling_tasks():
    cancel_s, took = await _stop_with_a_request_in_flight(failed=False)
    assert cancel_s >= 0.7, cancel_s   # replication (and heartbeats) ran on during the grace
    assert took < 3, took


async def test_after_a_disk_failure_tasks_stop_at_once_without_waiting_for_requests():
    # Heartbeats that go on through the grace keep this node's leaderships (and the outage)
    # alive that much longer.
    cancel_s, took = await _stop_with_a_request_in_flight(failed=True)
    assert cancel_s < 0.3, cancel_s
    assert took < 3, took
