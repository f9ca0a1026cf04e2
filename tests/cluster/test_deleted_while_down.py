"""A topic deleted while a broker is down leaves no data on that broker: once the restarted
broker's metadata has caught up, it removes the partition directories of the gone topic (and
only those: a live topic's data stays and serves). Unit tests of the not-caught-up guard are in
tests/replication/test_orphan_sweep.py."""
import os
import signal

import pytest

from raftlog.testing.cluster import LAG_TOML, DataClient, HttpError, running_cluster, wait_until

pytestmark = pytest.mark.cluster


def dirs_of(c, node, topic):
    root = os.path.join(c.workdir, f"node-{node}", "partitions")
    return sorted(n for n in os.listdir(root)
                  if n.rsplit("-", 1)[0] == topic and ".deleted-" not in n)


def topic_gone(c, node, topic):
    try:
        c.get(node, f"/v1/topics/{topic}", timeout_s=2.0)
    except HttpError as exc:
        return exc.status == 404
    return False


def test_topic_deleted_while_a_broker_is_down_is_removed_from_it_on_restart(tmp_path):
    with running_cluster(str(tmp_path / "c"), 3, extra_toml=LAG_TOML) as c:
        dc = DataClient(c)
        for name in ("doomed", "kept"):
            c.call(1, "POST", "/v1/topics", {"name": name, "partitions": 2,
                                              "replication_factor": 3})
            for p in (0, 1):
                r = dc.produce(name, p, [(b"k", b"v-%s-%d" % (name.encode(), p))])
                assert "error" not in r, r
        victim = next(n for n in (1, 2, 3) if n != c.controller())
        wait_until(lambda: len(dirs_of(c, victim, "doomed")) == 2, 10,
                   what="the victim holds both doomed partitions")
        c.kill(victim, signal.SIGKILL)
        other = next(n for n in (1, 2, 3) if n != victim)
        c.call(other, "DELETE", "/v1/topics/doomed")
        live = [n for n in (1, 2, 3) if n != victim]
        wait_until(lambda: all(topic_gone(c, n, "doomed") for n in live), 15,
                   what="the deletion applied on the live nodes")
        wait_until(lambda: all(not dirs_of(c, n, "doomed") for n in live), 15,
                   what="live nodes removed the doomed data")
        assert dirs_of(c, victim, "doomed") == ["doomed-0", "doomed-1"]   # still on disk
        c.start(victim)
        c.wait_ready(40)
        wait_until(lambda: not dirs_of(c, victim, "doomed"), 20,
                   what="the restarted broker removed the data of the deleted topic")
        # the live topic's data stays on the restarted broker, and it serves from it
        assert dirs_of(c, victim, "kept") == ["kept-0", "kept-1"]
        for p in (0, 1):
            vals = [r.value for r in dc.read_all("kept", p)]
            assert vals == [b"v-kept-%d" % p]
