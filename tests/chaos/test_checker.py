"""The chaos checker on hand-made histories: each anomaly is found, and clean or merely
indeterminate histories pass."""
from benchmarks.chaos.checker import availability, check


class H:
    """A tiny history builder with a logical clock."""

    def __init__(self):
        self.ev = []
        self.t = 0.0
        self.op = 0

    def tick(self):
        self.t += 1.0
        return self.t

    def invoke(self, part, value):
        self.op += 1
        self.ev.append({"type": "invoke", "op": self.op, "process": "p0", "partition": part,
                        "value": value, "time": self.tick()})
        return self.op

    def ok(self, op, offset):
        self.ev.append({"type": "ok", "op": op, "offset": offset, "time": self.tick()})

    def done(self, op, status):
        self.ev.append({"type": status, "op": op, "error": "x", "time": self.tick()})

    def write(self, part, value, offset):
        self.ok(self.invoke(part, value), offset)

    def poll(self, part, recs, proc="c0"):
        self.ev.append({"type": "poll", "process": proc, "partition": part,
                        "records": [list(r) for r in recs], "time": self.tick()})

    def assign(self, parts, positions, proc="c0"):
        self.ev.append({"type": "assign", "process": proc, "partitions": parts,
                        "positions": {str(k): v for k, v in positions.items()},
                        "time": self.tick()})

    def final(self, part, recs, hw=None, error=None):
        hw = hw if hw is not None else (max([r[0] for r in recs], default=0) + 1)
        self.ev.append({"type": "final", "partition": part, "hw": hw, "error": error,
                        "records": [list(r) for r in recs]})


def counts(h):
    r = check(h.ev)
    return {k: v for k, v in r["counts"].items() if v}


def test_clean_history_is_valid():
    h = H()
    h.write(0, "a", 1)
    h.write(0, "b", 2)
    h.write(1, "c", 1)
    h.poll(0, [(1, "a"), (2, "b")])
    h.final(0, [(1, "a"), (2, "b")])
    h.final(1, [(1, "c")])
    r = check(h.ev)
    assert r["valid"], r
    assert (r["ops"], r["ok"]) == (3, 3)


def test_lost_write_and_unseen():
    h = H()
    h.write(0, "a", 1)
    h.write(0, "b", 2)     # gone although offset 3 is read: lost
    h.write(0, "c", 3)
    h.write(0, "d", 4)     # beyond the final read's end: unseen
    h.final(0, [(1, "a"), (3, "c")])
    assert counts(h) == {"lost-write": 1, "unseen": 1}


def test_ack_with_unknown_offset_counts_when_missing():
    h = H()
    h.ok(h.invoke(0, "a"), -1)   # DUPLICATE_SEQUENCE answer: acked, offset unknown
    h.write(0, "b", 2)
    h.final(0, [(2, "b")])
    assert counts(h) == {"lost-write": 1}


def test_indeterminate_writes_are_never_failures():
    h = H()
    h.done(h.invoke(0, "maybe-in"), "info")
    h.done(h.invoke(0, "maybe-out"), "info")
    h.write(0, "b", 2)
    h.final(0, [(1, "maybe-in"), (2, "b")])
    assert counts(h) == {}


def test_inconsistent_offsets_between_reads_and_between_ack_and_log():
    h = H()
    h.write(0, "a", 1)
    h.write(0, "b", 2)
    h.poll(0, [(1, "a"), (2, "x")], proc="c0")     # another value at offset 2
    h.final(0, [(1, "a"), (2, "b")])
    r = check(h.ev)
    assert r["counts"]["inconsistent-offsets"] == 1
    assert r["anomalies"]["inconsistent-offsets"][0]["offset"] == 2
    h2 = H()
    h2.write(0, "a", 5)                            # acked at 5, the log has it at 4
    h2.final(0, [(4, "a"), (5, "z")])
    assert check(h2.ev)["counts"]["inconsistent-offsets"] == 1


def test_duplicate():
    h = H()
    h.write(0, "a", 1)
    h.final(0, [(1, "a"), (2, "a")])
    assert counts(h) == {"duplicate": 1}


