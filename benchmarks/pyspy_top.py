#!/usr/bin/env python3
"""Summarise py-spy collapsed stacks (`py-spy record -f raw`, or the benchmarks' --py-spy DIR).

    .venv/bin/python benchmarks/pyspy_top.py /tmp/prof/node-1.txt [--thread KEY] [-n 30]

Prints, per thread group, the share of samples by function, inclusive and self. `--thread KEY`
keeps only stacks with a frame containing KEY (e.g. `Runner.run` for the asyncio loop thread,
`_autoTickThread` for pysyncobj). Samples of an idle loop show up as self time in the
event-loop frame (`Runner.run` under uvloop); py-spy records only non-idle samples unless it
was given --idle.
"""
from __future__ import annotations

import argparse
import collections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("--thread", default=None)
    ap.add_argument("-n", type=int, default=30)
    a = ap.parse_args()
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    total = 0
    with open(a.path) as fh:
        for line in fh:
            line = line.rstrip()
            if not line or " " not in line:
                continue
            stack, cnt_s = line.rsplit(" ", 1)
            cnt = int(cnt_s)
            frames = stack.split(";")
            if a.thread and not any(a.thread in f for f in frames):
                continue
            total += cnt
            self_[frames[-1]] += cnt
            for f in set(frames):
                incl[f] += cnt
    print(f"{total} samples{' with a frame containing ' + a.thread if a.thread else ''}")
    print("-- inclusive")
    for f, c in incl.most_common(a.n):
        print(f"{100 * c / max(1, total):5.1f}%  {f}")
    print("-- self")
    for f, c in self_.most_common(a.n):
        print(f"{100 * c / max(1, total):5.1f}%  {f}")


if __name__ == "__main__":
    main()
