"""Goal: the `raftlog` CLI round-trips records (produce from stdin -> consume to stdout), drives
topics and cluster status, and every failure is one `error: ...` line with a non-zero exit, never
a traceback. Method: run `python -m raftlog.cli` in a subprocess against a FakeCluster served
from a thread of this test process; compare printed output and the fake's log."""
import json
import os
import subprocess
import sys
import time

import pytest

from raftlog.cli import DEFAULT_BOOTSTRAP, build_parser, main, resolve_bootstrap
from raftlog.testing.fake_broker import FakeCluster

CLI_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def fc():
    with FakeCluster.in_thread(nodes=2) as cluster:
        cluster.call(cluster.create_topic, "t", 3)
        yield cluster


def run(fc, *args, stdin=None, env=None, bootstrap=True):
    argv = [sys.executable, "-m", "raftlog.cli"]
    if bootstrap:
        argv += ["--bootstrap", fc.bootstrap]
    e = dict(os.environ)
    e.pop("RAFTLOG_BOOTSTRAP", None)
    e.update(env or {})
    return subprocess.run(argv + list(args), input=stdin, capture_output=True, timeout=CLI_TIMEOUT_S,
                          env=e)


def ok(p):
    assert p.returncode == 0, p.stderr.decode()
    assert b"Traceback" not in p.stderr
    return p.stdout.decode()


def one_line_error(p, code=1):
    err = p.stderr.decode()
    assert p.returncode == code, (p.returncode, err, p.stdout)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_produce_then_consume_round_trip(fc):
    out = ok(run(fc, "produce", "t", "--partition", "1", "--key-separator", ":", "--json",
                 stdin=b"k1:hello\nworld\nk2:caf\xc3\xa9\n"))
    summary = json.loads(out)
    assert summary["records"] == 3 and summary["partitions"]["1"] == {"first_offset": 0,
                                                                    "last_offset": 2}
    recs = fc.records("t", 1)
    assert [(r.offset, r.key, r.value) for r in recs] == [
        (0, b"k1", b"hello"), (1, None, b"world"), (2, b"k2", "café".encode())]
    assert ok(run(fc, "consume", "t", "--from-beginning")) == "hello\nworld\ncafé\n"
    lines = ok(run(fc, "consume", "t", "--partition", "1", "--offset", "1", "--format", "json"))
    got = [json.loads(x) for x in lines.splitlines()]
    assert [(g["partition"], g["offset"], g["key"], g["value"]) for g in got] == [
        (1, 1, None, "world"), (1, 2, "k2", "café")]


def test_consume_start_options(fc, capsys):
    ok(run(fc, "produce", "t", "--partition", "0", "--key-separator", "=",
           stdin=b"a=1\nb=2\nc=3\n"))
    assert cli(fc, capsys, "consume", "t", "--partition", "0", "--from-beginning",
               "--print-key", "--max-messages", "2")[1] == "a\t1\nb\t2\n"
    ts = fc.records("t", 0)[2].timestamp
    assert cli(fc, capsys, "consume", "t", "--partition", "0", "--timestamp", str(ts))[1] \
        .endswith("3\n")
    assert cli(fc, capsys, "consume", "t", "--partition", "0", "--offset", "1")[1] == "2\n3\n"
    assert cli(fc, capsys, "consume", "t") == (0, "", "")  # default: from the end, to the end


