"""LocalMetaLog: MetaReplica's asyncio surface over a MetadataState applied inline, no Raft.

Owns: an in-process stand-in for meta/replica.py (style B4 habit 15: a fake beside every real
seam), for unit tests of the controller, admin handlers and replication, and for simulations
whose total order of commands is already the Raft contract. It adds fault hooks the real log
only produces under load: proposals that fail, proposals that time out yet apply anyway
("ghost writes", pysyncobj.md pitfall 4), quorum loss and leadership moves.

Imports asyncio and meta/{commands,state,view}; never pysyncobj, time or storage.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raftlog import errors
from raftlog.meta import commands
from raftlog.meta.commands import Result
from raftlog.meta.state import MetadataState
from raftlog.meta.view import MetadataView

log = logging.getLogger(__name__)


class LocalMetaLog:
    """A one-node metadata log that commits at once. Same methods as MetaReplica."""

    def __init__(self, node_id: int = 1, is_leader: bool = True) -> None:
        self.node_id = node_id
        self._state = MetadataState()
        self._leader_id: int | None = node_id if is_leader else None
        self._is_leader = is_leader
        self._term = 1
        self._has_quorum = True
        self._closed = False
        self._view = self._state.view.with_controller(self._leader_id)
        self._listeners: list[Callable[[MetadataView], None]] = []
        self._leader_listeners: list[Callable[[int | None, bool], None]] = []
        self._faults: list[tuple[errors.RaftlogError, bool]] = []
        self.proposed: list[bytes] = []          # every command that reached the log, in order

    # --- fault hooks ------------------------------------------------------------------------
    def fail_next(self, code: str = "REQUEST_TIMED_OUT", applied: bool = False) -> None:
        """The next proposal raises `code`; with applied=True it is applied all the same."""
        outcome = "unknown" if applied or code == "REQUEST_TIMED_OUT" else "not_applied"
        self._faults.append((errors.error(code, f"injected {code}", {"outcome": outcome}),
                             applied))

    def set_leadership(self, leader_id: int | None, is_leader: bool | None = None) -> None:
        """Move the controller; listeners hear about it as they would from MetaReplica."""
        me = (leader_id == self.node_id) if is_leader is None else is_leader
        if (leader_id, me) == (self._leader_id, self._is_leader):
            return
        self._term += 1                          # every leadership move is a new Raft term
        self._leader_id, self._is_leader = leader_id, me
        self._publish()
        for cb in list(self._leader_listeners):
            cb(leader_id, me)

    def set_quorum(self, has_quorum: bool) -> None:
        self._has_quorum = has_quorum

    def apply_now(self, blob: bytes) -> Result:
        """Apply without the async path (test setup)."""
        self.proposed.append(blob)
        result = self._state.apply(blob)
        self._publish()
        return result

    # --- MetaReplica's surface --------------------------------------------------------------
    async def propose(self, blob: bytes, timeout_s: float) -> Result:
        if self._closed or not self._has_quorum:
            raise errors.error("NO_QUORUM", "no metadata quorum", {"outcome": "not_applied"})
        commands.decode(blob)
        await asyncio.sleep(0)                   # a real proposal always yields to the loop
        if self._faults:
            exc, applied = self._faults.pop(0)
            if applied:
                self.apply_now(blob)
            raise exc
        return self.apply_now(blob)

    async def barrier(self, timeout_s: float) -> MetadataView:
        await self.propose(commands.noop(), timeout_s)
        return self._view

    async def wait_for_version(self, version: int, timeout_s: float) -> MetadataView:
        if self._view.version >= version:
            return self._view
        raise errors.error("REQUEST_TIMED_OUT", f"version {version} never comes: nothing "
                           f"applies behind a LocalMetaLog's back (at {self._view.version})")

    def add_listener(self, callback: Callable[[MetadataView], None]) -> Callable[[], None]:
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def add_leader_listener(self, callback: Callable[[int | None, bool], None]
                            ) -> Callable[[], None]:
        self._leader_listeners.append(callback)
        return (lambda: self._leader_listeners.remove(callback)
                if callback in self._leader_listeners else None)

    def _publish(self) -> None:
        self._view = self._state.view.with_controller(self._leader_id)
        for cb in list(self._listeners):
            try:
                cb(self._view)
            except Exception:
                log.exception("metadata view listener failed")

    @property
    def view(self) -> MetadataView:
        return self._view

    @property
    def version(self) -> int:
        return self._view.version

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    @property
    def leader_term(self) -> int | None:
        return self._term if self._is_leader else None

    @property
    def leader_id(self) -> int | None:
        return self._leader_id

    @property
    def has_quorum(self) -> bool:
        return self._has_quorum

    @property
    def is_ready(self) -> bool:
        return True

    def close(self) -> None:
        self._closed = True

    async def aclose(self, timeout_s: float = 5.0) -> None:
        self.close()
