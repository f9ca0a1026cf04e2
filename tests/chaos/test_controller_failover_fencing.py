"""Found by the chaos harness (partition nemesis): when the controller stops answering without
closing connections (a network partition, or SIGSTOP as here), the *new* controller fences every
live broker, itself included, about `session_timeout_ms` after it becomes active, and every
partition goes offline for seconds.

Cause (reading raftlog/server/lifecycle.py and broker.call_controller): a broker's heartbeat
to the old controller waits for the fixed 5 s HTTP timeout of `call_controller`; while it waits,
no heartbeat reaches the new controller, which gives each broker only one session from its
activation (3 s here, 6 s by default). The heartbeat call should be bounded well below the
session (e.g. by heartbeat_interval_ms or session_timeout_ms / 2) and re-resolve the controller.

Fixed: broker -> controller calls from the lifecycle time out after session_timeout_ms / 3, and
each attempt re-resolves the controller.
"""
import time

import pytest

from raftlog.testing.cluster import ProcessCluster, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_new_controller_does_not_fence_live_brokers_after_old_one_hangs(tmp_path):
    c = ProcessCluster(str(tmp_path / "c"), 3, session_timeout_ms=3000,
                       heartbeat_interval_ms=300)
    try:
        c.start()
        c.wait_ready(40)
        old = c.controller()
        live = [n for n in (1, 2, 3) if n != old]
        c.pause(old)                 # stops answering; TCP connects still succeed (backlog)
        new = wait_until(lambda: next((c.get(n, "/v1/cluster", 1.0).get("controller")
                                       for n in live
                                       if c.get(n, "/v1/cluster", 1.0).get("controller")
                                       in live), None), 20, what="a new controller")
        fenced_seen = set()
        deadline = time.monotonic() + 8      # > session timeout + heartbeat slack
        while time.monotonic() < deadline:
            try:
                st = c.get(new, "/v1/cluster", 1.0)
            except Exception:
                continue
            fenced_seen |= {b["id"] for b in st["brokers"]
                            if b["state"] == "fenced" and b["id"] in live}
            time.sleep(0.1)
        assert not fenced_seen, f"live brokers {sorted(fenced_seen)} were fenced by the new " \
                                f"controller {new} after controller {old} hung"
    finally:
        for n in (1, 2, 3):
            if c.alive(n):
                c.resume(n)
        c.stop()
