"""ReplicaManager: the partitions this broker hosts, reconciled from applied metadata.

Owns the set of `Partition`s on this broker and the background work around them: turning each
applied MetadataView into leader/follower roles, one follower fetch session per leader broker,
ISR change requests to the controller, periodic flushes and high-watermark checkpoints, and
removing the data of deleted topics. Request handling for produce/fetch lives in the data
handlers, which call the methods here.

Imports storage, replication.*, topic_config and errors. It reaches the controller and peers
only through the Broker it is given (`call_controller`, `peer`), never pysyncobj.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from typing import TYPE_CHECKING, Any, Callable

from raftlog import topic_config
from raftlog.errors import ConfigError, ErrorCode, RaftlogError, error
from raftlog.meta.view import MetadataView
from raftlog.replication.fetcher import FetcherSession
from raftlog.replication.flush import FlushSchedule, GroupCommit
from raftlog.replication.partition import FOLLOWER, LEADER, Partition
from raftlog.replication.progress import isr_changes
from raftlog.storage import cleaner, retention
from raftlog.storage.log import PartitionLog
from raftlog.storage.options import MAX_BATCH_BYTES_MAX, LogOptions

if TYPE_CHECKING:
    from raftlog.server.broker import Broker

log = logging.getLogger("raftlog.replicas")

ISR_CHECK_INTERVAL_MS = 500
HW_CHECKPOINT_INTERVAL_MS = 5000
# The flush loop looks at its partitions at least this often, so a partition opened (or a
# flush.ms shortened) while it sleeps towards a later due time is flushed on time from then.
FLUSH_CHECK_MAX_MS = 1000
# The cleaner thread may hold the GIL at most this share of wall time, so produce keeps >= 80%
# of its throughput while a log is cleaned (benchmarks/cleaner_bench.py). 0.25 kept ~0.9 in
# process but only 0.77 on 3 brokers sharing 2 cores (every replica cleans, so their cleaners
# add up to 0.75 of a core); 0.15 measured 0.88 there, at ~1.5x longer passes.
CLEANER_BUSY_SHARE = 0.15
PACE_SLICE_S = 0.005


class Pacer:
    """Keeps the cleaner thread's busy time to `busy_share` of wall time (Kafka throttles the
    cleaner by I/O rate; here the scarce resource is the GIL the event loop needs too): after
    each slice of work it sleeps busy * (1 - share) / share, releasing the GIL."""

    def __init__(self, busy_share: float = 1.0):
        self.share = busy_share
        self.t0 = time.perf_counter()

    def __call__(self) -> None:
        if self.share >= 1.0:
            return
        busy = time.perf_counter() - self.t0
        if busy >= PACE_SLICE_S:
            time.sleep(busy * (1 - self.share) / self.share)
            self.t0 = time.perf_counter()
TOPIC_ID_FILE = "topic_id"
# A partition directory is named "<topic>-<partition>" (topic names may contain '-').
PARTITION_DIR_RE = re.compile(r"^(?P<topic>.+)-(?P<index>\d+)$")
# How often the startup sweep of orphaned partition directories checks whether this node's
# metadata has caught up (it deletes nothing before that).
ORPHAN_SWEEP_POLL_MS = 250


def now_ms() -> int:
    return int(time.time() * 1000)


class ReplicaManager:
    def __init__(self, broker: Broker):
        self.broker = broker
        self.cfg = broker.cfg
        self.node_id = broker.node_id
        self.root = os.path.join(broker.node.data_dir, "partitions")
        self.partitions: dict[tuple[str, int], Partition] = {}
        self.topic_ids: dict[str, str] = {}
        self.group_commits: dict[tuple[str, int], GroupCommit] = {}
        self.fetchers: dict[int, FetcherSession] = {}
        self._spawn: Callable[..., asyncio.Task[Any]] | None = None
        self._last_view: MetadataView | None = None
        # What the last reconcile acted on: unchanged topics (the state machine reuses their
        # immutable TopicInfo) are skipped, so a metadata change costs O(changed topics).
        self._seen_topics: dict[str, Any] = {}
        self._seen_registration: tuple[bool, int] = (False, -1)
        self._opening: set[tuple[str, int]] = set()

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, spawn: Callable[..., asyncio.Task[Any]]) -> None:
        self._spawn = spawn
        os.makedirs(self.root, exist_ok=True)
        # Deletions that a crash interrupted (see _remove).
        for name in os.listdir(self.root):
            if ".deleted-" in name:
                spawn(asyncio.to_thread(shutil.rmtree, os.path.join(self.root, name), True),
                      f"rm-{name}")
        spawn(self._isr_loop(), "isr-check")
        spawn(self._flush_loop(), "flush")
        spawn(self._checkpoint_loop(), "hw-checkpoint")
        spawn(self._retention_loop(), "retention")
        spawn(self._cleaner_loop(), "log-cleaner")
        spawn(self._reconcile_when_registered(), "reconcile-on-register")
        spawn(self._sweep_orphans_when_caught_up(), "orphan-sweep")

    async def stop(self) -> None:
        for f in self.fetchers.values():
            await f.stop()
        closed = error(ErrorCode.NOT_LEADER_OR_FOLLOWER, "broker is shutting down")
        for key, p in list(self.partitions.items()):
            gc = self.group_commits.pop(key, None)
            if gc is not None:
                gc.close(closed)
            self._checkpoint(p)
            p.close()
        self.partitions.clear()

    @property
    def broker_epoch(self) -> int:
        lc = self.broker.lifecycle
        return lc.broker_epoch if lc is not None else -1

    async def _reconcile_when_registered(self) -> None:
        lc = self.broker.lifecycle
        assert lc is not None
        await lc.registered.wait()
        self.on_view(self.broker.view)

    # -- reconciling roles from metadata ----------------------------------------------------
    def on_view(self, view: MetadataView) -> None:
        """Called on the loop after every applied metadata change."""
        self._last_view = view
        me = view.broker(self.node_id)
        # Act only on our own current registration: a view that still shows the previous
        # incarnation of this broker as leader must not make this process a leader.
        registered = me is not None and me.epoch == self.broker_epoch
        full = (registered, self.broker_epoch) != self._seen_registration
        self._seen_registration = (registered, self.broker_epoch)
        if full:
            self._seen_topics = {}
        # Deleted topics (or deleted and re-created under the same name) go first.
        for name in [n for n in self._seen_topics if n not in view.topics]:
            del self._seen_topics[name]
        for key in [k for k in self.partitions
                    if view.topic(k[0]) is None
                    or view.topics[k[0]].topic_id != self.topic_ids.get(k[0])]:
            self._remove(key, view)
        now = now_ms()
        for name in view.topic_names():
            t = view.topics[name]
            if self._seen_topics.get(name) is t:
                continue
            self._seen_topics[name] = t
            values = topic_config.effective(dict(t.config), self.cfg.log)
            for pi in t.partitions:
                if self.node_id not in pi.replicas:
                    continue
                key = (name, pi.partition)
                p = self.partitions.get(key)
                if p is None:
                    if registered:
                        self._start_open(name, t.topic_id, pi.partition, values)
                    continue
                rf = len(pi.replicas)
                mir = values["min.insync.replicas"]
                # The node default is capped at the replication factor (an explicit topic
                # override above RF is refused when it is set).
                p.min_insync_replicas = min(mir, rf) if "min.insync.replicas" not in t.config else mir
                p.max_message_bytes = values["max.message.bytes"]
                p.config = values
                self._reconfigure_log(p, values)
                if not registered:
                    if p.role == LEADER:
                        p.become_follower(-1, pi.leader_epoch, pi.replicas, pi.isr,
                                          pi.partition_epoch)
                    continue
                if pi.leader == self.node_id:
                    if p.role != LEADER or p.leader_epoch != pi.leader_epoch:
                        p.become_leader(pi.leader_epoch, pi.replicas, pi.isr,
                                        pi.partition_epoch, now)
                    elif p.partition_epoch != pi.partition_epoch:
                        p.update_membership(pi.replicas, pi.isr, pi.partition_epoch)
                elif (p.role != FOLLOWER or p.leader_id != pi.leader
                      or p.leader_epoch != pi.leader_epoch):
                    p.become_follower(pi.leader, pi.leader_epoch, pi.replicas, pi.isr,
                                      pi.partition_epoch)
                else:
                    p.update_membership(pi.replicas, pi.isr, pi.partition_epoch)
        self._update_fetchers()

    def _start_open(self, topic: str, topic_id: str, index: int, values: dict[str, Any]) -> None:
        """Open (recover) a partition log in a worker thread: recovery may scan a large log and
        fsyncs checkpoints, neither of which may stall the loop (heartbeats, other partitions).
        Once open, the topic is reconciled again against the newest view."""
        key = (topic, index)
        if key in self._opening:
            return
        self._opening.add(key)
        assert self._spawn is not None
        self._spawn(self._open_then_reconcile(topic, topic_id, index, values),
                    f"open-{topic}-{index}")

    async def _open_then_reconcile(self, topic: str, topic_id: str, index: int,
                                   values: dict[str, Any]) -> None:
        key = (topic, index)
        try:
            p = await asyncio.to_thread(self._open, topic, topic_id, index, values)
        except Exception:
            log.exception("cannot open %s-%d", topic, index)
            return
        finally:
            self._opening.discard(key)
        view = self._last_view
        t = view.topic(topic) if view is not None else None
        if t is None or t.topic_id != topic_id or key in self.partitions:
            p.log.close()     # deleted (or re-created) while it opened: the next open wins
            return
        self.partitions[key] = p
        self.topic_ids[topic] = topic_id
        self.group_commits[key] = GroupCommit(p.log)
        log.info("opened %s-%d: log [%d, %d), HW %d", topic, index, p.log_start_offset,
                 p.log_end_offset, p.hw)
        self._seen_topics.pop(topic, None)
        assert view is not None
        self.on_view(view)

    def _open(self, topic: str, topic_id: str, index: int, values: dict[str, Any]) -> Partition:
        """Runs in a worker thread: touches only this partition's directory."""
        d = os.path.join(self.root, f"{topic}-{index}")
        id_file = os.path.join(d, TOPIC_ID_FILE)
        if os.path.isdir(d):
            try:
                with open(id_file) as fh:
                    old = fh.read().strip()
            except OSError:
                old = ""
            if old != topic_id:
                # Data of an earlier topic with the same name: it was deleted while we were down.
                log.info("removing stale data of %s-%d (topic id %s)", topic, index, old or "?")
                shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d, exist_ok=True)
        if not os.path.exists(id_file):
            with open(id_file, "w") as fh:
                fh.write(topic_id)
        opts = LogOptions(**self._log_settings(values))
        return Partition(topic, index, PartitionLog.open(d, opts, now_ms()), self.node_id)

    def _log_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """The LogOptions fields that follow the topic's effective config. The log's batch
        limit is a backstop (the produce handler checks max.message.bytes first), never below
        what one follower fetch may carry."""
        return {"segment_bytes": values["segment.bytes"], "segment_ms": values["segment.ms"],
                "flush_policy": values["flush.policy"], "flush_interval_ms": values["flush.ms"],
                "max_batch_bytes": min(max(values["max.message.bytes"],
                                           self.cfg.replication.replica_fetch_max_bytes),
                                       MAX_BATCH_BYTES_MAX)}

    def _reconfigure_log(self, p: Partition, values: dict[str, Any]) -> None:
        """Push an altered topic config to an open log: roll limits, the batch size limit,
        and the flush policy and interval. From the swap on, `durable()` and the fetcher see
        the new policy (interval -> fsync: acks wait for fsync; fsync -> interval: waiters
        already queued on the group commit are still flushed by it) and the flush loop the new
        interval."""
        try:
            p.log.reconfigure(**self._log_settings(values))
        except ConfigError as exc:   # topic_config validated it; never let one topic stop this
            log.error("%s-%d: cannot apply topic config: %s", p.topic, p.index, exc)

    def _remove(self, key: tuple[str, int], view: MetadataView) -> None:
        p = self.partitions.pop(key)
        gc = self.group_commits.pop(key, None)
        if gc is not None:
            gc.close(error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{key[0]} was deleted"))
        p.close()
        d = os.path.join(self.root, f"{key[0]}-{key[1]}")
        # Rename at once (a re-created topic of the same name may open this path next), then
        # delete the renamed tree in a worker thread.
        doomed = f"{d}.deleted-{self.topic_ids.get(key[0], 'x')}"
        try:
            os.rename(d, doomed)
        except OSError:
            return
        assert self._spawn is not None
        self._spawn(asyncio.to_thread(shutil.rmtree, doomed, True), f"rm-{key[0]}-{key[1]}")
        log.info("removed data of %s-%d", *key)

    # -- data of topics deleted while this broker was down -----------------------------------
    def view_caught_up(self) -> bool:
        """Whether this node's metadata view may be trusted to say a topic is gone: the Raft
        replica has caught up with a leader's commit index since this process started
        (is_ready), and the view holds this process's own registration, which was committed
        after anything deleted while we were down. A node restarted without a quorum, or
        still replaying an old journal, is not caught up."""
        meta = self.broker.meta
        if meta is None or not meta.is_ready or self.broker_epoch < 0:
            return False
        me = self.broker.view.broker(self.node_id)
        return me is not None and me.epoch == self.broker_epoch

    async def _sweep_orphans_when_caught_up(self) -> None:
        """Once per process: wait until the view is caught up, then sweep (see sweep_orphans).
        Deletions while we run are handled as they are applied (on_view -> _remove)."""
        while not self.view_caught_up():
            await asyncio.sleep(ORPHAN_SWEEP_POLL_MS / 1000)
        try:
            await self.sweep_orphans()
        except OSError as exc:
            log.error("sweeping partition directories of deleted topics failed: %s", exc)

    async def sweep_orphans(self) -> list[str]:
        """Remove the partition directories of topics deleted while this broker was down: no
        such topic in the view, or a topic of that name with another topic id (deleted and
        re-created) of which this broker holds no replica (one it holds replaces the stale
        data when it opens, see _open). Does nothing unless view_caught_up(). Returns the
        directory names removed."""
        if not self.view_caught_up():
            return []
        found = await asyncio.to_thread(self._list_partition_dirs)
        if not self.view_caught_up():
            return []
        view = self.broker.view   # the newest, read after the listing: it decides
        doomed = [name for name, topic, index, tid in found
                  if self._is_orphan(view, topic, index, tid)]
        for name in doomed:
            d = os.path.join(self.root, name)
            trash = f"{d}.deleted-orphan-{time.monotonic_ns()}"
            try:
                os.rename(d, trash)   # at once: a topic created next may reuse the name
            except OSError:
                continue              # removed meanwhile (_remove)
            assert self._spawn is not None
            self._spawn(asyncio.to_thread(shutil.rmtree, trash, True), f"rm-orphan-{name}")
            log.info("removed data of %s: its topic was deleted while this broker was down",
                     name)
        return doomed

    def _list_partition_dirs(self) -> list[tuple[str, str, int, str]]:
        """Runs in a worker thread: (dir name, topic, partition, topic id or "") of every
        partition directory under the root."""
        out = []
        for name in os.listdir(self.root):
            m = PARTITION_DIR_RE.match(name)
            d = os.path.join(self.root, name)
            if m is None or ".deleted-" in name or not os.path.isdir(d):
                continue
            try:
                with open(os.path.join(d, TOPIC_ID_FILE)) as fh:
                    tid = fh.read().strip()
            except OSError:
                tid = ""
            out.append((name, m["topic"], int(m["index"]), tid))
        return out

    def _is_orphan(self, view: MetadataView, topic: str, index: int, topic_id: str) -> bool:
        key = (topic, index)
        if key in self.partitions or key in self._opening:
            return False           # open or opening: on_view owns its fate
        t = view.topic(topic)
        if t is None:
            return True
        if t.topic_id == topic_id:
            return False
        pi = t.partitions[index] if index < len(t.partitions) else None
        return pi is None or self.node_id not in pi.replicas

    def _update_fetchers(self) -> None:
        leaders = {p.leader_id for p in self.partitions.values()
                   if p.role == FOLLOWER and p.leader_id >= 0}
        for leader in leaders:
            if leader not in self.fetchers:
                f = FetcherSession(self, leader)
                self.fetchers[leader] = f
                assert self._spawn is not None
                f.task = self._spawn(f.run(), f"fetcher-{leader}")
        for f in self.fetchers.values():
            f.wake()

    def followed_from(self, leader_id: int) -> list[Partition]:
        return [p for p in self.partitions.values()
                if p.role == FOLLOWER and p.leader_id == leader_id]

    # -- lookups for handlers ---------------------------------------------------------------
    def get(self, topic: str, index: int) -> Partition:
        p = self.partitions.get((topic, index))
        if p is not None:
            return p
        view = self.broker.view
        pi = view.partition(topic, index)
        if pi is None:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        f"no partition {topic}-{index} in this cluster")
        if self.node_id in pi.replicas:
            raise error(ErrorCode.LEADER_NOT_AVAILABLE,
                        f"{topic}-{index} is still being opened on broker {self.node_id}",
                        {"leader_id": pi.leader, "leader_epoch": pi.leader_epoch})
        raise error(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                    f"broker {self.node_id} does not host {topic}-{index}",
                    {"leader_id": pi.leader, "leader_epoch": pi.leader_epoch})

    def leader(self, topic: str, index: int) -> Partition:
        p = self.get(topic, index)
        if p.role != LEADER:
            raise p.not_leader()
        return p

    async def durable(self, p: Partition, offset: int) -> None:
        """Under the fsync policy, until `offset` is on disk; otherwise at once."""
        if p.log.options.flush_policy == "fsync":
            gc = self.group_commits.get(p.key)
            if gc is not None:
                await gc.durable(offset)

    # -- background loops -------------------------------------------------------------------
    async def _isr_loop(self) -> None:
        while True:
            await asyncio.sleep(ISR_CHECK_INTERVAL_MS / 1000)
            view = self._last_view
            if view is None:
                continue
            eligible = frozenset(view.active_broker_ids())
            now = now_ms()
            for p in list(self.partitions.values()):
                if p.role != LEADER or p.isr_change_in_flight:
                    continue
                new = isr_changes(self.node_id, p.replicas, p.isr, p.progress, p.hw,
                                  p.epoch_start_offset, now,
                                  self.cfg.replication.replica_lag_time_max_ms, eligible)
                if new is not None:
                    p.isr_change_in_flight = True
                    assert self._spawn is not None
                    self._spawn(self._alter_isr(p, new), f"alter-isr-{p.topic}-{p.index}")

    async def _alter_isr(self, p: Partition, isr: tuple[int, ...]) -> None:
        log.info("%s-%d: asking the controller to change the ISR %s -> %s", p.topic, p.index,
                 list(p.isr), list(isr))
        try:
            await self.broker.call_controller("/v1/controller/alter-partition", {
                "broker_id": self.node_id, "broker_epoch": self.broker_epoch,
                "topic": p.topic, "partition": p.index, "leader_epoch": p.leader_epoch,
                "partition_epoch": p.partition_epoch, "isr": list(isr)})
        except RaftlogError as exc:
            log.info("%s-%d: ISR change refused: %s", p.topic, p.index, exc)
            await asyncio.sleep(0.5)
        finally:
            p.isr_change_in_flight = False

    async def _flush_loop(self) -> None:
        """The `interval` flush policy: fsync each partition's new data in a worker thread
        every flush.ms of its own topic (read from the open log each round, so `topic alter`
        applies at once). Logs under the fsync policy are flushed by their group commit before
        an ack; this loop covers what no ack waited for (acks=0) on the same interval."""
        schedule: FlushSchedule[tuple[str, int]] = FlushSchedule(FLUSH_CHECK_MAX_MS)
        while True:
            # A log that rolled is due at once (the interval policy flushes "on roll" too).
            intervals = {k: 0 if p.log.rolled_since_flush else p.log.options.flush_interval_ms
                         for k, p in self.partitions.items()}
            due, sleep_ms = schedule.plan(intervals, time.monotonic() * 1000)
            if not due:
                await asyncio.sleep(sleep_ms / 1000)
                continue
            for key in due:
                p = self.partitions.get(key)
                if p is None or p.log.closed or (p.log.flushed_offset >= p.log.log_end_offset
                                                 and not p.log.rolled_since_flush):
                    continue
                try:
                    await asyncio.to_thread(p.log.flush)
                except (OSError, ValueError) as exc:
                    log.error("%s-%d: flush failed: %s", p.topic, p.index, exc)
                    # a log still flagged as rolled would be due again at once: do not spin
                    await asyncio.sleep(FLUSH_CHECK_MAX_MS / 1000)

    def _checkpoint(self, p: Partition) -> None:
        try:
            p.log.write_high_watermark(p.hw)
        except (OSError, ValueError) as exc:
            log.warning("%s-%d: high watermark checkpoint failed: %s", p.topic, p.index, exc)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(HW_CHECKPOINT_INTERVAL_MS / 1000)
            for p in list(self.partitions.values()):
                if p.hw != p.log.high_watermark_checkpoint:
                    await asyncio.to_thread(self._checkpoint, p)

    # -- retention (issue 7) ----------------------------------------------------------------
    async def _retention_loop(self) -> None:
        """Every `[log] retention_check_interval_ms` (re-read each round): roll quiet active
        segments older than segment.ms (every replica), and on leaders delete whole segments
        past retention.ms / beyond retention.bytes below the HW. Topic configs are read from
        each partition's current effective config, so `topic alter` applies without restart.
        Followers move their log start from the leader's (Partition.append_follower)."""
        while True:
            await asyncio.sleep(self.cfg.log.retention_check_interval_ms / 1000)
            now = now_ms()
            for p in list(self.partitions.values()):
                if p.cleaning_end is not None:
                    continue   # the cleaner is rewriting its segments: next round
                try:
                    await self.retention_once(p, now)
                except Exception:
                    log.exception("%s-%d: retention failed", p.topic, p.index)

    async def retention_once(self, p: Partition, now: int) -> int:
        """One retention pass over `p`; returns how many segments were deleted. The log start
        moves at once; the checkpoint fsync and the unlinks run in a worker thread."""
        cfg = p.config
        if not cfg or p.log.closed:
            return 0
        segs = p.log.segments()
        if retention.roll_due(segs[-1], now, cfg["segment.ms"]):
            p.log.roll(now)
            segs = p.log.segments()
        if p.role != LEADER or "delete" not in cfg["cleanup.policy"]:
            return 0
        cutoff = retention.retention_cutoff(segs, p.log_start_offset, p.hw, now,
                                            cfg["retention.ms"], cfg["retention.bytes"])
        if cutoff is None:
            return 0
        deleted = p.log.delete_before(cutoff)
        p.wake()   # long-polling followers learn the new log start now
        await asyncio.to_thread(p.log.finish_deletes)
        log.info("%s-%d: retention moved the log start to %d (%d segments deleted)",
                 p.topic, p.index, cutoff, deleted)
        return deleted

    # -- compaction (issue 7) ---------------------------------------------------------------
    async def _cleaner_loop(self) -> None:
        """One cleaner per broker (Kafka's log.cleaner.threads=1): every retention interval,
        clean each compacted partition that is dirty enough, on every replica (each replica
        cleans its own log; see storage/cleaner.py for why and what replicas then share). The
        file work runs in a worker thread; only installing the new segments runs here."""
        while True:
            await asyncio.sleep(self.cfg.log.retention_check_interval_ms / 1000)
            for p in list(self.partitions.values()):
                if "compact" not in p.config.get("cleanup.policy", ""):
                    continue
                try:
                    await self.clean_once(p, now_ms())
                except Exception:
                    log.exception("%s-%d: log cleaning failed", p.topic, p.index)

    async def clean_once(self, p: Partition, now: int) -> bool:
        cfg = p.config
        if p.log.closed or p.cleaning_end is not None:
            return False
        ccfg = cleaner.CleanConfig(cfg["delete.retention.ms"],
                                   float(cfg["min.cleanable.dirty.ratio"]),
                                   cfg["min.compaction.lag.ms"])
        d = p.log.directory
        state = await asyncio.to_thread(cleaner.read_state, d)
        plan = cleaner.plan_clean(p.log.segments(), p.log_start_offset, p.hw, state, now, ccfg)
        if plan is None:
            return False
        p.cleaning_end = plan.end_offset
        try:
            segs, stats = await asyncio.to_thread(cleaner.clean, d, plan, now, ccfg,
                                                  p.log.options,
                                                  pace=Pacer(CLEANER_BUSY_SHARE))
            if p.log.closed or self.partitions.get(p.key) is not p:
                for seg in segs:
                    seg.close()
                return False
            n = p.log.install_cleaned(segs)
        finally:
            p.cleaning_end = None
        log.info("%s-%d: cleaned %d segments up to %d: %d -> %d bytes, %d of %d records kept",
                 p.topic, p.index, n, plan.end_offset, stats.read_bytes, stats.written_bytes,
                 stats.records_kept, stats.records_read)
        return True
