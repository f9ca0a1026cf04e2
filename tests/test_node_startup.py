"""A node that cannot start says why in one line and exits 2 (a config error), never a traceback.

Here: its Raft port is held by another listening socket, so MetaReplica cannot bind it.
"""
from __future__ import annotations

import socket
import subprocess
import sys

from raftlog.testing.cluster import NODE_PY, ROOT, ProcessCluster


def test_raft_port_in_use_is_one_line_and_exit_2(tmp_path) -> None:
    c = ProcessCluster(str(tmp_path / "c"), 1)
    port = c.raft_ports[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        p = subprocess.run([sys.executable, NODE_PY, "--config", c.config_path, "--node-id", "1"],
                           capture_output=True, text=True, cwd=ROOT, timeout=30)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 2, out
    assert "Traceback" not in out
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert "node 1" in lines[0] and f"127.0.0.1:{port}" in lines[0] and "raft port" in lines[0]
