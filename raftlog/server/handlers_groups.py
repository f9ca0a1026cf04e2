"""Consumer-group HTTP handlers (msgpack or JSON): find-coordinator, membership, offsets, admin.

Owns decoding and checking the bodies of /v1/groups/* and the controller's group calls; the
rules live in raftlog/groups/coordinator.py and the IO in raftlog/groups/service.py. See
docs/protocol.md (Consumer groups) and docs/groups.md.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from raftlog.errors import ErrorCode, RaftlogError, error
from raftlog.groups.coordinator import DEFAULT_REBALANCE_TIMEOUT_MS, DEFAULT_SESSION_TIMEOUT_MS
from raftlog.server.http import answer, field, read_body

# Entries per offset-commit-batch / offset-fetch-batch / heartbeat-batch request at most
# (clients send up to 200, raftlog/client/commit_batcher.py).
BATCH_MAX_ENTRIES = 10_000

if TYPE_CHECKING:
    from raftlog.groups.service import HeartbeatArgs
    from raftlog.server.broker import Broker


def routes(broker: Broker) -> list[web.RouteDef]:
    h = GroupHandlers(broker)
    return [
        web.post("/v1/groups/find-coordinator", h.find_coordinator),
        web.post("/v1/groups/join", h.join),
        web.post("/v1/groups/heartbeat", h.heartbeat),
        web.post("/v1/groups/heartbeat-batch", h.heartbeat_batch),
        web.post("/v1/groups/leave", h.leave),
        web.post("/v1/groups/offset-commit", h.offset_commit),
        web.post("/v1/groups/offset-commit-batch", h.offset_commit_batch),
        web.post("/v1/groups/offset-fetch", h.offset_fetch),
        web.post("/v1/groups/offset-fetch-batch", h.offset_fetch_batch),
        web.post("/v1/groups/list", h.list_groups),
        web.get("/v1/groups", h.list_groups),
        web.post("/v1/groups/describe", h.describe),
        web.post("/v1/groups/delete", h.delete),
        web.post("/v1/controller/offsets-topic", h.ctl_offsets_topic),
        web.post("/v1/controller/group-assignment", h.ctl_group_assignment),
        web.post("/v1/controller/delete-group", h.ctl_delete_group),
    ]


def _tps(v: Any, name: str) -> list[tuple[str, int]]:
    if not isinstance(v, list):
        raise error(ErrorCode.INVALID_REQUEST, f"'{name}' must be a list of [topic, partition]")
    out = []
    for tp in v:
        if isinstance(tp, dict):
            tp = [tp.get("topic"), tp.get("partition")]
        if not (isinstance(tp, (list, tuple)) and len(tp) == 2 and isinstance(tp[0], str)
                and type(tp[1]) is int):
            raise error(ErrorCode.INVALID_REQUEST, f"'{name}' entries must be [topic, partition]")
        out.append((tp[0], tp[1]))
    return out


def _topics(body: dict[str, Any]) -> list[str] | None:
    ts = body.get("topics")
    if ts is None:
        return None
    if not isinstance(ts, list) or not all(isinstance(t, str) for t in ts):
        raise error(ErrorCode.INVALID_REQUEST, "'topics' must be a list of topic names")
    return ts


def _commit_args(body: Any) -> tuple[str, str, int, list[tuple[str, int, int, str]],
                                     str | None]:
    """One OffsetCommit ({group, member_id?, generation?, group_instance_id?, offsets}) as the
    arguments of GroupService.commit."""
    if not isinstance(body, dict):
        raise error(ErrorCode.INVALID_REQUEST, "a commit must be an object")
    group = field(body, "group", str)
    entries = []
    for e in field(body, "offsets", list):
        if not (isinstance(e, dict) and isinstance(e.get("topic"), str)
                and type(e.get("partition")) is int and type(e.get("offset")) is int
                and e["offset"] >= 0):
            raise error(ErrorCode.INVALID_REQUEST, "each offsets entry needs 'topic', "
                        "'partition' and an 'offset' >= 0")
        md = e.get("metadata") or ""
        if not isinstance(md, str) or len(md) > 4096:
            raise error(ErrorCode.INVALID_REQUEST, "'metadata' must be a string (<= 4096)")
        entries.append((e["topic"], e["partition"], e["offset"], md))
    return (group, field(body, "member_id", str, ""), field(body, "generation", int, -1),
            entries, field(body, "group_instance_id", str, "") or None)


def _heartbeat_args(body: Any) -> HeartbeatArgs:
    """One Heartbeat ({group, member_id, generation, owned, topics?, session_timeout_ms?,
    rebalance_timeout_ms?}) as the arguments of GroupService.heartbeat."""
    if not isinstance(body, dict):
        raise error(ErrorCode.INVALID_REQUEST, "a heartbeat must be an object")
    timeouts = None
    if body.get("session_timeout_ms") is not None:
        timeouts = (field(body, "session_timeout_ms", int, lo=1),
                    field(body, "rebalance_timeout_ms", int, lo=1))
    return (field(body, "group", str), field(body, "member_id", str),
            field(body, "generation", int), _tps(body.get("owned") or [], "owned"),
            _topics(body), timeouts)


def _parse_entries(body: Any, key: str, parse: Callable[[Any], Any]) -> list[Any]:
    """Each entry of a batch request parsed, or its RaftlogError: a malformed entry fails alone."""
    parsed: list[Any] = []
    for e in _entries(body, key):
        try:
            parsed.append(parse(e))
        except RaftlogError as exc:
            parsed.append(exc)
    return parsed


def _entries(body: dict[str, Any], key: str) -> list[Any]:
    """The entry list of a batch request (<= BATCH_MAX_ENTRIES)."""
    entries = field(body, key, list)
    if len(entries) > BATCH_MAX_ENTRIES:
        raise error(ErrorCode.INVALID_REQUEST, f"{len(entries)} {key} in one request "
                    f"(at most {BATCH_MAX_ENTRIES})")
    return entries


def _fetch_args(body: Any) -> tuple[str, list[tuple[str, int]] | None]:
    """One OffsetFetch ({group, partitions?}) as the arguments of GroupService.fetch."""
    if not isinstance(body, dict):
        raise error(ErrorCode.INVALID_REQUEST, "a fetch must be an object")
    tps = body.get("partitions")
    return field(body, "group", str), None if tps is None else _tps(tps, "partitions")


class GroupHandlers:
    def __init__(self, broker: Broker):
        self.b = broker

    @property
    def svc(self) -> Any:
        return self.b.groups

    async def find_coordinator(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        group = field(body, "group", str)
        await self.svc.ensure_topic()
        return answer(request, self.svc.find(group))

    async def join(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        group = field(body, "group", str)
        await self.svc.coordinate(group)
        topics = _topics(body) or []
        res = self.svc.coord.join(
            group, field(body, "member_id", str, "") or None,
            field(body, "group_instance_id", str, "") or None, topics,
            field(body, "session_timeout_ms", int, DEFAULT_SESSION_TIMEOUT_MS, lo=1),
            field(body, "rebalance_timeout_ms", int, DEFAULT_REBALANCE_TIMEOUT_MS, lo=1),
            field(body, "strategy", str, "range"),
            request.remote or "", field(body, "client_id", str, ""),
            _tps(body.get("owned") or [], "owned"), self.svc.clock())
        return answer(request, res)

    async def heartbeat(self, request: web.Request) -> web.Response:
        return answer(request, await self.svc.heartbeat(*_heartbeat_args(
            await read_body(request))))

    async def heartbeat_batch(self, request: web.Request) -> web.Response:
        """Several members' heartbeats (any groups) in one request; each entry answers for
        itself (its assignment, or its own error)."""
        parsed = _parse_entries(await read_body(request), "heartbeats", _heartbeat_args)
        results = await self.svc.heartbeat_batch(parsed)
        return answer(request, {"results": [
            r.to_wire() if isinstance(r, RaftlogError) else r for r in results]})

    async def leave(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        group = field(body, "group", str)
        await self.svc.coordinate(group)
        left = self.svc.coord.leave(group, field(body, "member_id", str, ""),
                                    field(body, "group_instance_id", str, "") or None,
                                    self.svc.clock())
        return answer(request, {"left": left})

    async def offset_commit(self, request: web.Request) -> web.Response:
        c = _commit_args(await read_body(request))
        await self.svc.commit(*c)
        return answer(request, {"committed": len(c[3])})

    async def offset_commit_batch(self, request: web.Request) -> web.Response:
        """Several groups' commits in one request; each entry answers for itself."""
        parsed = _parse_entries(await read_body(request), "commits", _commit_args)
        results = await self.svc.commit_batch(parsed)
        return answer(request, {"results": [
            {"committed": len(c[3])} if exc is None else exc.to_wire()
            for c, exc in zip(parsed, results)]})

    async def offset_fetch(self, request: web.Request) -> web.Response:
        group, tps = _fetch_args(await read_body(request))
        return answer(request, {"group": group, "offsets": await self.svc.fetch(group, tps)})

    async def offset_fetch_batch(self, request: web.Request) -> web.Response:
        """Several groups' offset fetches in one request; each entry answers for itself."""
        parsed = _parse_entries(await read_body(request), "fetches", _fetch_args)
        results = await self.svc.fetch_batch(parsed)
        return answer(request, {"results": [
            r.to_wire() if isinstance(r, RaftlogError) else {"group": f[0], "offsets": r}
            for f, r in zip(parsed, results)]})

    async def list_groups(self, request: web.Request) -> web.Response:
        view = self.b.view
        out = []
        for name in sorted(view.groups):
            gi = view.groups[name]
            out.append({"group": name, "generation": gi.generation, "protocol": gi.protocol,
                        "members": len(gi.assignment)})
        return answer(request, {"groups": out})

    async def describe(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        return answer(request, await self.svc.describe(field(body, "group", str)))

    async def delete(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        return answer(request, await self.svc.delete(field(body, "group", str)))

    # -- broker -> controller ---------------------------------------------------------------
    async def ctl_offsets_topic(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        return answer(request, await self.b.controller.ensure_offsets_topic(
            field(body, "partitions", int, lo=1), field(body, "replication_factor", int, lo=1)))

    async def ctl_group_assignment(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        return answer(request, await self.b.controller.set_group_assignment(
            field(body, "group", str), field(body, "generation", int, lo=0),
            field(body, "expected_generation", int, lo=0), field(body, "protocol", str),
            field(body, "assignment", dict)))

    async def ctl_delete_group(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        self.b.require_controller()
        return answer(request, await self.b.controller.delete_group(
            field(body, "group", str), field(body, "expected_generation", int, lo=0)))
