"""Consumer groups on real 3-node clusters (issue 6, item 6).

- 3 consumers on 6 partitions: 2 each, disjoint, union is everything; a 7th stays idle and takes
  over when a member leaves;
- two groups on one topic each receive every record;
- stale-generation commits are refused (raw protocol and the Consumer's CommitFailedError);
- SIGKILL of a consumer process: its partitions move to the survivors within the session
  timeout plus a margin;
- at-least-once: worker processes commit after processing; randomly SIGKILLed and restarted
  during the run, no record goes unprocessed, and a record is processed twice only across a
  handover (two ownerships), never twice within one, and no owner starts before a commit that
  was acknowledged before it got the partition;
- pattern subscription follows topics created later and ignores the others;
- a consumer that stops polling for max_poll_interval_ms leaves, and rejoins when it polls;
- offsets of a group empty for offsets_retention_ms expire and the group disappears.
- SIGKILL of the coordinator's node: the group carries on from its committed offsets.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from raftlog.client import Admin, Consumer, Producer, TopicPartition
from raftlog.client.group_coordinator import CommitFailedError
from raftlog.errors import ErrorCode
from raftlog.testing.cluster import (HttpError, LAG_TOML, ProcessCluster, eventually,
                                    post_msgpack, running_cluster)

pytestmark = pytest.mark.cluster

FAST = dict(session_timeout_ms=2000, heartbeat_interval_ms=200, auto_offset_reset="earliest")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with running_cluster(str(tmp_path_factory.mktemp("groups-shared")), 3, extra_toml=LAG_TOML) as c:
        yield c




async def make_topic(c: ProcessCluster, name: str, partitions: int = 6) -> None:
    async with Admin(c.bootstrap) as a:
        await a.create_topic(name, partitions=partitions, replication_factor=3)


async def produce(c: ProcessCluster, topic: str, n: int, partitions: int = 6) -> None:
    async with Producer(bootstrap_servers=c.bootstrap, acks="all", linger_ms=5) as p:
        for i in range(n):
            p.send(topic, b"v%d" % i, partition=i % partitions)
        await p.flush()


def owned(consumers: list[Consumer]) -> list[set[TopicPartition]]:
    return [c.assignment() for c in consumers]


def balanced(consumers: list[Consumer], total: int, sizes: list[int]) -> bool:
    sets = owned(consumers)
    union = set().union(*sets)
    return (sum(len(s) for s in sets) == len(union) == total
            and sorted(len(s) for s in sets) == sorted(sizes))


async def start_consumers(c: ProcessCluster, n: int, topic: str, group: str,
                          **kw: Any) -> list[Consumer]:
    out = []
    for i in range(n):
        cons = Consumer(topic, bootstrap_servers=c.bootstrap, group_id=group,
                        client_id=f"{group}-{len(out)}", **{**FAST, **kw})
        await cons.start()
        out.append(cons)
    return out


async def drain(consumers: list[Consumer], want: int, timeout_s: float) -> list[tuple[int, int]]:
    """Poll every consumer until `want` distinct (partition, offset) were seen."""
    seen: list[tuple[int, int]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(set(seen)) < want:
        assert loop.time() < deadline, f"saw {len(set(seen))} of {want} records"
        for cons in consumers:
            for tp, recs in (await cons.getmany(timeout_ms=50)).items():
                seen += [(tp.partition, r.offset) for r in recs]
    return seen


# -- membership -------------------------------------------------------------------------------
async def test_three_split_six_then_seventh_idle_takes_over(shared):
    await make_topic(shared, "split")
    cs = await start_consumers(shared, 3, "split", "g-split")
    try:
        await eventually(lambda: balanced(cs, 6, [2, 2, 2]) and [c.group_id for c in cs],
                         15, "3 x 2 partitions")
        more = await start_consumers(shared, 4, "split", "g-split")
        cs += more
        await eventually(lambda: balanced(cs, 6, [1] * 6 + [0]), 15, "6 x 1 and one idle")
        idle = next(c for c in cs if not c.assignment())
        leaving = next(c for c in cs if c.assignment())
        lost = leaving.assignment()
        await leaving.stop()
        cs.remove(leaving)
        assert len(lost) == 1
        await eventually(lambda: len(idle.assignment()) == 1 and balanced(cs, 6, [1] * 6),
                         10, f"the idle consumer takes over ({owned(cs)})")
        # the records of every partition reach exactly the current owners
        await produce(shared, "split", 60)
        seen = await drain(cs, 60, 20)
        assert len(set(seen)) == 60
    finally:
        for c in cs:
            await c.stop()


async def test_two_groups_each_receive_everything(shared):
    await make_topic(shared, "fanout")
    await produce(shared, "fanout", 120)
    a = await start_consumers(shared, 2, "fanout", "g-fan-a")
    b = await start_consumers(shared, 3, "fanout", "g-fan-b")
    try:
        sa = await drain(a, 120, 30)
        sb = await drain(b, 120, 30)
        assert set(sa) == set(sb) and len(set(sa)) == 120
    finally:
        for c in a + b:
            await c.stop()


async def test_stale_generation_commit_refused(shared):
    await make_topic(shared, "stale", 2)
    fc = post_msgpack(shared.url(1, "/v1/groups/find-coordinator"), {"group": "g-stale"})
    url = fc["url"]

    def call(path: str, body: dict) -> Any:
        return post_msgpack(url + path, {"group": "g-stale", **body})

    def first_join() -> Any:     # the coordinator may still be loading its partition
        try:
            return call("/v1/groups/join", {"topics": ["stale"], "session_timeout_ms": 5000})
        except HttpError as exc:
            if exc.body["error"] != "COORDINATOR_NOT_AVAILABLE":
                raise
            return None
    j = await eventually(first_join, 15, "a coordinator that answers")
    m1 = j["member_id"]
    deadline = time.monotonic() + 10
    while True:
        h1 = call("/v1/groups/heartbeat", {"member_id": m1, "generation": j["generation"],
                                          "owned": []})
        if h1["generation"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    gen1 = h1["generation"]
    assert gen1 >= 1
    call("/v1/groups/offset-commit", {"member_id": m1, "generation": gen1,
                                      "offsets": [{"topic": "stale", "partition": 0,
                                                   "offset": 1}]})
    m2 = call("/v1/groups/join", {"topics": ["stale"], "session_timeout_ms": 5000})["member_id"]
    while True:   # m1 hears about the new generation
        h1 = call("/v1/groups/heartbeat", {"member_id": m1, "generation": gen1,
                                          "owned": h1["assignment"]})
        if h1["generation"] > gen1:
            break
        assert time.monotonic() < deadline + 10, "no new generation after a second join"
        time.sleep(0.05)
    with pytest.raises(HttpError) as e:
        call("/v1/groups/offset-commit", {"member_id": m1, "generation": gen1,
                                          "offsets": [{"topic": "stale", "partition": 0,
                                                       "offset": 2}]})
    assert e.value.body["error"] == "ILLEGAL_GENERATION"
    with pytest.raises(HttpError) as e:
        call("/v1/groups/offset-commit", {"member_id": "ghost", "generation": h1["generation"],
                                          "offsets": [{"topic": "stale", "partition": 0,
                                                       "offset": 2}]})
    assert e.value.body["error"] == "UNKNOWN_MEMBER_ID"
    got = call("/v1/groups/offset-fetch", {"partitions": [["stale", 0]]})["offsets"][0]
    assert got["offset"] == 1
    # reset (a member-less commit) is refused while the group has members
    with pytest.raises(HttpError) as e:
        call("/v1/groups/offset-commit", {"offsets": [{"topic": "stale", "partition": 0,
                                                       "offset": 0}]})
    assert e.value.body["error"] == "NON_EMPTY_GROUP"
    call("/v1/groups/leave", {"member_id": m1})
    call("/v1/groups/leave", {"member_id": m2})

    # the Consumer: a member that was fenced gets CommitFailedError
    [cons] = await start_consumers(shared, 1, "stale", "g-stale-2")
    try:
        await eventually(lambda: len(cons.assignment()) == 2, 10, "assignment")
        g = cons._group
        assert g is not None
        with pytest.raises(CommitFailedError) as ce:
            await g.commit({TopicPartition("stale", 0): 1}, generation=g.generation - 1)
        assert ce.value.code is ErrorCode.ILLEGAL_GENERATION
        await cons.commit({TopicPartition("stale", 1): 7})
        assert await cons.committed(TopicPartition("stale", 1)) == 7
    finally:
        await cons.stop()


async def test_concurrent_commits_of_many_groups_are_coalesced(shared):
    """Commits of many groups in one process go out as a few batch requests (one in flight per
    coordinator node); each is acknowledged with its own result, a stale generation fails its
    own commit only, and every committed offset reads back."""
    await make_topic(shared, "coalesce", 2)
    n = 24
    cs = [Consumer("coalesce", bootstrap_servers=shared.bootstrap, group_id=f"g-co-{i}",
                   enable_auto_commit=False, **FAST) for i in range(n)]
    try:
        await asyncio.gather(*(c.start() for c in cs))
        await eventually(lambda: all(len(c.assignment()) == 2 for c in cs), 30, "assignments")
        groups = [c._group for c in cs]
        assert all(g is not None for g in groups)
        tp0, tp1 = TopicPartition("coalesce", 0), TopicPartition("coalesce", 1)

        async def commit(i: int) -> Any:
            g = groups[i]
            offsets = {tp0: (100 + i, f"md-{i}"), tp1: 200 + i}
            if i == 5:              # one stale generation among the others
                return await g.commit(offsets, generation=g.generation - 1)
            return await g.commit(offsets)
        for round_ in range(2):      # the first round also finds the coordinators
            res = await asyncio.gather(*(commit(i) for i in range(n)), return_exceptions=True)
            for i, r in enumerate(res):
                if i == 5:
                    assert isinstance(r, CommitFailedError), r
                    assert r.code is ErrorCode.ILLEGAL_GENERATION
                else:
                    assert r is None, (i, r)
            shared_ = groups[0]._batcher
            assert shared_ is not None and all(g._batcher is shared_ for g in groups)
            batcher = shared_.commits
            if round_ == 0:
                before = batcher.requests
        # Coordinators known: n commits in a few requests (one per node, plus a next batch
        # for a commit that waited for its member's heartbeat to answer).
        assert batcher.requests - before <= n // 3, batcher.requests - before
        for i, c in enumerate(cs):
            want = (None, None) if i == 5 else (100 + i, 200 + i)
            assert (await c.committed(tp0), await c.committed(tp1)) == want, i
        # Offset fetches are coalesced the same way.
        fetched0 = shared_.fetches.requests
        got = await asyncio.gather(*(c.committed(tp1) for c in cs))
        assert got == [None if i == 5 else 200 + i for i in range(n)]
        assert shared_.fetches.requests - fetched0 <= n // 3

        # The raw protocol: one request, each entry answered alone (a stale generation, a
        # malformed entry and a good one).
        g = groups[0]
        body = {"commits": [
            {"group": g.group_id, "member_id": g.member_id, "generation": g.generation,
             "offsets": [{"topic": "coalesce", "partition": 0, "offset": 7}]},
            {"group": g.group_id, "member_id": g.member_id, "generation": g.generation - 1,
             "offsets": [{"topic": "coalesce", "partition": 1, "offset": 8}]},
            {"group": g.group_id, "offsets": [{"topic": "coalesce", "partition": 1}]}]}
        res = post_msgpack(g.coordinator_url + "/v1/groups/offset-commit-batch", body)["results"]
        assert res[0] == {"committed": 1}
        assert res[1]["error"] == "ILLEGAL_GENERATION"
        assert res[2]["error"] == "INVALID_REQUEST"
        assert (await cs[0].committed(tp0), await cs[0].committed(tp1)) == (7, 200)
        res = post_msgpack(g.coordinator_url + "/v1/groups/offset-fetch-batch", {"fetches": [
            {"group": g.group_id, "partitions": [["coalesce", 0]]}, {"partitions": []}]})
        assert res["results"][0]["offsets"][0]["offset"] == 7
        assert res["results"][1]["error"] == "INVALID_REQUEST"

        # Heartbeats are coalesced too (their own lane); raw, each entry answered alone: the
        # member's assignment, an unknown member, a generation from the future, a malformed one.
        assert shared_.heartbeats.requests > 0
        res = post_msgpack(g.coordinator_url + "/v1/groups/heartbeat-batch", {"heartbeats": [
            {"group": g.group_id, "member_id": g.member_id, "generation": g.generation,
             "owned": [["coalesce", 0], ["coalesce", 1]], "topics": ["coalesce"]},
            {"group": g.group_id, "member_id": "nobody", "generation": g.generation,
             "owned": []},
            {"group": g.group_id, "member_id": g.member_id, "generation": g.generation + 9,
             "owned": []},
            {"group": g.group_id}]})["results"]
        assert res[0]["member_id"] == g.member_id and res[0]["generation"] == g.generation
        assert sorted(map(tuple, res[0]["assignment"])) == [("coalesce", 0), ("coalesce", 1)]
        assert [r.get("error") for r in res[1:]] == \
            ["UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "INVALID_REQUEST"]
    finally:
        await asyncio.gather(*(c.stop() for c in cs))


# -- processes --------------------------------------------------------------------------------
def spawn_worker(c: ProcessCluster, topic: str, group: str, out: str, name: str,
                 session_ms: int = 2000, process_ms: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "raftlog.testing.group_worker", c.bootstrap, topic, group, out,
         name, str(session_ms), str(process_ms)], stdout=subprocess.DEVNULL, stderr=open(out + ".err", "ab"),
        start_new_session=True)


def read_assign(path: str) -> set[int] | None:
    try:
        with open(path) as fh:
            return {int(x) for x in fh.read().split()}
    except (OSError, ValueError):
        return None


async def test_sigkill_consumer_moves_its_partitions(shared, tmp_path):
    await make_topic(shared, "killme")
    out = str(tmp_path / "w")
    proc = spawn_worker(shared, "killme", "g-kill", out, "victim", session_ms=2000)
    cs: list[Consumer] = []
    try:
        cs = await start_consumers(shared, 2, "killme", "g-kill")
        await eventually(lambda: balanced(cs, 4, [2, 2])
                         and len(read_assign(out + ".assign") or ()) == 2, 20,
                         "3 members with 2 partitions each")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        await eventually(lambda: balanced(cs, 6, [3, 3]), 2.0 + 3.0,
                         "survivors own all 6 within session timeout + 3 s")
        print(f"partitions moved {time.monotonic() - t0:.2f}s after SIGKILL")
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in cs:
            await c.stop()


async def test_at_least_once_with_killed_and_restarted_consumers(shared, tmp_path):
    await make_topic(shared, "alo")
    total = 3000
    procs: dict[int, subprocess.Popen] = {}
    outs = [str(tmp_path / f"w{i}") for i in range(3)]
    rng = random.Random(1)
    try:
        # 30 ms of "processing" between writing records and committing them: a SIGKILL there
        # leaves processed records uncommitted, which the next owner processes again
        for i in range(3):
            procs[i] = spawn_worker(shared, "alo", "g-alo", outs[i], f"w{i}", process_ms=30)
        producer = asyncio.ensure_future(produce_slowly(shared, "alo", total))
        for _ in range(4):
            await asyncio.sleep(rng.uniform(0.8, 1.5))
            i = rng.randrange(3)
            os.kill(procs[i].pid, signal.SIGKILL)
            procs[i].wait()
            procs[i] = spawn_worker(shared, "alo", "g-alo", outs[i], f"w{i}", process_ms=30)
        await producer

        def processed() -> set[tuple[int, int]]:
            return {(p, o) for p, o, _owner in read_worker_logs(outs)[1]}

        async with Consumer(bootstrap_servers=shared.bootstrap) as probe:
            ends = await probe.end_offsets([TopicPartition("alo", p) for p in range(6)])
        # every offset of every partition that holds data (epoch markers excluded by the
        # consumer: compare against the records a plain reader sees)
        want = set()
        async with Consumer("alo", bootstrap_servers=shared.bootstrap,
                            auto_offset_reset="earliest") as reader:
            while len(want) < total:
                for tp, recs in (await reader.getmany(timeout_ms=500)).items():
                    want |= {(tp.partition, r.offset) for r in recs}
        assert sum(ends.values()) >= total
        await eventually(lambda: want <= processed(), 30,
                         "every produced record processed at least once")
        check_duplicates_only_across_handovers(outs)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


def read_worker_logs(outs: list[str]) -> tuple[dict[str, tuple[int, float]],
                                                list[tuple[int, int, str]],
                                                list[tuple[int, int, float]]]:
    """group_worker's lines: ownerships {owner: (partition, start)}, records, commits."""
    owners: dict[str, tuple[int, float]] = {}
    recs: list[tuple[int, int, str]] = []
    commits: list[tuple[int, int, float]] = []
    for path in outs:
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) != 4:
                continue       # a line cut short by SIGKILL
            if f[0] == "A":
                owners[f[2]] = (int(f[1]), float(f[3]))
            elif f[0] == "R":
                recs.append((int(f[1]), int(f[2]), f[3]))
            elif f[0] == "C":
                commits.append((int(f[1]), int(f[2]), float(f[3])))
    return owners, recs, commits


