"""A consumer-group member as its own process, for tests that SIGKILL consumers.

    python -m raftlog.testing.group_worker BOOTSTRAP TOPIC GROUP OUTFILE NAME [SESSION_MS]

Processes records by appending "partition offset" lines to OUTFILE (unbuffered os.write, so a
SIGKILL loses nothing already "processed"), then commits — at-least-once. Writes its current
assignment to OUTFILE.assign after every change.
"""
from __future__ import annotations

import asyncio
import os
import sys

from raftlog.client import Consumer


class Listener:
    def __init__(self, path: str, c: Consumer):
        self.path, self.c = path, c

    def _dump(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(" ".join(str(tp.partition) for tp in sorted(self.c.assignment())))
        os.replace(tmp, self.path)

    def on_partitions_revoked(self, revoked):  # noqa: ANN001
        self._dump()

    def on_partitions_assigned(self, assigned):  # noqa: ANN001
        self._dump()


async def main(bootstrap: str, topic: str, group: str, out: str, name: str,
               session_ms: int) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with Consumer(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                        auto_offset_reset="earliest", enable_auto_commit=False,
                        session_timeout_ms=session_ms,
                        heartbeat_interval_ms=max(50, session_ms // 6)) as c:
        c.subscribe([topic], listener=Listener(out + ".assign", c))
        while True:
            batch = await c.getmany(timeout_ms=200)
            lines = [f"{tp.partition} {r.offset}\n" for tp, recs in batch.items() for r in recs]
            if lines:
                os.write(fd, "".join(lines).encode())
                try:
                    await c.commit()
                except Exception as exc:  # a rebalance: the next owner re-reads (at-least-once)
                    print("commit failed:", exc, flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], a[4], int(a[5]) if len(a) > 5 else 3000))
