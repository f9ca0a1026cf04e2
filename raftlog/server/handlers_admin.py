"""Admin and controller HTTP handlers (JSON): thin translations to the Controller and the view.

Owns the routes under /v1/cluster, /v1/topics and /v1/controller. Reads come from this node's
applied metadata view; writes go to the controller (this node when it is the Raft leader,
otherwise forwarded over HTTP). No logic beyond decoding and encoding lives here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from raftlog import topic_config
from raftlog.errors import ErrorCode, error
from raftlog.server.http import answer, field, read_body

if TYPE_CHECKING:
    from raftlog.server.broker import Broker

ADMIN_TIMEOUT_S = 15.0


def routes(broker: Broker) -> list[web.RouteDef]:
    h = AdminHandlers(broker)
    return [
        web.get("/v1/cluster", h.cluster),
        web.get("/v1/topics", h.list_topics),
        web.post("/v1/topics", h.create_topic),
        web.get("/v1/topics/{name}", h.describe_topic),
        web.patch("/v1/topics/{name}", h.alter_topic),
        web.delete("/v1/topics/{name}", h.delete_topic),
        web.post("/v1/controller/register", h.register),
        web.post("/v1/controller/heartbeat", h.heartbeat),
        web.post("/v1/controller/alter-partition", h.alter_partition),
        web.post("/v1/controller/producer-ids", h.producer_ids),
    ]


class AdminHandlers:
    def __init__(self, broker: Broker):
        self.b = broker

    # -- reads ------------------------------------------------------------------------------
    async def cluster(self, request: web.Request) -> web.Response:
        return answer(request, self.b.cluster_description())

    async def list_topics(self, request: web.Request) -> web.Response:
        view = self.b.view
        return answer(request, {"topics": [
            {"name": t.name, "id": t.topic_id, "partitions": len(t.partitions),
             "replication_factor": len(t.partitions[0].replicas) if t.partitions else 0,
             "internal": t.name.startswith("__")}
            for t in (view.topics[n] for n in view.topic_names())]})

    async def describe_topic(self, request: web.Request) -> web.Response:
        return answer(request, self.b.topic_description(request.match_info["name"]))

    # -- writes (controller) ----------------------------------------------------------------
    async def create_topic(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        if not self.b.is_controller:
            return answer(request, await self.b.forward(request, body), status=201)
        await self.b.controller.create_topic(
            body.get("name"), body.get("partitions"), body.get("replication_factor"),
            body.get("config"))
        return answer(request, await self.b.wait_topic_ready(body["name"]), status=201)

    async def alter_topic(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        name = request.match_info["name"]
        if not self.b.is_controller:
            return answer(request, await self.b.forward(request, body))
        await self.b.controller.alter_topic_config(name, body.get("config"))
        return answer(request, self.b.topic_description(name))

    async def delete_topic(self, request: web.Request) -> web.Response:
        if not self.b.is_controller:
            return answer(request, await self.b.forward(request, None))
        return answer(request, await self.b.controller.delete_topic(request.match_info["name"]))

    # -- broker -> controller ---------------------------------------------------------------
    async def register(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        return answer(request, await self.b.controller.register(
            field(body, "broker_id", int, lo=0), field(body, "host", str),
            field(body, "http_port", int, lo=1, hi=65535), field(body, "incarnation", str)))

    async def heartbeat(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        return answer(request, await self.b.controller.heartbeat(
            field(body, "broker_id", int, lo=0), field(body, "broker_epoch", int),
            field(body, "metadata_version", int)))

    async def alter_partition(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        isr = field(body, "isr", list)
        if not all(type(i) is int for i in isr):
            raise error(ErrorCode.INVALID_REQUEST, "isr must be a list of broker ids")
        return answer(request, await self.b.controller.alter_partition(
            field(body, "broker_id", int), field(body, "broker_epoch", int),
            field(body, "topic", str), field(body, "partition", int, lo=0),
            field(body, "leader_epoch", int), field(body, "partition_epoch", int), isr))

    async def producer_ids(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        return answer(request, await self.b.controller.allocate_producer_ids(
            field(body, "count", int, lo=1, hi=1_000_000)))


def topic_json(view: Any, name: str, defaults: Any) -> dict[str, Any]:
    t = view.topic(name)
    if t is None:
        raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{name}' does not exist")
    return {"name": t.name, "id": t.topic_id,
            "config": topic_config.describe(dict(t.config), defaults),
            "partitions": [p.to_json() for p in t.partitions]}