def check_duplicates_only_across_handovers(outs: list[str]) -> None:
    owners, recs, commits = read_worker_logs(outs)
    by_owner: dict[str, list[tuple[int, int]]] = {}
    for p, o, owner in recs:
        assert owner in owners, f"record {p}/{o} processed by {owner}: not an owner then"
        assert owners[owner][0] == p, f"{owner} owns partition {owners[owner][0]}, not {p}"
        by_owner.setdefault(owner, []).append((p, o))
    for owner, seen in by_owner.items():
        offs = [o for _p, o in seen]
        # within one ownership every record once, in order: no re-read without a handover
        assert offs == sorted(set(offs)), f"{owner} processed a record twice: {offs}"
        p, start = owners[owner]
        before = [c for cp, c, t in commits if cp == p and t < start]
        # a new owner resumes at (or after) the last acknowledged commit: duplicates are only
        # records the previous owner processed but had not committed yet
        assert not before or offs[0] >= max(before), \
            f"{owner} started partition {p} at {offs[0]}, below the commit {max(before)}"
    dup: dict[tuple[int, int], set[str]] = {}
    for p, o, owner in recs:
        dup.setdefault((p, o), set()).add(owner)
    twice = sum(1 for v in dup.values() if len(v) > 1)
    print(f"{len(dup)} records, {twice} processed twice (each by two ownerships), "
          f"{len(owners)} ownerships")


