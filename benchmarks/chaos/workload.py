"""Chaos workload, run inside the lab's client namespace:

    ip netns exec NS python -m benchmarks.chaos.workload run --bootstrap ... --out history.jsonl
    ip netns exec NS python -m benchmarks.chaos.workload final --bootstrap ... --out final.jsonl

`run`: idempotent producers (raftlog.Producer, acks=all) write unique values round-robin to the
partitions, bounded in rate, in outstanding sends and in time; one consumer per partition set
(manual assignment) polls from offset 0. Every operation is a JSON line:
  {"type":"invoke","op":N,"process":"p0","partition":k,"value":"p0-17","time":t}
  {"type":"ok"|"fail"|"info","op":N,"offset":o,"error":...,"time":t}
  {"type":"poll","process":"c0","partition":k,"records":[[offset, value], ...],"time":t}
  {"type":"assign","process":"c0","partitions":[...],"time":t}   (a (re)assignment)
Only errors that prove the record never left the client are `fail`; every other error,
timeouts included, is `info` (indeterminate).

`final`: after the faults stop and the network heals, waits until every partition has its full
ISR, then reads every partition from offset 0 to the high watermark:
  {"type":"final","partition":k,"hw":h,"leader":l,"isr":[...],"records":[[o, v], ...]}
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

from benchmarks.chaos.nsguard import host_allowed, require_private_netns


class History:
    def __init__(self, path: str):
        self.fh = open(path, "a", buffering=1 << 16)
        self.n = 0

    def write(self, ev: dict[str, Any]) -> None:
        ev.setdefault("time", time.time())
        self.fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
        self.n += 1

    def close(self) -> None:
        self.fh.flush()
        self.fh.close()


def _definite_failure(exc: BaseException) -> bool:
    from raftlog.client.errors import BufferFullError, IllegalStateError
    # never admitted into a batch: nothing was sent
    return isinstance(exc, (BufferFullError, IllegalStateError, ValueError, TypeError))


async def _producer(name: str, args: argparse.Namespace, hist: History, ops: list[int],
                    deadline: float, rng: random.Random) -> None:
    from raftlog import Producer
    seq = 0
    rr = 0
    # outstanding sends are bounded per partition, so one stuck partition does not starve the
    # others (the run measures each partition's availability, not client head-of-line blocking)
    sems = {k: asyncio.Semaphore(args.in_flight) for k in range(args.partitions)}
    interval = args.producers / max(1.0, args.rate)
    tasks: set[asyncio.Task] = set()
    while time.monotonic() < deadline:
        p = Producer(args.bootstrap, acks="all", enable_idempotence=True, linger_ms=2,
                     request_timeout_ms=args.request_timeout_ms,
                     delivery_timeout_ms=args.delivery_timeout_ms, retry_backoff_ms=100,
                     bootstrap_timeout_ms=3000, metadata_max_age_ms=5000, max_block_ms=2000,
                     client_id=f"chaos-{name}")
        try:
            await asyncio.wait_for(p.start(), 10)
        except Exception as exc:
            hist.write({"type": "note", "process": name, "what": f"producer start: {exc!r}"})
            try:
                await p.stop(0)
            except Exception:
                pass
            await asyncio.sleep(0.5)
            continue
        broken = False
        next_t = time.monotonic()
        while time.monotonic() < deadline and not broken:
            now = time.monotonic()
            if next_t > now:
                await asyncio.sleep(next_t - now)
            next_t = max(next_t + interval, time.monotonic() - 1.0)
            part = next((c for c in ((rr + k) % args.partitions for k in range(args.partitions))
                         if not sems[c].locked()), rr % args.partitions)
            rr += 1
            await sems[part].acquire()
            sem = sems[part]
            value = f"{name}-{seq}"
            seq += 1
            ops[0] += 1
            op = ops[0]
            hist.write({"type": "invoke", "op": op, "process": name, "partition": part,
                        "value": value})
            t0 = time.monotonic()
            try:
                fut = p.send(args.topic, value.encode(), partition=part)
            except Exception as exc:
                sem.release()
                hist.write({"type": "fail" if _definite_failure(exc) else "info", "op": op,
                            "error": repr(exc)[:200]})
                broken = not _definite_failure(exc)
                continue

            async def finish(op: int = op, fut: Any = fut, t0: float = t0,
                             sem: asyncio.Semaphore = sem) -> None:
                try:
                    md = await fut
                    hist.write({"type": "ok", "op": op, "offset": md.offset,
                                "latency": time.monotonic() - t0})
                except Exception as exc:
                    hist.write({"type": "fail" if _definite_failure(exc) else "info", "op": op,
                                "error": repr(exc)[:200], "latency": time.monotonic() - t0})
                finally:
                    sem.release()

            t = asyncio.create_task(finish())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        # let outstanding sends finish (bounded by the delivery timeout), then close
        if tasks:
            await asyncio.wait(list(tasks), timeout=args.delivery_timeout_ms / 1000 + 5)
        try:
            await asyncio.wait_for(p.stop(), 10)
        except Exception:
            pass
    if tasks:
        await asyncio.wait(list(tasks), timeout=args.delivery_timeout_ms / 1000 + 5)



def _log_poll(hist: "History", name: str, tp: Any, recs: list) -> None:
    hist.write({"type": "poll", "process": name, "partition": tp.partition,
                "records": [[r.offset, (r.value or b"").decode()] for r in recs]})


async def _stop_quietly(c: Any) -> None:
    """A consumer's stop bounded in time; its errors are not the history's business."""
    try:
        await asyncio.wait_for(c.stop(), 5)
    except Exception:
        pass

async def _consumer(name: str, args: argparse.Namespace, parts: list[int], hist: History,
                    deadline: float) -> None:
    from raftlog import Consumer, TopicPartition
    positions = {p: 0 for p in parts}
    while time.monotonic() < deadline:
        c = Consumer(bootstrap_servers=args.bootstrap, auto_offset_reset="earliest",
                     fetch_max_wait_ms=300, request_timeout_ms=args.request_timeout_ms,
                     bootstrap_timeout_ms=3000, metadata_max_age_ms=5000,
                     client_id=f"chaos-{name}")
        try:
            await asyncio.wait_for(c.start(), 10)
            tps = [TopicPartition(args.topic, p) for p in parts]
            c.assign(tps)
            for tp in tps:
                c.seek(tp, positions[tp.partition])
            hist.write({"type": "assign", "process": name, "partitions": parts,
                        "positions": {str(k): v for k, v in positions.items()}})
            while time.monotonic() < deadline:
                got = await c.getmany(timeout_ms=300)
                for tp, recs in got.items():
                    if recs:
                        _log_poll(hist, name, tp, recs)
                        positions[tp.partition] = recs[-1].offset + 1
        except Exception as exc:
            hist.write({"type": "note", "process": name, "what": f"consumer: {exc!r}"[:300]})
            await asyncio.sleep(0.5)
        finally:
            await _stop_quietly(c)


async def _group_consumer(name: str, args: argparse.Namespace, hist: History,
                          deadline: float) -> None:
    """A consumer in group `chaos-group`: subscribe, poll, commit after each poll. Every
    partition the group hands it -- also one it had before, revoked and handed back when the
    member was fenced and rejoined between two polls -- is logged as `assign` without positions
    from the rebalance listener (monotonic checks restart at the committed offset)."""
    from raftlog import Consumer
    from raftlog.client.group_coordinator import ConsumerRebalanceListener

    class Log(ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned: set) -> None:
            hist.write({"type": "assign", "process": name,
                        "partitions": sorted(tp.partition for tp in assigned)})
    while time.monotonic() < deadline:
        c = Consumer(bootstrap_servers=args.bootstrap, group_id="chaos-group",
                     auto_offset_reset="earliest", enable_auto_commit=False,
                     fetch_max_wait_ms=300, request_timeout_ms=args.request_timeout_ms,
                     bootstrap_timeout_ms=3000, metadata_max_age_ms=5000,
                     session_timeout_ms=6000, heartbeat_interval_ms=1000,
                     client_id=f"chaos-{name}")
        try:
            await asyncio.wait_for(c.start(), 10)
            c.subscribe([args.topic], listener=Log())
            while time.monotonic() < deadline:
                got = await c.getmany(timeout_ms=300)
                for tp, recs in got.items():
                    if recs:
                        _log_poll(hist, name, tp, recs)
                if any(got.values()):
                    offsets = {tp: recs[-1].offset + 1 for tp, recs in got.items() if recs}
                    try:
                        await asyncio.wait_for(c.commit(offsets), 5)
                        for tp, off in offsets.items():
                            hist.write({"type": "commit", "group": "chaos-group",
                                        "process": name, "partition": tp.partition,
                                        "offset": off})
                    except Exception as exc:
                        hist.write({"type": "note", "process": name,
                                    "what": f"commit: {exc!r}"[:300]})
        except Exception as exc:
            hist.write({"type": "note", "process": name, "what": f"group consumer: {exc!r}"[:300]})
            await asyncio.sleep(0.5)
        finally:
            await _stop_quietly(c)


async def run(args: argparse.Namespace) -> None:
    hist = History(args.out)
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.time
    ops = [args.op_base]
    hist.write({"type": "start", "process": "workload", "args": vars(args)})
    jobs = [_producer(f"p{i}", args, hist, ops, deadline, random.Random(rng.random()))
            for i in range(args.producers)]
    parts = list(range(args.partitions))
    jobs += [_consumer(f"c{i}", args, parts[i::args.consumers], hist, deadline)
             for i in range(args.consumers)]
    jobs += [_group_consumer(f"g{i}", args, hist, deadline) for i in range(args.group_consumers)]
    progress = asyncio.create_task(_progress(hist, deadline))
    try:
        await asyncio.wait_for(asyncio.gather(*jobs),
                               args.time + args.delivery_timeout_ms / 1000 + 30)
    finally:
        progress.cancel()
        hist.write({"type": "end", "process": "workload"})
        hist.close()


async def _progress(hist: History, deadline: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        hist.fh.flush()


async def final(args: argparse.Namespace) -> None:
    from raftlog import Admin, Consumer, TopicPartition
    hist = History(args.out)
    deadline = time.monotonic() + args.time
    meta: dict[int, dict] = {}
    async with Admin(args.bootstrap, request_timeout_ms=3000, bootstrap_timeout_ms=5000) as admin:
        while time.monotonic() < deadline:
            try:
                t = await admin.describe_topic(args.topic)
                meta = {p["partition"]: p for p in t["partitions"]}
                if all(p["leader"] is not None and p["leader"] >= 0
                       and sorted(p["isr"]) == sorted(p["replicas"]) for p in meta.values()):
                    break
            except Exception as exc:
                hist.write({"type": "note", "process": "final", "what": repr(exc)[:300]})
            await asyncio.sleep(0.5)
    hist.write({"type": "final_meta", "full_isr": all(sorted(p["isr"]) == sorted(p["replicas"])
                                                     for p in meta.values()) if meta else False,
                "partitions": list(meta.values())})
    for part in range(args.partitions):
        records: list[list[Any]] = []
        hw = None
        err = None
        while time.monotonic() < deadline:
            records = []
            try:
                async with Consumer(bootstrap_servers=args.bootstrap, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=100, request_timeout_ms=5000,
                                    bootstrap_timeout_ms=5000) as c:
                    tp = TopicPartition(args.topic, part)
                    c.assign([tp])
                    c.seek(tp, 0)
                    hw = (await c.end_offsets([tp]))[tp]
                    idle_until = time.monotonic() + 20
                    while await c.position(tp) < hw and time.monotonic() < idle_until:
                        got = await c.getmany(tp, timeout_ms=500)
                        for r in got.get(tp, []):
                            records.append([r.offset, (r.value or b"").decode()])
                    err = None if await c.position(tp) >= hw else f"stuck below hw {hw}"
                if err is None:
                    break
            except Exception as exc:
                err = repr(exc)[:300]
            await asyncio.sleep(0.5)
        m = meta.get(part, {})
        hist.write({"type": "final", "partition": part, "hw": hw, "leader": m.get("leader"),
                    "isr": m.get("isr"), "replicas": m.get("replicas"), "error": err,
                    "records": records})
    hist.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.chaos.workload")
    ap.add_argument("mode", choices=("run", "final"))
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="chaos")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--group-consumers", type=int, default=2,
                    help="consumers in one group, committing after each poll")
    ap.add_argument("--rate", type=float, default=200.0, help="sends per second, all producers")
    ap.add_argument("--in-flight", type=int, default=16,
                    help="outstanding sends per producer and partition")
    ap.add_argument("--time", type=float, default=60.0)
    ap.add_argument("--request-timeout-ms", type=int, default=3000)
    ap.add_argument("--delivery-timeout-ms", type=int, default=10000)
    ap.add_argument("--op-base", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    require_private_netns("workload")
    for hp in args.bootstrap.split(","):
        if not host_allowed(hp.rsplit(":", 1)[0]):
            ap.error(f"bootstrap host {hp} is not allowed in loopback mode")
    if args.time > 3600:
        ap.error("--time is capped at 3600 s")
    try:
        import uvloop  # type: ignore
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args) if args.mode == "run" else final(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
