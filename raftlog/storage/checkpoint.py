"""Checkpoint files: small values that must survive a crash whole or not at all.

Owns the atomic write protocol (write a tmp file, fsync it, rename over the target, fsync the
directory) and the text format of raftlog's per-partition checkpoint files. Imports only the
stdlib; never asyncio, aiohttp, pysyncobj or anything from raftlog.meta/server/replication.

Format (Kafka's checkpoint layout, readable with `cat`)::

    0                    version
    2                    number of rows
    recovery_point 1200  rows: space-separated fields
    log_start_offset 0

`read_*` returns None for a file that is missing, unparsable or of another version: callers
treat that as "unknown" and take the safe branch (scan more, trust less). Because the rename is
atomic, a crash leaves either the old file or the new one, never a mix; a leftover `*.tmp` is
removed by recovery.
"""
from __future__ import annotations

import os
from typing import Sequence

VERSION = 0
TMP_SUFFIX = ".tmp"

RECOVERY_FILE = "recovery-checkpoint"          # recovery_point, log_start_offset
HIGH_WATERMARK_FILE = "high-watermark-checkpoint"
EPOCH_FILE = "leader-epoch-checkpoint"         # rows of "epoch start_offset", as Kafka's


def fsync_dir(directory: str) -> None:
    """Make renames, creations and deletions in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content."""
    tmp = path + TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def write_rows(path: str, rows: Sequence[Sequence[object]]) -> None:
    lines = [str(VERSION), str(len(rows))] + [" ".join(str(f) for f in row) for row in rows]
    write_atomic(path, ("\n".join(lines) + "\n").encode())


def read_rows(path: str) -> list[list[str]] | None:
    """Rows of a checkpoint file, or None when it is missing or malformed."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        if len(lines) < 2 or int(lines[0]) != VERSION or int(lines[1]) != len(lines) - 2:
            return None
    except ValueError:
        return None
    return [line.split(" ") for line in lines[2:]]


def write_values(path: str, values: dict[str, int]) -> None:
    write_rows(path, sorted(values.items()))


def read_values(path: str) -> dict[str, int] | None:
    rows = read_rows(path)
    if rows is None:
        return None
    out: dict[str, int] = {}
    for row in rows:
        if len(row) != 2:
            return None
        try:
            out[row[0]] = int(row[1])
        except ValueError:
            return None
    return out


def write_int_pairs(path: str, pairs: Sequence[tuple[int, int]]) -> None:
    write_rows(path, pairs)


def read_int_pairs(path: str) -> list[tuple[int, int]] | None:
    rows = read_rows(path)
    if rows is None:
        return None
    try:
        pairs = [(int(a), int(b)) for a, b in rows]
    except ValueError:
        return None
    return pairs
