"""LocalMetaLog: the in-process stand-in keeps MetaReplica's contract (results, views,
listeners, errors) and its fault hooks do what they say, including ghost writes."""
from __future__ import annotations

import pytest

from raftlog import errors
from raftlog.meta import commands as C
from raftlog.meta.local import LocalMetaLog


async def test_propose_publishes_before_returning() -> None:
    m = LocalMetaLog(node_id=2)
    views = []
    m.add_listener(views.append)
    res = await m.propose(C.register_broker(1, "h", 9001, "i", 0), 1)
    assert res[0] == "ok" and m.view.broker(1).epoch == 1 and m.view.controller_id == 2
    assert [v.version for v in views] == [1]
    assert (await m.barrier(1)).version == 2
    with pytest.raises(errors.InvalidRequestError):
        await m.propose(b"junk", 1)


async def test_faults_and_leadership() -> None:
    m = LocalMetaLog()
    moves = []
    m.add_leader_listener(lambda lid, me: moves.append((lid, me)))
    m.fail_next("REQUEST_TIMED_OUT", applied=True)       # a ghost write
    with pytest.raises(errors.for_code("REQUEST_TIMED_OUT")):
        await m.propose(C.allocate_producer_ids(5), 1)
    assert m.view.next_producer_id == 5                  # ... that applied anyway
    m.fail_next("NO_QUORUM")
    with pytest.raises(errors.for_code("NO_QUORUM")) as exc:
        await m.propose(C.noop(), 1)
    assert exc.value.hint["outcome"] == "not_applied" and m.version == 1
    m.set_leadership(3)
    assert moves == [(3, False)] and not m.is_leader and m.view.controller_id == 3
    m.set_quorum(False)
    with pytest.raises(errors.for_code("NO_QUORUM")):
        await m.propose(C.noop(), 1)
    with pytest.raises(errors.for_code("REQUEST_TIMED_OUT")):
        await m.wait_for_version(99, 0.1)
    assert len(m.proposed) == 1
