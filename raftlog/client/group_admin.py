"""Consumer-group administration for `Admin` (a mixin): list, describe with lag, delete, reset.

Group calls go to the group's coordinator (found with /v1/groups/find-coordinator, followed on
NOT_COORDINATOR); lag needs each partition's log end offset, asked of partition leaders with
list-offsets. Imports the client's modules and `errors` only.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable

from raftlog.client.structs import TopicPartition
from raftlog.errors import ErrorCode, RaftlogError, error

_RETRY = {ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
          ErrorCode.BROKER_NOT_AVAILABLE, ErrorCode.NO_QUORUM, ErrorCode.REQUEST_TIMED_OUT}
EARLIEST, LATEST = -2, -1


class GroupAdminMixin:
    client: Any

    async def _group_call(self, group: str, path: str, body: dict[str, Any]) -> Any:
        c = self.client
        deadline = time.monotonic() + c.request_timeout_ms / 1000
        url: str | None = None
        while True:
            left = (deadline - time.monotonic()) * 1000
            try:
                if url is None:
                    url = (await c.send_any("/v1/groups/find-coordinator", {"group": group},
                                            max(1.0, left)))["url"]
                return await c.transport.post_msgpack(url, path, {"group": group, **body},
                                                      max(1.0, left))
            except RaftlogError as exc:
                if exc.code not in _RETRY or time.monotonic() >= deadline:
                    raise
                url = exc.hint.get("url") if exc.code is ErrorCode.NOT_COORDINATOR else None
                await asyncio.sleep(c.retry_backoff_ms / 1000)

    async def list_groups(self) -> list[dict[str, Any]]:
        """`[{group, generation, protocol, members}]`: every group with a committed assignment."""
        return list((await self.client.admin("GET", "/v1/groups")).get("groups") or [])

    async def describe_group(self, group: str) -> dict[str, Any]:
        """`{group, state, generation, protocol, coordinator_id, members: [{member_id,
        group_instance_id, host, client_id, assignment}], offsets: [{topic, partition,
        offset (committed, -1 = none), log_end_offset, lag, owner}]}`"""
        d = await self._group_call(group, "/v1/groups/describe", {})
        owner: dict[tuple[str, int], str] = {}
        for m in d.get("members") or ():
            for t, p in m.get("assignment") or ():
                owner[(t, p)] = m["member_id"]
        rows = {(o["topic"], o["partition"]): o for o in d.get("offsets") or ()}
        for tp in owner:
            rows.setdefault(tp, {"topic": tp[0], "partition": tp[1], "offset": -1,
                                 "metadata": ""})
        ends = await self.client.list_offsets({tp: LATEST for tp in rows}) if rows else {}
        for tp, r in rows.items():
            end = ends.get(tp, (-1, -1))[0]
            r["log_end_offset"] = end
            r["lag"] = (end - r["offset"]) if r["offset"] >= 0 and end >= 0 else None
            r["owner"] = owner.get(tp)
        d["offsets"] = [rows[tp] for tp in sorted(rows)]
        return d

    async def delete_group(self, group: str) -> dict[str, Any]:
        """Drop the group's committed offsets and assignment; NON_EMPTY_GROUP if it has members."""
        return await self._group_call(group, "/v1/groups/delete", {})

    async def list_group_offsets(self, group: str) -> dict[TopicPartition, int]:
        res = await self._group_call(group, "/v1/groups/offset-fetch", {})
        return {TopicPartition(o["topic"], o["partition"]): o["offset"]
                for o in res.get("offsets") or ()}

    async def reset_offsets(self, group: str, topics: Iterable[str] | None = None, *,
                            to_earliest: bool = False, to_latest: bool = False,
                            to_offset: int | None = None, to_datetime_ms: int | None = None,
                            shift_by: int | None = None, dry_run: bool = False
                            ) -> dict[TopicPartition, int]:
        """Set the group's committed offsets (exactly one of the `to_*`/`shift_by` options), for
        every partition of `topics` (default: the partitions it has offsets for). Refused with
        NON_EMPTY_GROUP while the group has members. Offsets are clamped to [log start, end]."""
        chosen = [to_earliest, to_latest, to_offset is not None, to_datetime_ms is not None,
                  shift_by is not None]
        if sum(chosen) != 1:
            raise error(ErrorCode.INVALID_REQUEST, "choose exactly one of to_earliest, "
                        "to_latest, to_offset, to_datetime_ms, shift_by")
        current = await self.list_group_offsets(group)
        if topics:
            tps = []
            for t in topics:
                n = await self.client.wait_for_topic(t, self.client.request_timeout_ms)
                tps += [TopicPartition(t, p) for p in range(n)]
        else:
            tps = sorted(current)
        if not tps:
            raise error(ErrorCode.INVALID_REQUEST, f"group {group!r} has no offsets: name topics")
        keys = [(tp.topic, tp.partition) for tp in tps]
        lo = await self.client.list_offsets({k: EARLIEST for k in keys})
        hi = await self.client.list_offsets({k: LATEST for k in keys})
        at = (await self.client.list_offsets({k: to_datetime_ms for k in keys})
              if to_datetime_ms is not None else {})
        out: dict[TopicPartition, int] = {}
        for tp, k in zip(tps, keys):
            if to_earliest:
                v = lo[k][0]
            elif to_latest:
                v = hi[k][0]
            elif to_offset is not None:
                v = to_offset
            elif to_datetime_ms is not None:
                v = at[k][0] if at[k][0] >= 0 else hi[k][0]
            else:
                base = current.get(tp, -1)
                v = (base if base >= 0 else lo[k][0]) + int(shift_by or 0)
            out[tp] = max(lo[k][0], min(hi[k][0], v))
        if not dry_run:
            await self._group_call(group, "/v1/groups/offset-commit", {"offsets": [
                {"topic": tp.topic, "partition": tp.partition, "offset": v}
                for tp, v in out.items()]})
        return out
