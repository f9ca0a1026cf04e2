"""One partition replica on this broker: its log, its role, its high watermark and waiters.

Owns the per-partition rules of the data plane: leader appends, acks=all waiting, answering a
follower's fetch (epoch fencing, divergence detection, progress and HW), follower appends and
truncation, consumer reads below the HW, and the long-poll wake-ups. Role changes come only from
applied metadata (`ReplicaManager` calls `become_leader` / `become_follower`).

Runs on the event loop. Imports storage, codec, errors and replication.progress/waiters; never
aiohttp, pysyncobj or raftlog.meta (the manager hands in plain values).

Leader flow:  append -> wake follower fetches -> followers fetch at their new LEO ->
              record_fetch -> high_watermark() -> waiters.notify -> acks=all answers.
Follower flow: fetch(offset=LEO, last_fetched_epoch) -> diverging? truncate (never to HW) :
              append_replica -> HW = min(leader HW, own LEO).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

from raftlog.codec import batch as batch_codec
from raftlog.errors import ErrorCode, RaftlogError, error
from raftlog.replication.producer_state import ProducerStateTable
from raftlog.replication.progress import FollowerProgress, high_watermark, record_fetch
from raftlog.replication.waiters import OffsetWaiters

log = logging.getLogger("raftlog.partition")

class Appended(NamedTuple):
    """Where a produced batch sits: fresh, or the original place of a retried one."""

    base_offset: int
    last_offset: int
    duplicate: bool


LEADER = "leader"
FOLLOWER = "follower"
OFFLINE = "offline"


def epoch_start_batch(now_ms: int) -> bytearray:
    """The control batch a new leader writes first, so its epoch is in the log and the HW can
    move past the old epoch's tail without waiting for a client write (consumers skip it)."""
    return bytearray(batch_codec.encode([(b"leader_epoch_start", None, None, now_ms)],
                                        attributes=batch_codec.CONTROL))


