"""Admin writes forwarded to the controller (Broker.forward), on two real Brokers in process.

Each Broker (not started: only its HTTP routes, with the real error middleware) runs behind an
aiohttp test server at the port its config names; its metadata replica is a stub saying who it
believes the controller is. Answers are checked on the wire (status, Kafka code, hint).

- audit bug 6: two nodes whose views name each other as controller (just after an election)
  bounced a forwarded request back and forth until timeouts: the X-Raftlog-Forwarded guard never
  fired because nothing set the header. Now the second node answers NOT_CONTROLLER at once.
- audit bug 7: a node without a controller answers 503 NO_QUORUM with the same retry hint as
  the metadata replica's own NO_QUORUM answers.
"""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raftlog import config as config_mod
from raftlog.meta.replica import NO_QUORUM_RETRY_AFTER_MS
from raftlog.server import handlers_admin
from raftlog.server.broker import FORWARD_HEADER, Broker
from raftlog.server.http import error_middleware
from raftlog.testing.cluster import free_ports

ANSWER_S = 5.0     # a bounce runs until the 15 s admin timeout; one forward takes milliseconds


class Node:
    def __init__(self, broker: Broker):
        self.broker = broker
        self.seen: list[str | None] = []      # FORWARD_HEADER of every request received

        @web.middleware
        async def record(request, handler):
            self.seen.append(request.headers.get(FORWARD_HEADER))
            return await handler(request)

        app = web.Application(middlewares=[record, error_middleware])
        app.add_routes(handlers_admin.routes(broker))
        self.server = TestServer(app, host="127.0.0.1", port=broker.node.http_port)


@pytest.fixture
async def two_nodes(tmp_path):
    """Nodes 1 and 2, each believing the other is the controller (`leaders` changes that)."""
    http = free_ports(2)
    raft = free_ports(2)
    path = tmp_path / "cluster.toml"
    path.write_text('[cluster]\nid = "t"\n' + "".join(
        f'[[nodes]]\nid = {i}\nhost = "127.0.0.1"\nhttp_port = {http[i - 1]}\n'
        f'raft_port = {raft[i - 1]}\ndata_dir = "n{i}"\n' for i in (1, 2)))
    cfg = config_mod.load(str(path))
    nodes = {}
    for i, other in ((1, 2), (2, 1)):
        b = Broker(cfg, i)
        b.meta = SimpleNamespace(leader_id=other, is_leader=False)
        nodes[i] = Node(b)
        await nodes[i].server.start_server()
    try:
        yield nodes
    finally:
        for n in nodes.values():
            await n.broker.peer.close()
            await n.server.close()


async def _post(node: Node, path: str, body: dict, headers: dict | None = None
                ) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{node.broker.node.http_port}{path}"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=json.dumps(body),
                          headers={"Content-Type": "application/json"}) as r:
            if headers is not None:
                headers.update(r.headers)
            return r.status, await r.json()


async def test_forwarded_request_is_never_forwarded_again(two_nodes) -> None:
    status, body = await asyncio.wait_for(
        _post(two_nodes[1], "/v1/topics", {"name": "t", "partitions": 1}), ANSWER_S)
    assert status == 421 and body["error"] == "NOT_CONTROLLER", body
    assert body["hint"]["controller_id"] == 1     # node 2's belief, for the client's retry
    assert two_nodes[1].seen == [None]            # the client's request, and no bounce back
    assert two_nodes[2].seen == ["1"]             # forwarded once, marked with the sender


async def test_no_controller_is_503_with_the_no_quorum_retry_hint(two_nodes) -> None:
    two_nodes[1].broker.meta.leader_id = None
    headers: dict = {}
    status, body = await asyncio.wait_for(
        _post(two_nodes[1], "/v1/topics", {"name": "t", "partitions": 1}, headers), ANSWER_S)
    assert status == 503 and body["error"] == "NO_QUORUM", body
    assert body["hint"] == {"retry_after_ms": NO_QUORUM_RETRY_AFTER_MS}
    assert headers.get("Retry-After") == str(-(-NO_QUORUM_RETRY_AFTER_MS // 1000))
    assert two_nodes[2].seen == []