async def produce_slowly(c: ProcessCluster, topic: str, n: int) -> None:
    async with Producer(bootstrap_servers=c.bootstrap, acks="all", linger_ms=5) as p:
        for start in range(0, n, 100):
            for i in range(start, min(n, start + 100)):
                p.send(topic, b"v%d" % i, partition=i % 6)
            await p.flush()
            await asyncio.sleep(0.05)


# -- coordinator failover ---------------------------------------------------------------------
async def test_sigkill_coordinator_node_group_continues(tmp_path):
    c = ProcessCluster(str(tmp_path / "c"), 3, extra_toml=LAG_TOML)
    try:
        c.start()
        c.wait_ready(40)
        await make_topic(c, "fo")
        await produce(c, "fo", 60)
        cs = await start_consumers(c, 2, "fo", "g-fo", enable_auto_commit=False)
        seen = await drain(cs, 60, 20)
        for cons in cs:
            await cons.commit()
        committed = {p: await cs[0].committed(TopicPartition("fo", p)) for p in range(6)}
        assert all(v is not None and v >= 10 for v in committed.values()), committed
        fc = post_msgpack(c.url(1, "/v1/groups/find-coordinator"), {"group": "g-fo"})
        victim = fc["coordinator_id"]
        c.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()

        async def moved() -> bool:
            live = [i for i in c.live_nodes()]
            try:
                f = post_msgpack(c.url(live[0], "/v1/groups/find-coordinator"),
                                 {"group": "g-fo"}, timeout_s=2)
            except Exception:
                return False
            return f["coordinator_id"] != victim
        await eventually(moved, 20, "a new coordinator")
        # committed offsets survived; the group keeps consuming new records
        again = {p: await cs[0].committed(TopicPartition("fo", p)) for p in range(6)}
        assert again == committed
        await produce(c, "fo", 60)
        more = await drain(cs, 60, 30)
        assert len(set(more) - set(seen)) == 60     # new records only: it resumed, not rewound
        print(f"group continued {time.monotonic() - t0:.2f}s after the coordinator's SIGKILL")
        for cons in cs:
            await cons.commit()
        after = {p: await cs[0].committed(TopicPartition("fo", p)) for p in range(6)}
        assert all(after[p] >= committed[p] + 10 for p in range(6)), (committed, after)
        for cons in cs:
            await cons.stop()
        # a full-cluster restart keeps them too (they are records in __consumer_offsets)
        c.start(victim)
        c.wait_ready(40, nodes=[1, 2, 3])
        for n in (1, 2, 3):
            c.kill(n, signal.SIGKILL)
        c.start()
        c.wait_ready(40, nodes=[1, 2, 3])
        fresh = Consumer(bootstrap_servers=c.bootstrap, group_id="g-fo", enable_auto_commit=False,
                         **FAST)
        await fresh.start()
        try:
            async def restored() -> dict | None:
                try:
                    got = {p: await fresh.committed(TopicPartition("fo", p)) for p in range(6)}
                except Exception:
                    return None
                return got if got == after else None
            await eventually(restored, 30, "committed offsets back after a full restart")
        finally:
            await fresh.stop()
    finally:
        c.stop()


