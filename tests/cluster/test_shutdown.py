"""A clean stop (SIGTERM) is bounded: requests in flight get broker.shutdown_grace_ms, then the
node exits, so its leaderships (and the controller role) move on at once instead of after the
slowest waiting request's own timeout."""
import signal
import threading
import time

import pytest

from raftlog.testing.cluster import DataClient, running_cluster

pytestmark = pytest.mark.cluster


def test_sigterm_with_a_long_poll_in_flight_exits_within_the_grace(tmp_path):
    with running_cluster(str(tmp_path / "c"), 1) as c:
        dc = DataClient(c)
        c.call(1, "POST", "/v1/topics", {"name": "t", "partitions": 1, "replication_factor": 1})
        r = dc.produce("t", 0, [(None, b"one")])
        assert "error" not in r, r
        end = r["base_offset"] + 1
        got: dict = {}

        def long_poll() -> None:
            t0 = time.monotonic()
            try:
                got["answer"] = dc.fetch("t", 0, end, node=1, max_wait_ms=30_000)
            except Exception as exc:  # the connection closes under it: that is the point
                got["error"] = exc
            got["took"] = time.monotonic() - t0

        th = threading.Thread(target=long_poll, daemon=True)
        th.start()
        # A long poll still unanswered after 1.5 s on loopback is waiting in the node (an
        # error, such as a partition not open yet, would have come back at once).
        th.join(1.5)
        assert th.is_alive(), got
        t0 = time.monotonic()
        c.procs[1].send_signal(signal.SIGTERM)
        c.procs[1].wait(30)
        stop_s = time.monotonic() - t0
        th.join(10)
        # grace 1 s (the default) + stopping replicas and Raft, not the long poll's 30 s
        assert stop_s < 6, f"stop took {stop_s:.1f} s"
        assert not th.is_alive() and got["took"] < 10, got
        # Cut off mid-request, not refused and not answered early: it really was in flight
        # when the stop began (the join above only paces the test; this checks it).
        assert isinstance(got.get("error"), ConnectionError) \
            and not isinstance(got["error"], ConnectionRefusedError), got
