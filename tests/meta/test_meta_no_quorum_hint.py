"""Every NO_QUORUM (503) of the metadata replica carries the same retry hint as the broker's
"no controller" answer (audit bug 7): a controller that just lost its quorum answered only
{outcome, leader_id}, so clients fell back to their own backoff."""
from __future__ import annotations

import asyncio

import pytest

from metatest_util import free_ports
from raftlog import errors
from raftlog.meta import commands as C
from raftlog.meta.replica import NO_QUORUM_RETRY_AFTER_MS, MetaReplica


async def test_no_quorum_answers_carry_retry_after(tmp_path) -> None:
    peers = {i + 1: ("127.0.0.1", p) for i, p in enumerate(free_ports(3))}
    r = MetaReplica(1, peers, str(tmp_path), asyncio.get_running_loop(), fast=True)
    try:
        with pytest.raises(errors.for_code("NO_QUORUM")) as exc:   # alone: no majority
            await r.propose(C.noop(), 2.0)
        assert exc.value.http_status == 503
        assert exc.value.hint["retry_after_ms"] == NO_QUORUM_RETRY_AFTER_MS
        assert exc.value.hint["outcome"] == "not_applied"
    finally:
        await r.aclose()
    with pytest.raises(errors.for_code("NO_QUORUM")) as exc:       # closed
        await r.propose(C.noop(), 2.0)
    assert exc.value.hint["retry_after_ms"] == NO_QUORUM_RETRY_AFTER_MS
