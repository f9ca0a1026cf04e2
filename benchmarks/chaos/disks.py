"""Small tmpfs disks for the chaos nodes, and filling one up (the disk-full nemesis).

Each node's data dir lives on its own tmpfs, so filling it gives that node, and only that node,
ENOSPC on every write (segments, indexes, checkpoints and the Raft journal alike) without
touching the machine's disk. Mount sources are named `raftlog-chaos-<harness pid>`: mounts of
a harness that died are unmounted at start, ours at exit. Runs only `mount`/`umount` and file
writes; never a socket.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

SOURCE = "raftlog-chaos-"
FILLER = "filler.bin"


def _mounts() -> list[tuple[str, str]]:
    """(source, mount point) of every mount of our family."""
    out = []
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                f = line.split()
                if len(f) > 2 and f[0].startswith(SOURCE):
                    out.append((f[0], f[1].replace("\\040", " ")))
    except OSError:
        pass
    return out


def remove_stale() -> list[str]:
    """Unmount our family's tmpfs disks whose harness is gone; return their mount points."""
    gone = []
    for source, point in _mounts():
        try:
            pid = int(source[len(SOURCE):])
            os.kill(pid, 0)
            continue                     # its harness still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        umount(point)
        gone.append(point)
    return gone


def fill(directory: str) -> int:
    """Write `directory`/filler.bin until its filesystem refuses; return the bytes it took."""
    written = 0
    chunk = b"\0" * (1 << 20)
    with open(os.path.join(directory, FILLER), "ab", buffering=0) as fh:
        while len(chunk) >= 512:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk = chunk[:len(chunk) // 4]   # top off the last partial megabyte
    return written


def mount_tmpfs(source: str, point: str, size_mb: int) -> str | None:
    """Mount a tmpfs of `size_mb` at `point`; the error text, or None on success."""
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", source, point],
                       capture_output=True, text=True, timeout=30)
    return None if p.returncode == 0 else (p.stderr.strip() or f"mount rc={p.returncode}")


def umount(point: str) -> None:
    subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


class Disks:
    """One tmpfs of `size_mb` per node under `workdir`; `fill`/`free` make one of them full."""

    def __init__(self, workdir: str, n: int, size_mb: int = 256):
        self.workdir = workdir
        self.n = n
        self.size_mb = size_mb
        self.source = f"{SOURCE}{os.getpid()}"
        self.mounted: list[str] = []
        self.full: set[int] = set()

    def root(self, i: int) -> str:
        return os.path.join(self.workdir, f"disk-{i}")

    def data_dir(self, i: int) -> str:
        """Relative to workdir, as the cluster config wants it."""
        return os.path.join(f"disk-{i}", "data")

    def up(self) -> None:
        for i in range(1, self.n + 1):
            point = self.root(i)
            os.makedirs(point, exist_ok=True)
            err = mount_tmpfs(self.source, point, self.size_mb)
            if err:
                self.down()
                raise RuntimeError(f"mount tmpfs at {point}: {err}")
            self.mounted.append(point)
            os.makedirs(os.path.join(point, "data"))

    def fill(self, i: int) -> int:
        took = fill(self.root(i))
        self.full.add(i)
        return took

    def free(self, i: int) -> None:
        try:
            os.unlink(os.path.join(self.root(i), FILLER))
        except FileNotFoundError:
            pass
        self.full.discard(i)

    def preserve(self) -> list[str]:
        """Copy every node's data off its tmpfs (next to it) so a failed run can be examined."""
        kept = []
        for i in range(1, self.n + 1):
            dst = os.path.join(self.workdir, f"node-{i}-data")
            shutil.copytree(os.path.join(self.root(i), "data"), dst, dirs_exist_ok=True)
            kept.append(dst)
        return kept

    def down(self) -> None:
        for point in reversed(self.mounted):
            umount(point)
        self.mounted.clear()
        self.full.clear()