def test_consume_follow_waits_for_new_records(fc):
    p = subprocess.Popen([sys.executable, "-m", "raftlog.cli", "--bootstrap", fc.bootstrap,
                          "consume", "t", "--partition", "2", "--follow", "--max-messages", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The consumer starts at the end; produce until it has seen two new records.
        deadline = time.monotonic() + CLI_TIMEOUT_S
        n = 0
        while p.poll() is None and time.monotonic() < deadline:
            ok(run(fc, "produce", "t", "--partition", "2", stdin=b"f%d\n" % n))
            n += 1
            try:
                p.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        out, err = p.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    got = out.decode().splitlines()
    assert len(got) == 2 and all(g.startswith("f") for g in got)
    assert int(got[1][1:]) == int(got[0][1:]) + 1


def cli(fc, capsys, *args):
    """In-process `raftlog` (saves an interpreter start per call): (exit code, stdout, stderr)."""
    code = main(["--bootstrap", fc.bootstrap, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_topic_commands(fc, capsys):
    code, out, _ = cli(fc, capsys, "topic", "create", "orders", "--partitions", "2",
                       "--config", "retention.ms=5000")
    assert code == 0 and "created topic orders with 2 partition(s)" in out
    code, listing, _ = cli(fc, capsys, "topic", "list")
    assert listing.splitlines()[0].split() == ["NAME", "PARTITIONS", "RF", "INTERNAL"]
    assert any(line.split()[:2] == ["orders", "2"] for line in listing.splitlines())
    desc = json.loads(cli(fc, capsys, "topic", "describe", "orders", "--json")[1])
    assert [p["partition"] for p in desc["partitions"]] == [0, 1]
    text = cli(fc, capsys, "topic", "describe", "orders")[1]
    assert "retention.ms" in text and "5000" in text and "LEADER" in text
    altered = json.loads(cli(fc, capsys, "topic", "alter", "orders", "--config",
                             "cleanup.policy=compact", "--delete-config", "retention.ms",
                             "--json")[1])
    cfg = {c["name"]: (c["value"], c["source"]) for c in altered["config"]}
    assert cfg["cleanup.policy"] == ("compact", "topic") and cfg["retention.ms"][1] == "default"
    assert "deleted topic orders" in cli(fc, capsys, "topic", "delete", "orders")[1]
    assert "orders" not in fc.topics
    code, _, err = cli(fc, capsys, "topic", "create", "t")
    assert code == 1 and err.count("\n") == 1 and "already exists" in err
    code, _, err = cli(fc, capsys, "topic", "alter", "t")
    assert code == 1 and err.startswith("error: ") and "--config" in err
    code, _, err = cli(fc, capsys, "consume", "t", "--partition", "7")
    assert code == 1 and "partitions 0..2" in err


def test_cluster_status(fc, capsys):
    code, text, _ = cli(fc, capsys, "cluster", "status")
    assert code == 0 and "controller 1" in text and "0 without leader" in text
    data = json.loads(cli(fc, capsys, "cluster", "status", "--json")[1])
    assert [b["id"] for b in data["cluster"]["brokers"]] == [1, 2]
    assert data["partitions_without_leader"] == [] and data["under_replicated_partitions"] == []
    fc.call(fc.move_leader, "t", 0, -1)  # leaderless partition
    try:
        data = json.loads(cli(fc, capsys, "cluster", "status", "--json")[1])
        assert [(p["topic"], p["partition"]) for p in data["partitions_without_leader"]] == \
            [("t", 0)]
        assert "1 without leader" in cli(fc, capsys, "cluster", "status")[1]
    finally:
        fc.call(fc.move_leader, "t", 0, 1)


def test_errors_are_one_line_and_non_zero(fc):
    """In a subprocess, as users see it: stderr holds exactly one `error: ...` line."""
    line = one_line_error(run(fc, "--bootstrap", "127.0.0.1:1", "--timeout-ms", "300",
                              "topic", "list", bootstrap=False))
    assert "could not bootstrap from 127.0.0.1:1" in line and "connection refused" in line
    line = one_line_error(run(fc, "produce", "nosuch", "--timeout-ms", "300", stdin=b"x\n"))
    assert "topic 'nosuch'" in line
    one_line_error(run(fc, "produce", "t", "--acks", "2"), code=2)


def test_bootstrap_resolution(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[nodes]]\nid = 1\nhost = "127.0.0.1"\nhttp_port = 7001\nraft_port = 17001\n'
                   '[[nodes]]\nid = 2\nhost = "127.0.0.1"\nhttp_port = 7002\nraft_port = 17002\n')
    monkeypatch.delenv("RAFTLOG_BOOTSTRAP", raising=False)
    parse = build_parser().parse_args
    assert resolve_bootstrap(parse(["topic", "list"])) == DEFAULT_BOOTSTRAP
    assert resolve_bootstrap(parse(["--config", str(cfg), "topic", "list"])) == \
        "127.0.0.1:7001,127.0.0.1:7002"
    monkeypatch.setenv("RAFTLOG_BOOTSTRAP", "envhost:1")
    assert resolve_bootstrap(parse(["--config", str(cfg), "topic", "list"])) == "envhost:1"
    assert resolve_bootstrap(parse(["topic", "list", "-b", "x:2"])) == "x:2"
    assert resolve_bootstrap(parse(["-b", "y:3", "topic", "list"])) == "y:3"
    args = parse(["--config", "a.toml", "node", "start", "--node-id", "2"])
    assert (args.config_file, args.node_id) == ("a.toml", 2)
    args = parse(["node", "start", "--config", "b.toml"])
    assert args.config_file == "b.toml"


def test_node_start_delegates_to_the_launcher(tmp_path, capsys):
    # A missing config is the launcher's own one-line error (exit 2); nothing is started.
    code = main(["node", "start", "--config", str(tmp_path / "missing.toml"), "--node-id", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "missing.toml" in err
