"""A clean stop (SIGTERM) is bounded: requests in flight get broker.shutdown_grace_ms, then the
node exits, so its leaderships (and the controller role) move on at once instead of after the
slowest waiting request's own timeout."""
import http.client
import signal
import time

import msgpack
import pytest

from raftlog.testing.cluster import DataClient, running_cluster, wait_until

pytestmark = pytest.mark.cluster


def _unread_bytes(server_port: int, client_port: int) -> int | None:
    """Bytes the server side of a loopback TCP connection has not read yet (its receive queue,
    from /proc/net/tcp); None while no such connection is listed."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if (int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                return int(queues.split(":")[1], 16)
    return None


def test_sigterm_with_a_long_poll_in_flight_exits_within_the_grace(tmp_path):
    with running_cluster(str(tmp_path / "c"), 1) as c:
        dc = DataClient(c)
        c.call(1, "POST", "/v1/topics", {"name": "t", "partitions": 1, "replication_factor": 1})
        r = dc.produce("t", 0, [(None, b"one")])
        assert "error" not in r, r
        end = r["base_offset"] + 1
        port = c.http_ports[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
        conn.request("POST", "/v1/fetch", msgpack.packb(
            {"max_wait_ms": 30_000, "min_bytes": 1, "max_bytes": 1 << 20,
             "partitions": [{"topic": "t", "partition": 0, "offset": end}]}),
            {"Content-Type": "application/msgpack", "Accept": "application/msgpack"})
        mine = conn.sock.getsockname()[1]
        # On loopback the request is in the node's receive queue once request() returns; the
        # queue empties when the node has read it, and nothing answers it for 30 s.
        wait_until(lambda: _unread_bytes(port, mine) == 0, 10, what="the node read the fetch")
        t0 = time.monotonic()
        c.procs[1].send_signal(signal.SIGTERM)
        c.procs[1].wait(30)
        stop_s = time.monotonic() - t0
        with pytest.raises(ConnectionError) as cut:
            conn.getresponse()     # cut off mid-request: no answer, not a refused connect
        assert not isinstance(cut.value, ConnectionRefusedError)
        conn.close()
        # grace 1 s (the default) + stopping replicas and Raft, not the long poll's 30 s
        assert stop_s < 6, f"stop took {stop_s:.1f} s"
