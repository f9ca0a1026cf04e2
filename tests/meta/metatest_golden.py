"""Golden scripts for the metadata state machine: commands in, results and printed state out.

Format of tests/meta/testdata/*.txt (etcd's datadriven style): cases separated by blank lines,
each one directive line, a `----` line and the expected output. Lines starting with '#' are
comments. One MetadataState runs through a whole file, so cases build on each other.

Directives:
    <op> key=value ...    encode op with commands.encode and apply it; prints the result.
                          Values are JSON when they parse as JSON, else bare strings; quote
                          values with spaces shell-style: config='{"a": "b"}'.
    apply-raw <json>      msgpack-pack the JSON value as is and apply it (malformed commands).
    state                 print the whole view, sorted.

Run with REWRITE=1 to regenerate the expected outputs after a deliberate change; review the
diff before committing it.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import msgpack

from raftlog.meta import commands
from raftlog.meta.state import MetadataState
from raftlog.meta.view import MetadataView

SEPARATOR = "----"


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ints(xs: Any) -> str:
    return "[" + ",".join(str(x) for x in xs) + "]"


def format_result(result: tuple[Any, ...]) -> str:
    if result[0] == "ok":
        return "ok " + json.dumps(result[1], sort_keys=True, separators=(",", ":"))
    return f"error {result[1]}: {result[2]}"


def format_view(v: MetadataView) -> str:
    out = [f"version={v.version} next_producer_id={v.next_producer_id} "
           f"last_broker_epoch={v.last_broker_epoch}"]
    for bid in v.broker_ids():
        b = v.brokers[bid]
        out.append(f"broker {bid} {b.host}:{b.http_port} epoch={b.epoch} "
                   f"{'fenced' if b.fenced else 'active'} incarnation={b.incarnation}")
    for name in v.topic_names():
        t = v.topics[name]
        cfg = json.dumps({k: t.config[k] for k in sorted(t.config)}, separators=(",", ":"))
        out.append(f"topic {name} id={t.topic_id} config={cfg}")
        for p in t.partitions:
            out.append(f"  {name}/{p.partition} replicas={_ints(p.replicas)} leader={p.leader} "
                       f"leader_epoch={p.leader_epoch} isr={_ints(p.isr)} "
                       f"partition_epoch={p.partition_epoch}")
    for gname in sorted(v.groups):
        g = v.groups[gname]
        out.append(f"group {gname} generation={g.generation} protocol={g.protocol}")
        for m in sorted(g.assignment):
            out.append(f"  {m}: " + " ".join(f"{t}/{p}" for t, p in g.assignment[m]))
    return "\n".join(out)


def run_directive(state: MetadataState, line: str) -> str:
    if line.startswith("apply-raw "):
        return format_result(state.apply(msgpack.packb(json.loads(line.split(None, 1)[1]))))
    words = shlex.split(line)
    op, args = words[0], words[1:]
    if op == "state":
        return format_view(state.view)
    payload = {}
    for a in args:
        key, _, text = a.partition("=")
        payload[key] = _value(text)
    try:
        blob = commands.encode(op, payload)
    except Exception as e:  # the test script itself is wrong: show it in the output
        return f"encode failed: {e}"
    return format_result(state.apply(blob))


def parse(text: str) -> list[tuple[list[str], str, list[str]]]:
    """[(prelude comment/blank lines, directive, expected output lines)]"""
    lines = text.splitlines()
    cases, prelude, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            prelude.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ValueError(f"line {i + 1}: directive {line!r} must be followed by {SEPARATOR}")
        i += 2
        expected = []
        while i < len(lines) and lines[i].strip():
            expected.append(lines[i])
            i += 1
        cases.append((prelude, line, expected))
        prelude = []
    return cases


def run_file(path: Path) -> tuple[str, str]:
    """(expected file text, actual file text) for one script."""
    text = path.read_text()
    state = MetadataState()
    out: list[str] = []
    for prelude, directive, _ in parse(text):
        # Blank lines separate cases, so the prelude is normalised to avoid doubling them.
        while prelude and not prelude[0].strip():
            prelude = prelude[1:]
        if out:
            out.append("")
        out.extend(prelude)
        out.append(directive)
        out.append(SEPARATOR)
        out.extend(run_directive(state, directive).splitlines())
    actual = "\n".join(out) + "\n"
    if os.environ.get("REWRITE") == "1" and actual != text:
        path.write_text(actual)
        return actual, actual
    return text, actual