# -- CLI ----------------------------------------------------------------------------------------
def cli(c: ProcessCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "raftlog.cli", "--bootstrap", c.bootstrap,
                        "--timeout-ms", "15000", *args], capture_output=True, text=True,
                       timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


async def test_cli_consume_group_describe_reset_delete(shared):
    import json
    await make_topic(shared, "clig", 3)
    await produce(shared, "clig", 30, partitions=3)
    r = cli(shared, "consume", "clig", "--group", "g-cli", "--max-messages", "30")
    assert sorted(r.stdout.split()) == sorted("v%d" % i for i in range(30))
    d = json.loads(cli(shared, "group", "describe", "g-cli", "--json").stdout)
    assert d["state"] in ("Empty", "Rebalancing") and not d["members"]
    assert len(d["offsets"]) == 3 and all(o["lag"] == 0 for o in d["offsets"]), d
    assert "g-cli" in cli(shared, "group", "list").stdout
    text = cli(shared, "group", "describe", "g-cli").stdout
    assert "LAG" in text and "COMMITTED" in text
    # while a member exists, reset is refused (the CLI runs in a thread: a blocked loop would
    # stop the member's heartbeats, and its session could lapse while the CLI starts)
    [cons] = await start_consumers(shared, 1, "clig", "g-cli")
    try:
        await eventually(lambda: len(cons.assignment()) == 3, 10, "assignment")
        d = json.loads((await asyncio.to_thread(cli, shared, "group", "describe", "g-cli",
                                                "--json")).stdout)
        assert d["state"] in ("Stable", "Rebalancing") and len(d["members"]) == 1
        assert all(o["owner"] == d["members"][0]["member_id"] for o in d["offsets"])
        r = await asyncio.to_thread(cli, shared, "group", "reset-offsets", "g-cli",
                                    "--to-earliest", check=False)
        assert r.returncode == 1 and "NON_EMPTY_GROUP" in r.stderr
    finally:
        await cons.stop()
    cli(shared, "group", "reset-offsets", "g-cli", "--topic", "clig", "--to-earliest")
    d = json.loads(cli(shared, "group", "describe", "g-cli", "--json").stdout)
    assert all(o["lag"] > 0 for o in d["offsets"]), d
    shifted = json.loads(cli(shared, "group", "reset-offsets", "g-cli", "--shift-by", "2",
                             "--dry-run", "--json").stdout)
    assert len(shifted) == 3
    r = cli(shared, "consume", "clig", "--group", "g-cli", "--max-messages", "30")
    assert sorted(r.stdout.split()) == sorted("v%d" % i for i in range(30))
    assert "deleted group" in cli(shared, "group", "delete", "g-cli").stdout
    d = json.loads(cli(shared, "group", "describe", "g-cli", "--json").stdout)
    assert d["offsets"] == []