def test_aborted_read():
    h = H()
    h.done(h.invoke(0, "failed"), "fail")
    h.write(0, "b", 2)
    h.poll(0, [(1, "failed"), (2, "b")])
    h.final(0, [(2, "b")])
    c = counts(h)
    assert c["aborted-read"] == 1


def test_nonmonotonic_poll_and_skip_and_reassignment_resets():
    h = H()
    for i, v in enumerate("abcd", start=1):
        h.write(0, v, i)
    h.poll(0, [(1, "a"), (2, "b")])
    h.poll(0, [(2, "b")])                          # goes back: nonmonotonic
    h.poll(0, [(4, "d")])                          # jumps over 3: skip
    h.assign([0], {0: 1})                          # reassigned: a rewind is fine
    h.poll(0, [(1, "a")])
    h.final(0, [(1, "a"), (2, "b"), (3, "c"), (4, "d")])
    assert counts(h) == {"nonmonotonic-poll": 1, "poll-skip": 1}


def test_gap_over_control_records_is_not_a_skip():
    h = H()
    h.write(0, "a", 1)
    h.write(0, "b", 3)                             # offset 2 is a leader-epoch control record
    h.poll(0, [(1, "a"), (3, "b")])
    h.final(0, [(1, "a"), (3, "b")])
    assert counts(h) == {}


def test_nonmonotonic_send():
    h = H()
    h.write(0, "a", 5)
    h.write(0, "b", 4)          # invoked after 5 was acknowledged, acknowledged lower
    # concurrent writes may be acknowledged in any order: not an anomaly
    o1 = h.invoke(1, "x")
    o2 = h.invoke(1, "y")
    h.ok(o2, 2)
    h.ok(o1, 1)
    h.final(0, [(4, "b"), (5, "a")])
    h.final(1, [(1, "x"), (2, "y")])
    assert counts(h) == {"nonmonotonic-send": 1}


def test_committed_offsets_backwards():
    h = H()
    h.ev += [{"type": "commit", "group": "g", "partition": 0, "offset": 5, "time": 1},
             {"type": "commit", "group": "g", "partition": 0, "offset": 7, "time": 2},
             {"type": "commit", "group": "g", "partition": 0, "offset": 6, "time": 3},
             {"type": "commit", "group": "g", "partition": 1, "offset": 1, "time": 4}]
    assert counts(h) == {"committed-offset-backwards": 1}


def test_replica_divergence_and_failed_final_read():
    h = H()
    h.ev.append({"type": "replicas", "partition": 0, "hw": 10,
                 "nodes": {"1": "aa", "2": "aa", "3": "bb"}})
    h.ev.append({"type": "replicas", "partition": 1, "hw": 10,
                 "nodes": {"1": "aa", "2": "aa", "3": "aa"}})
    h.write(2, "z", 1)
    h.final(2, [], hw=None, error="timeout")
    assert counts(h) == {"replica-divergence": 1, "final-read-failed": 1}


def test_availability_windows_and_recovery():
    ev = []
    op = 0
    for t in [0, 0.5, 1.0, 4.0, 4.5]:
        op += 1
        ev.append({"type": "invoke", "op": op, "partition": op % 2, "value": str(op),
                   "time": t})
        ev.append({"type": "ok", "op": op, "offset": op, "time": t + 0.1})
    ev.append({"type": "nemesis", "f": "kill", "start": 1.5, "end": 2.0, "targets": [1]})
    a = availability(ev)
    assert [w["seconds"] for w in a["windows"]] == [3.0]
    rec = a["recoveries"][0]
    assert rec["first_ack_s"] == 2.6 and rec["all_partitions_s"] == 3.1


def test_group_reassignment_without_positions_allows_a_rewind():
    h = H()
    for i, v in enumerate("abc", start=1):
        h.write(0, v, i)
    h.poll(0, [(1, "a"), (2, "b")], proc="g0")
    h.ev.append({"type": "assign", "process": "g0", "partitions": [0], "time": h.tick()})
    h.poll(0, [(2, "b"), (3, "c")], proc="g0")     # re-delivery after a rebalance: allowed
    h.final(0, [(1, "a"), (2, "b"), (3, "c")])
    assert counts(h) == {}
