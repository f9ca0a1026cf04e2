"""RequestBatcher (raftlog/client/commit_batcher.py) against a fake send: concurrent commits to
one coordinator node go out as one request, one batch in flight per node, the rest form the next
batch (capped), and every caller gets its own entry's answer or error. Heartbeats of several
GroupMembers go the same way in their own lane (never behind a commit batch)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftlog.client import commit_batcher
from raftlog.client.commit_batcher import (COMMIT_BATCH_PATH, FETCH_BATCH_PATH,
                                            HEARTBEAT_BATCH_PATH, RequestBatcher)
from raftlog.client.group_coordinator import GroupMember
from raftlog.client.structs import TopicPartition
from raftlog.client.subscription import SubscriptionState
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
    assert (a.heartbeats.path, a.heartbeats.key) == (HEARTBEAT_BATCH_PATH, "heartbeats")
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


# -- heartbeats ---------------------------------------------------------------------------------
class FakeHeartbeatNode:
    """A coordinator node answering heartbeat-batch requests: member "gone" is unknown, member
    "old" reports a generation ahead of the group's (5), member "fenced" was replaced by a
    newer static member; the others get their own assignment (partition = their index)."""

    ERRORS = {"gone": ErrorCode.UNKNOWN_MEMBER_ID, "old": ErrorCode.ILLEGAL_GENERATION,
              "fenced": ErrorCode.FENCED_INSTANCE_ID}

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[dict[str, Any]]]] = []

    async def send(self, url: str, path: str, body: dict[str, Any], timeout_ms: float) -> Any:
        self.requests.append((url, path, body["heartbeats"]))
        out = []
        for h in body["heartbeats"]:
            code = self.ERRORS.get(h["member_id"])
            if code is not None:
                out.append(error(code, f"{h['member_id']}: refused").to_wire())
            else:
                i = int(h["member_id"][1:])
                out.append({"member_id": h["member_id"], "generation": 5, "protocol": "range",
                            "assignment": [["t", i]], "rebalance_in_progress": i == 1,
                            "session_timeout_ms": 10_000})
        return {"results": out}


class _Client:                      # what GroupMember reads of its Client here
    request_timeout_ms = 5_000
    retry_backoff_ms = 10


class _Batchers:
    def __init__(self, heartbeats: RequestBatcher) -> None:
        self.heartbeats = heartbeats
        self.fetches = RequestBatcher(self._fetch, FETCH_BATCH_PATH, "fetches")

    async def _fetch(self, url: str, path: str, body: dict[str, Any], timeout_ms: float) -> Any:
        return {"results": [{"group": f["group"], "offsets": []} for f in body["fetches"]]}


def member(name: str, batchers: _Batchers, owned: set[TopicPartition] = frozenset()
           ) -> GroupMember:
    m = GroupMember(_Client(), SubscriptionState(), f"g-{name}",  # type: ignore[arg-type]
                    forget=lambda tps: None, enable_auto_commit=False,
                    heartbeat_interval_ms=3_000, session_timeout_ms=10_000)
    m.topics = ("t",)
    m.member_id = name
    m.generation = 4
    m.owned = set(owned)
    m.coordinator_url = "http://n1"
    m._batcher = batchers  # type: ignore[assignment]
    return m


async def test_heartbeats_of_several_members_share_one_request_one_fails_alone():
    node = FakeHeartbeatNode()
    hb = RequestBatcher(node.send, HEARTBEAT_BATCH_PATH, "heartbeats")
    shared = _Batchers(hb)
    ok = [member(f"m{i}", shared) for i in range(3)]
    gone = member("gone", shared, owned={TopicPartition("t", 9)})
    delays = await asyncio.gather(*(m._round() for m in ok + [gone]))
    assert len(node.requests) == 1 and hb.requests == 1
    url, path, entries = node.requests[0]
    assert (url, path) == ("http://n1", HEARTBEAT_BATCH_PATH)
    assert [(e["group"], e["member_id"], e["generation"]) for e in entries] == \
        [(f"g-m{i}", f"m{i}", 4) for i in range(3)] + [("g-gone", "gone", 4)]
    assert entries[3]["owned"] == [["t", 9]] and entries[0]["topics"] == ["t"]
    # Each member applied its own answer...
    for i, m in enumerate(ok):
        assert m.generation == 5 and m.owned == {TopicPartition("t", i)}
    # ...and schedules its own next heartbeat: a changed assignment is reported at once.
    assert delays[:3] == [0.0, 0.0, 0.0]
    # The unknown member alone lost its partitions and rejoins.
    assert gone.member_id is None and gone.generation == -1 and gone.owned == set()
    assert delays[3] == 0.0
    # Next round, nothing changed: the normal interval, the rebalance interval for m1.
    delays = await asyncio.gather(*(m._round() for m in ok))
    assert delays == [3.0, 0.1, 3.0]
    assert hb.requests == 2


async def test_heartbeat_errors_reach_only_their_member():
    node = FakeHeartbeatNode()
    shared = _Batchers(RequestBatcher(node.send, HEARTBEAT_BATCH_PATH, "heartbeats"))
    ok, old, fenced = member("m0", shared), member("old", shared), member("fenced", shared)
    await asyncio.gather(ok._round(), old._round(), fenced._round())
    assert len(node.requests) == 1
    assert ok.member_id == "m0" and ok.generation == 5
    assert old.member_id is None and old.generation == -1          # ILLEGAL_GENERATION: rejoin
    assert fenced.member_id is None and fenced.fenced_instance is not None
    assert fenced.fenced_instance.code is ErrorCode.FENCED_INSTANCE_ID


async def test_a_heartbeat_never_waits_behind_a_slow_commit_batch():
    commits_node = FakeNode(auto=False)        # the commit batch hangs (replication stalled)
    commits = RequestBatcher(commits_node.send)
    hb_node = FakeHeartbeatNode()
    shared = _Batchers(RequestBatcher(hb_node.send, HEARTBEAT_BATCH_PATH, "heartbeats"))
    stuck = asyncio.ensure_future(commits.submit("http://n1", entry("a"), 5_000))
    await settle()
    assert len(commits_node.requests) == 1
    m = member("m0", shared)
    await asyncio.wait_for(m._round(), 1.0)     # same node, answered while the commit hangs
    assert m.generation == 5 and not stuck.done()
    commits_node.release()
    assert await stuck == {"committed": 1}


async def test_a_cancelled_caller_stays_cancelled_when_its_answer_lands_in_the_same_turn():
    """GroupMember.stop() cancels the heartbeat task: a batch answer arriving in the same loop
    turn must not swallow that cancellation (asyncio.wait_for of 3.11 does), or stop() hangs."""
    callers: list[asyncio.Future[Any]] = []

    async def send(url: str, path: str, body: dict[str, Any], timeout_ms: float) -> Any:
        callers[0].cancel()                 # the cancel, then the answer, before it runs
        return {"results": [{"committed": 1}]}
    b = RequestBatcher(send)
    callers.append(asyncio.ensure_future(b.submit("u", entry("a"), 1000)))
    with pytest.raises(asyncio.CancelledError):
        await callers[0]
