"""`python -m raftlog.server --config X --node-id N`: run one node in the foreground.

Owns process-level concerns only: logging format, the event loop (uvloop when installed),
signal handling for a clean stop, and printing config errors as one line with a non-zero exit.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from raftlog import config as config_mod
from raftlog.errors import ConfigError

# A broker allocates short-lived containers at a high rate (requests, futures, batch lists) and
# almost none of them form cycles, yet CPython's default young-generation threshold (700) runs
# a collection every few hundred allocations, and each full collection walks every long-lived
# object too. Collect less often (cycles are still collected, a little later: tens of
# thousands of objects at most wait) and, once started, freeze what start-up allocated (code,
# config, the metadata image) out of the collector's walks. About 5-10% of a node's CPU under
# offset-commit load (benchmarks/groups_bench.py).
GC_THRESHOLDS = (50_000, 20, 50)
EXIT_CONFIG = 2      # the config (or an address in it) is wrong: fix it, do not just restart


async def _serve(cfg: config_mod.ClusterConfig, node_id: int) -> int:
    from raftlog.server.broker import Broker
    broker = Broker(cfg, node_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await broker.start()
    except ConfigError as exc:
        # e.g. the Raft port is taken or not an address of this host (MetaReplica binds it):
        # one line and exit 2, as for any config error found before start
        logging.getLogger("raftlog").error("cannot start node %d: %s", node_id, exc.message)
        await broker.stop()
        return EXIT_CONFIG
    except OSError as exc:
        logging.getLogger("raftlog").error("cannot start node %d: %s", node_id, exc)
        await broker.stop()
        return 1
    gc.collect()
    gc.freeze()
    stopping = asyncio.ensure_future(stop.wait())
    failing = asyncio.ensure_future(broker.failed.wait())
    await asyncio.wait([stopping, failing], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    failing.cancel()
    logging.getLogger("raftlog").info("node %d stopping", node_id)
    await broker.stop()
    return 1 if broker.failed.is_set() else 0


def run_node(config_path: str, node_id: int, log_level: str = "INFO") -> int:
    logging.basicConfig(level=getattr(logging, log_level),
                        format=f"%(asctime)s node-{node_id} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        cfg = config_mod.load(config_path)
        cfg.node(node_id)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop  # optional: a faster loop where it is installed
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_serve(cfg, node_id))


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m raftlog.server")
    ap.add_argument("--config", required=True)
    ap.add_argument("--node-id", type=int, required=True)
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args()
    return run_node(a.config, a.node_id, a.log_level)


if __name__ == "__main__":
    sys.exit(main())
