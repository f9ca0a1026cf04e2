"""MetaReplica: runs the metadata state machine on pysyncobj and bridges it to asyncio.

Owns: the only import of pysyncobj in raftlog; the SyncObj configuration (pysyncobj.md §5);
moving commands from the event loop to the Raft thread and results, views and leadership
back. It decides nothing: MetadataState decides, the controller proposes.

Threads (the one boundary, see ARCHITECTURE.md)::

    event loop thread                         pysyncobj tick thread (autoTick)
    -----------------                         --------------------------------
    propose(blob) --- consumer.apply(blob, callback) --->  apply on every node, in log order
                                                           _MetaConsumer.apply -> state.apply
    _drain -> _publish <-- call_soon_threadsafe ---------  after each apply: the new view
    future.set_result <--- call_soon_threadsafe ---------  pysyncobj callback (this node applied)
    _set_leadership <----- call_soon_threadsafe ---------  _on_tick: leader/quorum changed

Rules, each from a measured pitfall in pysyncobj.md:
- The consumer holds exactly one replicated attribute, `state`, set after
  `SyncObjConsumer.__init__`; the callback is set before it, so it is never pickled (pitfall 8).
- Nothing on the Raft thread blocks or calls `sync=True` (pitfall 6); everything it hands to the
  loop goes through `loop.call_soon_threadsafe`, in order, so a proposer's future resolves
  after the view holding its result is published (read-your-writes on this node).
- Views are coalesced: the Raft thread parks the newest view and schedules one drain; the loop
  publishes whatever is newest when the drain runs. Under a burst (journal replay at start-up)
  listeners may skip versions, never see them out of order, and never see an older view after
  a newer one. A view is the whole state, so skipping one loses nothing.
- Every wait has a deadline (`asyncio.wait_for`): pysyncobj can lose callbacks (pitfall 5).
  A timeout or LEADER_CHANGED means "outcome unknown": commands are CAS or idempotent.
- pysyncobj has no callback for leader changes on followers, so `_on_tick` polls (O(1)).
- Construct MetaReplica on the event loop's thread, which must outlive it: pysyncobj's tick
  thread exits when the thread that built the SyncObj exits.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import SyncObjException

from raftlog import errors
from raftlog.meta import commands
from raftlog.meta.commands import Result
from raftlog.meta.state import MetadataState
from raftlog.meta.view import MetadataView

log = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
DUMP_FILE = "raft.dump"


@dataclass(frozen=True)
class RaftTiming:
    """pysyncobj timing (seconds). Defaults: pysyncobj.md §5 'one machine'."""

    election_timeout_min_s: float = 0.3
    election_timeout_max_s: float = 0.6
    append_entries_period_s: float = 0.08
    leader_fallback_timeout_s: float = 1.0      # an isolated leader steps down (pitfall 11)
    connection_timeout_s: float = 30.0          # >= election max; see pitfall 2
    connection_retry_s: float = 0.5             # pitfall 3
    # The Raft thread's wake-up period. Commands wake it at once (pysyncobj's pipe notifier),
    # so this bounds only heartbeat and election timing; 0.1 s measured ~0.65% of a core per
    # idle node against ~0.9% at pysyncobj's default 0.05 s.
    tick_s: float = 0.1


FAST_TIMING = RaftTiming(0.15, 0.3, 0.04, tick_s=0.04)       # tests; do not go lower on a loaded 2-core box

# pysyncobj failure codes -> (raftlog code, may the command still have been applied?)
_FAILURES: dict[int, tuple[str, str]] = {
    FAIL_REASON.QUEUE_FULL: ("REQUEST_TIMED_OUT", "not_applied"),
    FAIL_REASON.MISSING_LEADER: ("NO_QUORUM", "not_applied"),
    FAIL_REASON.DISCARDED: ("NO_QUORUM", "not_applied"),
    FAIL_REASON.NOT_LEADER: ("NO_QUORUM", "not_applied"),
    FAIL_REASON.LEADER_CHANGED: ("NO_QUORUM", "unknown"),
    FAIL_REASON.UNKNOWN_OUTCOME: ("NO_QUORUM", "unknown"),
    FAIL_REASON.REQUEST_DENIED: ("UNKNOWN_SERVER_ERROR", "not_applied"),
}
_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}

# How long a caller waits before retrying after NO_QUORUM (hint retry_after_ms; the client
# sleeps that long): about one election at the default timing (election timeout 300-600 ms).
NO_QUORUM_RETRY_AFTER_MS = 500


def no_quorum(message: str, **hint: Any) -> errors.RaftlogError:
    """The one way a NO_QUORUM (503) is made, here and by the broker ("no controller"): every
    one carries the same `retry_after_ms`, which HTTP can also send as Retry-After."""
    return errors.error("NO_QUORUM", message, {**hint, "retry_after_ms": NO_QUORUM_RETRY_AFTER_MS})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                             # a DNS name: assume it is reachable from afar


class _DialNode(TCPNode):
    """A peer dialled somewhere else than its identity (a proxy in between).

    pysyncobj names a node by its "host:port" string: a connecting node sends its own string
    first and the receiver looks it up among its partners, so every node must know a peer by
    the same string. Only the dial target differs per node; pysyncobj dials `node.ip:node.port`.
    """

    def __init__(self, address: str, dial: tuple[str, int]) -> None:
        super().__init__(address)
        self._dial = dial

    @property
    def ip(self) -> str:
        return self._dial[0]

    @property
    def port(self) -> int:
        return self._dial[1]


class _MetaConsumer(SyncObjConsumer):
    """What pysyncobj replicates and snapshots: exactly one attribute, `state`."""

    def __init__(self, on_applied: Callable[[MetadataView], None]) -> None:
        self._on_applied = on_applied            # before super().__init__: never pickled
        super().__init__()
        self.state = MetadataState()             # after: the one replicated attribute

    @replicated
    def apply(self, blob: bytes) -> Result:
        # Runs on the tick thread of every node. It must not raise (pitfall 7): state.apply
        # never does, and the hook's failures are logged, never propagated.
        try:
            result = self.state.apply(blob)
        except Exception as e:  # pragma: no cover - MetadataState.apply catches everything
            result = commands.rejected("UNKNOWN_SERVER_ERROR", f"{e!r:.300}")
        try:
            self._on_applied(self.state.view)
        except Exception:
            log.exception("metadata view hook failed")
        return result


class MetaReplica:
    """One node's replica of the metadata log, used from one asyncio loop."""

    def __init__(self, node_id: int, peers: Mapping[int, tuple[str, int]], data_dir: str,
                 loop: asyncio.AbstractEventLoop, password: str | None = None,
                 fast: bool = False, timing: RaftTiming | None = None,
                 log_compaction_min_entries: int = 5000,
                 dial: Mapping[int, tuple[str, int]] | None = None) -> None:
        """`peers`: node id -> (host, raft port), each node's identity and listen address.
        `dial`: optional node id -> (host, port) where this node connects to that peer instead
        (a proxy in between); identities stay those of `peers`."""
        if node_id not in peers:
            raise errors.ConfigError(f"node {node_id} is not among the raft peers {sorted(peers)}")
        if not password and not all(is_loopback(h) for h, _ in peers.values()):
            raise errors.ConfigError(
                "a raft password is required when any node is off loopback: pysyncobj's wire "
                "format is pickle, so an open port runs whatever code a stranger sends")
        self.node_id = node_id
        self._loop = loop
        self._addr_to_id = {f"{h}:{p}": nid for nid, (h, p) in peers.items()}
        host, port = peers[node_id]
        self_addr = f"{host}:{port}"
        dial = dial or {}
        others = [a if tuple(dial.get(nid, peers[nid])) == tuple(peers[nid])
                  else _DialNode(a, (str(dial[nid][0]), int(dial[nid][1])))
                  for a, nid in sorted(self._addr_to_id.items()) if nid != node_id]
        t = timing or (FAST_TIMING if fast else RaftTiming())
        os.makedirs(data_dir, exist_ok=True)
        self.data_dir = data_dir

        # Loop-side state: touched only on the event loop thread.
        self._raw_view = MetadataView()                  # as the state machine made it
        self._view = self._raw_view                      # ... with controller_id attached
        self._listeners: list[Callable[[MetadataView], None]] = []
        self._leader_listeners: list[Callable[[int | None, bool], None]] = []
        self._version_waiters: list[tuple[int, asyncio.Future[MetadataView]]] = []
        self._pending: set[asyncio.Future[Result]] = set()
        self._leader_id: int | None = None
        self._is_leader = False
        self._leader_term: int | None = None
        self._has_quorum = False
        self._is_ready = False
        self._closed = False
        # Tick-thread state: touched only on the pysyncobj thread.
        self._sent_view: MetadataView | None = None
        self._sent_leadership: tuple[Any, ...] | None = None
        # Shared: written by the tick thread, read by the loop. Single attribute stores are
        # atomic under the GIL; the order (park, then test the flag / clear, then read) is what
        # makes the hand-over lossless.
        self._parked_view: MetadataView | None = None
        self._drain_scheduled = False

        self._consumer = _MetaConsumer(self._on_applied)
        conf = SyncObjConf(
            bindAddress=self_addr, password=password or None,
            appendEntriesUseBatch=False,       # else every commit waits ~100 ms (pitfall 1)
            commandsWaitLeader=False,          # fail fast; callers retry CAS commands
            journalFile=os.path.join(data_dir, JOURNAL_FILE),
            fullDumpFile=os.path.join(data_dir, DUMP_FILE),   # both, or lose all (pitfall 9)
            raftMinTimeout=t.election_timeout_min_s, raftMaxTimeout=t.election_timeout_max_s,
            appendEntriesPeriod=t.append_entries_period_s,
            leaderFallbackTimeout=t.leader_fallback_timeout_s,
            connectionTimeout=t.connection_timeout_s, connectionRetryTime=t.connection_retry_s,
            bindRetryTime=0.2, maxBindRetries=5,                  # never retry forever (pitfall 12)
            dynamicMembershipChange=False,
            logCompactionMinEntries=log_compaction_min_entries, autoTickPeriod=t.tick_s)
        self._so = SyncObj(self_addr, others, conf=conf, consumers=[self._consumer])
        try:
            self._so.waitBinded()
        except SyncObjException:
            self._so.destroy()
            raise errors.ConfigError(f"cannot bind the raft port {self_addr} "
                                     "(in use, or not an address of this host)") from None
        self._so.addOnTickCallback(self._on_tick)

    # --- Raft thread side -----------------------------------------------------------------
    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            pass                                         # the loop is closed: nobody listens

    def _on_applied(self, view: MetadataView) -> None:
        self._sent_view = view
        self._parked_view = view
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._post(self._drain)

    def _on_tick(self) -> None:
        # Every tick (~50 ms): keep it O(1) and never let it raise (it would abort the tick).
        try:
            view = self._consumer.state.view
            if view is not self._sent_view:              # loaded from the dump file, no apply
                self._on_applied(view)
            so = self._so
            quorum = so.hasQuorum
            node = so._getLeader()
            leader = self._addr_to_id.get(node.id) if node is not None and quorum else None
            is_leader = so._isLeader()
            # The term makes losing and regaining leadership between two ticks a change too.
            key = (leader, is_leader, quorum, so.isReady(),
                   so.raftCurrentTerm if is_leader else None)
            if key != self._sent_leadership:
                self._sent_leadership = key
                self._post(self._set_leadership, *key)
        except Exception:
            log.exception("metadata tick hook failed")

    # --- loop side ------------------------------------------------------------------------
    def _drain(self) -> None:
        self._drain_scheduled = False                    # clear first, then read: see __init__
        view = self._parked_view
        if view is not None:
            self._publish(view)

    def _publish(self, raw: MetadataView, force: bool = False) -> None:
        """Publish the state's view `raw` with the controller id attached."""
        if self._closed or raw.version < self._raw_view.version:
            return
        if raw is self._raw_view and not force:
            return                                       # already published (a second drain)
        self._raw_view = raw
        self._view = view = raw.with_controller(self._leader_id)
        if self._version_waiters:
            keep = []
            for v, fut in self._version_waiters:
                if fut.done():
                    continue
                if v <= view.version:
                    fut.set_result(view)
                else:
                    keep.append((v, fut))
            self._version_waiters = keep
        for cb in list(self._listeners):
            try:
                cb(view)
            except Exception:
                log.exception("metadata view listener failed")

    def _set_leadership(self, leader: int | None, is_leader: bool, quorum: bool,
                        ready: bool, term: int | None) -> None:
        if self._closed:
            return
        changed = (leader, is_leader) != (self._leader_id, self._is_leader)
        self._leader_id, self._is_leader, self._leader_term = leader, is_leader, term
        self._has_quorum, self._is_ready = quorum, ready
        if not changed:
            return
        if self._view.controller_id != leader:
            self._publish(self._raw_view, force=True)    # same version, new controller_id
        for cb in list(self._leader_listeners):
            try:
                cb(leader, is_leader)
            except Exception:
                log.exception("metadata leader listener failed")

    def _resolve(self, fut: asyncio.Future[Result], result: Result, err: int) -> None:
        if fut.done():
            return                                       # timed out or closed already
        if err == FAIL_REASON.SUCCESS:
            fut.set_result(result)
        else:
            fut.set_exception(self._failure(err))

    def _failure(self, err: int) -> errors.RaftlogError:
        code, outcome = _FAILURES.get(err, ("UNKNOWN_SERVER_ERROR", "unknown"))
        name = _FAIL_NAMES.get(err, str(err))
        message = f"metadata command failed: {name} (outcome {outcome})"
        hint = {"reason": name, "outcome": outcome, "leader_id": self._leader_id}
        if code == "NO_QUORUM":
            return no_quorum(message, **hint)
        return errors.error(code, message, hint)

    # --- public API (event loop thread only) ----------------------------------------------
    async def propose(self, blob: bytes, timeout_s: float) -> Result:
        """Replicate one command; return its result once committed and applied on this node.

        Raises NoQuorumError (no leader, leadership lost, not connected to a majority) or
        RequestTimedOutError (no answer within timeout_s). hint["outcome"] says whether the
        command may still apply later ("unknown") or certainly did not ("not_applied").
        Rejections by the state machine are results, not exceptions: see commands.unwrap.
        """
        if self._closed:
            raise no_quorum("the metadata replica is closed", outcome="not_applied")
        commands.decode(blob)                    # junk fails here, not in every node's log
        if not self._so.hasQuorum:
            raise no_quorum("not connected to a majority of the metadata nodes",
                            outcome="not_applied", leader_id=self._leader_id)
        fut: asyncio.Future[Result] = self._loop.create_future()
        self._pending.add(fut)

        def on_done(result: Result, err: int) -> None:   # tick thread, or this thread at once
            self._post(self._resolve, fut, result, err)

        try:
            self._consumer.apply(blob, callback=on_done)
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise errors.error("REQUEST_TIMED_OUT",
                               f"metadata command not applied within {timeout_s:.3g} s",
                               {"outcome": "unknown", "leader_id": self._leader_id}) from None
        finally:
            self._pending.discard(fut)

    async def barrier(self, timeout_s: float) -> MetadataView:
        """A linearizable read point: commit a no-op, return a view at least that new."""
        result = await self.propose(commands.noop(), timeout_s)
        return await self.wait_for_version(commands.unwrap(result)["version"], timeout_s)

    async def wait_for_version(self, version: int, timeout_s: float) -> MetadataView:
        """The first published view with view.version >= version; RequestTimedOut otherwise."""
        if self._view.version >= version:
            return self._view
        if self._closed:
            raise no_quorum("the metadata replica is closed")
        fut: asyncio.Future[MetadataView] = self._loop.create_future()
        self._version_waiters.append((version, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            raise errors.error("REQUEST_TIMED_OUT", f"metadata version {version} not reached in "
                               f"{timeout_s:.3g} s (at {self._view.version})") from None

    def add_listener(self, callback: Callable[[MetadataView], None]) -> Callable[[], None]:
        """Call `callback(view)` on the loop for every new view (a new version, or the same
        version with a new controller_id). Returns a function that removes the listener."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def add_leader_listener(self, callback: Callable[[int | None, bool], None]
                            ) -> Callable[[], None]:
        """Call `callback(leader_id, is_leader)` on the loop whenever either changes."""
        self._leader_listeners.append(callback)
        return (lambda: self._leader_listeners.remove(callback)
                if callback in self._leader_listeners else None)

    @property
    def view(self) -> MetadataView:
        return self._view

    @property
    def version(self) -> int:
        return self._view.version

    @property
    def is_leader(self) -> bool:
        """This node is the Raft leader (= controller). Can overlap with a newer leader for up to
        leader_fallback_timeout: fence actions by epochs in the state, never by this alone."""
        return self._is_leader

    @property
    def leader_term(self) -> int | None:
        """The Raft term in which this node leads, or None. A controller keys its in-memory
        term on it: leadership lost and regained is a new term even if no tick saw the gap."""
        return self._leader_term

    @property
    def leader_id(self) -> int | None:
        """The Raft leader's node id as this node knows it; None without a quorum."""
        return self._leader_id

    @property
    def has_quorum(self) -> bool:
        return self._has_quorum

    @property
    def is_ready(self) -> bool:
        """True once this node has caught up with the leader's commit index once."""
        return self._is_ready

    def status(self) -> dict[str, Any]:
        so = self._so
        return {"node_id": self.node_id, "leader_id": self._leader_id,
                "is_leader": self._is_leader, "has_quorum": self._has_quorum,
                "is_ready": self._is_ready, "version": self._view.version,
                "raft_term": so.raftCurrentTerm, "raft_commit_index": so.raftCommitIndex,
                "raft_last_applied": so.raftLastApplied}

    def force_compaction(self) -> None:
        """Write the dump file now (it also happens every 5000 entries or 300 s)."""
        self._so.forceLogCompaction()

    def replicated_attributes(self) -> list[str]:
        """Names pysyncobj would snapshot: must be exactly ['state'] (pitfall 8)."""
        return sorted(self._consumer._serialize())

    def close(self) -> None:
        """Stop Raft (the tick thread exits on its next tick) and fail every waiter."""
        if self._closed:
            return
        self._closed = True
        self._so.removeOnTickCallback(self._on_tick)
        self._so.destroy()
        closed = no_quorum("the metadata replica is closed", outcome="unknown")
        for fut in list(self._pending):
            if not fut.done():
                fut.set_exception(closed)
        for _, fut in self._version_waiters:
            if not fut.done():
                fut.set_exception(closed)
        self._version_waiters = []

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """close(), then wait until the tick thread has released the port and the journal."""
        self.close()
        deadline = time.monotonic() + timeout_s

        def join() -> None:
            while self._so.tick_thread_alive() and time.monotonic() < deadline:
                time.sleep(0.01)

        await asyncio.to_thread(join)
