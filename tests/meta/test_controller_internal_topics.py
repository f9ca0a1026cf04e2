"""The admin API cannot delete `__consumer_offsets` or move its cleanup.policy off compact.

Goal: an internal topic holding every group's committed offsets survives admin mistakes, as in
Kafka (which refuses deleting internal topics); other config alters still work. Method: a
Controller over a LocalMetaLog; refusals must be 4xx errors with a Kafka code, leave the topic
and its config as they were and propose nothing.
"""
from __future__ import annotations

import pytest

from raftlog import config, errors
from raftlog.meta.controller import Controller
from raftlog.meta.local import LocalMetaLog

OFFSETS = "__consumer_offsets"


async def _controller() -> tuple[Controller, LocalMetaLog]:
    cfg = config.parse({"nodes": [{"id": i, "http_port": 9000 + i, "raft_port": 9100 + i}
                                  for i in (1, 2, 3)]}, "test.toml")
    meta = LocalMetaLog()
    ctl = Controller(meta, cfg)
    ctl._become_active()
    for b in (1, 2, 3):
        await ctl.register(b, "127.0.0.1", 9000 + b, f"inc-{b}")
        await ctl.heartbeat(b, meta.view.broker(b).epoch, meta.view.version)
    await ctl.ensure_offsets_topic(3, 3)
    await ctl.create_topic("orders", 1, 3, None)
    return ctl, meta


async def test_deleting_the_offsets_topic_is_refused_with_a_400() -> None:
    ctl, meta = await _controller()
    before = len(meta.proposed)
    with pytest.raises(errors.RaftlogError) as exc:
        await ctl.delete_topic(OFFSETS)
    assert exc.value.code == errors.ErrorCode.INVALID_REQUEST
    assert errors.http_status(exc.value.code) == 400
    assert "internal topic" in exc.value.message
    assert meta.view.topic(OFFSETS) is not None and len(meta.proposed) == before
    assert await ctl.delete_topic("orders") == {"deleted": "orders"}   # others still go
    assert meta.view.topic("orders") is None


@pytest.mark.parametrize("change", [{"cleanup.policy": "delete"},
                                    {"cleanup.policy": "compact,delete"},
                                    {"cleanup.policy": None},            # reset to the default
                                    {"retention.ms": 1000, "cleanup.policy": "delete"}])
async def test_moving_the_offsets_topic_off_compact_is_refused(change: dict) -> None:
    ctl, meta = await _controller()
    config_before = dict(meta.view.topic(OFFSETS).config)
    assert config_before == {"cleanup.policy": "compact", "segment.bytes": 100 << 20}
    with pytest.raises(errors.RaftlogError) as exc:
        await ctl.alter_topic_config(OFFSETS, change)
    assert exc.value.code == errors.ErrorCode.INVALID_CONFIG
    assert errors.http_status(exc.value.code) == 400
    assert "must stay 'compact'" in exc.value.message
    assert dict(meta.view.topic(OFFSETS).config) == config_before


async def test_other_alters_of_the_offsets_topic_and_of_user_topics_still_apply() -> None:
    ctl, meta = await _controller()
    await ctl.alter_topic_config(OFFSETS, {"retention.ms": 1000, "cleanup.policy": "compact"})
    assert dict(meta.view.topic(OFFSETS).config) == {"cleanup.policy": "compact",
                                                     "retention.ms": 1000,
                                                     "segment.bytes": 100 << 20}
    await ctl.alter_topic_config("orders", {"cleanup.policy": "delete"})
    assert meta.view.topic("orders").config["cleanup.policy"] == "delete"