# -- pattern subscription, max_poll_interval_ms -------------------------------------------------
def tps_of(cons: Consumer) -> set[tuple[str, int]]:
    return {(tp.topic, tp.partition) for tp in cons.assignment()}


async def test_pattern_subscription_follows_new_matching_topics_only(shared):
    for name in ("pat-a1", "pat-a2", "nopat-a3"):
        await make_topic(shared, name, 2)
    cons = Consumer(bootstrap_servers=shared.bootstrap, group_id="g-pat",
                    client_id="g-pat-0", **FAST)
    await cons.start()
    try:
        cons.subscribe(pattern=r"pat-a\d+")
        first = {(t, p) for t in ("pat-a1", "pat-a2") for p in range(2)}
        await eventually(lambda: tps_of(cons) == first, 15,
                         f"the two matching topics ({tps_of(cons)})")
        # a topic created after subscribe() is picked up at the next refresh (3 s) + rebalance
        await make_topic(shared, "pat-a4", 2)
        await make_topic(shared, "pat-b5", 2)
        every = first | {("pat-a4", 0), ("pat-a4", 1)}
        await eventually(lambda: tps_of(cons) == every, 15,
                         f"the new matching topic too ({tps_of(cons)})")
        # records flow from the new topic; non-matching topics are never read
        await produce(shared, "pat-a4", 10, partitions=2)
        await produce(shared, "pat-b5", 10, partitions=2)
        got: set[tuple[str, int, int]] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len({x for x in got if x[0] == "pat-a4"}) < 10:
            assert loop.time() < deadline, f"read {got}"
            for tp, recs in (await cons.getmany(timeout_ms=100)).items():
                got |= {(tp.topic, tp.partition, r.offset) for r in recs}
        assert {x[0] for x in got} <= {"pat-a1", "pat-a2", "pat-a4"}
        assert tps_of(cons) == every
    finally:
        await cons.stop()


