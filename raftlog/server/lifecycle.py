"""BrokerLifecycle: this broker's registration with the controller and its heartbeats.

Owns the broker side of KIP-631: register with a fresh incarnation token (the controller gives
a broker epoch), heartbeat every `heartbeat_interval_ms` carrying the metadata version applied
here, and register again when the controller says the epoch is stale. The broker's current
epoch is what every data-plane request it sends carries. Imports errors and the PeerClient
(through the `call_controller` callable it is given); no storage, no pysyncobj.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Awaitable, Callable

from raftlog.config import ClusterConfig
from raftlog.errors import ErrorCode, RaftlogError

log = logging.getLogger("raftlog.lifecycle")

CallController = Callable[[str, dict[str, Any], float], Awaitable[dict[str, Any]]]


class BrokerLifecycle:
    def __init__(self, cfg: ClusterConfig, node_id: int, call_controller: CallController,
                 metadata_version: Callable[[], int]):
        self.cfg = cfg
        self.node_id = node_id
        self.incarnation = uuid.uuid4().hex
        self.broker_epoch = -1
        self._call = call_controller
        self._metadata_version = metadata_version
        self.registered = asyncio.Event()

    async def run(self) -> None:
        """Owned by the broker; cancelled on stop."""
        node = self.cfg.node(self.node_id)
        interval_s = self.cfg.broker.heartbeat_interval_ms / 1000
        # A controller that hangs (partitioned, paused) must not swallow a whole session: the
        # next attempt re-resolves the controller, so a new one hears from us in time.
        call_timeout_s = self.cfg.broker.session_timeout_ms / 3000
        while True:
            try:
                if self.broker_epoch < 0:
                    res = await self._call("/v1/controller/register", {
                        "broker_id": self.node_id, "host": node.host,
                        "http_port": node.advertised_http_port or node.http_port,
                        "incarnation": self.incarnation},
                        call_timeout_s)
                    self.broker_epoch = int(res["broker_epoch"])
                    self.registered.set()
                    log.info("registered as broker %d with epoch %d", self.node_id,
                             self.broker_epoch)
                await self._call("/v1/controller/heartbeat", {
                    "broker_id": self.node_id, "broker_epoch": self.broker_epoch,
                    "metadata_version": self._metadata_version()}, call_timeout_s)
            except asyncio.CancelledError:
                raise
            except RaftlogError as exc:
                if exc.code == ErrorCode.STALE_BROKER_EPOCH:
                    log.warning("controller says our epoch %d is stale: registering again",
                                self.broker_epoch)
                    self.broker_epoch = -1
                    continue
                log.debug("heartbeat: %s", exc)
            except Exception as exc:  # keep heartbeating whatever one attempt met
                log.warning("heartbeat failed: %r", exc)
            await asyncio.sleep(interval_s)
