"""benchmarks/e2e_latency.py without a cluster: the fixed-rate send loop stamps scheduled times
(no coordinated omission) and the figures line comes last with avg/p50/p95/p99/p99.9/max."""
from __future__ import annotations

import argparse
import asyncio
import re
import time

from benchmarks import e2e_latency as e2e

RATE = 1000.0          # records/s: 1 ms apart on the timeline
STALL_AT = 50          # the fake producer blocks the event loop at this record...
STALL_S = 0.030        # ...for this long, like a GC pause or a busy host


class StallingProducer:
    """Records every send(); blocks the event loop once, as a stalled application would."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, int]] = []  # (seq, stamp ns, loop turn)
        self.turn = 0

    def send(self, topic: str, value: bytes):
        stamp, seq = e2e.STAMP.unpack_from(value)
        self.sent.append((seq, stamp, self.turn))
        if seq == STALL_AT:
            time.sleep(STALL_S)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def _args(**kw) -> argparse.Namespace:
    base = dict(rate=RATE, duration=0.1, batch_records=1, record_size=100, stamp="scheduled",
                acks="all", warmup_seconds=0.0)
    base.update(kw)
    return argparse.Namespace(**base)


async def test_stamps_are_scheduled_times_and_a_stall_sends_the_pile_up_at_once():
    prod = StallingProducer()
    stats = e2e.ProduceStats()

    async def count_turns() -> None:
        while True:
            prod.turn += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(count_turns())
    try:
        sent, _, lateness, late = await asyncio.wait_for(
            e2e.send_loop(_args(), prod, "t", e2e.Acks(stats, 100)), timeout=10)
    finally:
        ticker.cancel()
    n = int(RATE * 0.1)
    assert sent == n and [s for s, _, _ in prod.sent] == list(range(n))
    first = prod.sent[0][1]
    # every stamp is its record's slot on the timeline, whenever it was actually sent
    assert [st - first for _, st, _ in prod.sent] == [int(s * 1e9 / RATE) for s in range(n)]
    # the records that fell due during the stall left together in the next turn
    after = [turn for s, _, turn in prod.sent if s > STALL_AT]
    burst = after.count(after[0])
    assert burst >= int(STALL_S * RATE * 0.6), burst
    assert late >= 1 and max(lateness) >= STALL_S * 1000 * 0.6
    assert stats.acked_records == n


def test_figures_line_is_last_with_avg_and_every_percentile():
    got = [(s, float(s + 1)) for s in range(1000)]  # 1..1000 ms
    out = e2e.report(_args(duration=1.0), e2e.ProduceStats(), 1000, 1.0, [0.5] * 1000, 0, got,
                     {}, [], "cpu (% of one core over 1.0 s): client 1%")
    last = out.splitlines()[-1]
    figures = dict((k, float(v)) for v, k in re.findall(
        r"([\d.]+) ms (avg|max|50th|95th|99th|99\.9th)", last))
    ms = sorted(v for _, v in got)
    want = {"avg": 500.5, "max": 1000.0}
    want.update({f"{q:g}th": e2e.percentile(ms, q) for q in (50, 95, 99, 99.9)})  # _common's ranks
    assert figures == want, last
    assert want["95th"] == 950.0
    assert last.startswith("1000 records end-to-end")