class Partition:
    def __init__(self, topic: str, index: int, plog: Any, broker_id: int):
        self.topic = topic
        self.index = index
        self.log = plog
        self.broker_id = broker_id
        self.role = OFFLINE
        self.leader_id = -1
        self.leader_epoch = -1
        self.partition_epoch = -1
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()
        self.min_insync_replicas = 1
        self.max_message_bytes = batch_codec.DEFAULT_MAX_BATCH_BYTES
        # The topic's effective config (topic_config.effective), set by the manager on every
        # metadata change, so retention/compaction/produce read current values.
        self.config: dict[str, Any] = {}
        self.hw = min(plog.high_watermark_checkpoint, plog.log_end_offset)
        self.epoch_start_offset = 0
        self.progress: dict[int, FollowerProgress] = {}
        self.waiters = OffsetWaiters()
        # Futures of long polls waiting for a change; each poll removes its own when it ends
        # (unwatch), since an idle partition may never wake to clear them.
        self._watchers: set[asyncio.Future[None]] = set()
        self.isr_change_in_flight = False
        # While the cleaner rewrites this log's segments below this offset (in a worker thread,
        # swapping files in place), nothing may delete or truncate them under it: a follower
        # defers moving its log start and truncating into that range until the clean ends (as
        # Kafka's truncation pauses its cleaner), or the swap would bring removed files back.
        self.cleaning_end: int | None = None
        # Rebuilt from batch headers, kept current on every append (leader and follower), so
        # whichever replica leads next dedupes retries the old leader already wrote.
        self.producers = ProducerStateTable()
        self.producers.rebuild(plog.iter_batch_headers())

    # -- identity and state -----------------------------------------------------------------
    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.index)

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    def describe(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.index, "role": self.role,
                "leader": self.leader_id, "leader_epoch": self.leader_epoch,
                "high_watermark": self.hw, "log_start_offset": self.log_start_offset,
                "log_end_offset": self.log_end_offset, "isr": list(self.isr)}

    def not_leader(self) -> RaftlogError:
        return error(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                     f"broker {self.broker_id} is not the leader of {self.topic}-{self.index}",
                     {"leader_id": self.leader_id, "leader_epoch": self.leader_epoch})

    # -- long-poll wake-ups -----------------------------------------------------------------
    def watch(self) -> asyncio.Future[None]:
        """A future resolved by the next `wake`; the caller must `unwatch` it when it stops
        waiting (timeout, cancel), or a partition that never wakes keeps it forever."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.add(fut)
        return fut

    def unwatch(self, fut: asyncio.Future[None]) -> None:
        """Forget a watch future that is no longer awaited (O(1); no-op after a wake)."""
        self._watchers.discard(fut)

    def wake(self) -> None:
        watchers, self._watchers = self._watchers, set()
        for f in watchers:
            if not f.done():
                f.set_result(None)

    # -- role changes (from applied metadata) -------------------------------------------------
    def update_membership(self, replicas: tuple[int, ...], isr: tuple[int, ...],
                          partition_epoch: int) -> None:
        self.replicas = replicas
        self.isr = isr
        self.partition_epoch = partition_epoch
        self.isr_change_in_flight = False
        if self.role == LEADER:
            self._advance_hw()

    def become_leader(self, leader_epoch: int, replicas: tuple[int, ...], isr: tuple[int, ...],
                      partition_epoch: int, now_ms: int) -> None:
        was = (self.role, self.leader_epoch)
        if self.role == LEADER and self.leader_epoch != leader_epoch:
            # waiters of the older epoch: their batches' fate is decided by that epoch's end
            self.waiters.fail_all(self.not_leader_after(self.broker_id, leader_epoch))
        self.role = LEADER
        self.leader_id = self.broker_id
        self.leader_epoch = leader_epoch
        self.progress = {b: FollowerProgress(last_caught_up_ms=now_ms)
                         for b in replicas if b != self.broker_id}
        res = self.log.append(epoch_start_batch(now_ms), leader_epoch, now_ms)
        self.epoch_start_offset = res.base_offset
        log.info("%s-%d: leader in epoch %d (was %s), epoch starts at %d, HW %d",
                 self.topic, self.index, leader_epoch, was, self.epoch_start_offset, self.hw)
        self.update_membership(replicas, isr, partition_epoch)
        self.wake()

    def become_follower(self, leader_id: int, leader_epoch: int, replicas: tuple[int, ...],
                        isr: tuple[int, ...], partition_epoch: int) -> None:
        if self.role == LEADER:
            self.waiters.fail_all(self.not_leader_after(leader_id, leader_epoch))
        self.role = FOLLOWER if leader_id >= 0 else OFFLINE
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.progress = {}
        self.update_membership(replicas, isr, partition_epoch)
        self.wake()

    def not_leader_after(self, leader_id: int, leader_epoch: int) -> RaftlogError:
        return error(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                     f"leadership of {self.topic}-{self.index} moved to broker {leader_id}",
                     {"leader_id": leader_id, "leader_epoch": leader_epoch})

    def close(self) -> None:
        self.waiters.fail_all(self.not_leader_after(-1, self.leader_epoch))
        self.wake()
        self.log.close()

    # -- leader side ------------------------------------------------------------------------
    def check_can_append(self, acks: int) -> None:
        if self.role != LEADER:
            raise self.not_leader()
        if acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise error(ErrorCode.NOT_ENOUGH_REPLICAS,
                        f"{self.topic}-{self.index} has {len(self.isr)} in-sync replicas "
                        f"{list(self.isr)}, min.insync.replicas is {self.min_insync_replicas}")

    def append_leader(self, batch: bytearray, acks: int, now_ms: int) -> Appended:
        """Append one validated client batch, or find where its earlier copy went."""
        self.check_can_append(acks)
        h = batch_codec.peek(batch)
        if "compact" in self.config.get("cleanup.policy", "delete"):
            self._require_keys(h, batch)
        dup = self.producers.check(h)
        if dup is not None:
            return Appended(dup.base_offset, dup.last_offset, True)
        res = self.log.append(batch, self.leader_epoch, now_ms)
        self.producers.update(batch_codec.peek(batch))   # now stamped with its offsets
        self._advance_hw()
        self.wake()
        return Appended(res.base_offset, res.last_offset, False)

    def _require_keys(self, h: batch_codec.BatchHeader, batch: bytearray) -> None:
        """Compacted topics refuse keyless records (Kafka's LogValidator): a per-record check,
        run only for compacted topics."""
        recs = batch_codec.decode_records(h, memoryview(batch)[batch_codec.HEADER_SIZE:])
        if any(r.key is None for r in recs):
            raise error(ErrorCode.INVALID_RECORD,
                        f"{self.topic} is compacted (cleanup.policy="
                        f"{self.config.get('cleanup.policy')}): every record needs a key")

    def wait_committed(self, next_offset: int, leader_epoch: int) -> asyncio.Future[int]:
        """Resolves once the HW reaches `next_offset` (the batch's last offset + 1) of a batch
        appended as leader in `leader_epoch`.

        The caller may have awaited (the flush) since the append: if leadership changed
        meanwhile, the batch may have been truncated away and a later epoch's HW would pass its
        offsets with other records there, so that is NOT_LEADER, never a success. Once this
        waiter is registered, a role change fails it (become_follower / become_leader).
        """
        if self.role != LEADER or self.leader_epoch != leader_epoch:
            raise self.not_leader_after(self.leader_id, self.leader_epoch)
        fut = self.waiters.wait(next_offset)
        if self.hw >= next_offset:
            self.waiters.notify(self.hw)
        return fut

    def check_isr_after_append(self) -> None:
        if len(self.isr) < self.min_insync_replicas:
            raise error(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                        f"{self.topic}-{self.index}: the ISR shrank to {list(self.isr)} below "
                        f"min.insync.replicas={self.min_insync_replicas} after the append")

    def _advance_hw(self) -> None:
        new = high_watermark(self.broker_id, self.log_end_offset, self.isr, self.progress,
                             self.hw, self.epoch_start_offset)
        if new != self.hw:
            self.hw = new
            self.waiters.notify(new)
            self.wake()

    def answer_follower_fetch(self, follower_id: int, leader_epoch: int, fetch_offset: int,
                              last_fetched_epoch: int, max_bytes: int,
                              now_ms: int) -> dict[str, Any]:
        """One partition entry of a follower's fetch; raises for fenced/unknown requests.
        `max_bytes` 0 answers no records (the request's budget is used up) but still records
        the follower's progress."""
        if self.role != LEADER:
            raise self.not_leader()
        if leader_epoch < self.leader_epoch:
            raise error(ErrorCode.FENCED_LEADER_EPOCH,
                        f"follower epoch {leader_epoch} < leader epoch {self.leader_epoch}",
                        {"leader_epoch": self.leader_epoch})
        if leader_epoch > self.leader_epoch:
            raise error(ErrorCode.UNKNOWN_LEADER_EPOCH,
                        f"follower epoch {leader_epoch} > leader epoch {self.leader_epoch}")
        if follower_id not in self.replicas or follower_id == self.broker_id:
            raise error(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                        f"broker {follower_id} is not a follower of {self.topic}-{self.index}")
        leo = self.log_end_offset
        if last_fetched_epoch >= 0:
            epoch, end = self.log.end_offset_for_epoch(last_fetched_epoch)
            if epoch != last_fetched_epoch or end < fetch_offset:
                return {"diverging_epoch": {"epoch": epoch, "end_offset": end},
                        "high_watermark": self.hw, "log_start_offset": self.log_start_offset}
        if fetch_offset > leo:
            # Only reachable with an epoch the leader does not know: make the follower truncate.
            latest = self.log.latest_epoch
            return {"diverging_epoch": {"epoch": latest, "end_offset": leo},
                    "high_watermark": self.hw, "log_start_offset": self.log_start_offset}
        if fetch_offset < self.log_start_offset:
            raise error(ErrorCode.OFFSET_OUT_OF_RANGE,
                        f"fetch offset {fetch_offset} is below the log start "
                        f"{self.log_start_offset}",
                        {"log_start_offset": self.log_start_offset, "log_end_offset": leo})
        p = self.progress.setdefault(follower_id, FollowerProgress(last_caught_up_ms=now_ms))
        record_fetch(p, fetch_offset, leo, now_ms)
        self._advance_hw()
        # max_bytes 0: the fetch's budget is used up; progress above still counts
        records = self.log.read(fetch_offset, max_bytes) \
            if fetch_offset < leo and max_bytes > 0 else b""
        return {"high_watermark": self.hw, "log_start_offset": self.log_start_offset,
                "records": records}

    # -- follower side ----------------------------------------------------------------------
    def fetch_position(self) -> tuple[int, int]:
        """(fetch offset, last fetched epoch) for the next follower fetch."""
        return self.log.log_end_offset, self.log.latest_epoch

    def truncate_for_divergence(self, epoch: int, end_offset: int) -> int | None:
        """KIP-279: truncate to the smaller of the leader's and our own end of `epoch`; the
        offset truncated to, or None when that would cut into segments being cleaned (the
        next fetch asks again)."""
        if epoch < 0 or end_offset < 0:
            target = self.log_start_offset
        else:
            own_epoch, own_end = self.log.end_offset_for_epoch(epoch)
            target = end_offset if own_epoch != epoch else min(end_offset, own_end)
        target = max(min(target, self.log_end_offset), self.log_start_offset)
        if self.cleaning_end is not None and target < self.cleaning_end:
            return None
        log.warning("%s-%d: diverged from leader %d at epoch %d; truncating %d -> %d",
                    self.topic, self.index, self.leader_id, epoch, self.log_end_offset, target)
        self.log.truncate_to(target)
        self.producers.rebuild(self.log.iter_batch_headers())
        if self.hw > target:
            self.hw = target
        return target

    def append_follower(self, records: bytes, leader_hw: int, leader_log_start: int,
                        now_ms: int) -> None:
        """Append the leader's batches as they are. Storage checks framing, offsets, epochs and
        CRCs (CorruptBatchError and the like, the fetcher retries); records are not validated
        again, as in Kafka (LogValidator runs on the leader only): the leader validated them
        on produce, and a follower refusing a batch its leader holds (an epoch-start control
        batch, a compacted batch, or one an older version accepted) would stall on it forever
        and fall out of the ISR instead of keeping an identical copy."""
        if records:
            self.log.append_replica(records, now_ms)
            for _pos, h in batch_codec.iter_batches(records):
                self.producers.update(h)
        if leader_log_start > self.log_start_offset and leader_log_start <= self.log_end_offset \
                and self.cleaning_end is None:
            self.log.delete_before(leader_log_start)
        new_hw = min(leader_hw, self.log_end_offset)
        if new_hw > self.hw:
            self.hw = new_hw
            self.wake()

    # -- consumer side ----------------------------------------------------------------------
    def read_committed(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from `offset`, all below the HW."""
        if self.role != LEADER:
            raise self.not_leader()
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise self._out_of_range(offset)
        if offset >= self.hw:
            # Between HW and LEO: not committed yet. After a failover the new leader's HW may
            # briefly lag what consumers already read, so this is "nothing yet", not an error.
            return b""
        return self.log.read(offset, max_bytes, self.hw)

    def _out_of_range(self, offset: int) -> RaftlogError:
        return error(ErrorCode.OFFSET_OUT_OF_RANGE,
                     f"offset {offset} is outside [{self.log_start_offset}, "
                     f"{self.log_end_offset}] of {self.topic}-{self.index}",
                     {"log_start_offset": self.log_start_offset,
                      "log_end_offset": self.log_end_offset, "high_watermark": self.hw})
