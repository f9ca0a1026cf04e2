"""FetcherSession: one long-poll fetch loop per (this follower, leader broker) pair.

Owns the follower side of replication for every partition this broker follows from one leader:
build a fetch carrying (broker id, broker epoch) and, per partition, (leader epoch, fetch offset =
our log end, last fetched epoch); apply the answer — truncate on a diverging epoch before
appending anything, append whole batches, take the leader's high watermark (capped at our own
log end). Truncations and log-start moves finish (fsync, unlinks) in a worker thread before the
next fetch, and under the fsync policy the log is flushed before it too, so the offset we report
to the leader (and that the HW counts) is durable here.

Imports replication.partition and errors; the HTTP call goes through the broker's PeerClient.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from raftlog.aio import wait_event
from raftlog.errors import ErrorCode, RaftlogError
from raftlog.replication.partition import FOLLOWER, Partition

if TYPE_CHECKING:
    from raftlog.replication.manager import ReplicaManager

log = logging.getLogger("raftlog.fetcher")

ERROR_BACKOFF_S = 0.1
PARTITION_FETCH_BYTES_MAX = 1 << 20


class FetcherSession:
    def __init__(self, manager: ReplicaManager, leader_id: int):
        self.m = manager
        self.leader_id = leader_id
        self.task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _url(self) -> str | None:
        url = self.m.broker.peer_url(self.leader_id)
        return None if url is None else url + "/v1/replica/fetch"

    async def run(self) -> None:
        """Owned by the broker (spawned through the manager); cancelled on stop."""
        while True:
            parts = self.m.followed_from(self.leader_id)
            url = self._url()
            if not parts or url is None or self.m.broker_epoch < 0:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._wakeup.clear()
            sent = self._followed()
            wait_ms = self.m.cfg.replication.replica_fetch_wait_max_ms
            body = {"broker_id": self.m.node_id, "broker_epoch": self.m.broker_epoch,
                    "max_wait_ms": wait_ms, "min_bytes": 1,
                    "max_bytes": self.m.cfg.replication.replica_fetch_max_bytes,
                    "partitions": []}
            for p in parts:
                offset, epoch = p.fetch_position()
                body["partitions"].append({"topic": p.topic, "partition": p.index,
                                           "leader_epoch": p.leader_epoch,
                                           "fetch_offset": offset, "last_fetched_epoch": epoch,
                                           "max_bytes": PARTITION_FETCH_BYTES_MAX})
            req = asyncio.ensure_future(self.m.broker.peer.request(
                "POST", url, body, timeout_s=wait_ms / 1000 + 5.0, binary=True))
            woken = asyncio.ensure_future(self._wakeup.wait())
            try:
                await asyncio.wait((req, woken), return_when=asyncio.FIRST_COMPLETED)
                if not req.done() and self._followed() == sent:
                    await asyncio.wait((req,))      # nothing changed: keep this long-poll
            except asyncio.CancelledError:
                req.cancel()
                raise
            finally:
                woken.cancel()
            if not req.done():
                # A partition joined, left or changed epoch: re-fetch with the new set now
                # rather than after the leader's max wait. What the leader recorded from this
                # request (our positions) stays true; an unread answer is simply fetched again.
                req.cancel()
                continue
            try:
                resp = req.result()
            except RaftlogError as exc:
                log.debug("fetch from %d failed: %s", self.leader_id, exc)
                await self._backoff()
                continue
            if await self._apply(resp, sent):
                await self._backoff()

    def _followed(self) -> dict[tuple[str, int], int]:
        return {p.key: p.leader_epoch for p in self.m.followed_from(self.leader_id)}

    async def _backoff(self) -> None:
        await wait_event(self._wakeup, ERROR_BACKOFF_S)

    async def _apply(self, resp: dict[str, Any], sent: dict[tuple[str, int], int]) -> bool:
        """Apply one fetch answer; True when the session should back off before the next."""
        now = int(time.time() * 1000)
        backoff = False
        to_flush: list[Partition] = []
        for e in resp.get("partitions", []):
            key = (e["topic"], e["partition"])
            p = self.m.partitions.get(key)
            # The role may have changed while the fetch was in flight: drop stale answers.
            if p is None or p.role != FOLLOWER or p.leader_id != self.leader_id \
                    or p.leader_epoch != sent.get(key):
                continue
            err = e.get("error")
            if err:
                if err == ErrorCode.OFFSET_OUT_OF_RANGE.name:
                    start = int((e.get("hint") or {}).get("log_start_offset", -1))
                    if start > p.log_end_offset and p.cleaning_end is None:
                        log.warning("%s-%d: leader's log starts at %d past our end %d: "
                                    "restarting our log there", p.topic, p.index, start,
                                    p.log_end_offset)
                        p.log.truncate_fully_and_start_at(start)
                        p.producers.rebuild(())
                else:
                    log.debug("%s-%d: fetch error %s: %s", p.topic, p.index, err, e.get("message"))
                backoff = True
                continue
            div = e.get("diverging_epoch")
            if div:
                if p.truncate_for_divergence(int(div["epoch"]), int(div["end_offset"])) is None:
                    backoff = True          # the cleaner holds that range: retry shortly
                continue
            try:
                p.append_follower(e.get("records") or b"", int(e["high_watermark"]),
                                  int(e["log_start_offset"]), now)
            except RaftlogError as exc:
                log.warning("%s-%d: could not append from leader %d: %s", p.topic, p.index,
                            self.leader_id, exc)
                backoff = True
                continue
            if p.log.options.flush_policy == "fsync" and e.get("records"):
                to_flush.append(p)
        for e in resp.get("partitions", []):
            p = self.m.partitions.get((e["topic"], e["partition"]))
            if p is not None and p.log.deletes_pending:
                await asyncio.to_thread(p.log.finish_deletes)
        for p in to_flush:
            await self.m.durable(p, p.log_end_offset)
        return backoff
