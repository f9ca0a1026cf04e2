"""The controller fences a silent broker early only when its port refuses connections."""
import asyncio

from raftlog import config
from raftlog.meta.controller import Controller
from raftlog.meta.local import LocalMetaLog
from raftlog.server.liveness import port_refuses


def make(probe):
    cfg = config.parse({"broker": {"heartbeat_interval_ms": 100, "session_timeout_ms": 10_000},
                        "nodes": [{"id": i, "http_port": 9000 + i, "raft_port": 9100 + i}
                                  for i in (1, 2, 3)]}, "test.toml")
    meta = LocalMetaLog()
    clock = [1_000_000]
    ctl = Controller(meta, cfg, mono_ms=lambda: clock[0], port_refuses=probe)
    return ctl, meta, clock


async def setup(ctl, meta):
    ctl._become_active()
    for b in (1, 2, 3):
        await ctl.register(b, "127.0.0.1", 9000 + b, f"inc-{b}")
        await ctl.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)  # unfence
    assert not any(meta.view.broker(b).fenced for b in (1, 2, 3))


async def tick(ctl):
    dead = await ctl._probe_silent()
    await ctl._fence_expired(dead)


async def test_silent_broker_with_refusing_port_is_fenced_before_its_session_ends():
    asked = []

    async def probe(host, port, timeout_s):
        asked.append(port)
        return port == 9002

    ctl, meta, clock = make(probe)
    await setup(ctl, meta)
    clock[0] += 150                      # under two heartbeats: nobody is probed
    await tick(ctl)
    assert asked == []
    for b in (1, 3):                     # 1 and 3 keep heartbeating, 2 stays silent
        await ctl.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)
    clock[0] += 100
    await tick(ctl)
    assert asked == [9002]
    assert meta.view.broker(2).fenced and not meta.view.broker(1).fenced
    assert not meta.view.broker(3).fenced


async def test_silent_broker_whose_port_answers_waits_for_the_session_timeout():
    async def probe(host, port, timeout_s):
        return False                     # paused or cut off: connect hangs or succeeds

    ctl, meta, clock = make(probe)
    await setup(ctl, meta)
    clock[0] += 5_000
    await tick(ctl)
    assert not any(meta.view.broker(b).fenced for b in (1, 2, 3))
    clock[0] += 5_100                    # past session_timeout_ms
    await tick(ctl)
    assert all(meta.view.broker(b).fenced for b in (1, 2, 3))


async def test_port_refuses_tells_a_closed_port_from_a_listening_one():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert await port_refuses("127.0.0.1", port, 1.0) is False
    server.close()
    await server.wait_closed()
    assert await port_refuses("127.0.0.1", port, 1.0) is True


async def test_a_new_controller_waits_for_heartbeats_before_placing_replicas():
    # Seen in CI: the Raft leader served create_topic before its loop had ticked once, so it
    # placed with no heartbeat window, had heard brokers 2 and 3 only, and refused RF=3.
    async def probe(host, port, timeout_s):
        return False

    old, meta, clock = make(probe)
    await setup(old, meta)               # the previous controller registered all three
    new = Controller(meta, old.cfg, mono_ms=lambda: clock[0], port_refuses=probe)
    clock[0] += 1_000
    for b in (2, 3):                     # these reached the new controller first
        await new.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)
    create = asyncio.ensure_future(new.create_topic("t", 1, 3, None))
    for _ in range(3):                   # a refusal comes back within these loop turns; the
        await asyncio.sleep(0)           # fake clock never ends the heartbeat window
    assert not create.done()             # waiting for broker 1, not refusing
    await new.heartbeat(1, meta.view.broker(1).epoch, meta.view.version)
    desc = await asyncio.wait_for(create, 2)
    assert sorted(meta.view.topics["t"].partitions[0].replicas) == [1, 2, 3], desc


async def test_leadership_lost_and_regained_between_ticks_starts_a_new_term():
    # A controller that was deposed and re-elected missed the heartbeats other controllers
    # took meanwhile: its old session clocks are stale, so the new term restarts them.
    async def probe(host, port, timeout_s):
        return False

    ctl, meta, clock = make(probe)
    await setup(ctl, meta)
    clock[0] += 9_000                    # brokers heartbeat to node 2 from here on
    meta.set_leadership(2)
    meta.set_leadership(1)               # re-elected before the loop's next tick
    ctl.require_active()                 # the first request of the new term
    clock[0] += 2_000                    # 11 s since the old term heard anyone
    await tick(ctl)
    assert not any(meta.view.broker(b).fenced for b in (1, 2, 3))
    clock[0] += 8_100                    # a full session of the new term
    await tick(ctl)
    assert all(meta.view.broker(b).fenced for b in (1, 2, 3))
