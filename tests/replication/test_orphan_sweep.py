"""The startup sweep of partition directories whose topic was deleted while this broker was
down: nothing is deleted on a view that is not caught up (Raft not ready, or the view lacks
this process's registration: a node restarted without a quorum), and once it is, exactly the
directories of topics that are gone, or were re-created with another id and are not ours, go.
The cluster-level test (SIGKILL, delete, restart) is tests/cluster/test_deleted_while_down.py."""
from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

from raftlog.meta.view import BrokerInfo, MetadataView, PartitionInfo, TopicInfo
from raftlog.testing.cluster import eventually

from manager_stub import stub_manager

NODE = 1
EPOCH = 4


def view(registered: bool = True, topics: dict[str, tuple[str, tuple[int, ...]]] | None = None
         ) -> MetadataView:
    """topics: name -> (topic id, replicas of its single partition 0)."""
    brokers = {NODE: BrokerInfo(NODE, "127.0.0.1", 9001, "inc", EPOCH, False, 0),
               2: BrokerInfo(2, "127.0.0.1", 9002, "inc2", 3, False, 0)}
    return MetadataView(
        version=9, brokers=brokers if registered else {},
        topics={n: TopicInfo(n, tid, {}, (PartitionInfo(n, 0, reps, reps[0], 0, reps, 0),))
                for n, (tid, reps) in (topics or {}).items()})


def make(tmp_path, ready: bool, v: MetadataView):
    m, broker, tasks = stub_manager(tmp_path, NODE, EPOCH, ready=ready, view=v)
    os.makedirs(m.root)
    return m, broker, tasks


def partition_dir(m, name: str, topic_id: str | None) -> str:
    d = os.path.join(m.root, name)
    os.makedirs(d)
    with open(os.path.join(d, "00000000000000000000.log"), "wb") as fh:
        fh.write(b"old data")
    if topic_id is not None:
        with open(os.path.join(d, "topic_id"), "w") as fh:
            fh.write(topic_id)
    return d


def listing(m) -> set[str]:
    return {n for n in os.listdir(m.root) if ".deleted-" not in n}


async def settle(tasks):
    await asyncio.gather(*tasks)


async def test_a_view_not_caught_up_deletes_nothing(tmp_path):
    for ready, registered in ((False, True), (True, False), (False, False)):
        root = tmp_path / f"{ready}-{registered}"
        m, _, tasks = make(root, ready, view(registered, {}))  # empty view: no topic at all
        partition_dir(m, "gone-0", "id-gone")
        partition_dir(m, "gone-1", None)
        assert m.view_caught_up() is False
        assert await m.sweep_orphans() == []
        await settle(tasks)
        assert listing(m) == {"gone-0", "gone-1"}
        assert not [n for n in os.listdir(m.root) if ".deleted-" in n]   # nor renamed


async def test_caught_up_view_removes_exactly_the_orphans(tmp_path):
    topics = {"live": ("id-live", (NODE, 2)),         # ours, same id: kept
              "recreated-mine": ("id-new", (NODE, 2)),  # new id, ours: its open replaces it
              "recreated-other": ("id-new2", (2,)),     # new id, not ours: removed
              "a-b-c": ("id-abc", (2,))}                # dashes in names; same id: kept
    m, _, tasks = make(tmp_path, True, view(True, topics))
    partition_dir(m, "live-0", "id-live")
    partition_dir(m, "recreated-mine-0", "id-old")
    partition_dir(m, "recreated-other-0", "id-old2")
    partition_dir(m, "a-b-c-0", "id-abc")
    partition_dir(m, "deleted-topic-0", "id-del")      # topic gone: removed
    partition_dir(m, "deleted-topic-3", None)          # half-created dir of a gone topic
    os.makedirs(os.path.join(m.root, "not_a_partition"))
    assert m.view_caught_up()
    removed = await m.sweep_orphans()
    await settle(tasks)
    assert sorted(removed) == ["deleted-topic-0", "deleted-topic-3", "recreated-other-0"]
    assert listing(m) == {"live-0", "recreated-mine-0", "a-b-c-0", "not_a_partition"}
    assert not [n for n in os.listdir(m.root) if ".deleted-" in n]   # trees removed too


async def test_open_or_opening_partitions_are_never_swept(tmp_path):
    m, _, tasks = make(tmp_path, True, view(True, {}))
    partition_dir(m, "t-0", "id-t")
    partition_dir(m, "t-1", "id-t")
    m._opening.add(("t", 0))
    m.partitions[("t", 1)] = SimpleNamespace()
    assert await m.sweep_orphans() == []
    await settle(tasks)
    assert listing(m) == {"t-0", "t-1"}
    m.partitions.clear()


async def test_startup_sweep_waits_until_the_view_catches_up(tmp_path):
    m, broker, tasks = make(tmp_path, False, view(True, {}))
    partition_dir(m, "gone-0", "id-gone")
    sweeper = asyncio.ensure_future(m._sweep_orphans_when_caught_up())
    try:
        await asyncio.sleep(0.6)                    # a few polls on a not-ready node
        assert listing(m) == {"gone-0"} and not sweeper.done()
        broker.meta.is_ready = True
        await asyncio.wait_for(sweeper, 5)
        await settle(tasks)
        await eventually(lambda: not os.listdir(m.root), 5, "the orphan removed from disk")
    finally:
        sweeper.cancel()
