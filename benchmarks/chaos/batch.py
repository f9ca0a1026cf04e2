"""Many chaos runs, one after another, and their table:

    python -m benchmarks.chaos.batch --nemesis kill,pause,partition,loss,rolling,disk \\
        --seeds 1-20 --time 60 [--nodes 3] [--loopback]

Runs go nemesis by nemesis within each seed (so a partial batch still covers every nemesis),
each in its own process (`python -m benchmarks.chaos`), with the code's commit recorded. The
table (benchmarks/chaos/table.py) and per-nemesis totals print last; results.jsonl in the
batch directory keeps one line per run for later tables.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

from benchmarks.chaos import table
from benchmarks.chaos.runner import PYTHON, ROOT


def seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def commit() -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                       text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return p.stdout.strip() + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.chaos.batch")
    ap.add_argument("--nemesis", default="kill,pause,partition,loss,rolling,disk")
    ap.add_argument("--seeds", default="1-20")
    ap.add_argument("--time", type=float, default=60.0)
    ap.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    ap.add_argument("--loopback", action="store_true",
                    help="every run on 127.0.0.1 with per-link TCP proxies (no namespaces)")
    ap.add_argument("--max-minutes", type=float, default=600.0,
                    help="stop starting new runs after this long")
    a = ap.parse_args(argv)
    outdir = os.path.join(ROOT, "results", "chaos", "batch-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(outdir)
    results = os.path.join(outdir, "results.jsonl")
    stop_at = time.monotonic() + a.max_minutes * 60
    nemeses = [n for n in a.nemesis.split(",") if n]
    rows: list[dict] = []
    for seed in seeds(a.seeds):
        for nem in nemeses:
            if time.monotonic() > stop_at:
                break
            before = set(glob.glob(os.path.join(ROOT, "results", "chaos", "2*", "result.json")))
            code = commit()
            t0 = time.monotonic()
            p = subprocess.run([PYTHON, "-m", "benchmarks.chaos", "--nodes", str(a.nodes),
                                "--nemesis", nem, "--time", str(a.time), "--seed", str(seed)]
                               + (["--loopback"] if a.loopback else []),
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=a.time + 600)
            new = set(glob.glob(os.path.join(ROOT, "results", "chaos", "2*", "result.json")))
            # only this run's own result: a run started by hand meanwhile writes there too
            tag = f"-n{a.nodes}-{nem.replace(',', '+')}-s{seed}"
            made = sorted(r for r in new - before
                          if os.path.basename(os.path.dirname(r)).endswith(tag))
            if not made:
                print(f"{nem} seed {seed}: no result (rc {p.returncode}): "
                      f"{(p.stderr or p.stdout).strip()[-300:]}", flush=True)
                continue
            with open(made[-1]) as fh:
                res = json.load(fh)
            res["commit"] = code
            rows.append(res)
            with open(results, "a") as fh:
                fh.write(json.dumps(res, default=str) + "\n")
            c = res["check"]
            print(f"[{time.strftime('%H:%M:%S')}] {nem} seed {seed} ({code}, "
                  f"{time.monotonic() - t0:.0f} s): ops {c['ops']} acked {c['ok']} "
                  f"anomalies {'none' if c['valid'] else c['counts']}", flush=True)
    print(f"\nbatch: {outdir}")
    table.main_rows(rows)
    return 0 if all(r["check"]["valid"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