async def test_max_poll_interval_leaves_then_rejoins_on_poll(shared):
    await make_topic(shared, "mpi", 4)
    slow = Consumer("mpi", bootstrap_servers=shared.bootstrap, group_id="g-mpi",
                    client_id="g-mpi-slow", max_poll_interval_ms=1500, **FAST)
    steady = Consumer("mpi", bootstrap_servers=shared.bootstrap, group_id="g-mpi",
                      client_id="g-mpi-steady", **FAST)
    await slow.start()
    await steady.start()
    cs = [slow, steady]
    try:
        async def both_poll() -> bool:
            await slow.getmany(timeout_ms=20)
            await steady.getmany(timeout_ms=20)
            return balanced(cs, 4, [2, 2])
        await eventually(both_poll, 30, f"2 + 2 ({owned(cs)})")
        # `slow` stops calling getmany(): after 1.5 s it leaves and `steady` gets everything
        t0 = time.monotonic()

        async def steady_owns_all() -> bool:
            await steady.getmany(timeout_ms=20)
            return not slow.assignment() and len(steady.assignment()) == 4
        await eventually(steady_owns_all, 1.5 + 8, f"slow left ({owned(cs)})")
        left_after = time.monotonic() - t0
        assert left_after >= 1.4, f"left after {left_after:.2f}s, before max_poll_interval_ms"
        assert slow._group is not None and slow._group.member_id is None
        # polling again rejoins: back to 2 + 2
        await eventually(both_poll, 15, f"slow rejoined ({owned(cs)})")
        print(f"left {left_after:.2f}s after the last poll (max_poll_interval_ms = 1.5 s)")
    finally:
        for c in cs:
            await c.stop()


