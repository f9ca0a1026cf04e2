"""GroupService: the IO around the coordinator state machine, on one broker.

Owns: creating `__consumer_offsets` (through the controller) on first use, deciding whether this
broker coordinates a group (it leads partition hash(group) % N, its local replica is a promoted
leader), rebuilding each coordinated partition's state when leadership arrives (committed offsets
by reading the partition's log; membership from the group's last Raft-committed assignment),
the timer loop (session expiry, debounced rebalances), committing each new assignment to Raft
(`set_group_assignment` through the controller) before members see it, and offset commits as
records appended on the partition leader and acknowledged once the high watermark passes them
(acks=all), and expiring the offsets of groups empty for `offsets_retention_ms` (tombstones, then
the group's Raft entry is deleted). Runs on the broker's event loop; the rules live in
raftlog/groups/coordinator.py and raftlog/groups/retention.py.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from raftlog.codec import batch as batch_codec
from raftlog.errors import ErrorCode, RaftlogError, error
from raftlog.groups import offsets as off
from raftlog.groups.appender import OffsetAppender
from raftlog.groups.coordinator import Coordinator, Group
from raftlog.groups.retention import Retention
from raftlog.meta.view import MetadataView
from raftlog.replication.partition import LEADER

if TYPE_CHECKING:
    from raftlog.replication.partition import Partition
    from raftlog.server.broker import Broker

log = logging.getLogger("raftlog.groups")

# One offset commit: (group, member_id, generation, [(topic, partition, offset, metadata)],
# group_instance_id or None) -- the arguments of GroupService.commit.
CommitArgs = tuple[str, str, int, list[tuple[str, int, int, str]], str | None]
# group, member_id, generation, owned [(topic, partition)], topics (None: unchanged),
# (session_timeout_ms, rebalance_timeout_ms) or None
HeartbeatArgs = tuple[str, str, int, list[tuple[str, int]], list[str] | None,
                      tuple[int, int] | None]

TICK_MS = 50
TOPIC_WAIT_S = 15.0
READ_CHUNK_BYTES = 1 << 20
INDEX_CACHE_MAX = 100_000        # group -> offsets partition entries kept (bounded memory)


def mono_ms() -> int:
    return int(time.monotonic() * 1000)


def wall_ms() -> int:
    return int(time.time() * 1000)


async def _each(entries: list[Any], call: Callable[..., Awaitable[Any]]) -> list[Any]:
    """`call(*entry)` for each entry of a batch request, in order: each its own answer or its
    own RaftlogError; an entry that is already an error (malformed) stays that error."""
    out: list[Any] = []
    for e in entries:
        if isinstance(e, RaftlogError):
            out.append(e)
            continue
        try:
            out.append(await call(*e))
        except RaftlogError as exc:
            out.append(exc)
    return out


class GroupService:
    def __init__(self, broker: Broker, clock: Callable[[], int] = mono_ms,
                 wall_clock: Callable[[], int] = wall_ms):
        self.b = broker
        self.cfg = broker.cfg.groups
        self.clock = clock
        self.wall_clock = wall_clock
        self.coord = Coordinator(self.cfg.rebalance_delay_ms, self.cfg.min_session_timeout_ms,
                                 self.cfg.max_session_timeout_ms)
        self.offsets: dict[str, dict[tuple[str, int], off.OffsetAndMetadata]] = {}
        self._loaded: dict[int, int] = {}          # offsets partition -> leader epoch loaded at
        self._load_lock = asyncio.Lock()
        self._topic_lock = asyncio.Lock()
        self._spawn: Callable[..., asyncio.Task[Any]] | None = None
        self._appender: OffsetAppender | None = None     # made by start()
        self._index_cache: dict[str, tuple[int, int]] = {}
        self._topic_ready_view: MetadataView | None = None
        self.retention = Retention(self.cfg.offsets_retention_ms)
        # Groups without members whose "empty since" record is written (or being written): one
        # record per transition to empty, so the retention clock survives a coordinator move.
        self._empty_noted: set[str] = set()
        self._next_retention_check_ms = 0
        self._expiring = False

    def start(self, spawn: Callable[..., asyncio.Task[Any]]) -> None:
        self._spawn = spawn
        self._appender = OffsetAppender(self.b.replicas.durable, spawn, self.wall_clock)
        spawn(self._tick_loop(), "group-coordinator")

    # -- where a group lives ----------------------------------------------------------------
    def num_partitions(self, view: MetadataView | None = None) -> int:
        t = (view or self.b.view).topic(off.OFFSETS_TOPIC)
        return len(t.partitions) if t is not None else self.cfg.offsets_topic_partitions

    def partition_index(self, group: str) -> int:
        # murmur2 is pure Python (~10 µs); every request and every tick asks, so remember it.
        n = self.num_partitions()
        hit = self._index_cache.get(group)
        if hit is not None and hit[0] == n:
            return hit[1]
        if len(self._index_cache) >= INDEX_CACHE_MAX:
            self._index_cache.clear()
        idx = off.partition_for_group(group, n)
        self._index_cache[group] = (n, idx)
        return idx

    async def ensure_topic(self) -> None:
        def ready(v: MetadataView) -> bool:
            t = v.topic(off.OFFSETS_TOPIC)
            return t is not None and all(p.leader >= 0 for p in t.partitions)
        view = self.b.view
        if view is self._topic_ready_view:
            return      # every group request asks: answer from the last view that was ready
        if ready(view):
            self._topic_ready_view = view
            return
        async with self._topic_lock:
            if self.b.view.topic(off.OFFSETS_TOPIC) is None:
                try:
                    await self.b.call_controller("/v1/controller/offsets-topic", {
                        "partitions": self.cfg.offsets_topic_partitions,
                        "replication_factor": self.cfg.offsets_topic_replication_factor})
                except RaftlogError as exc:
                    if exc.code is not ErrorCode.TOPIC_ALREADY_EXISTS:
                        raise error(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                                    f"cannot create {off.OFFSETS_TOPIC}: {exc.message}",
                                    {"retry_after_ms": 200}) from None
            await self.b.wait_view(ready, TOPIC_WAIT_S)

    def find(self, group: str) -> dict[str, Any]:
        view = self.b.view
        idx = self.partition_index(group)
        pi = view.partition(off.OFFSETS_TOPIC, idx)
        if pi is None or pi.leader < 0:
            raise error(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                        f"partition {idx} of {off.OFFSETS_TOPIC} has no leader",
                        {"retry_after_ms": 200})
        b = view.broker(pi.leader)
        if b is None:
            raise error(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"broker {pi.leader} is unknown")
        return {"group": group, "coordinator_id": b.broker_id, "host": b.host,
                "http_port": b.http_port, "url": f"http://{b.host}:{b.http_port}",
                "partition": idx}

    async def coordinate(self, group: str) -> Partition:
        """This broker's leader replica of the group's partition, state loaded; otherwise
        NOT_COORDINATOR (with the coordinator in the hint) or COORDINATOR_NOT_AVAILABLE."""
        p = self._coordinated(group)
        if p is not None:
            return p
        if not isinstance(group, str) or not group:
            raise error(ErrorCode.INVALID_REQUEST, "'group' must be a non-empty string")
        await self.ensure_topic()
        idx = self.partition_index(group)
        pi = self.b.view.partition(off.OFFSETS_TOPIC, idx)
        if pi is None or pi.leader != self.b.node_id:
            hint: dict[str, Any] = {"retry_after_ms": 100}
            try:
                hint.update(self.find(group))
            except RaftlogError:
                pass
            raise error(ErrorCode.NOT_COORDINATOR,
                        f"broker {self.b.node_id} is not the coordinator of group {group!r}",
                        hint)
        p = self.b.replicas.partitions.get((off.OFFSETS_TOPIC, idx))
        if p is None or p.role != LEADER or p.leader_epoch != pi.leader_epoch:
            raise error(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                        f"group {group!r}: this broker is becoming its coordinator",
                        {"retry_after_ms": 100})
        if self._loaded.get(idx) != p.leader_epoch:
            async with self._load_lock:
                if self._loaded.get(idx) != p.leader_epoch:
                    self._load(idx, p)
        return p

    def _load(self, idx: int, p: Partition) -> None:
        """Rebuild the offsets cache and the groups of partition `idx` (a new leadership)."""
        for g in [g for g in self.offsets if self.partition_index(g) == idx]:
            del self.offsets[g]
        for g in [g for g in self.coord.groups if self.partition_index(g) == idx]:
            del self.coord.groups[g]
        mine = [g for g in self.retention.last_active_ms if self.partition_index(g) == idx]
        self.retention.forget(mine)
        self._empty_noted.difference_update(mine)
        empty_since: dict[str, int | None] = {}
        offset, end, count = p.log_start_offset, p.log_end_offset, 0
        while offset < end:
            raw = p.log.read(offset, READ_CHUNK_BYTES)
            if not raw:
                break
            for r in batch_codec.decode(raw):
                if r.offset < offset:
                    continue
                d = off.decode(r.key, r.value)
                if d is None:
                    e = off.decode_empty(r.key, r.value)
                    if e is not None:
                        empty_since[e[0]] = e[1]
                    continue
                (group, topic, part), om = d
                count += 1
                if om is None:
                    self.offsets.get(group, {}).pop((topic, part), None)
                else:
                    self.offsets.setdefault(group, {})[(topic, part)] = om
                    self.retention.touch(group, om.commit_ms)
            last = None
            for _pos, h in batch_codec.iter_batches(raw):
                last = h
            if last is None:
                break
            offset = last.next_offset
        now = self.clock()
        view = self.b.view
        restored = 0
        for name, gi in view.groups.items():
            if self.partition_index(name) == idx:
                g = self.coord.restore(name, gi.generation, gi.protocol,
                                       {m: list(tps) for m, tps in gi.assignment.items()}, now,
                                       self._sizes)
                restored += 1
                if not g.members:
                    self._empty_noted.add(name)     # its clock runs from the records below
        # Retention clocks: the latest commit or "empty since" record; a group known only from
        # Raft (no record of either) starts its clock now rather than expiring at once.
        for name, since in empty_since.items():
            if since is not None and (name in self.offsets or view.group(name) is not None):
                self.retention.touch(name, since)
        for name in [g for g in self.retention.last_active_ms
                     if g not in self.offsets and view.group(g) is None]:
            self.retention.forget([name])          # every offset tombstoned: a deleted group
        for name, gi in view.groups.items():
            if self.partition_index(name) == idx and \
                    name not in self.retention.last_active_ms:
                self.retention.touch(name, self.wall_clock())
        self._loaded[idx] = p.leader_epoch
        log.info("coordinating %s-%d (epoch %d): %d offset records, %d groups restored",
                 off.OFFSETS_TOPIC, idx, p.leader_epoch, count, restored)

    # -- timers and rebalances --------------------------------------------------------------
    def _still_coordinating(self, idx: int) -> bool:
        """This broker still leads offsets partition `idx` with its state loaded."""
        pi = self.b.view.partition(off.OFFSETS_TOPIC, idx)
        p = self.b.replicas.partitions.get((off.OFFSETS_TOPIC, idx))
        return (pi is not None and pi.leader == self.b.node_id and p is not None
                and p.role == LEADER
                and self._loaded.get(idx) == p.leader_epoch == pi.leader_epoch)

    def _sizes(self, topic: str) -> int | None:
        t = self.b.view.topic(topic)
        return len(t.partitions) if t is not None else None

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_MS / 1000)
            try:
                self._tick()
            except Exception:  # a bug: keep the timers running
                log.exception("group coordinator tick failed")

    def _tick(self) -> None:
        now = self.clock()
        if self.coord.groups:
            self._tick_groups(now)
        # Even with no group in memory: after a restart nothing is loaded until a group's first
        # request, and groups nobody asks about must still expire.
        if now >= self._next_retention_check_ms and not self._expiring:
            self._next_retention_check_ms = now + self.cfg.offsets_retention_check_interval_ms
            self._expiring = True
            assert self._spawn is not None
            self._spawn(self._expire_groups(), "offsets-retention")

    def _tick_groups(self, now: int) -> None:
        # Decided per offsets partition (a few dozen), then each group is a cached lookup.
        for idx in [i for i in self._loaded if not self._still_coordinating(i)]:
            del self._loaded[idx]
        loaded = self._loaded
        for name in [g for g in self.coord.groups if self.partition_index(g) not in loaded]:
            log.info("group %s: no longer its coordinator", name)
            del self.coord.groups[name]
        for group, member, why in self.coord.expire(now):
            log.info("group %s: member %s removed (%s)", group, member, why)
        for g in self.coord.due(now, self._sizes, self.b.view):
            g.proposing = True
            assert self._spawn is not None
            self._spawn(self._rebalance(g), f"rebalance-{g.name}")
        for name, g in self.coord.groups.items():
            if g.members:
                self._empty_noted.discard(name)
            elif name not in self._empty_noted:
                # The clock restarts now, before this tick's retention check can run.
                since = self.wall_clock()
                self.retention.touch(name, since)
                self._empty_noted.add(name)
                assert self._spawn is not None
                self._spawn(self._note_empty(name, since), f"group-empty-{name}")

    # -- offset retention (KIP-211) ---------------------------------------------------------
    def _active(self, group: str) -> bool:
        """Not expirable now: it has members, lost its last one since the last tick (clock not
        reset yet), or has a rebalance pending or in flight (whose Raft write would race the
        group's delete and could bring it back)."""
        g = self.coord.groups.get(group)
        return g is not None and (bool(g.members) or group not in self._empty_noted
                                  or g.proposing or g.dirty_since_ms is not None)

    async def _load_led_partitions(self) -> None:
        """Load every offsets partition this broker leads: state is otherwise loaded on a
        group's first request, and a group nobody asks about (say, after a full restart) must
        still expire."""
        t = self.b.view.topic(off.OFFSETS_TOPIC)
        if t is None:
            return
        for pi in t.partitions:
            p = self.b.replicas.partitions.get((off.OFFSETS_TOPIC, pi.partition))
            if pi.leader != self.b.node_id or p is None or p.role != LEADER \
                    or p.leader_epoch != pi.leader_epoch:
                continue
            if self._loaded.get(pi.partition) != p.leader_epoch:
                async with self._load_lock:
                    if self._loaded.get(pi.partition) != p.leader_epoch:
                        self._load(pi.partition, p)

    async def _note_empty(self, group: str, since: int) -> None:
        """Record when `group` lost its last member (its retention clock starts there), so
        the next coordinator resumes the clock."""
        try:
            p = await self.coordinate(group)
            await self._append(p, [(off.empty_key(group), off.empty_value(since), None, since)])
        except RaftlogError as exc:      # a moved coordinator reloads the clock from the log
            log.info("group %s: 'empty since' record not written: %s", group, exc)

    async def _expire_groups(self) -> None:
        try:
            await self._load_led_partitions()
            for name in self.retention.expired(self.wall_clock(), self._active):
                if not self._still_coordinating(self.partition_index(name)):
                    continue
                try:
                    p = await self.coordinate(name)
                    n = await self._remove_group(p, name)
                except RaftlogError as exc:
                    log.info("group %s: offsets not expired (%s); next check retries",
                             name, exc)
                    continue
                log.info("group %s: empty for %d ms: %d committed offsets expired, group "
                         "removed", name, self.cfg.offsets_retention_ms, n)
        finally:
            self._expiring = False

    async def _rebalance(self, g: Group) -> None:
        changes = g.changes
        try:
            gen, protocol, assignment, sizes = self.coord.compute_target(g, self._sizes)
            expected = g.generation
            gi = self.b.view.group(g.name)
            if gi is not None and gi.generation > expected:
                gen, expected = gi.generation + 1, gi.generation
            await self.b.call_controller("/v1/controller/group-assignment", {
                "group": g.name, "generation": gen, "expected_generation": expected,
                "protocol": protocol,
                "assignment": {m: [list(tp) for tp in tps] for m, tps in assignment.items()}})
            if self.coord.groups.get(g.name) is g:
                self.coord.install(g, gen, protocol, assignment, sizes, changes)
                log.info("group %s: generation %d (%s), %d members", g.name, gen, protocol,
                         len(assignment))
        except RaftlogError as exc:
            log.info("group %s: rebalance not committed (%s); retrying", g.name, exc)
            gi = self.b.view.group(g.name)
            if gi is not None and gi.generation > g.generation:
                g.generation = gi.generation
        except Exception:
            log.exception("group %s: rebalance failed", g.name)
        finally:
            g.proposing = False

    # -- offsets ----------------------------------------------------------------------------
    async def commit(self, group: str, member_id: str, generation: int,
                     entries: list[tuple[str, int, int, str]],
                     instance_id: str | None = None) -> None:
        p = await self.coordinate(group)
        staged = self._stage_commit(p, group, member_id, generation, entries, instance_id)
        if staged is not None:
            await staged[0]
            self._committed(group, staged[1])

    def _stage_commit(self, p: Partition, group: str, member_id: str, generation: int,
                      entries: list[tuple[str, int, int, str]], instance_id: str | None
                      ) -> tuple[asyncio.Future[None], dict[tuple[str, int],
                                                            off.OffsetAndMetadata]] | None:
        """Validate one commit and queue its records for the next append of `p`: the future of
        that append and the offsets to cache once it is acknowledged (see _committed); None for
        an empty commit (validated, nothing to write). Raises the commit's RaftlogError."""
        self.coord.check_commit(group, member_id, generation,
                                [(t, part) for t, part, _o, _md in entries], instance_id)
        if not entries:
            return None
        now = self.wall_clock()
        values = {(t, part): off.OffsetAndMetadata(o, md, now) for t, part, o, md in entries}
        key = off.offset_key
        val = off.offset_value
        fut = self._enqueue(p, [(key(group, t, part), val(om), None, now)
                                for (t, part), om in values.items()])
        return fut, values

    def _committed(self, group: str, values: dict[tuple[str, int], off.OffsetAndMetadata]
                   ) -> None:
        """An acknowledged commit's offsets become what offset fetches answer."""
        self.offsets.setdefault(group, {}).update(values)
        self.retention.touch(group, next(iter(values.values())).commit_ms)

    def _coordinated(self, group: str) -> Partition | None:
        """`coordinate(group)` when it can answer without waiting (the offsets topic ready, the
        group's partition led here and loaded); None otherwise (then call coordinate)."""
        if not isinstance(group, str) or not group or self.b.view is not self._topic_ready_view:
            return None
        idx = self.partition_index(group)
        return self.b.replicas.partitions.get((off.OFFSETS_TOPIC, idx)) \
            if self._still_coordinating(idx) else None

    async def commit_batch(self, commits: list[CommitArgs | RaftlogError]
                           ) -> list[RaftlogError | None]:
        """Several groups' offset commits from one request (a client coalescing its commits
        per coordinator node): each is validated and applied independently -- a stale
        generation fails its own entry only -- and, being queued in the same loop turn, they
        share appends (one per offsets partition, see _append). Each entry's result (None =
        committed) is known once the high watermark passes its records. An entry that is
        already an error (malformed) stays that error.

        The common case is one synchronous pass: every entry whose group this broker
        coordinates with state loaded is validated and queued at once, and the request then
        awaits the appends' futures -- no coroutine per entry. Entries that must wait (the
        offsets topic being created, a partition being loaded, NOT_COORDINATOR answers) go
        through `commit`."""
        results: list[RaftlogError | None] = [None] * len(commits)
        waits: list[tuple[int, str, asyncio.Future[None],
                          dict[tuple[str, int], off.OffsetAndMetadata]]] = []
        slow: list[tuple[int, Any]] = []
        for i, c in enumerate(commits):
            if isinstance(c, RaftlogError):
                results[i] = c
                continue
            p = self._coordinated(c[0])
            if p is None:
                slow.append((i, self.commit(*c)))
                continue
            try:
                staged = self._stage_commit(p, *c)
            except RaftlogError as exc:
                results[i] = exc
                continue
            if staged is not None:
                waits.append((i, c[0], *staged))
        outcomes = await asyncio.gather(*(w[2] for w in waits), *(co for _i, co in slow),
                                        return_exceptions=True)
        for (i, group, _fut, values), res in zip(waits, outcomes):
            if res is None:
                self._committed(group, values)
        for i, res in zip([w[0] for w in waits] + [i for i, _co in slow], outcomes):
            if isinstance(res, RaftlogError):
                results[i] = res
            elif isinstance(res, BaseException):
                raise res
        return results

    def _enqueue(self, p: Partition, records: list[tuple[Any, Any, Any, int]]
                 ) -> asyncio.Future[None]:
        """Offset records queued for `p`'s next append (raftlog/groups/appender.py)."""
        assert self._appender is not None
        return self._appender.enqueue(p, records)

    async def _append(self, p: Partition, records: list[tuple[Any, Any, Any, int]]) -> None:
        """Append offset records and return once they are committed (see _enqueue)."""
        await self._enqueue(p, records)

    async def heartbeat(self, group: str, member_id: str, generation: int,
                        owned: list[tuple[str, int]], topics: list[str] | None,
                        timeouts: tuple[int, int] | None = None) -> dict[str, Any]:
        """One member's heartbeat: its session renewed (per member, now) and its current
        assignment / rebalance signal, or UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
        FENCED_INSTANCE_ID, NOT_COORDINATOR. Never a Raft entry, never waits on an append."""
        await self.coordinate(group)
        return self.coord.heartbeat(group, member_id, generation, owned, self.clock(), topics,
                                    timeouts)

    async def heartbeat_batch(self, heartbeats: list[HeartbeatArgs | RaftlogError]
                              ) -> list[dict[str, Any] | RaftlogError]:
        """Several members' heartbeats from one request (a client coalescing them per
        coordinator node), each through `heartbeat`, each its own answer or error."""
        return await _each(heartbeats, self.heartbeat)

    async def fetch(self, group: str, tps: list[tuple[str, int]] | None
                    ) -> list[dict[str, Any]]:
        await self.coordinate(group)
        cache = self.offsets.get(group, {})
        keys = sorted(cache) if tps is None else tps
        out = []
        for t, part in keys:
            om = cache.get((t, part))
            out.append({"topic": t, "partition": part,
                        "offset": om.offset if om else -1,
                        "metadata": om.metadata if om else "",
                        "commit_ms": om.commit_ms if om else -1})
        return out

    async def fetch_batch(self, fetches: list[tuple[str, list[tuple[str, int]] | None]
                                             | RaftlogError]
                          ) -> list[list[dict[str, Any]] | RaftlogError]:
        """Several groups' fetches from one request, each through `fetch`, each its own
        result (the offsets) or error (NOT_COORDINATOR, ...)."""
        return await _each(fetches, self.fetch)

    async def delete(self, group: str) -> dict[str, Any]:
        p = await self.coordinate(group)
        g = self.coord.groups.get(group)
        if g is not None and g.members:
            raise error(ErrorCode.NON_EMPTY_GROUP,
                        f"group {group!r} has {len(g.members)} active members")
        if not self.offsets.get(group) and self.b.view.group(group) is None and g is None:
            raise error(ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group!r}")
        return {"deleted": group, "offsets_deleted": await self._remove_group(p, group)}

    async def _remove_group(self, p: Partition, group: str) -> int:
        """Tombstone the group's offsets and "empty since" record (compaction drops them), then
        forget it here and in Raft. The one way a group goes: admin delete or expiry."""
        cache = self.offsets.get(group, {})
        now = self.wall_clock()
        await self._append(p, [(off.offset_key(group, t, part), None, None, now)
                               for t, part in sorted(cache)]
                           + [(off.empty_key(group), None, None, now)])
        self.offsets.pop(group, None)
        g = self.coord.groups.get(group)
        if g is not None and g.members:
            self.retention.forget([group])
            return len(cache)      # joined while the tombstones were written: it lives on
        gi = self.b.view.group(group)
        if gi is not None:
            # On failure the retention entry stays, so the next check retries the delete.
            await self.b.call_controller("/v1/controller/delete-group",
                                         {"group": group, "expected_generation": gi.generation})
        self.coord.groups.pop(group, None)
        self._empty_noted.discard(group)
        self.retention.forget([group])
        return len(cache)

    async def describe(self, group: str) -> dict[str, Any]:
        await self.coordinate(group)
        out = self.coord.describe(group)
        if out["state"] == "Dead" and group in self.offsets:
            out["state"] = "Empty"
        out["offsets"] = await self.fetch(group, None)
        out["coordinator_id"] = self.b.node_id
        return out
