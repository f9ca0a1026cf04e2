#!/usr/bin/env python3
"""Client CPU per record of the producer, independent of machine load (a micro-benchmark).

    .venv/bin/python benchmarks/producer_cpu.py [--records 300000] [--mode send|send_batch]
        [--acks 1|all] [--keys N] [--profile]

The brokers are an in-process FakeCluster (raftlog.testing.fake_broker) on its own thread and
event loop; the producer runs on the main thread, and the figures are that thread's CPU time
(`time.thread_time`), so the fake broker's work and other processes on the machine do not count.
Two figures:

- `send()`: CPU inside the application's loop of send() calls only (what the caller pays per
  record, measured per burst of `--yield-every` calls);
- `total`: all CPU of the producer's thread from the first send() to the last answer (send,
  sender, encoding, HTTP client), divided by the records.

`--keys N` sends keyed records (`send(topic, value, key=...)`, N distinct keys of ~10 bytes
in rotation, so the keyed path and the partitioner count) instead of null keys.

Wall-clock rates here mean little (the fake broker shares the process); quote the µs/record.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftlog.client import Producer  # noqa: E402
from raftlog.testing.fake_broker import FakeCluster  # noqa: E402


async def produce(bootstrap: str, a: argparse.Namespace) -> tuple[float, float, int]:
    value = os.urandom(a.record_size)
    async with Producer(bootstrap, acks=a.acks, linger_ms=5, batch_size=a.batch_bytes,
                        max_request_size=max(1 << 20, 4 * a.batch_bytes)) as p:
        await p.client.wait_for_topic("t", 10_000)
        send, tt, sleep = p.send, time.thread_time, asyncio.sleep
        t_send = 0.0
        t0 = tt()
        if a.mode == "send":
            left = a.records
            keys = [b"user-%05d" % i for i in range(a.keys)]
            ki = 0
            while left:
                k = min(a.yield_every, left)
                s = tt()
                if keys:
                    for _ in range(k):
                        send("t", value, keys[ki])
                        ki = ki + 1 if ki + 1 < len(keys) else 0
                else:
                    for _ in range(k):
                        send("t", value)
                t_send += tt() - s
                left -= k
                if p._line:
                    await p.drain()
                await sleep(0)
        else:
            per = max(1, a.batch_bytes // (a.record_size + 8))
            recs = [(None, value)] * per
            left, part = a.records, 0
            while left:
                k = min(per, left)
                s = tt()
                p.send_batch("t", part, recs if k == per else recs[:k])
                t_send += tt() - s
                left -= k
                part = (part + 1) % a.partitions
                if p._line:
                    await p.drain()
                await sleep(0)
        await p.flush()
        return t_send, tt() - t0, a.records


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--record-size", type=int, default=100)
    ap.add_argument("--mode", choices=["send", "send_batch"], default="send")
    ap.add_argument("--acks", default="1", choices=["0", "1", "all"])
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--batch-bytes", type=int, default=256 * 1024)
    ap.add_argument("--keys", type=int, default=0, help="distinct keys (0: null keys)")
    ap.add_argument("--yield-every", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is printed")
    ap.add_argument("--profile", action="store_true", help="cProfile one run, top 25 by tottime")
    a = ap.parse_args()
    a.acks = a.acks if a.acks == "all" else int(a.acks)
    with FakeCluster.in_thread(nodes=3) as fc:
        fc.call(fc.create_topic, "t", a.partitions)
        if a.profile:
            # CPU of this thread, not wall time: the fake broker thread holds the GIL at times.
            prof = cProfile.Profile(time.thread_time)
            prof.enable()
            asyncio.run(produce(fc.bootstrap, a))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        best = None
        for _ in range(a.repeat):
            r = asyncio.run(produce(fc.bootstrap, a))
            if best is None or r[1] < best[1]:
                best = r
    t_send, t_total, n = best
    keyed = f", {a.keys} distinct keys" if a.keys and a.mode == "send" else ""
    print(f"{a.mode}: {n} records of {a.record_size} B{keyed}, acks={a.acks}: "
          f"send() {1e6 * t_send / n:.2f} µs/record, total client thread "
          f"{1e6 * t_total / n:.2f} µs/record (best of {a.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
