"""A ReplicaManager on a stub broker, for tests that drive it without HTTP or Raft: the
broker is a SimpleNamespace with a parsed one-node config, and background tasks the manager
spawns are collected for the test to cancel."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from raftlog import config
from raftlog.meta.view import MetadataView
from raftlog.replication.manager import ReplicaManager


def stub_manager(tmp_path: Any, node: int, broker_epoch: int, *, ready: bool = True,
                 view: MetadataView | None = None, log_defaults: dict | None = None
                 ) -> tuple[ReplicaManager, SimpleNamespace, list[asyncio.Task]]:
    cfg = config.parse({"log": log_defaults or {},
                        "nodes": [{"id": node, "http_port": 9001, "raft_port": 9101}]},
                       "test.toml")
    broker = SimpleNamespace(cfg=cfg, node_id=node, node=SimpleNamespace(data_dir=str(tmp_path)),
                             lifecycle=SimpleNamespace(broker_epoch=broker_epoch),
                             meta=SimpleNamespace(is_ready=ready),
                             view=view if view is not None else MetadataView())
    m = ReplicaManager(broker)
    tasks: list[asyncio.Task] = []

    def spawn(aw, name):
        t = asyncio.ensure_future(aw)
        tasks.append(t)
        return t
    m._spawn = spawn
    return m, broker, tasks
