"""Retention end to end with the client library: a consumer whose position retention deleted
gets OFFSET_OUT_OF_RANGE from the cluster and its auto_offset_reset applies ("earliest" reads
from the new log start, "latest" jumps to the end, "none" raises with the valid range)."""
from __future__ import annotations

import asyncio

import pytest

from raftlog.client import Admin, Consumer, NewTopic, Producer, TopicPartition
from raftlog.errors import ErrorCode, for_code
from raftlog.testing.cluster import eventually, running_cluster

pytestmark = pytest.mark.cluster

OffsetOutOfRangeError = for_code(ErrorCode.OFFSET_OUT_OF_RANGE)
TOML = "[log]\nretention_check_interval_ms = 150\n"
TOPIC = "reset"


async def _log_start(admin_bootstrap: str, tp: TopicPartition) -> int:
    async with Consumer(bootstrap_servers=admin_bootstrap) as c:
        return (await c.beginning_offsets([tp]))[tp]


async def _scenario(c) -> None:
    tp = TopicPartition(TOPIC, 0)
    async with Admin(c.bootstrap) as admin:
        await admin.create_topics([NewTopic(TOPIC, 1, 3, {"segment.bytes": 16384,
                                                          "min.insync.replicas": 2})])
        async with Producer(c.bootstrap, acks="all", linger_ms=0) as p:
            sent = [await p.send_and_wait(TOPIC, b"%04d" % i + b"x" * 1000, partition=0)
                    for i in range(80)]
        first, end = sent[0].offset, sent[-1].offset + 1
        await admin.alter_configs(TOPIC, {"retention.bytes": 20000})

    async def trimmed() -> bool:
        return await _log_start(c.bootstrap, tp) > first + 20
    await eventually(trimmed, 20, "retention moved the log start")
    start = await _log_start(c.bootstrap, tp)
    assert first < start < end

    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest") as cons:
        cons.assign([tp])
        cons.seek(tp, first)                       # a consumer that was away: now deleted
        got = []
        deadline = asyncio.get_running_loop().time() + 10
        while not got and asyncio.get_running_loop().time() < deadline:
            got = (await cons.getmany(tp, timeout_ms=300, max_records=1)).get(tp, [])
        assert got and got[0].offset == start      # from the new log start, nothing skipped
        assert got[0].value == b"%04d" % (start - first) + b"x" * 1000

    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="latest") as cons:
        cons.assign([tp])
        cons.seek(tp, first)

        async def at_end() -> bool:
            await cons.getmany(tp, timeout_ms=100)
            return await cons.position(tp) == end
        await eventually(at_end, 10, "reset to latest")

    async with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="none") as cons:
        cons.assign([tp])
        cons.seek(tp, first)

        async def raises() -> bool:
            try:
                await cons.getmany(tp, timeout_ms=200)
            except OffsetOutOfRangeError as exc:
                assert f"out of range [{start}, {end}]" in str(exc), exc
                return True
            return False
        await eventually(raises, 10, "OFFSET_OUT_OF_RANGE raised with reset 'none'")


def test_reset_policy_applies_below_the_log_start_retention_moved(tmp_path):
    with running_cluster(str(tmp_path / "c"), 3, extra_toml=TOML) as c:
        asyncio.run(_scenario(c))
