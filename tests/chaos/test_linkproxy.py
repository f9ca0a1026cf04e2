"""The loopback lab's link proxies: forwarding, blackhole both ways, one-way cut, heal, and a
dead target refusing through its proxy. An echo server stands for a node; the proxies run in
their own thread (Links), as in a chaos run; the test talks to them with plain sockets."""
import socket
import threading
import time

import pytest

from benchmarks.chaos.linkproxy import CLIENT, Links

pytestmark = pytest.mark.timeout(60)

SHORT_S = 0.6      # long enough to tell "held" from "forwarded" (a pass answers in ms)


class Echo:
    """A TCP server on 127.0.0.1 that sends back what it gets; counts its connections."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.accepted = 0
        self.received = bytearray()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c: socket.socket) -> None:
        with c:
            while data := c.recv(65536):
                self.received += data
                c.sendall(data)

    def close(self) -> None:
        try:
            self.srv.shutdown(socket.SHUT_RDWR)   # wakes accept(): the port stops listening
        except OSError:
            pass
        self.srv.close()


@pytest.fixture
def lab():
    echo = Echo()
    links = Links(seed=1)
    links.start()
    fwd = links.add(1, 2, echo.port)        # node 1 -> node 2
    back = links.add(2, 1, echo.port)       # node 2 -> node 1 (same target: only ports matter)
    yield links, echo, fwd, back
    links.stop()
    echo.close()


def _conn(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(SHORT_S)
    return s


def _roundtrip(s: socket.socket, data: bytes) -> bytes:
    """Send and read the echo; a forwarded answer may take a while on a busy machine."""
    s.settimeout(5)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.settimeout(SHORT_S)      # from here on, reads check that nothing comes
    return got


def test_forwards_both_ways(lab):
    links, echo, fwd, back = lab
    for port in (fwd, back):
        with _conn(port) as s:
            assert _roundtrip(s, b"hello" * 1000) == b"hello" * 1000


def test_blackhole_holds_without_answering_then_heal_delivers(lab):
    links, echo, fwd, _ = lab
    with _conn(fwd) as s:
        assert _roundtrip(s, b"a") == b"a"
        links.block(1, 2)
        links.block(2, 1)
        s.sendall(b"held")
        with pytest.raises(socket.timeout):      # no answer and no reset: a blackhole
            s.recv(10)
        links.heal()
        s.settimeout(3)
        assert s.recv(10) == b"held"             # in flight bytes go on after the heal


def test_blackholed_new_connection_is_accepted_but_never_reaches_the_target(lab):
    links, echo, fwd, _ = lab
    links.block(1, 2)
    before = echo.accepted
    with _conn(fwd) as s:                        # the proxy's kernel accepts
        s.sendall(b"x")
        with pytest.raises(socket.timeout):
            s.recv(10)
    time.sleep(0.3)                              # the client gave up: nothing is delivered
    links.heal()
    time.sleep(0.3)
    assert echo.accepted == before
    with _conn(fwd) as s:
        assert _roundtrip(s, b"ok") == b"ok"


def test_one_way_cut_blocks_only_its_direction(lab):
    links, echo, fwd, back = lab
    with _conn(fwd) as s12, _conn(back) as s21:
        assert _roundtrip(s12, b"1") == b"1" and _roundtrip(s21, b"2") == b"2"
        links.block(1, 2)                        # 1 -> 2 cut, 2 -> 1 open
        n = len(echo.received)
        s12.sendall(b"to-2")                     # 1's request does not reach 2
        with pytest.raises(socket.timeout):
            s12.recv(10)
        assert len(echo.received) == n
        s21.sendall(b"to-1")                     # 2's request reaches 1, 1's answer does not
        with pytest.raises(socket.timeout):
            s21.recv(10)
        assert bytes(echo.received).endswith(b"to-1")
        links.heal()
        s12.settimeout(3)
        s21.settimeout(3)
        assert s12.recv(10) == b"to-2" and s21.recv(10) == b"to-1"


def test_a_dead_target_refuses_through_its_proxy_until_it_is_back(lab):
    links, echo, fwd, _ = lab
    port = echo.port
    echo.close()
    deadline = time.monotonic() + 2
    refused = False
    while time.monotonic() < deadline and not refused:
        # the first connections are accepted by the proxy and then reset (or reset while
        # queued when the proxy stops listening); after that the port refuses
        try:
            socket.create_connection(("127.0.0.1", fwd), timeout=1).close()
            time.sleep(0.05)
        except ConnectionRefusedError:
            refused = True
        except ConnectionResetError:
            pass
    assert refused, "the proxy kept listening in front of a dead target"
    srv = socket.create_server(("127.0.0.1", port))   # the node comes back on its port
    try:
        deadline = time.monotonic() + 3
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", fwd), timeout=1)
                break
            except (ConnectionRefusedError, ConnectionResetError):
                assert time.monotonic() < deadline, "the proxy did not listen again"
                time.sleep(0.05)
        s.close()
    finally:
        srv.close()


def test_loss_delays_chunks_but_loses_nothing(lab):
    links, echo, fwd, _ = lab
    links.set_loss(2, 100)                       # every chunk to or from node 2 is "lost" once
    with _conn(fwd) as s:
        s.settimeout(5)
        t0 = time.monotonic()
        assert _roundtrip(s, b"slow") == b"slow"
        assert time.monotonic() - t0 >= 1.0 + 0.2   # the SYN (1 s) and at least one chunk


def test_client_endpoint_is_a_link_like_any_other(lab):
    links, echo, _, _ = lab
    port = links.add(CLIENT, 2, echo.port)
    with _conn(port) as s:
        assert _roundtrip(s, b"c") == b"c"
        links.block(CLIENT, 2)
        s.sendall(b"d")
        with pytest.raises(socket.timeout):
            s.recv(10)
