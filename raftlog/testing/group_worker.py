"""A consumer-group member as its own process, for tests that SIGKILL consumers.

    python -m raftlog.testing.group_worker BOOTSTRAP TOPIC GROUP OUTFILE NAME [SESSION_MS
        [PROCESS_MS]]

Processes records by appending lines to OUTFILE (unbuffered os.write, so a SIGKILL loses nothing
already "processed"), spends PROCESS_MS "processing" (a window in which a SIGKILL leaves
processed records uncommitted), then commits exactly what it processed — at-least-once. The lines let a
test check *where* duplicates happen (only across a handover, never within one ownership):

    A <partition> <owner> <monotonic_s>    partition assigned; owner = NAME.pid.n, new each time
    R <partition> <offset> <owner>         record processed by that ownership
    C <partition> <next_offset> <monotonic_s>   commit acknowledged (written before any await)

CLOCK_MONOTONIC is machine-wide, so the times order events across worker processes. Writes its
current assignment to OUTFILE.assign after every change.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time

from raftlog.client import Consumer, TopicPartition


class Listener:
    def __init__(self, path: str, c: Consumer, fd: int, name: str):
        self.path, self.c, self.fd = path, c, fd
        self.owner: dict[TopicPartition, str] = {}
        self._seq = itertools.count()
        self._name = f"{name}.{os.getpid()}"

    def _dump(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(" ".join(str(tp.partition) for tp in sorted(self.c.assignment())))
        os.replace(tmp, self.path)

    def on_partitions_revoked(self, revoked):  # noqa: ANN001
        for tp in revoked:
            self.owner.pop(tp, None)
        self._dump()

    def on_partitions_assigned(self, assigned):  # noqa: ANN001
        lines = []
        for tp in sorted(assigned):
            self.owner[tp] = f"{self._name}.{next(self._seq)}"
            lines.append(f"A {tp.partition} {self.owner[tp]} {time.monotonic():.6f}\n")
        os.write(self.fd, "".join(lines).encode())
        self._dump()


async def main(bootstrap: str, topic: str, group: str, out: str, name: str,
               session_ms: int, process_ms: int = 0) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with Consumer(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                        auto_offset_reset="earliest", enable_auto_commit=False,
                        session_timeout_ms=session_ms,
                        heartbeat_interval_ms=max(50, session_ms // 6)) as c:
        lis = Listener(out + ".assign", c, fd, name)
        c.subscribe([topic], listener=lis)
        while True:
            batch = await c.getmany(timeout_ms=200)
            lines = [f"R {tp.partition} {r.offset} {lis.owner.get(tp, '?')}\n"
                     for tp, recs in batch.items() for r in recs]
            if not lines:
                continue
            os.write(fd, "".join(lines).encode())
            if process_ms:
                await asyncio.sleep(process_ms / 1000)
            done = {tp: recs[-1].offset + 1 for tp, recs in batch.items() if recs}
            try:
                await c.commit(done)
            except Exception as exc:  # a rebalance: the next owner re-reads (at-least-once)
                print("commit failed:", exc, flush=True)
                continue
            now = time.monotonic()
            os.write(fd, "".join(f"C {tp.partition} {o} {now:.6f}\n"
                                 for tp, o in done.items()).encode())


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], a[4], int(a[5]) if len(a) > 5 else 3000,
                     int(a[6]) if len(a) > 6 else 0))
