"""`python -m benchmarks.chaos --nodes 3 --nemesis kill,partition --time 60 --seed 7`"""
from __future__ import annotations

import argparse
import sys

from benchmarks.chaos.nemesis import ALL, FAMILIES
from benchmarks.chaos.runner import Run, RunConfig, Unavailable


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos",
                                 description="Jepsen-style chaos run against raftlog in network "
                                             "namespaces (root only)")
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    ap.add_argument("--nemesis", default="kill,partition",
                    help="comma list of " + ", ".join(sorted(FAMILIES) + ALL))
    ap.add_argument("--time", type=float, default=60.0, help="workload seconds (max 3600)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--group-consumers", type=int, default=2,
                    help="consumers in a group that commit offsets after each poll (default 2; "
                         "0 for none)")
    ap.add_argument("--rate", type=float, default=200.0, help="sends/s over all producers")
    ap.add_argument("--loopback", action="store_true",
                    help="skip namespaces: 127.0.0.1 with a TCP proxy per link (also the "
                         "automatic fallback when namespaces cannot be made)")
    ap.add_argument("--keep-data", action="store_true")
    a = ap.parse_args(argv)
    if not 5 <= a.time <= 3600:
        ap.error("--time must be within 5..3600 s")
    cfg = RunConfig(nodes=a.nodes, nemesis=a.nemesis, time=a.time, seed=a.seed,
                    partitions=a.partitions, producers=a.producers,
                    group_consumers=a.group_consumers, rate=min(a.rate, 2000.0),
                    keep_data=a.keep_data, loopback=a.loopback)
    try:
        res = Run(cfg).run()
    except Unavailable as exc:
        print(f"chaos: cannot run: {exc}", file=sys.stderr)
        return 2
    return 0 if res["check"]["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
