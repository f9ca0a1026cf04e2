"""A node whose data disk fills up stops (as Kafka's broker does when its last log dir fails);
acks=all writes carry on through the other replicas, none is lost, and once space is back the
node restarts and catches up. Needs root to mount a small tmpfs as one node's data dir."""
import os
import time

import pytest

from benchmarks.chaos import disks
from raftlog.testing.cluster import DataClient, ProcessCluster, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def produce_until_acked(dc, topic, value, deadline_s=20.0):
    """One record, acks=all, retried across leader moves; returns its offset."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            r = dc.produce(topic, 0, [(None, value)], timeout_ms=3000)
            if not r.get("error"):
                return r["base_offset"]
            last = r
        except Exception as exc:          # the leader just stopped: its port refuses
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{value!r} never acknowledged: {last}")


def test_full_disk_stops_the_node_and_loses_no_acknowledged_write(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    c = ProcessCluster(str(tmp_path / "c"), 3)
    point = os.path.join(c.workdir, "node-3")
    os.makedirs(point)
    err = disks.mount_tmpfs(f"{disks.SOURCE}{os.getpid()}", point, 32)
    if err:
        pytest.skip(f"cannot mount a tmpfs here: {err}")
    try:
        c.start()
        c.wait_ready(40)
        c.call(1, "POST", "/v1/topics", {"name": "full", "partitions": 1, "replication_factor": 3,
                                         "config": {"min.insync.replicas": 2}})
        dc = DataClient(c)
        wait_until(lambda: len(dc.partition("full", 0)["isr"]) == 3, 20, what="full ISR")
        acked = {produce_until_acked(dc, "full", b"before-%d" % i): b"before-%d" % i
                 for i in range(20)}
        disks.fill(point)
        for i in range(40):
            v = b"after-%d" % i
            acked[produce_until_acked(dc, "full", v)] = v
        # the full node stopped on its own, saying why
        wait_until(lambda: not c.alive(3), 20, what="node 3 to stop on a full disk")
        assert c.procs[3].returncode == 1
        with open(os.path.join(c.workdir, "node-3.log"), "rb") as fh:
            assert b"data disk failed" in fh.read()
        # every acknowledged record is there, once, at its offset
        got = {r.offset: r.value for r in dc.read_all("full", 0) if r.value is not None}
        assert {o: got.get(o) for o in acked} == acked
        assert sorted(got.values()) == sorted(acked.values())
        # space back: the node restarts, catches up and rejoins the ISR
        os.unlink(os.path.join(point, disks.FILLER))
        c.start(3)
        wait_until(lambda: 3 in dc.partition("full", 0)["isr"], 30, what="node 3 back in the ISR")
        v = b"after-restart"
        acked[produce_until_acked(dc, "full", v)] = v
        got = {r.offset: r.value for r in dc.read_all("full", 0) if r.value is not None}
        assert {o: got.get(o) for o in acked} == acked
    finally:
        c.stop()
        disks.umount(point)
