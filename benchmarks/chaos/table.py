"""Markdown table of chaos runs: `python -m benchmarks.chaos.table results/chaos/*/result.json`."""
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


def main(paths: list[str]) -> int:
    print("| nemesis | nodes | seed | s | faults | ops | acked | indet. | anomalies | "
          "unavail. s (windows) | first ack med s | all parts med s | all parts max s | "
          "replicas identical s |")
    print("|" + "---|" * 14)
    for p in paths:
        with open(p) as fh:
            print(row(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
