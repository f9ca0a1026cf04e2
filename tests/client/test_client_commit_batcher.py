"""RequestBatcher (raftlog/client/commit_batcher.py) against a fake send: concurrent commits to
one coordinator node go out as one request, one batch in flight per node, the rest form the next
batch (capped), and every caller gets its own entry's answer or error."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftlog.client import commit_batcher
from raftlog.client.commit_batcher import (COMMIT_BATCH_PATH, FETCH_BATCH_PATH,
                                            RequestBatcher)
from raftlog.errors import ErrorCode, RaftlogError, error


class FakeNode:
    """Answers each batch request when `release()` is called (or at once with auto=True);
    an entry whose group starts with "stale" is refused with ILLEGAL_GENERATION."""

    def __init__(self, auto: bool = True) -> None:
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []
        self.auto = auto
        self.gates: list[asyncio.Event] = []
        self.fail_with: RaftlogError | None = None

    async def send(self, url: str, path: str, body: dict[str, Any], timeout_ms: float) -> Any:
        assert path == COMMIT_BATCH_PATH
        self.requests.append((url, body["commits"]))
        if not self.auto:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        out = []
        for c in body["commits"]:
            if c["group"].startswith("stale"):
                out.append(error(ErrorCode.ILLEGAL_GENERATION, f"{c['group']}: stale").to_wire())
            else:
                out.append({"committed": len(c["offsets"])})
        return {"results": out}

    def release(self) -> None:
        gate = self.gates.pop(0)
        gate.set()


async def settle(turns: int = 10) -> None:
    """Let every ready callback and task run (no timers involved)."""
    for _ in range(turns):
        await asyncio.sleep(0)


def entry(group: str, n: int = 1) -> dict[str, Any]:
    return {"group": group, "member_id": "m", "generation": 1, "group_instance_id": "",
            "offsets": [{"topic": "t", "partition": p, "offset": 5, "metadata": ""}
                        for p in range(n)]}


async def test_same_turn_commits_share_one_request_and_get_own_results():
    node = FakeNode()
    b = RequestBatcher(node.send)
    res = await asyncio.gather(*(b.submit("http://n1", entry(f"g{i}", i + 1), 1000)
                                 for i in range(5)))
    assert res == [{"committed": i + 1} for i in range(5)]
    assert len(node.requests) == 1
    assert [c["group"] for c in node.requests[0][1]] == [f"g{i}" for i in range(5)]


async def test_one_batch_in_flight_per_node_later_commits_form_the_next():
    node = FakeNode(auto=False)
    b = RequestBatcher(node.send, max_batch_entries=3)
    first = asyncio.ensure_future(b.submit("http://n1", entry("a"), 1000))
    other = asyncio.ensure_future(b.submit("http://n2", entry("x"), 1000))
    await settle()
    assert [u for u, _ in node.requests] == ["http://n1", "http://n2"]  # one per node at once
    later = [asyncio.ensure_future(b.submit("http://n1", entry(f"b{i}"), 1000))
             for i in range(5)]
    await settle()
    assert len(node.requests) == 2                  # n1 busy: the five wait
    node.release()                                   # n1's first batch answers
    assert await first == {"committed": 1}
    await settle()
    assert [c["group"] for c in node.requests[2][1]] == ["b0", "b1", "b2"]    # capped at 3
    node.release()                                   # n2
    node.release()                                   # n1 second batch
    await settle()
    assert [c["group"] for c in node.requests[3][1]] == ["b3", "b4"]
    node.release()
    assert await asyncio.gather(*later) == [{"committed": 1}] * 5
    assert await other == {"committed": 1}
    assert b.requests == 4


async def test_a_refused_entry_fails_alone():
    node = FakeNode()
    b = RequestBatcher(node.send)
    res = await asyncio.gather(b.submit("u", entry("ok1"), 1000),
                               b.submit("u", entry("stale-1"), 1000),
                               b.submit("u", entry("ok2"), 1000), return_exceptions=True)
    assert res[0] == res[2] == {"committed": 1}
    assert isinstance(res[1], RaftlogError) and res[1].code is ErrorCode.ILLEGAL_GENERATION
    assert len(node.requests) == 1


async def test_a_failed_request_fails_every_caller_of_its_batch_then_next_batch_goes():
    node = FakeNode()
    node.fail_with = error(ErrorCode.BROKER_NOT_AVAILABLE, "gone")
    b = RequestBatcher(node.send)
    res = await asyncio.gather(b.submit("u", entry("a"), 1000), b.submit("u", entry("b"), 1000),
                               return_exceptions=True)
    assert all(isinstance(r, RaftlogError) and r.code is ErrorCode.BROKER_NOT_AVAILABLE
               for r in res)
    node.fail_with = None
    assert await b.submit("u", entry("c"), 1000) == {"committed": 1}


async def test_a_caller_that_times_out_gives_up_alone():
    node = FakeNode(auto=False)
    b = RequestBatcher(node.send)
    slow = asyncio.ensure_future(b.submit("u", entry("a"), 1000))
    quick = asyncio.ensure_future(b.submit("u", entry("b"), 20))
    with pytest.raises(RaftlogError) as ei:
        await quick
    assert ei.value.code is ErrorCode.REQUEST_TIMED_OUT
    # a commit queued behind the in-flight batch whose caller gave up is never sent
    gone = asyncio.ensure_future(b.submit("u", entry("c"), 10))
    with pytest.raises(RaftlogError):
        await gone
    node.release()
    assert await slow == {"committed": 1}
    await settle()
    assert len(node.requests) == 1 and not node.gates


async def test_shared_batchers_per_loop_are_refcounted():
    a = await commit_batcher.acquire()
    b = await commit_batcher.acquire()
    assert a is b
    assert (a.commits.path, a.commits.key) == (COMMIT_BATCH_PATH, "commits")
    assert (a.fetches.path, a.fetches.key) == (FETCH_BATCH_PATH, "fetches")
    await commit_batcher.release(a)
    assert await commit_batcher.acquire() is a      # still one user: the same batchers
    await commit_batcher.release(a)
    await commit_batcher.release(b)
    assert a.transport.closed
    c = await commit_batcher.acquire()              # last user gone: fresh ones
    assert c is not a
    await commit_batcher.release(c)


async def test_fetches_use_their_own_path_and_key():
    sent = []

    async def send(url: str, path: str, body: dict[str, Any], timeout_ms: float) -> Any:
        sent.append((path, body))
        return {"results": [{"group": f["group"], "offsets": []} for f in body["fetches"]]}
    b = RequestBatcher(send, FETCH_BATCH_PATH, "fetches")
    res = await asyncio.gather(b.submit("u", {"group": "a"}, 1000),
                               b.submit("u", {"group": "b"}, 1000))
    assert res == [{"group": "a", "offsets": []}, {"group": "b", "offsets": []}]
    assert sent == [(FETCH_BATCH_PATH, {"fetches": [{"group": "a"}, {"group": "b"}]})]
