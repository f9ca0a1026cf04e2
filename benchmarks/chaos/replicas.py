"""Replica comparison from the nodes' segment files (local filesystem, no network): the
batches of each replica whose last offset is below the high watermark, byte for byte."""
from __future__ import annotations

import hashlib
import os
import time

from raftlog.codec import batch as codec


def committed_prefix(data_dir: str, topic: str, partition: int, hw: int) -> bytes | None:
    d = os.path.join(data_dir, "partitions", f"{topic}-{partition}")
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".log"))
    except OSError:
        return None
    out = bytearray()
    for n in names:
        with open(os.path.join(d, n), "rb") as fh:
            buf = fh.read()
        for pos, h in codec.iter_batches(buf):
            if h.last_offset < hw:
                out += buf[pos:pos + h.size]
    return bytes(out)


def compare(data_dirs: dict[int, str], topic: str, partition: int, hw: int,
            replicas: list[int] | None = None) -> dict:
    """`{"nodes": {node: sha1[:16] or None}, "bytes": {node: n}}` for the replicas of a partition."""
    nodes = replicas or sorted(data_dirs)
    digests, sizes = {}, {}
    for n in nodes:
        data = committed_prefix(data_dirs[n], topic, partition, hw)
        digests[str(n)] = None if data is None else hashlib.sha1(data).hexdigest()[:16]
        sizes[str(n)] = None if data is None else len(data)
    return {"nodes": digests, "bytes": sizes}


def wait_identical(data_dirs: dict[int, str], topic: str, partition: int, hw: int,
                   replicas: list[int] | None, timeout_s: float) -> tuple[dict, float | None]:
    """Compare until identical or `timeout_s`; also returns how long convergence took."""
    t0 = time.monotonic()
    while True:
        r = compare(data_dirs, topic, partition, hw, replicas)
        vals = list(r["nodes"].values())
        if None not in vals and len(set(vals)) == 1:
            return r, time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            return r, None
        time.sleep(0.25)