# -- offset retention ---------------------------------------------------------------------------
RETENTION_TOML = ("[groups]\noffsets_retention_ms = 2000\n"
                  "offsets_retention_check_interval_ms = 100\n")


async def test_offsets_of_empty_group_expire_after_retention(tmp_path):
    with running_cluster(str(tmp_path / "ret"), 3,
                         extra_toml=LAG_TOML + RETENTION_TOML) as c:
        await make_topic(c, "ret", 2)
        cons = Consumer("ret", bootstrap_servers=c.bootstrap, group_id="g-ret",
                        enable_auto_commit=False, **FAST)
        await cons.start()
        tp = TopicPartition("ret", 0)
        async with Admin(c.bootstrap) as admin:
            try:
                await eventually(lambda: len(cons.assignment()) == 2, 15, "assignment")
                await cons.commit({tp: 5})
                # a group with members keeps its offsets however long it lives
                t_commit = time.monotonic()
                await eventually(lambda: time.monotonic() - t_commit > 3.0, 10, "3 s")
                assert await cons.committed(tp) == 5
                assert "g-ret" in {g["group"] for g in await admin.list_groups()}
            finally:
                await cons.stop()
            t_empty = time.monotonic()
            d = await admin.describe_group("g-ret")
            assert [o["offset"] for o in d["offsets"] if o["partition"] == 0] == [5]

            async def gone() -> bool:
                d = await admin.describe_group("g-ret")
                names = {g["group"] for g in await admin.list_groups()}
                return not d["offsets"] and "g-ret" not in names
            await eventually(gone, 2.0 + 10, "offsets expired and group gone")
            took = time.monotonic() - t_empty
            assert took >= 1.5, f"expired {took:.2f}s after becoming empty (retention 2 s)"
            print(f"group expired {took:.2f}s after its last member left (retention 2 s)")
            # a new member of the same group starts from auto_offset_reset, not offset 5
            fresh = Consumer(bootstrap_servers=c.bootstrap, group_id="g-ret",
                             enable_auto_commit=False, **FAST)
            await fresh.start()
            try:
                assert await fresh.committed(tp) is None
            finally:
                await fresh.stop()

            # a group nobody asks about after a full restart still expires: the nodes die while
            # it has a member; restored from Raft, that member's session lapses, then retention
            other = Consumer("ret", bootstrap_servers=c.bootstrap, group_id="g-ret2",
                             enable_auto_commit=False, **FAST)
            await other.start()
            await eventually(lambda: len(other.assignment()) == 2, 15, "assignment")
            await other.commit({tp: 3})
            await eventually(lambda: admin.list_groups(), 10, "groups listed")
            assert "g-ret2" in {g["group"] for g in await admin.list_groups()}
            for n in (1, 2, 3):
                c.kill(n, signal.SIGKILL)
            await other.stop()
            c.start()
            c.wait_ready(40, nodes=[1, 2, 3])

            async def gone2() -> bool:       # list_groups reads metadata: no group request
                return "g-ret2" not in {g["group"] for g in await admin.list_groups()}
            await eventually(gone2, 10 + 2 + 20, "g-ret2 expired after the restart")
