"""Broker: the composition root of one raftlog node. It wires parts together and owns their tasks.

Builds the metadata replica (Raft), the controller, the broker lifecycle (registration and
heartbeats), the replica manager (data plane) and the aiohttp server; starts them in order,
owns every background task, and stops everything on shutdown. No protocol logic lives here:
only wiring, forwarding to the controller, and the JSON descriptions the admin API returns.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Coroutine

from aiohttp import web

from raftlog.aio import wait_event
from raftlog.config import ClusterConfig
from raftlog.errors import ErrorCode, error, is_storage_failure
from raftlog.meta.controller import Controller
from raftlog.meta.replica import MetaReplica, RaftTiming, no_quorum
from raftlog.meta.view import MetadataView
from raftlog.replication.peer import PeerClient
from raftlog.replication.manager import ReplicaManager
from raftlog.groups.service import GroupService
from raftlog.server import handlers_admin, handlers_data, handlers_groups, liveness
from raftlog.server.http import STORAGE_FAILED, error_middleware
from raftlog.server.lifecycle import BrokerLifecycle

log = logging.getLogger("raftlog.broker")

FORWARD_HEADER = "X-Raftlog-Forwarded"
TOPIC_READY_TIMEOUT_S = 10.0
CONTROLLER_CALL_TIMEOUT_S = 5.0


def raft_timing(cfg: ClusterConfig) -> RaftTiming:
    r = cfg.raft
    return RaftTiming(election_timeout_min_s=r.election_timeout_min_ms / 1000,
                      election_timeout_max_s=r.election_timeout_max_ms / 1000,
                      append_entries_period_s=r.append_entries_period_ms / 1000,
                      leader_fallback_timeout_s=r.leader_fallback_timeout_ms / 1000,
                      tick_s=r.tick_ms / 1000)


class Broker:
    def __init__(self, cfg: ClusterConfig, node_id: int):
        self.cfg = cfg
        self.node_id = node_id
        self.node = cfg.node(node_id)
        self.peer = PeerClient()
        self.meta: MetaReplica | None = None
        self.controller: Controller | None = None
        self.lifecycle: BrokerLifecycle | None = None
        self.replicas: ReplicaManager | None = None
        self.groups: GroupService | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._runner: web.AppRunner | None = None
        self._view_changed = asyncio.Event()
        # set when the data disk failed: the process stops, as Kafka's broker does when its
        # last log dir fails, so leadership moves instead of erroring on every request
        self.failed = asyncio.Event()

    # -- wiring -----------------------------------------------------------------------------
    async def start(self) -> None:
        os.makedirs(self.node.data_dir, exist_ok=True)
        loop = asyncio.get_running_loop()
        peers = {n.id: (n.host, n.raft_port) for n in self.cfg.nodes}
        dial = {n.id: (n.host, n.dial_raft_port) for n in self.cfg.nodes if n.dial_raft_port}
        self.meta = MetaReplica(self.node_id, peers, os.path.join(self.node.data_dir, "meta"),
                                loop, password=self.cfg.cluster.secret or None,
                                timing=raft_timing(self.cfg), dial=dial)
        self.meta.add_listener(self._on_view)
        self.controller = Controller(self.meta, self.cfg, port_refuses=self._port_refuses)
        self.lifecycle = BrokerLifecycle(self.cfg, self.node_id, self.call_controller,
                                         lambda: self.view.version)
        self.replicas = ReplicaManager(self)
        app = web.Application(middlewares=[error_middleware],
                              client_max_size=self.cfg.limits.max_request_bytes)
        app[STORAGE_FAILED] = self.storage_failed
        app.add_routes(handlers_admin.routes(self))
        app.add_routes(handlers_data.routes(self))
        self.groups = GroupService(self)
        app.add_routes(handlers_groups.routes(self))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=self.cfg.broker.shutdown_grace_ms / 1000)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.node.host, self.node.http_port, reuse_address=True)
        await site.start()
        log.info("node %d: HTTP on http://%s:%d, Raft on %s:%d, data in %s", self.node_id,
                 self.node.host, self.node.http_port, self.node.host, self.node.raft_port,
                 self.node.data_dir)
        self._spawn(self.controller.run(), "controller")
        self._spawn(self.lifecycle.run(), "lifecycle")
        await self.replicas.start(self._spawn)
        self.groups.start(self._spawn)

    async def _port_refuses(self, host: str, port: int, timeout_s: float) -> bool:
        """The controller's liveness probe of a broker's registered address, sent the way this
        node reaches that broker: at its dial_http_port when the config sets one."""
        for n in self.cfg.nodes:
            if n.dial_http_port and (host, port) == (n.host, n.advertised_http_port
                                                     or n.http_port):
                host, port = n.host, n.dial_http_port
                break
        return await liveness.port_refuses(host, port, timeout_s)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        try:
            self._tasks.remove(task)      # short-lived tasks must not pile up
        except ValueError:
            pass
        if not task.cancelled() and is_storage_failure(task.exception()):
            self.storage_failed(task.exception(), f"task {task.get_name()}")
        elif not task.cancelled() and task.exception() is not None:
            log.error("background task %s died: %r", task.get_name(), task.exception(),
                      exc_info=task.exception())

    def storage_failed(self, exc: BaseException, where: str) -> None:
        """The data disk failed (full, read-only, I/O error): stop this node.

        Serving on would fail every write here while this broker keeps its leaderships; once it
        stops, its port refuses and the controller moves leaders to the in-sync replicas. Data
        already written stays valid: appends cut a failed write back, recovery checks the tail.
        """
        if not self.failed.is_set():
            log.critical("node %d: data disk failed in %s: %s; stopping this node. Free space or "
                         "fix %s, then start it again", self.node_id, where, exc,
                         self.node.data_dir)
            self.failed.set()

    async def stop(self) -> None:
        # A normal stop closes HTTP first: the port stops accepting, and requests in flight get
        # shutdown_grace_ms to finish while replication still runs, then aiohttp cancels them.
        # (Stopped last, with aiohttp's default 60 s wait, a stop was seen to hang until the
        # chaos harness's SIGKILL 15 s later, this node keeping the controller role all along.)
        # After a disk failure nothing in flight can end well, and every moment this node
        # still heartbeats keeps its leaderships here: tasks and replicas stop first, which
        # fails the waiting requests at once, and HTTP closes after (measured: holding the
        # grace first made each disk failure cost ~2.5 s of unavailability instead of ~1.3 s).
        if self.failed.is_set():
            await self._stop_tasks()
            await self._stop_http()
        else:
            await self._stop_http()
            await self._stop_tasks()
        await self.peer.close()
        if self.meta is not None:
            await self.meta.aclose()

    async def _stop_http(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stop_tasks(self) -> None:
        """Cancel every background task, then stop the replicas (which wakes their waiters)."""
        grace_s = self.cfg.broker.shutdown_grace_ms / 1000
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            # Bounded too: a task that swallows its cancellation must not keep the process
            # (and its leaderships) alive until an operator's SIGKILL.
            _, stuck = await asyncio.wait(tasks, timeout=grace_s)
            if stuck:
                log.warning("node %d stopping: %d task(s) still running %.1f s after their "
                            "cancel, left behind: %s", self.node_id, len(stuck), grace_s,
                            ", ".join(sorted(t.get_name() for t in stuck)))
        if self.replicas is not None:
            await self.replicas.stop()

    # -- metadata ---------------------------------------------------------------------------
    @property
    def view(self) -> MetadataView:
        assert self.meta is not None
        return self.meta.view

    def _on_view(self, view: MetadataView) -> None:
        if self.replicas is not None:      # None only while start() is wiring
            self.replicas.on_view(view)
        self._view_changed.set()
        self._view_changed = asyncio.Event()

    async def wait_view(self, predicate: Any, timeout_s: float) -> MetadataView:
        """Until the applied view satisfies `predicate`; REQUEST_TIMED_OUT after timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self.view):
            left = deadline - loop.time()
            if left <= 0:
                raise error(ErrorCode.REQUEST_TIMED_OUT, "metadata did not reach the expected state")
            await wait_event(self._view_changed, left)
        return self.view

    @property
    def is_controller(self) -> bool:
        return self.meta is not None and self.meta.is_leader

    def controller_url(self) -> str | None:
        cid = self.meta.leader_id if self.meta else None
        if cid is None:
            return None
        n = self.cfg.node(cid)
        return f"http://{n.host}:{n.dial_http_port or n.http_port}"

    def peer_url(self, broker_id: int) -> str | None:
        """Where this node sends HTTP to broker `broker_id`: the config's dial_http_port when
        set (a proxy in between), else the address the broker registered."""
        n = next((n for n in self.cfg.nodes if n.id == broker_id), None)
        if n is not None and n.dial_http_port:
            return f"http://{n.host}:{n.dial_http_port}"
        b = self.view.broker(broker_id)
        return None if b is None else f"http://{b.host}:{b.http_port}"

    def require_controller(self) -> None:
        if not self.is_controller:
            cid = self.meta.leader_id if self.meta else None
            raise error(ErrorCode.NOT_CONTROLLER, f"node {self.node_id} is not the controller",
                        {"controller_id": cid, "controller_url": self.controller_url()})

    def no_controller(self) -> Exception:
        """503 NO_QUORUM, with the same retry hint as the replica's own NO_QUORUM answers."""
        return no_quorum("no controller is elected (is a majority of nodes up?)")

    async def call_controller(self, path: str, body: dict[str, Any],
                              timeout_s: float = CONTROLLER_CALL_TIMEOUT_S) -> dict[str, Any]:
        """Broker -> controller call: in process when this node is the controller."""
        if self.is_controller:
            assert self.controller is not None
            c = self.controller
            if path.endswith("/register"):
                return await c.register(body["broker_id"], body["host"], body["http_port"],
                                        body["incarnation"])
            if path.endswith("/heartbeat"):
                return await c.heartbeat(body["broker_id"], body["broker_epoch"],
                                         body["metadata_version"])
            if path.endswith("/alter-partition"):
                return await c.alter_partition(**{k: body[k] for k in (
                    "broker_id", "broker_epoch", "topic", "partition", "leader_epoch",
                    "partition_epoch", "isr")})
            if path.endswith("/producer-ids"):
                return await c.allocate_producer_ids(body["count"])
            if path.endswith("/offsets-topic"):
                return await c.ensure_offsets_topic(body["partitions"],
                                                    body["replication_factor"])
            if path.endswith("/group-assignment"):
                return await c.set_group_assignment(**{k: body[k] for k in (
                    "group", "generation", "expected_generation", "protocol", "assignment")})
            if path.endswith("/delete-group"):
                return await c.delete_group(body["group"], body["expected_generation"])
            raise error(ErrorCode.NOT_FOUND, f"no controller call {path}")
        url = self.controller_url()
        if url is None:
            raise self.no_controller()
        return await self.peer.request("POST", url + path, body, timeout_s=timeout_s)

    async def forward(self, request: web.Request, body: Any) -> Any:
        """Send an admin write to the controller and return its answer.

        The forwarded request carries FORWARD_HEADER: a node that gets one while not the
        controller (two nodes whose views name each other, just after an election) answers
        NOT_CONTROLLER with the controller it knows instead of forwarding again, so a request
        is forwarded at most once and the client retries with fresh metadata.
        """
        if request.headers.get(FORWARD_HEADER):
            self.require_controller()   # forwarded once already: never loop
        url = self.controller_url()
        if url is None:
            raise self.no_controller()
        return await self.peer.request(request.method, url + request.path_qs, body,
                                       timeout_s=handlers_admin.ADMIN_TIMEOUT_S,
                                       headers={FORWARD_HEADER: str(self.node_id)})

    # -- descriptions -----------------------------------------------------------------------
    def cluster_description(self) -> dict[str, Any]:
        view = self.view
        parts = list(view.all_partitions())
        return {
            "cluster_id": self.cfg.cluster.id, "node_id": self.node_id,
            "controller": self.meta.leader_id if self.meta else None,
            "metadata_version": view.version,
            "brokers": [{"id": b.broker_id, "host": b.host, "http_port": b.http_port,
                         "url": f"http://{b.host}:{b.http_port}", "epoch": b.epoch,
                         "state": "fenced" if b.fenced else "active"}
                        for b in (view.brokers[i] for i in view.broker_ids())],
            "nodes": [{"id": n.id, "host": n.host, "http_port": n.http_port}
                      for n in self.cfg.nodes],
            "partitions_total": len(parts),
            "offline_partitions": sum(1 for p in parts if p.leader < 0),
            "under_replicated_partitions": sum(1 for p in parts if len(p.isr) < len(p.replicas)),
        }

    def topic_description(self, name: str) -> dict[str, Any]:
        return handlers_admin.topic_json(self.view, name, self.cfg.log)

    async def wait_topic_ready(self, name: str) -> dict[str, Any]:
        """After a create: until every partition has a leader in this node's view."""
        def ready(v: MetadataView) -> bool:
            t = v.topic(name)
            return t is not None and all(p.leader >= 0 for p in t.partitions)
        await self.wait_view(ready, TOPIC_READY_TIMEOUT_S)
        return self.topic_description(name)
