"""History checker: pure functions over a list of events (dicts), no I/O.

Events (see workload.py for the writers):
  invoke {op, process, partition, value, time}; ok {op, offset, time}; fail / info {op, time}
  poll {process, partition, records: [[offset, value], ...], time}
  assign {process, partitions, positions: {partition: next offset}, time}
  final {partition, hw, records, error}
  commit {group, partition, offset, time}             (consumer-group offsets, acknowledged)
  replicas {partition, hw, nodes: {node: digest or None}}
  nemesis {f, start, end, targets}

Anomalies (Jepsen's names where they exist):
  lost-write            acknowledged, absent from the final read though the final read extends
                        past its acknowledged offset (or its offset was unknown)
  unseen                acknowledged, absent from the final read, at or above its end
  final-read-failed     a partition whose final read did not complete (liveness after heal)
  inconsistent-offsets  one offset seen with two values (acks, polls, final read), or an
                        acknowledged offset that the log holds a different value at
  duplicate             one value read at two offsets
  aborted-read          a definitely failed write is visible in some read
  nonmonotonic-poll     a consumer's offsets go back (or repeat) without a reassignment
  poll-skip             a consumer jumps over a data offset without a reassignment
  nonmonotonic-send     an acknowledged offset not above an offset acknowledged before the write
                        was invoked
  committed-offset-backwards  a group's committed offset for a partition decreases
  replica-divergence    replicas not byte-identical below the high watermark
Indeterminate operations (`info`, e.g. timeouts) are never failures: they may or may not appear.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any, Iterable

ANOMALIES = ("lost-write", "unseen", "final-read-failed", "inconsistent-offsets", "duplicate",
             "aborted-read", "nonmonotonic-poll", "poll-skip", "nonmonotonic-send",
             "committed-offset-backwards", "replica-divergence")
MAX_EXAMPLES = 20


def _ops(events: Iterable[dict]) -> dict[int, dict]:
    ops: dict[int, dict] = {}
    for ev in events:
        t = ev.get("type")
        if t == "invoke":
            ops[ev["op"]] = {"op": ev["op"], "process": ev.get("process"),
                             "partition": ev["partition"], "value": ev["value"],
                             "invoke": ev["time"], "status": None, "offset": None, "done": None}
        elif t in ("ok", "fail", "info") and ev.get("op") in ops:
            o = ops[ev["op"]]
            o["status"] = t
            o["done"] = ev["time"]
            if t == "ok":
                off = ev.get("offset")
                o["offset"] = off if isinstance(off, int) and off >= 0 else None
    return ops


def check(events: list[dict]) -> dict[str, Any]:
    """Anomalies found in a history: {"anomalies": {name: [examples]}, "counts": {...}, ...}."""
    found: dict[str, list] = {a: [] for a in ANOMALIES}
    counts: dict[str, int] = {a: 0 for a in ANOMALIES}

    def flag(name: str, detail: dict) -> None:
        counts[name] += 1
        if len(found[name]) < MAX_EXAMPLES:
            found[name].append(detail)

    ops = _ops(events)
    finals = {ev["partition"]: ev for ev in events if ev.get("type") == "final"}
    polls = [ev for ev in events if ev.get("type") in ("poll", "assign")]

    # every observation of (partition, offset) -> value
    at: dict[tuple[int, int], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    read_offsets: dict[tuple[int, str], set[int]] = defaultdict(set)   # (partition, value) -> offsets
    data_offsets: dict[int, set[int]] = defaultdict(set)
    for ev in events:
        if ev.get("type") in ("poll", "final"):
            src = "final" if ev["type"] == "final" else f"poll:{ev.get('process')}"
            for off, val in ev.get("records") or []:
                at[(ev["partition"], off)][val].append(src)
                read_offsets[(ev["partition"], val)].add(off)
                data_offsets[ev["partition"]].add(off)
    for o in ops.values():
        if o["status"] == "ok" and o["offset"] is not None:
            at[(o["partition"], o["offset"])][o["value"]].append(f"ack:op{o['op']}")

    for (part, off), vals in sorted(at.items()):
        if len(vals) > 1:
            flag("inconsistent-offsets", {"partition": part, "offset": off,
                                          "values": {v: sorted(set(s))[:4] for v, s in vals.items()}})
    for (part, val), offs in sorted(read_offsets.items()):
        if len(offs) > 1:
            flag("duplicate", {"partition": part, "value": val, "offsets": sorted(offs)})

    # final read: lost / unseen
    final_vals: dict[int, dict[str, int]] = {}
    for part, ev in finals.items():
        if ev.get("error") or ev.get("hw") is None:
            flag("final-read-failed", {"partition": part, "error": ev.get("error")})
            continue
        final_vals[part] = {val: off for off, val in ev.get("records") or []}
    for o in ops.values():
        if o["status"] != "ok":
            continue
        part = o["partition"]
        if part not in final_vals:
            if part in finals:
                continue   # already reported as final-read-failed
            flag("unseen", {"op": o["op"], "partition": part, "value": o["value"],
                            "offset": o["offset"], "why": "no final read of the partition"})
            continue
        if o["value"] in final_vals[part]:
            continue
        fe = finals[part]
        end = max([r[0] for r in fe.get("records") or []] + [fe["hw"] - 1])
        detail = {"op": o["op"], "partition": part, "value": o["value"], "offset": o["offset"],
                  "acked_at": o["done"], "final_hw": fe["hw"]}
        if o["offset"] is None or o["offset"] < end:
            flag("lost-write", detail)
        else:
            flag("unseen", detail)

    # aborted reads: definitely failed writes that some read saw
    for o in ops.values():
        if o["status"] == "fail" and read_offsets.get((o["partition"], o["value"])):
            flag("aborted-read", {"op": o["op"], "partition": o["partition"], "value": o["value"],
                                  "read_at": sorted(read_offsets[(o["partition"], o["value"])])})

    # consumer polls: monotonic, no skips, without a reassignment
    sorted_data = {p: sorted(s) for p, s in data_offsets.items()}
    last: dict[tuple[str, int], int] = {}
    for ev in polls:
        proc = ev.get("process")
        if ev["type"] == "assign":
            pos = ev.get("positions") or {}
            for p in ev.get("partitions") or []:
                nxt = pos.get(str(p), pos.get(p))
                if nxt is None:
                    last.pop((proc, p), None)
                else:
                    last[(proc, p)] = int(nxt) - 1
            continue
        part = ev["partition"]
        key = (proc, part)
        for off, val in ev.get("records") or []:
            prev = last.get(key)
            if prev is not None:
                if off <= prev:
                    flag("nonmonotonic-poll", {"process": proc, "partition": part,
                                               "from": prev, "to": off, "time": ev.get("time")})
                elif off > prev + 1:
                    offs = sorted_data.get(part, [])
                    i = bisect.bisect_right(offs, prev)
                    if i < len(offs) and offs[i] < off:
                        flag("poll-skip", {"process": proc, "partition": part, "from": prev,
                                           "to": off, "skipped": offs[i], "time": ev.get("time")})
            last[key] = off

    # nonmonotonic-send: sweep invokes and acks in time order
    marks = []
    for o in ops.values():
        marks.append((o["invoke"], 1, o["op"]))
        if o["status"] == "ok" and o["offset"] is not None:
            marks.append((o["done"], 0, o["op"]))     # an ack at the same instant counts as before
    marks.sort()
    acked_max: dict[int, tuple[int, int]] = {}
    bound: dict[int, tuple[int, int] | None] = {}
    for _t, kind, op in marks:
        o = ops[op]
        if kind == 1:
            bound[op] = acked_max.get(o["partition"])
        else:
            b = bound.get(op)
            if b is not None and o["offset"] <= b[0]:
                flag("nonmonotonic-send", {"op": op, "partition": o["partition"],
                                           "offset": o["offset"], "earlier_ack_offset": b[0],
                                           "earlier_op": b[1]})
            cur = acked_max.get(o["partition"])
            if cur is None or o["offset"] > cur[0]:
                acked_max[o["partition"]] = (o["offset"], op)

    # committed offsets never go backwards
    commits: dict[tuple[str, int], int] = {}
    for ev in sorted((e for e in events if e.get("type") == "commit"), key=lambda e: e["time"]):
        key = (ev.get("group"), ev["partition"])
        if key in commits and ev["offset"] < commits[key]:
            flag("committed-offset-backwards", {"group": key[0], "partition": key[1],
                                                "from": commits[key], "to": ev["offset"]})
        commits[key] = max(commits.get(key, ev["offset"]), ev["offset"])

    # replicas byte-identical below the high watermark
    for ev in events:
        if ev.get("type") != "replicas":
            continue
        digests = ev.get("nodes") or {}
        if len(set(digests.values())) > 1 or any(d is None for d in digests.values()):
            flag("replica-divergence", {"partition": ev["partition"], "hw": ev.get("hw"),
                                        "nodes": digests, "detail": ev.get("detail")})

    statuses = defaultdict(int)
    for o in ops.values():
        statuses[o["status"] or "pending"] += 1
    return {"valid": not any(counts.values()), "counts": counts, "anomalies": found,
            "ops": len(ops), "ok": statuses["ok"], "fail": statuses["fail"],
            "info": statuses["info"], "pending": statuses["pending"]}


def availability(events: list[dict], gap_s: float = 1.0) -> dict[str, Any]:
    """Unavailability windows (gaps between acknowledged writes longer than `gap_s`, inside the
    workload's run) and recovery after each fault (first acks=all write invoked after the fault
    started and acknowledged: overall, and the slowest partition)."""
    ops = _ops(events)
    oks = sorted((o for o in ops.values() if o["status"] == "ok"), key=lambda o: o["done"])
    times = [o["done"] for o in oks]
    start = min((o["invoke"] for o in ops.values()), default=None)
    end = max((o["invoke"] for o in ops.values()), default=None)
    windows = []
    prev = start
    for t in times:
        if prev is not None and t - prev > gap_s:
            windows.append({"start": prev, "end": t, "seconds": round(t - prev, 3)})
        prev = t
    if prev is not None and end is not None and end - prev > gap_s:
        windows.append({"start": prev, "end": end, "seconds": round(end - prev, 3),
                        "open": True})
    parts = sorted({o["partition"] for o in ops.values()})
    recoveries = []
    for ev in events:
        if ev.get("type") != "nemesis":
            continue
        t0 = ev["start"]
        first = next((o for o in oks if o["invoke"] >= t0), None)
        per_part = {}
        for p in parts:
            fp = next((o for o in oks if o["partition"] == p and o["invoke"] >= t0), None)
            per_part[p] = None if fp is None else round(fp["done"] - t0, 3)
        worst = None if any(v is None for v in per_part.values()) or not per_part \
            else max(per_part.values())
        recoveries.append({"f": ev["f"], "targets": ev.get("targets"), "start": t0,
                           "end": ev.get("end"),
                           "first_ack_s": None if first is None else round(first["done"] - t0, 3),
                           "all_partitions_s": worst, "per_partition_s": per_part})
    return {"windows": windows, "unavailable_s": round(sum(w["seconds"] for w in windows), 3),
            "recoveries": recoveries}
