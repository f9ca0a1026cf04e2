"""Storage building blocks: checkpoint files, index files and the index rule.

Goal: atomic checkpoints read back exactly and unreadable ones read as None; index files have
the documented fixed-width big-endian layout, reject what fails the sanity check, truncate
correctly; an index rebuilt by recovery equals the one written by appends. Method: exact file
bytes, and indexes of a live log compared with those rebuilt after deleting the files.
"""
from __future__ import annotations

import ast
import os
import struct

import pytest

from raftlog.storage import LogOptions, PartitionLog, checkpoint
from raftlog.storage.index import OffsetIndex, TimeIndex
from storagetest_util import make_batch


# -- checkpoint files ---------------------------------------------------------------------------
def test_values_round_trip_and_exact_format(tmp_path) -> None:
    path = str(tmp_path / "cp")
    checkpoint.write_values(path, {"recovery_point": 12, "log_start_offset": 3})
    assert open(path).read() == "0\n2\nlog_start_offset 3\nrecovery_point 12\n"
    assert checkpoint.read_values(path) == {"recovery_point": 12, "log_start_offset": 3}
    assert os.listdir(tmp_path) == ["cp"]  # no tmp file left behind
    checkpoint.write_values(path, {"recovery_point": 13})
    assert checkpoint.read_values(path) == {"recovery_point": 13}


@pytest.mark.parametrize("content", [
    b"", b"0\n", b"7\n1\na 1\n", b"0\n2\na 1\n", b"0\n1\na\n", b"0\n1\na b\n", b"\x80\n",
])
def test_unreadable_checkpoint_reads_as_none(tmp_path, content: bytes) -> None:
    path = tmp_path / "cp"
    path.write_bytes(content)
    assert checkpoint.read_values(str(path)) is None
    assert checkpoint.read_values(str(tmp_path / "missing")) is None


# -- index files --------------------------------------------------------------------------------
def test_offset_index_file_layout_floor_and_truncate(tmp_path) -> None:
    path = str(tmp_path / "x.index")
    idx = OffsetIndex(path)
    for rel, pos in [(3, 100), (9, 300), (20, 700)]:
        idx.append(rel, pos)
    idx.write_pending()
    assert open(path, "rb").read() == struct.pack(">IIIIII", 3, 100, 9, 300, 20, 700)
    assert [idx.floor(r) for r in (0, 2, 3, 8, 9, 100)] == [
        (0, 0), (0, 0), (3, 100), (3, 100), (9, 300), (20, 700)]
    idx.append(25, 900)                    # pending, not yet in the file
    idx.truncate_to_position(300)          # drops (9,300) (20,700) (25,900)
    assert (list(idx.rel_offsets), list(idx.positions)) == ([3], [100])
    idx.write_pending()
    assert open(path, "rb").read() == struct.pack(">II", 3, 100)
    loaded = OffsetIndex.load(path)
    assert loaded is not None and list(loaded.positions) == [100]


def test_offset_index_sanity(tmp_path) -> None:
    path = tmp_path / "x.index"
    path.write_bytes(struct.pack(">IIII", 3, 100, 2, 300))   # offsets go backwards
    assert not OffsetIndex.load(str(path)).sane(10, 1000)
    path.write_bytes(struct.pack(">II", 3, 100))
    assert OffsetIndex.load(str(path)).sane(10, 1000)
    assert not OffsetIndex.load(str(path)).sane(3, 1000)     # entry at/after next offset
    assert not OffsetIndex.load(str(path)).sane(10, 100)     # entry at/after file end
    path.write_bytes(struct.pack(">II", 0, 0))               # zero-filled page
    assert not OffsetIndex.load(str(path)).sane(10, 1000)
    path.write_bytes(b"\x00" * 7)                            # not whole entries
    assert OffsetIndex.load(str(path)) is None


def test_time_index_layout_and_lookup(tmp_path) -> None:
    path = str(tmp_path / "x.timeindex")
    idx = TimeIndex(path)
    for ts, rel in [(100, 4), (250, 9), (250, 12)]:
        idx.append(ts, rel)
    idx.write_pending()
    assert open(path, "rb").read() == struct.pack(">qIqIqI", 100, 4, 250, 9, 250, 12)
    # start_for(ts): an offset before which every batch has max timestamp < ts
    assert [idx.start_for(t) for t in (50, 100, 101, 250, 251)] == [0, 0, 4, 4, 12]
    idx.truncate_to_rel_offset(9)
    assert list(idx.rel_offsets) == [4, 9]
    assert TimeIndex.load(path).sane(12) and not TimeIndex.load(path).sane(8)


def test_rebuilt_indexes_equal_written_ones(tmp_path) -> None:
    """The index rule is the same on append and on rebuild, so deleting the files after a clean
    close and recovering from the log reproduces them byte for byte."""
    opts = LogOptions(segment_bytes=4000, index_interval_bytes=200)
    log = PartitionLog.open(str(tmp_path), opts, 0)
    for i in range(60):
        log.append(make_batch(1 + i % 5, ts=1000 + (i * 37) % 200, seed=i,
                              value_bytes=3 + i % 40), 0, 0)
    log.close()
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(("index", "timeindex")))
    written = {n: (tmp_path / n).read_bytes() for n in names}
    assert any(len(v) > 24 for v in written.values())
    os.unlink(tmp_path / "recovery-checkpoint")     # forces validation of every segment
    for n in names:
        os.unlink(tmp_path / n)
    log = PartitionLog.open(str(tmp_path), opts, 0)
    log.close()
    assert {n: (tmp_path / n).read_bytes() for n in names} == written


# -- layering -----------------------------------------------------------------------------------
FORBIDDEN = ("asyncio", "aiohttp", "pysyncobj", "time", "random", "raftlog.meta",
             "raftlog.server", "raftlog.replication", "raftlog.client")


def test_storage_modules_import_nothing_forbidden() -> None:
    """storage/ is synchronous and pure of the async, Raft and HTTP layers, and never reads the
    clock or randomness (callers pass now_ms); each module docstring says so, this checks it."""
    import raftlog.storage as pkg
    directory = os.path.dirname(pkg.__file__)
    modules = sorted(n for n in os.listdir(directory) if n.endswith(".py"))
    assert len(modules) >= 10
    for name in modules:
        tree = ast.parse(open(os.path.join(directory, name)).read())
        doc = ast.get_docstring(tree) or ""
        assert "never asyncio" in doc.replace("\n", " ") or "never imports asyncio" in doc, name
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for mod in names:
                assert not any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN), (name, mod)
