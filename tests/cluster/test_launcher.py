"""The launcher's all-nodes mode (`node.py --config F`, what `make run` starts), as a user runs it.

Goal: one `[node N]`-prefixed log stream and one ready line; every node answers on 127.0.0.1;
the launcher's SIGINT/SIGTERM/SIGHUP stops every node and exits 0; a SIGKILLed launcher takes
its nodes with it (no orphans); a node that dies is reported and the others keep serving.
Nodes are found by their command line (`raftlog.server --config F`), so a node that outlived
its launcher is still seen. Every wait has a deadline; everything started is killed at the end.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from raftlog import launcher
from raftlog.testing.cluster import NODE_PY, ROOT, ProcessCluster, http_json, wait_until

READY_S = 30.0        # a 3-node cluster on a loaded 2-core box is ready in ~3-6 s
STOP_S = 15.0         # the launcher's own stop grace is 10 s


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may never be reaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def node_pids(config_path: str) -> dict[int, int]:
    """node id -> pid of every live `raftlog.server` process of this config."""
    out: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "raftlog.server" in argv and config_path in argv and _alive(int(d)):
            out[int(argv[argv.index("--node-id") + 1])] = int(d)
    return out


class Launcher:
    """`node.py --config F` in its own session, its output collected line by line."""

    def __init__(self, workdir: str):
        self.cluster = ProcessCluster(workdir, 3)     # only for its config with free ports
        self.config_path = self.cluster.config_path
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, NODE_PY, "--config", self.config_path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def matching(self, text: str) -> list[str]:
        return [ln for ln in self.lines if text in ln]

    def wait_line(self, text: str, timeout_s: float) -> str:
        try:
            return wait_until(lambda: self.matching(text), timeout_s, 0.05, repr(text))[0]
        except TimeoutError:
            raise TimeoutError(f"no line {text!r} in {timeout_s} s; output:\n"
                               + self.output()[-4000:]) from None

    def answers(self, node_id: int) -> bool:
        st = http_json("GET", f"http://127.0.0.1:{self.cluster.http_ports[node_id]}/v1/cluster",
                       timeout_s=2.0)
        return st["node_id"] == node_id

    def exit_code(self, timeout_s: float = STOP_S) -> int:
        rc = self.proc.wait(timeout_s)
        self._reader.join(5)
        return rc

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in node_pids(self.config_path).values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def started(tmp_path):
    """A launcher whose cluster is ready; the launcher and every node are killed afterwards."""
    ln = Launcher(str(tmp_path / "c"))
    try:
        ln.wait_line("raftlog: cluster test ready:", READY_S)
        yield ln
    finally:
        ln.kill_all()


def _gone(ln: Launcher, timeout_s: float = STOP_S) -> None:
    try:
        wait_until(lambda: not node_pids(ln.config_path), timeout_s, 0.1, "every node gone")
    except TimeoutError:
        raise AssertionError(f"nodes still running: {node_pids(ln.config_path)}") from None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_all_nodes_mode_serves_and_stops_on_a_signal(started, sig) -> None:
    ln = started
    pids = node_pids(ln.config_path)
    assert sorted(pids) == [1, 2, 3]
    for i in (1, 2, 3):
        assert ln.answers(i)
        assert ln.matching(f"[node {i}] "), f"no line prefixed [node {i}]:\n{ln.output()}"
    ready = ln.matching("ready:")
    assert len(ready) == 1 and all(f"http://127.0.0.1:{p}" in ready[0]
                                   for p in ln.cluster.http_ports.values())
    ln.proc.send_signal(sig)
    assert ln.exit_code() == 0, ln.output()[-4000:]
    _gone(ln, 1.0)          # the launcher waits for its nodes before it exits
    assert not any(_alive(p) for p in pids.values())
    assert ln.lines[-1] == "raftlog: all nodes stopped"
    assert "Traceback" not in ln.output()


def test_sigkilled_launcher_takes_its_nodes_with_it(started) -> None:
    ln = started
    assert sorted(node_pids(ln.config_path)) == [1, 2, 3]
    ln.proc.kill()
    ln.proc.wait(5)
    _gone(ln)


def test_a_dead_node_is_reported_and_the_others_keep_serving(started) -> None:
    ln = started
    os.kill(node_pids(ln.config_path)[2], signal.SIGKILL)
    line = ln.wait_line("raftlog: node 2 exited", 10)
    assert "killed by SIGKILL" in line and "1, 3 keep running" in line, line
    # Still serving after the launcher's next polls: no stop, nodes 1 and 3 answer and a
    # controller is (still, or again) elected by the remaining majority.
    time.sleep(3 * launcher.POLL_S)
    assert ln.proc.poll() is None, ln.output()[-4000:]
    assert sorted(node_pids(ln.config_path)) == [1, 3]
    assert ln.answers(1) and ln.answers(3)
    wait_until(lambda: http_json("GET", ln.cluster.url(1, "/v1/cluster"), timeout_s=2.0)
               ["controller"] in (1, 3), 10, 0.1, "a controller among nodes 1 and 3")
    assert not ln.matching("stopping the others")
    assert len(ln.matching("raftlog: node 2 exited")) == 1
    ln.proc.send_signal(signal.SIGTERM)
    assert ln.exit_code() == 0, ln.output()[-4000:]
    _gone(ln, 1.0)


# -- the supervision loop alone, with stand-in children (no processes) -------------------------
class _Child:
    def __init__(self, returncode: int | None = None):
        self.returncode = returncode

    def poll(self) -> int | None:
        return self.returncode


def _cfg(tmp_path):
    from raftlog import config as config_mod
    return config_mod.load(ProcessCluster(str(tmp_path / "c"), 3).config_path)


def test_not_ready_is_said_once(tmp_path, monkeypatch, capsys) -> None:
    """Nobody answers (nothing listens): past the deadline one line, not one per poll."""
    monkeypatch.setattr(launcher, "READY_TIMEOUT_S", 0.0)
    monkeypatch.setattr(launcher, "POLL_S", 0.01)
    stopping = threading.Event()
    timer = threading.Timer(0.5, stopping.set)
    timer.start()
    try:
        code = launcher._supervise(_cfg(tmp_path), {i: _Child() for i in (1, 2, 3)}, stopping)
    finally:
        timer.cancel()
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("raftlog: cluster not ready after") == 1, out


def test_every_node_exited_ends_non_zero(tmp_path, capsys) -> None:
    children = {1: _Child(), 2: _Child(-signal.SIGKILL), 3: _Child(1)}
    stopping = threading.Event()
    timer = threading.Timer(0.3, lambda: setattr(children[1], "returncode", 0))
    timer.start()
    try:
        code = launcher._supervise(_cfg(tmp_path), children, stopping)
    finally:
        timer.cancel()
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert sorted(ln for ln in out if " exited " in ln) == [
        "raftlog: node 1 exited (exit status 0); no node is left",
        "raftlog: node 2 exited (killed by SIGKILL); node(s) 1 keep running",
        "raftlog: node 3 exited (exit status 1); node(s) 1 keep running"], out
