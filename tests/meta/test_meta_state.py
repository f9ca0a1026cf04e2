"""MetadataState beyond the golden scripts: snapshot exactness, determinism across processes,
never raising on any input, invariants after every step, and the purity of the pure modules.
Method: replay one seeded busy history (metatest_replay) and random inputs (hypothesis)."""
from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metatest_replay import command_list, replay
from raftlog.meta import commands as C
from raftlog.meta.state import MetadataState, state_from_snapshot
from raftlog.meta.view import NO_LEADER, MetadataView

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def check_invariants(v: MetadataView) -> None:
    for p in v.all_partitions():
        where = f"{p.topic}/{p.partition} {p}"
        assert p.isr, where
        assert len(set(p.isr)) == len(p.isr), where
        assert set(p.isr) <= set(p.replicas), where
        assert list(p.isr) == [r for r in p.replicas if r in p.isr], f"ISR order: {where}"
        inactive = [r for r in p.isr if not v.is_active(r)]
        if p.leader != NO_LEADER:
            assert p.leader in p.isr and v.is_active(p.leader), where
            assert not inactive, f"fenced broker in a led ISR: {where}"
        else:
            assert not inactive or len(p.isr) == 1, f"only a kept last member may be fenced: {where}"


def test_busy_history_keeps_invariants_and_epochs_monotonic() -> None:
    s = MetadataState()
    epochs: dict[tuple[str, int], tuple[int, int]] = {}
    outcomes = {"ok": 0, "error": 0}
    for i, blob in enumerate(command_list()):
        result = s.apply(blob)
        outcomes[result[0]] += 1
        assert s.version == i + 1
        assert result[0] != "error" or result[1] != "UNKNOWN_SERVER_ERROR", result
        check_invariants(s.view)
        for p in s.view.all_partitions():
            old = epochs.get((p.topic, p.partition), (0, 0))
            assert (p.leader_epoch, p.partition_epoch) >= old
            assert p.leader_epoch >= old[0] and p.partition_epoch >= old[1]
            epochs[(p.topic, p.partition)] = (p.leader_epoch, p.partition_epoch)
    # The history must exercise both paths, or this test proves little.
    assert outcomes["ok"] > 100 and outcomes["error"] > 50, outcomes


def test_snapshot_restore_is_exact_and_continues_identically() -> None:
    blobs = command_list()
    half = len(blobs) // 2
    a = replay(blobs[:half])
    b = MetadataState()
    b.restore(a.snapshot())
    assert b.snapshot() == a.snapshot()
    assert b.view.to_json() == a.view.to_json()
    assert b.view == a.view                                  # records and maps compare equal
    # A restored node holds its dicts in another insertion order; results must not care.
    for blob in blobs[half:]:
        assert a.apply(blob) == b.apply(blob)
    assert a.snapshot() == b.snapshot() == replay(blobs).snapshot()


def test_pickle_goes_through_the_canonical_snapshot() -> None:
    a = replay(command_list()[:200])
    b = pickle.loads(pickle.dumps(a))          # what pysyncobj's dump file does
    assert isinstance(b, MetadataState) and b.snapshot() == a.snapshot()
    assert state_from_snapshot(a.snapshot()).view == a.view


def test_restore_rejects_garbage() -> None:
    s = MetadataState()
    for blob in (b"", b"\x93\x01\x02", msgpack.packb([99, 0, 0, 0, [], [], []])):
        with pytest.raises(ValueError):
            s.restore(blob)


def test_same_snapshot_under_different_hash_seeds() -> None:
    script = HERE / "metatest_replay.py"
    outs = []
    for seed in ("0", "1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed,
               "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        outs.append(proc.stdout.strip())
    assert len(outs[0]) > 1000
    assert outs[0] == outs[1] == outs[2]
    assert outs[0] == replay(command_list()).snapshot().hex()


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=5),
                     st.floats(allow_nan=False), st.binary(max_size=4))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
_field_names = st.sampled_from(sorted({f for schema in C.SCHEMAS.values() for f in schema}))
_payloads = st.dictionaries(_field_names, _values, max_size=7)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(
    st.binary(max_size=64),
    st.builds(lambda op, p: msgpack.packb([C.FORMAT_VERSION, op, p]),
              st.sampled_from(sorted(C.OPS)), _payloads),
    st.builds(lambda v: msgpack.packb(v), _values)))
