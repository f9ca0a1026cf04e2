"""Run summary (text), JSON result and a PNG of throughput and latency with faults shaded.

`python -m benchmarks.chaos.report RUN_DIR...` draws the PNG again from a finished run's
history.jsonl and result.json (for runs made where matplotlib was missing).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any


def summary_lines(res: dict[str, Any]) -> list[str]:
    c = res["check"]
    a = res["availability"]
    out = [f"chaos run ({res.get('network', 'namespaces')}): nodes={res['nodes']} nemesis={res['nemesis']} seed={res['seed']} "
           f"time={res['time']}s  faults={len(res['faults'])}",
           f"operations {c['ops']}  acknowledged {c['ok']}  failed {c['fail']}  "
           f"indeterminate {c['info']}  pending {c['pending']}",
           "anomalies: " + ("none" if c["valid"] else "") +
           "  ".join(f"{k}={v}" for k, v in c["counts"].items() if v)]
    out.append("  " + "  ".join(f"{k}={v}" for k, v in c["counts"].items()))
    out.append(f"unavailable {a['unavailable_s']} s in {len(a['windows'])} windows "
               f"(gaps > 1 s between acks)")
    for w in a["windows"]:
        out.append(f"  window +{w['start'] - res['t0']:.1f}s .. +{w['end'] - res['t0']:.1f}s "
                   f"({w['seconds']} s){' open' if w.get('open') else ''}")
    for r in a["recoveries"]:
        out.append(f"  fault {r['f']:<18} at +{r['start'] - res['t0']:5.1f}s targets={r['targets']}"
                   f"  first ack {r['first_ack_s']} s  all partitions {r['all_partitions_s']} s")
    if res.get("replica_convergence_s") is not None:
        out.append(f"replicas identical below HW {res['replica_convergence_s']} s after the final read")
    for name, examples in c["anomalies"].items():
        for ex in examples[:5]:
            out.append(f"  {name}: {json.dumps(ex)[:300]}")
    return out


def plot(events: list[dict], faults: list[dict], t0: float, path: str, title: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    inv = {e["op"]: e for e in events if e.get("type") == "invoke"}
    oks = [(e["time"] - t0, e.get("latency")) for e in events
           if e.get("type") == "ok" and e.get("op") in inv]
    infos = [e["time"] - t0 for e in events if e.get("type") in ("info", "fail")]
    if not oks:
        return None
    end = max(t for t, _ in oks) + 1
    bins = [0] * (int(end) + 1)
    for t, _ in oks:
        if t >= 0:
            bins[int(t)] += 1
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    ax1.plot(range(len(bins)), bins, drawstyle="steps-post", color="tab:blue", label="acks/s")
    if infos:
        ibins = [0] * (int(max(infos)) + 2)
        for t in infos:
            if t >= 0:
                ibins[int(t)] += 1
        ax1.plot(range(len(ibins)), ibins, drawstyle="steps-post", color="tab:red",
                 label="indeterminate/failed per s")
    ax1.set_ylabel("ops/s")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.scatter([t for t, l in oks if l is not None], [l * 1000 for t, l in oks if l is not None],
                s=2, color="tab:green")
    ax2.set_yscale("log")
    ax2.set_ylabel("ack latency (ms)")
    ax2.set_xlabel("seconds since start")
    colors = {"kill": "tab:red", "pause": "tab:orange", "partition": "tab:purple",
              "loss": "tab:brown", "rolling": "tab:gray", "disk": "tab:olive"}
    for f in faults:
        col = colors.get(f["f"].split("-")[0], "tab:gray")
        for ax in (ax1, ax2):
            ax.axvspan(f["start"] - t0, f["end"] - t0, color=col, alpha=0.2)
        ax1.text(f["start"] - t0, ax1.get_ylim()[1] * 0.95, f["f"], fontsize=7, rotation=90,
                 va="top")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def replot(run_dir: str) -> str | None:
    """plot.png of a finished run from its history.jsonl and result.json; the path, or None."""
    with open(os.path.join(run_dir, "result.json")) as fh:
        res = json.load(fh)
    with open(os.path.join(run_dir, "history.jsonl")) as fh:
        events = [json.loads(line) for line in fh if line.strip()]
    return plot(events, res["faults"], res["t0"], os.path.join(run_dir, "plot.png"),
                f"raftlog chaos {res['name']}")


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m benchmarks.chaos.report RUN_DIR...", file=sys.stderr)
        return 2
    rc = 0
    for d in argv:
        try:
            png = replot(d)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{d}: cannot read the run: {exc}", file=sys.stderr)
            rc = 1
            continue
        if png is None:
            print(f"{d}: no plot (matplotlib missing: pip install -e '.[chaos]', "
                  f"or no acknowledged write)", file=sys.stderr)
            rc = 1
        else:
            print(png)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
