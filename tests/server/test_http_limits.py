"""A request body over the node's max_request_bytes is MESSAGE_TOO_LARGE naming the setting."""
from __future__ import annotations

import aiohttp
from aiohttp import web

from raftlog.server.http import answer, error_middleware, read_body


async def test_body_over_max_request_bytes_names_the_setting() -> None:
    async def echo(request: web.Request) -> web.Response:
        return answer(request, await read_body(request))

    app = web.Application(middlewares=[error_middleware], client_max_size=1024)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/echo"
            async with s.post(url, json={"x": "y" * 10}) as r:
                assert r.status == 200 and await r.json() == {"x": "y" * 10}
            async with s.post(url, json={"x": "y" * 5000}) as r:
                body = await r.json()
                assert r.status == 413, body
                assert body["error"] == "MESSAGE_TOO_LARGE"
                assert "max_request_bytes = 1024" in body["message"]
    finally:
        await runner.cleanup()