@example(raw=b"\x93\x01\x90\x00")   # [1, [], 0]: an unhashable op once raised TypeError
def test_apply_never_raises(raw: bytes) -> None:
    before = _SEED_SNAPSHOT
    s = state_from_snapshot(before)
    result = s.apply(raw)
    assert result[0] in ("ok", "error")
    assert s.version == len(_SEED_HISTORY) + 1
    json.dumps(result)                              # small, plain, serialisable
    msgpack.packb(result)
    if result[0] == "error":
        assert result[1] != "UNKNOWN_SERVER_ERROR", result
        # A rejection changes nothing but the version.
        after = MetadataState()
        after.restore(before)
        assert s.view.to_json() == {**after.view.to_json(), "version": s.version}
    check_invariants(s.view)


_SEED_HISTORY = command_list(seed=3, n=60)
_SEED_SNAPSHOT = replay(_SEED_HISTORY).snapshot()


def test_rejection_leaves_state_untouched_even_if_a_handler_breaks(monkeypatch) -> None:
    from raftlog.meta import state as state_mod
    s = replay(_SEED_HISTORY)
    before = s.view

    def broken(v, c):
        raise KeyError("boom")
    monkeypatch.setitem(state_mod._HANDLERS, "noop", broken)
    result = s.apply(C.noop())
    assert result[0] == "error" and result[1] == "UNKNOWN_SERVER_ERROR" and "boom" in result[2]
    assert s.view.topics is before.topics and s.version == before.version + 1


def test_views_are_read_only() -> None:
    v = replay(_SEED_HISTORY).view
    with pytest.raises(TypeError):
        v.topics["x"] = None                                   # type: ignore[index]
    name = v.topic_names()[0]
    with pytest.raises(TypeError):
        v.topics[name].config["retention.ms"] = "1"            # type: ignore[index]
    with pytest.raises(AttributeError):
        v.version = 5                                          # type: ignore[misc]


PURE = ["commands.py", "state.py", "view.py", "placement.py", "names.py", "snapshot.py"]
FORBIDDEN = {"time", "random", "os", "asyncio", "threading", "pysyncobj", "socket",
             "raftlog.storage", "raftlog.server", "raftlog.replication", "aiohttp", "uuid"}


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_nothing_impure(name: str) -> None:
    tree = ast.parse((REPO / "raftlog" / "meta" / name).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {m for m in imported for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not bad, f"{name} imports {sorted(bad)}"


_ids = st.integers(0, 7)
_small = st.integers(0, 12)
_topics = st.sampled_from(["topic.alpha-0", "topic.beta-1", "topic.gamma-2", "nope"])
_isr = st.lists(_ids, min_size=0, max_size=4)
_well_formed = st.one_of(
    st.builds(C.fence_broker, _ids, _small, st.booleans()),
    st.builds(C.unfence_broker, _ids, _small, st.booleans()),
    st.builds(lambda b, i: C.register_broker(b, "h", 9000 + b, f"i{i}", 0), _ids, st.integers(0, 2)),
    st.builds(C.change_partition, _topics, st.integers(0, 4), _small,
              st.integers(-1, 7), _isr),
    st.builds(lambda t, p, e, l, i: C.elect_leaders([C.partition_change(t, p, e, l, i)] * 2),
              _topics, st.integers(0, 4), _small, st.integers(-1, 7), _isr),
    st.builds(lambda t, r: C.create_topic(t, "id-" + t, r), _topics,
              st.lists(st.lists(_ids, min_size=1, max_size=3), min_size=0, max_size=3)),
    st.builds(lambda t, u: C.alter_topic_config(
        t, set_keys={"unclean.leader.election.enable": u}), _topics, st.sampled_from(["true", "false"])),
    st.builds(lambda t, d: C.alter_topic_config(
        t, delete_keys=["unclean.leader.election.enable"], unclean_default=d), _topics,
        st.booleans()),
    st.builds(C.delete_topic, _topics),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_well_formed, min_size=1, max_size=25))
def test_random_well_formed_sequences_keep_invariants(blobs: list[bytes]) -> None:
    s = state_from_snapshot(_SEED_SNAPSHOT)
    for blob in blobs:
        result = s.apply(blob)
        assert result[0] == "ok" or result[1] != "UNKNOWN_SERVER_ERROR", result
        check_invariants(s.view)
