"""Goal: a client never hangs on a dead address or a cluster without quorum, and says why;
the transport turns every HTTP failure into the raftlog error of its code. Method: refused
ports, a fake in no-quorum mode, a stalled fake, and raw error answers."""
import time

import pytest

from raftlog.client.admin import Admin
from raftlog.client.client import Client, parse_bootstrap
from raftlog.client.consumer import Consumer
from raftlog.client.errors import NoBrokersAvailableError
from raftlog.client.producer import Producer
from raftlog.client.transport import Transport
from raftlog.errors import (BrokerNotAvailableError, InvalidRequestError, NoQuorumError,
                            RequestTimedOutError, UnknownServerError)


def test_parse_bootstrap():
    assert parse_bootstrap("a:1, b:2,") == ["http://a:1", "http://b:2"]
    assert parse_bootstrap(["http://h:5/", "h2"]) == ["http://h:5", "http://h2:9091"]
    assert parse_bootstrap("[::1]:7") == ["http://[::1]:7"]
    with pytest.raises(InvalidRequestError):
        parse_bootstrap("host:notaport")
    with pytest.raises(InvalidRequestError):
        parse_bootstrap(" , ")


@pytest.mark.parametrize("make", [
    lambda b: Producer(b, bootstrap_timeout_ms=400),
    lambda b: Consumer(bootstrap_servers=b, bootstrap_timeout_ms=400),
    lambda b: Admin(b, bootstrap_timeout_ms=400),
])
async def test_dead_address_fails_within_the_bootstrap_timeout(make):
    t0 = time.monotonic()
    with pytest.raises(NoBrokersAvailableError, match=r"127\.0\.0\.1:1 .*connection refused"):
        await make("127.0.0.1:1").start()
    assert time.monotonic() - t0 < 2.0


async def test_no_quorum_fails_within_timeout_and_says_so(fake):
    fake.no_quorum = True
    t0 = time.monotonic()
    with pytest.raises(NoBrokersAvailableError, match="NO_QUORUM"):
        await Admin(fake.bootstrap, bootstrap_timeout_ms=400).start()
    assert time.monotonic() - t0 < 2.0


async def test_stalled_broker_times_out_the_request(fake):
    fake.stalled.add("metadata")
    t0 = time.monotonic()
    with pytest.raises(NoBrokersAvailableError, match="REQUEST_TIMED_OUT"):
        await Client(fake.bootstrap, bootstrap_timeout_ms=300, request_timeout_ms=200).start()
    assert time.monotonic() - t0 < 2.0


async def test_transport_maps_answers_to_error_classes(fake):
    t = Transport()
    await t.start()
    try:
        fake.no_quorum = True  # every data-plane call answers 503 {"error": "NO_QUORUM", ...}
        with pytest.raises(NoQuorumError) as ei:
            await t.post_msgpack(fake.url(1), "/v1/metadata", {}, 1000)
        assert ei.value.hint == {"retry_after_ms": 50} and ei.value.retriable
        fake.no_quorum = False
        with pytest.raises(UnknownServerError, match="HTTP 404"):  # not a raftlog error body
            await t.request_json("GET", fake.url(1), "/v1/nowhere", timeout_ms=1000)
        fake.stalled.add("cluster")
        with pytest.raises(RequestTimedOutError, match="within 100 ms"):
            await t.request_json("GET", fake.url(1), "/v1/cluster", timeout_ms=100)
        with pytest.raises(BrokerNotAvailableError, match="connection refused") as ei2:
            await t.request_json("GET", "http://127.0.0.1:1", "/v1/cluster", timeout_ms=1000)
        assert ei2.value.retriable and ei2.value.invalid_metadata
    finally:
        await t.close()
    with pytest.raises(InvalidRequestError, match="not started"):
        await t.request_json("GET", fake.url(1), "/v1/cluster")
