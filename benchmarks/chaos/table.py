"""Markdown table of chaos runs: `python -m benchmarks.chaos.table results/chaos/*/result.json`
(or a batch's results.jsonl)."""
from __future__ import annotations

import json
import statistics
import sys


def row(res: dict) -> str:
    c, a = res["check"], res["availability"]
    anomalies = ", ".join(f"{k}={v}" for k, v in c["counts"].items() if v) or "0"
    rec = [r["all_partitions_s"] for r in a["recoveries"] if r["all_partitions_s"] is not None]
    first = [r["first_ack_s"] for r in a["recoveries"] if r["first_ack_s"] is not None]
    med = lambda xs: f"{statistics.median(xs):.2f}" if xs else "-"
    return (f"| {res['nemesis']} | {res['nodes']} | {res['seed']} | {int(res['time'])} | "
            f"{len(res['faults'])} | {c['ops']} | {c['ok']} | {c['info']} | {anomalies} | "
            f"{a['unavailable_s']:.1f} ({len(a['windows'])}) | {med(first)} | {med(rec)} | "
            f"{max(rec) if rec else '-'} | {res.get('replica_convergence_s')} |")


def main_rows(results: list[dict]) -> None:
    """The table, then per nemesis: runs, anomalies and the median recovery figures."""
    print("| nemesis | nodes | seed | s | faults | ops | acked | indet. | anomalies | "
          "unavail. s (windows) | first ack med s | all parts med s | all parts max s | "
          "replicas identical s |")
    print("|" + "---|" * 14)
    for res in results:
        print(row(res))
    by: dict[str, list[dict]] = {}
    for res in results:
        by.setdefault(res["nemesis"], []).append(res)
    print()
    print("| nemesis | runs | runs with anomalies | median first ack after fault s | "
          "max replicas identical s |")
    print("|---|---|---|---|---|")
    for nem, rs in sorted(by.items()):
        first = [r["first_ack_s"] for res in rs for r in res["availability"]["recoveries"]
                 if r["first_ack_s"] is not None]
        conv = [res["replica_convergence_s"] for res in rs
                if res.get("replica_convergence_s") is not None]
        bad = sum(not res["check"]["valid"] for res in rs)
        print(f"| {nem} | {len(rs)} | {bad} | "
              f"{statistics.median(first) if first else '-'} | {max(conv) if conv else '-'} |")


def main(paths: list[str]) -> int:
    results = []
    for p in paths:
        with open(p) as fh:
            results += [json.loads(line) for line in fh if line.strip()] if p.endswith(".jsonl") \
                else [json.load(fh)]
    main_rows(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
