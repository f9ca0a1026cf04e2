"""A MetaReplica alone in its own process, for tests that pause or kill nodes with signals.

    python metatest_node.py NODE_ID DATA_DIR ID=PORT ID=PORT ...

Prints "bound" once its raft port is bound, then runs until killed.
"""
from __future__ import annotations

import asyncio
import sys

from raftlog.meta.replica import MetaReplica


async def main() -> None:
    node_id, data_dir = int(sys.argv[1]), sys.argv[2]
    peers = {int(k): ("127.0.0.1", int(v)) for k, v in (a.split("=") for a in sys.argv[3:])}
    replica = MetaReplica(node_id, peers, data_dir, asyncio.get_running_loop(), fast=True)
    print("bound", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        replica.close()


if __name__ == "__main__":
    asyncio.run(main())
