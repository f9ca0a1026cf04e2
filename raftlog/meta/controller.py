"""The controller: what the Raft leader does with its authority over cluster metadata.

Owns the controller's decisions and its in-memory liveness facts: broker registration and
heartbeats (heartbeats are never Raft entries), fencing brokers whose session lapsed, electing
leaders for leaderless partitions, moving leadership back to preferred replicas, ISR changes
asked for by partition leaders, and topic creation/deletion/config with placement. It changes
state only by proposing commands and acting on their committed results.

Runs on the event loop. Imports meta.{commands,placement,names,view}, topic_config and errors;
talks to Raft only through the `proposer` it is given (meta/replica.py's MetaReplica), never to
pysyncobj, aiohttp or storage. Sockets stay outside too: the broker hands in `port_refuses`
(server/liveness.py) for the early-fencing probe.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Awaitable, Callable, Protocol

from raftlog import topic_config
from raftlog.config import ClusterConfig
from raftlog.errors import ErrorCode, error
from raftlog.meta import commands, names, placement
from raftlog.meta.view import MetadataView, PartitionInfo

log = logging.getLogger("raftlog.controller")

TICK_MS = 250
OFFSETS_TOPIC = names.OFFSETS_TOPIC
# Kafka's offsets.topic.segment.bytes: small segments, so compaction (which never touches the
# active segment) keeps the committed-offsets log short.
OFFSETS_TOPIC_SEGMENT_BYTES = 100 << 20
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC})
# Settings an internal topic depends on, with the only value an alter may give them: committed
# offsets are kept per group key by compaction; retention deletes would lose them.
PINNED_CONFIG: dict[str, dict[str, Any]] = {OFFSETS_TOPIC: {"cleanup.policy": "compact"}}

PortProbe = Callable[[str, int, float], Awaitable[bool]]


class Proposer(Protocol):
    view: MetadataView
    is_leader: bool
    leader_term: int | None

    async def propose(self, command: bytes, timeout_s: float) -> Any: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def _mono_ms() -> int:
    return int(time.monotonic() * 1000)


class Controller:
    def __init__(self, proposer: Proposer, cfg: ClusterConfig,
                 mono_ms: Callable[[], int] = _mono_ms, wall_ms: Callable[[], int] = _now_ms,
                 port_refuses: PortProbe | None = None):
        self.meta = proposer
        self.cfg = cfg
        self._port_refuses = port_refuses
        self._probed_ms: dict[int, int] = {}                        # broker -> last probe
        self._mono_ms = mono_ms
        self._wall_ms = wall_ms
        self._active_term: int | None = None                        # Raft term we act in
        self._last_heartbeat_ms: dict[int, tuple[int, int]] = {}   # broker -> (epoch, mono ms)
        self._registered_version: dict[int, int] = {}              # broker -> view version
        self._last_rebalance_ms = 0
        self._active_since_ms = 0
        self._heard_ms: dict[int, int] = {}                         # real heartbeats only
        self._lock = asyncio.Lock()   # one controller decision at a time: no racing CAS

    @property
    def timeout_s(self) -> float:
        return self.cfg.raft.propose_timeout_ms / 1000

    @property
    def unclean_default(self) -> bool:
        """This node's `[log] unclean_leader_election_enable`, for topics without an override.

        Commands that elect inside apply carry it, so the state machine never reads a config
        file: if nodes' files disagree, each command follows the controller that proposed it,
        and every node still applies it alike.
        """
        return self.cfg.log.unclean_leader_election_enable

    async def _propose(self, command: bytes) -> dict[str, Any]:
        return commands.unwrap(await self.meta.propose(command, self.timeout_s))

    def require_active(self) -> None:
        """Refuse unless this node is the Raft leader; the first request after it became leader
        starts its term as controller (if the loop's tick has not yet), so decisions such as
        `live_brokers` never run on the session state of an earlier term (or none)."""
        if not self.meta.is_leader:
            raise error(ErrorCode.NOT_CONTROLLER, "this node is not the controller")
        if self._active_term != self.meta.leader_term:
            self._become_active()

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Owned by the broker; cancelled on stop."""
        while True:
            await asyncio.sleep(TICK_MS / 1000)
            if not self.meta.is_leader:
                self._active_term = None
                continue
            if self._active_term != self.meta.leader_term:
                self._become_active()
            try:
                dead = await self._probe_silent()
                async with self._lock:
                    await self._fence_expired(dead)
                    await self._elect_leaderless()
                    now = self._mono_ms()
                    if now - self._last_rebalance_ms >= self.cfg.broker.leader_rebalance_interval_ms:
                        self._last_rebalance_ms = now
                        await self._preferred_leaders()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost quorum or a stale CAS: try again next tick
                log.info("controller tick: %s", exc)

    def _become_active(self) -> None:
        """A new controller term gives every broker a full session before fencing it."""
        self._active_term = self.meta.leader_term
        now = self._mono_ms()
        view = self.meta.view
        self._last_heartbeat_ms = {b.broker_id: (b.epoch, now) for b in view.brokers.values()}
        self._active_since_ms = now
        self._last_rebalance_ms = now
        log.info("controller active in Raft term %s at metadata version %d",
                 self._active_term, view.version)

    async def live_brokers(self, wanted: int) -> tuple[int, ...]:
        """Unfenced brokers heard from lately: where `wanted` new replicas may go.

        Fencing waits a whole session; placement should not use a broker that died a moment
        ago. Right after this controller took over, brokers may not have heartbeated to it yet:
        then it waits out one heartbeat window (at most) before deciding.
        """
        fresh_ms = 3 * self.cfg.broker.heartbeat_interval_ms
        while True:
            view = self.meta.view
            now = self._mono_ms()
            heard = tuple(b for b in view.active_broker_ids()
                          if now - self._heard_ms.get(b, now - fresh_ms - 1) <= fresh_ms)
            left_ms = self._active_since_ms + fresh_ms - now
            if len(heard) >= wanted or left_ms <= 0:
                return heard
            await asyncio.sleep(min(left_ms, self.cfg.broker.heartbeat_interval_ms) / 1000)

    async def _probe_silent(self) -> set[tuple[int, int]]:
        """(broker, epoch) pairs silent for two heartbeats whose HTTP port refuses connects.

        A SIGKILLed broker's port refuses at once, so its partitions need not wait a whole
        session for new leaders and smaller ISRs. Silence alone never fences early: a paused or
        cut-off broker still times out by the session rule only.
        """
        if self._port_refuses is None:
            return set()
        view = self.meta.view
        now = self._mono_ms()
        beat = self.cfg.broker.heartbeat_interval_ms
        suspects = []
        for b in view.brokers.values():
            epoch, seen = self._last_heartbeat_ms.get(b.broker_id, (b.epoch, now))
            if (b.fenced or epoch != b.epoch or now - seen <= 2 * beat
                    or now - self._probed_ms.get(b.broker_id, -beat) < beat):
                continue
            self._probed_ms[b.broker_id] = now
            suspects.append(b)
        if not suspects:
            return set()
        refused = await asyncio.gather(*(self._port_refuses(b.host, b.http_port, beat / 1000)
                                         for b in suspects))
        return {(b.broker_id, b.epoch) for b, r in zip(suspects, refused) if r}

    async def _fence_expired(self, dead: set[tuple[int, int]] = frozenset()) -> None:
        view = self.meta.view
        now = self._mono_ms()
        limit = self.cfg.broker.session_timeout_ms
        for b in sorted(view.brokers.values(), key=lambda b: b.broker_id):
            if b.fenced:
                continue
            epoch, seen = self._last_heartbeat_ms.get(b.broker_id, (b.epoch, now))
            self._last_heartbeat_ms.setdefault(b.broker_id, (epoch, seen))
            silent_ms = now - seen
            if ((b.broker_id, b.epoch) in dead and epoch == b.epoch
                    and silent_ms > 2 * self.cfg.broker.heartbeat_interval_ms):
                log.warning("fencing broker %d (epoch %d): silent %d ms and its port refuses "
                            "connections", b.broker_id, b.epoch, silent_ms)
                await self._propose(commands.fence_broker(b.broker_id, b.epoch,
                                                          self.unclean_default))
            elif silent_ms > limit:
                log.warning("fencing broker %d (epoch %d): no heartbeat for %d ms",
                            b.broker_id, b.epoch, silent_ms)
                await self._propose(commands.fence_broker(b.broker_id, b.epoch,
                                                          self.unclean_default))

    async def _elect_leaderless(self) -> None:
        changes = placement.leaderless_elections(self.meta.view, self.unclean_default)
        if changes:
            log.info("electing leaders for %d leaderless partitions", len(changes))
            await self._propose(commands.elect_leaders(changes))

    async def _preferred_leaders(self) -> None:
        changes = placement.preferred_leader_moves(self.meta.view)
        if changes:
            log.info("moving leadership back to preferred replicas: %d partitions", len(changes))
            await self._propose(commands.elect_leaders(changes))

    # -- brokers ----------------------------------------------------------------------------
    async def register(self, broker_id: int, host: str, http_port: int,
                       incarnation: str) -> dict[str, Any]:
        self.require_active()
        if broker_id not in self.cfg.node_ids:
            raise error(ErrorCode.UNKNOWN_BROKER,
                        f"broker {broker_id} is not in the cluster config {self.cfg.node_ids}")
        view = self.meta.view
        b = view.broker(broker_id)
        async with self._lock:
            if b is not None and b.incarnation == incarnation:
                epoch = b.epoch          # a retried registration: same answer
            else:
                res = await self._propose(commands.register_broker(
                    broker_id, host, http_port, incarnation, self._wall_ms(),
                    self.unclean_default))
                epoch = res["broker_epoch"]
        self._registered_version[broker_id] = self.meta.view.version
        self._last_heartbeat_ms[broker_id] = (epoch, self._mono_ms())
        self._heard_ms[broker_id] = self._mono_ms()
        return {"broker_epoch": epoch}

    async def heartbeat(self, broker_id: int, broker_epoch: int,
                        metadata_version: int) -> dict[str, Any]:
        self.require_active()
        b = self.meta.view.broker(broker_id)
        if b is None or b.epoch != broker_epoch:
            raise error(ErrorCode.STALE_BROKER_EPOCH,
                        f"broker {broker_id} epoch {broker_epoch} is not the registered one "
                        f"({b.epoch if b else 'none'}): register again")
        self._last_heartbeat_ms[broker_id] = (broker_epoch, self._mono_ms())
        self._heard_ms[broker_id] = self._mono_ms()
        if b.fenced and metadata_version >= self._registered_version.get(broker_id, 0):
            # Caught up with the metadata it registered at: it may lead and rejoin ISRs.
            async with self._lock:
                b = self.meta.view.broker(broker_id)
                if b is not None and b.fenced and b.epoch == broker_epoch:
                    log.info("unfencing broker %d (epoch %d)", broker_id, broker_epoch)
                    await self._propose(commands.unfence_broker(broker_id, broker_epoch,
                                                                self.unclean_default))
        b = self.meta.view.broker(broker_id)
        return {"fenced": bool(b and b.fenced)}

    # -- partitions -------------------------------------------------------------------------
    async def alter_partition(self, broker_id: int, broker_epoch: int, topic: str,
                              partition: int, leader_epoch: int, partition_epoch: int,
                              isr: list[int]) -> dict[str, Any]:
        """An ISR change asked for by a partition leader; committed before it counts."""
        self.require_active()
        view = self.meta.view
        b = view.broker(broker_id)
        if b is None or b.epoch != broker_epoch or b.fenced:
            raise error(ErrorCode.STALE_BROKER_EPOCH, f"broker {broker_id} epoch {broker_epoch} "
                        "is stale or fenced")
        p = view.partition(topic, partition)
        if p is None:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{partition}")
        if p.leader != broker_id or p.leader_epoch != leader_epoch:
            raise error(ErrorCode.FENCED_LEADER_EPOCH,
                        f"{topic}-{partition}: leader is {p.leader} in epoch {p.leader_epoch}")
        if p.partition_epoch != partition_epoch:
            raise error(ErrorCode.STALE_PARTITION_EPOCH,
                        f"{topic}-{partition}: partition epoch is {p.partition_epoch}",
                        _partition_hint(p))
        if broker_id not in isr:
            raise error(ErrorCode.INVALID_REQUEST, "the leader must stay in the ISR")
        bad = [i for i in isr if not view.is_active(i) and i != broker_id]
        if bad:
            raise error(ErrorCode.INVALID_REQUEST, f"brokers {bad} are fenced or unknown")
        async with self._lock:
            await self._propose(commands.change_partition(topic, partition, partition_epoch,
                                                          broker_id, isr, leader_epoch))
        p = self.meta.view.partition(topic, partition)
        assert p is not None
        return _partition_hint(p)

    async def allocate_producer_ids(self, count: int) -> dict[str, Any]:
        self.require_active()
        res = await self._propose(commands.allocate_producer_ids(count))
        return res

    # -- topics -----------------------------------------------------------------------------
    async def create_topic(self, name: Any, partitions: Any, replication_factor: Any,
                           config: Any) -> dict[str, Any]:
        self.require_active()
        msg = names.topic_name_error(name)
        if msg:
            raise error(ErrorCode.INVALID_TOPIC_EXCEPTION, msg)
        view = self.meta.view
        if partitions is None:
            partitions = self.cfg.log.num_partitions
        wanted = (replication_factor if type(replication_factor) is int
                  else min(self.cfg.log.replication_factor, len(view.active_broker_ids())))
        active = await self.live_brokers(wanted)
        if replication_factor is None:
            replication_factor = max(1, min(self.cfg.log.replication_factor, len(active)))
        if type(partitions) is not int or not 1 <= partitions <= self.cfg.limits.max_partitions_per_topic:
            raise error(ErrorCode.INVALID_PARTITIONS,
                        f"partitions must be an integer from 1 to "
                        f"{self.cfg.limits.max_partitions_per_topic}, got {partitions!r}")
        if type(replication_factor) is not int or replication_factor < 1:
            raise error(ErrorCode.INVALID_REPLICATION_FACTOR,
                        f"replication_factor must be a positive integer, got {replication_factor!r}")
        if replication_factor > len(active):
            raise error(ErrorCode.INVALID_REPLICATION_FACTOR,
                        f"replication factor {replication_factor} is larger than the "
                        f"{len(active)} available brokers {list(active)}")
        values = topic_config.check_all(config)
        topic_config.check_against_rf(values, replication_factor)
        if name in view.topics:
            raise error(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{name}' already exists")
        replicas = placement.place_replicas(active, partitions, replication_factor,
                                            placement.leader_load(view))
        async with self._lock:
            await self._propose(commands.create_topic(name, uuid.uuid4().hex, replicas,
                                                      topic_config.for_state(values)))
        log.info("created topic %s: %d partitions, RF %d", name, partitions, replication_factor)
        t = self.meta.view.topic(name)
        assert t is not None
        return {"name": t.name, "id": t.topic_id}

    async def delete_topic(self, name: str) -> dict[str, Any]:
        self.require_active()
        if name in INTERNAL_TOPICS:
            # Kafka refuses too: deleting it would lose every group's committed offsets.
            raise error(ErrorCode.INVALID_REQUEST,
                        f"topic '{name}' is an internal topic and cannot be deleted")
        if self.meta.view.topic(name) is None:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{name}' does not exist")
        async with self._lock:
            await self._propose(commands.delete_topic(name))
        return {"deleted": name}

    async def alter_topic_config(self, name: str, changes: Any) -> dict[str, Any]:
        self.require_active()
        t = self.meta.view.topic(name)
        if t is None:
            raise error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{name}' does not exist")
        if not isinstance(changes, dict) or not changes:
            raise error(ErrorCode.INVALID_CONFIG, "config must be a non-empty object of "
                        "name -> value (null resets a name to its default)")
        to_set = topic_config.check_all({k: v for k, v in changes.items() if v is not None})
        to_delete = sorted(k for k, v in changes.items() if v is None)
        for k in to_delete:
            if k not in topic_config.SETTINGS:
                raise error(ErrorCode.INVALID_CONFIG, f"unknown topic config '{k}'")
        topic_config.check_against_rf(to_set, len(t.partitions[0].replicas))
        _check_pinned(name, to_set, to_delete)
        async with self._lock:
            await self._propose(commands.alter_topic_config(
                name, topic_config.for_state(to_set), to_delete,
                unclean_default=self.unclean_default))
        return {"name": name}

    # -- consumer groups --------------------------------------------------------------------
    async def ensure_offsets_topic(self, partitions: int, replication_factor: int
                                   ) -> dict[str, Any]:
        """Create `__consumer_offsets` (compacted, RF = min(wanted, live brokers)) if missing."""
        self.require_active()
        name = OFFSETS_TOPIC
        if self.meta.view.topic(name) is None:
            live = await self.live_brokers(replication_factor)
            rf = max(1, min(replication_factor, len(live)))
            try:
                await self.create_topic(name, partitions, rf, {
                    "cleanup.policy": "compact", "segment.bytes": OFFSETS_TOPIC_SEGMENT_BYTES})
            except Exception as exc:
                if self.meta.view.topic(name) is None:
                    raise
                log.info("offsets topic raced: %s", exc)
        t = self.meta.view.topic(name)
        assert t is not None
        return {"name": name, "partitions": len(t.partitions)}

    async def set_group_assignment(self, group: str, generation: int, expected_generation: int,
                                   protocol: str, assignment: dict[str, Any]) -> dict[str, Any]:
        """A group coordinator's completed rebalance, committed to the metadata log."""
        self.require_active()
        return await self._propose(commands.set_group_assignment(
            group, generation, expected_generation, assignment, protocol))

    async def delete_group(self, group: str, expected_generation: int) -> dict[str, Any]:
        self.require_active()
        return await self._propose(commands.delete_group(group, expected_generation))


def _check_pinned(topic: str, to_set: dict[str, Any], to_delete: list[str]) -> None:
    """Refuse an alter that moves an internal topic's pinned setting off its value; a reset
    would fall back to the node default, so it is refused too."""
    for key, value in sorted(PINNED_CONFIG.get(topic, {}).items()):
        if key in to_delete or (key in to_set and to_set[key] != value):
            raise error(ErrorCode.INVALID_CONFIG,
                        f"{key} of internal topic '{topic}' must stay {value!r}")


def _partition_hint(p: PartitionInfo) -> dict[str, Any]:
    return {"leader": p.leader, "leader_epoch": p.leader_epoch, "isr": list(p.isr),
            "partition_epoch": p.partition_epoch}
