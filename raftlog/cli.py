"""The `raftlog` command: topics, produce, consume, cluster status, node start.

Owns: argument parsing, choosing the bootstrap list (--bootstrap, else $RAFTLOG_BOOTSTRAP, else
the nodes of --config FILE, else 127.0.0.1:9091), printing tables (or JSON with --json), and the
promise that every failure ends as one line `error: ...` on stderr with a non-zero exit status,
never a traceback (set RAFTLOG_DEBUG=1 to see one). Uses only the public client API, plus
`raftlog.config` to read node addresses and `raftlog.launcher` for `node start`.

Exit status: 0 ok, 1 error (and `cluster status` of a cluster without a controller), 2 usage
error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any, Iterable, Sequence

DEFAULT_BOOTSTRAP = "127.0.0.1:9091"
ENV_BOOTSTRAP = "RAFTLOG_BOOTSTRAP"
ENV_DEBUG = "RAFTLOG_DEBUG"
DEFAULT_TIMEOUT_MS = 5_000
# produce: lines read from a pipe per read call, and records between back-pressure checks.
STDIN_CHUNK_BYTES = 64 * 1024
DRAIN_EVERY_RECORDS = 10_000
# consume: records asked per poll, and how long one poll waits.
CONSUME_POLL_RECORDS = 10_000
CONSUME_POLL_MS = 500


class CliError(Exception):
    """A user-facing failure detected by the CLI itself (bad flag combination, bad file)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Usage errors are one line too (argparse would print the whole usage first)."""
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


# -- argument parsing -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand must not overwrite a value given before it.
    common.add_argument("--bootstrap", "-b", default=argparse.SUPPRESS,
                        help=f"host:port,... (default: ${ENV_BOOTSTRAP}, else the nodes of "
                             f"--config, else {DEFAULT_BOOTSTRAP})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    common.add_argument("--timeout-ms", type=int, default=argparse.SUPPRESS,
                        help=f"bootstrap and request timeout (default {DEFAULT_TIMEOUT_MS})")

    ap = _Parser(prog="raftlog", parents=[common],
                 description="raftlog command line: topics, produce, consume, cluster, nodes.")
    ap.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                    help="cluster TOML; its nodes are the default bootstrap list")
    ap.add_argument("--verbose", "-v", action="store_true", help="log client activity")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    topic = sub.add_parser("topic", help="create, list, describe, alter, delete topics")
    tsub = topic.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    tsub.required = True
    p = tsub.add_parser("create", parents=[common], help="create a topic")
    p.add_argument("name")
    p.add_argument("--partitions", "-p", type=int, default=None)
    p.add_argument("--replication-factor", "-r", type=int, default=None)
    p.add_argument("--config", dest="configs", action="append", default=[], metavar="K=V",
                   help="topic config, repeatable (e.g. retention.ms=86400000)")
    tsub.add_parser("list", parents=[common], help="list topics")
    p = tsub.add_parser("describe", parents=[common], help="partitions, leaders, ISR, configs")
    p.add_argument("name")
    p = tsub.add_parser("delete", parents=[common], help="delete a topic")
    p.add_argument("name")
    p = tsub.add_parser("alter", parents=[common], help="change topic configs")
    p.add_argument("name")
    p.add_argument("--config", dest="configs", action="append", default=[], metavar="K=V",
                   help="set a config, repeatable")
    p.add_argument("--delete-config", action="append", default=[], metavar="K",
                   help="reset a config to the cluster default, repeatable")

    p = sub.add_parser("produce", parents=[common], help="send stdin lines as records")
    p.add_argument("topic")
    p.add_argument("--key-separator", default=None, metavar="SEP",
                   help="split each line at the first SEP into key and value")
    p.add_argument("--acks", choices=["all", "1", "0"], default="all")
    p.add_argument("--partition", type=int, default=None)
    p.add_argument("--linger-ms", type=int, default=5)

    p = sub.add_parser("consume", parents=[common], help="print records")
    p.add_argument("topic")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true",
                       help="start at the earliest offset (default: the end)")
    start.add_argument("--offset", type=int, default=None, help="start at this offset")
    start.add_argument("--timestamp", type=int, default=None, metavar="MS",
                       help="start at the first record with timestamp >= MS (epoch ms)")
    p.add_argument("--partition", type=int, default=None, help="only this partition")
    p.add_argument("--max-messages", type=int, default=None)
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep waiting for new records (default: stop at the current end)")
    p.add_argument("--format", choices=["plain", "json"], default="plain")
    p.add_argument("--print-key", action="store_true", help="plain format: key<TAB>value")
    p.add_argument("--group", default=None, metavar="GROUP",
                   help="join consumer group GROUP (starts at its committed offsets, else the "
                        "earliest; commits as it goes; implies --follow unless --max-messages)")

    group = sub.add_parser("group", help="list, describe, delete consumer groups; reset offsets")
    gsub = group.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    gsub.required = True
    gsub.add_parser("list", parents=[common], help="list groups")
    p = gsub.add_parser("describe", parents=[common],
                        help="state, generation, members, committed offsets and lag")
    p.add_argument("group")
    p = gsub.add_parser("delete", parents=[common], help="delete a group without members")
    p.add_argument("group")
    p = gsub.add_parser("reset-offsets", parents=[common],
                        help="set committed offsets (refused while the group has members)")
    p.add_argument("group")
    p.add_argument("--topic", action="append", default=None,
                   help="topic to reset (repeatable; default: every partition with an offset)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--to-earliest", action="store_true")
    how.add_argument("--to-latest", action="store_true")
    how.add_argument("--to-offset", type=int, default=None)
    how.add_argument("--to-datetime", default=None, metavar="ISO",
                     help="e.g. 2024-05-01T12:00:00 (local time) or with a +00:00 offset")
    how.add_argument("--shift-by", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="show the new offsets only")

    cluster = sub.add_parser("cluster", help="cluster status")
    csub = cluster.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    csub.add_parser("status", parents=[common],
                    help="nodes, controller, leaderless and under-replicated partitions")

    node = sub.add_parser("node", help="run raftlog nodes")
    nsub = node.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    nsub.required = True
    p = nsub.add_parser("start", help="start one node (--node-id) or every node of the config")
    p.add_argument("--config", dest="config_file", default=argparse.SUPPRESS, metavar="FILE")
    p.add_argument("--node-id", type=int, default=None)
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return ap


def resolve_bootstrap(args: argparse.Namespace) -> str:
    """--bootstrap, else $RAFTLOG_BOOTSTRAP, else the nodes of --config, else the default.
    Called before the event loop starts (it may read the config file)."""
    given = getattr(args, "bootstrap", None)
    if given:
        return given
    env = os.environ.get(ENV_BOOTSTRAP)
    if env:
        return env
    if args.config_file:
        from raftlog import config as config_mod
        cfg = config_mod.load(args.config_file)
        return ",".join(f"{n.host}:{n.http_port}" for n in cfg.nodes)
    return DEFAULT_BOOTSTRAP


def _parse_kv(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise CliError(f"--config expects KEY=VALUE, got {item!r}")
        out[k.strip()] = v.strip()
    return out


# -- output -----------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _ids(v: Any) -> str:
    return ",".join(str(i) for i in v or ())


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None, sort_keys=True, default=str))
    else:
        print(human)


# -- commands ---------------------------------------------------------------------------------
def _timeout(args: argparse.Namespace) -> int:
    return getattr(args, "timeout_ms", DEFAULT_TIMEOUT_MS)


def _admin(args: argparse.Namespace) -> Any:
    from raftlog.client.admin import Admin
    t = _timeout(args)
    return Admin(args.bootstrap, request_timeout_ms=t, bootstrap_timeout_ms=t)


async def cmd_topic(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        if args.action == "create":
            desc = await admin.create_topic(args.name, args.partitions, args.replication_factor,
                                            _parse_kv(args.configs) or None)
            _emit(args, desc, f"created topic {desc.get('name', args.name)} with "
                              f"{len(desc.get('partitions') or ())} partition(s)")
        elif args.action == "list":
            topics = await admin.list_topics()
            _emit(args, topics, table(
                ["NAME", "PARTITIONS", "RF", "INTERNAL"],
                [[t["name"], t.get("partitions"), t.get("replication_factor"),
                  "yes" if t.get("internal") else ""] for t in topics]))
        elif args.action == "describe":
            desc = await admin.describe_topic(args.name)
            _emit(args, desc, _describe_text(desc))
        elif args.action == "delete":
            out = await admin.delete_topic(args.name)
            _emit(args, out, f"deleted topic {args.name}")
        elif args.action == "alter":
            changes: dict[str, Any] = _parse_kv(args.configs)
            for k in args.delete_config:
                changes[k] = None
            if not changes:
                raise CliError("topic alter needs --config K=V or --delete-config K")
            desc = await admin.alter_configs(args.name, changes)
            _emit(args, desc, _describe_text(desc))
    return 0


def _describe_text(desc: dict[str, Any]) -> str:
    parts = desc.get("partitions") or []
    head = f"topic {desc.get('name')}  id {desc.get('id')}  partitions {len(parts)}"
    ptable = table(["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR"],
                   [[p.get("partition"), "none" if p.get("leader") in (None, -1) else p["leader"],
                     p.get("leader_epoch"), _ids(p.get("replicas")), _ids(p.get("isr"))]
                    for p in parts])
    ctable = table(["CONFIG", "VALUE", "SOURCE"],
                   [[c.get("name"), c.get("value"), c.get("source")]
                    for c in desc.get("config") or []])
    return f"{head}\n{ptable}\n\n{ctable}"


async def cmd_cluster_status(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        cluster = await admin.describe_cluster()
        topics = await admin.describe_topics()
    offline, under = [], []
    for t in topics:
        for p in t.get("partitions") or ():
            row = {"topic": t["name"], "partition": p.get("partition"), "leader": p.get("leader"),
                   "replicas": p.get("replicas") or [], "isr": p.get("isr") or []}
            if p.get("leader") in (None, -1):
                offline.append(row)
            elif len(row["isr"]) < len(row["replicas"]):
                under.append(row)
    data = {"cluster": cluster, "partitions_without_leader": offline,
            "under_replicated_partitions": under}
    brokers = cluster.get("brokers") or []
    lines = [f"cluster {cluster.get('cluster_id')}  controller "
             f"{cluster.get('controller') if cluster.get('controller') is not None else 'NONE'}"
             f"  metadata version {cluster.get('metadata_version')}",
             table(["NODE", "URL", "STATE", "EPOCH"],
                   [[b.get("id"), b.get("url") or f"http://{b.get('host')}:{b.get('http_port')}",
                     b.get("state"), b.get("epoch")] for b in brokers]),
             "",
             f"partitions: {sum(len(t.get('partitions') or ()) for t in topics)} in "
             f"{len(topics)} topic(s), {len(offline)} without leader, "
             f"{len(under)} under-replicated"]
    for title, rows in (("WITHOUT LEADER", offline), ("UNDER-REPLICATED", under)):
        if rows:
            lines += ["", title, table(["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"],
                                       [[r["topic"], r["partition"], r["leader"],
                                         _ids(r["replicas"]), _ids(r["isr"])] for r in rows])]
    _emit(args, data, "\n".join(lines))
    return 1 if cluster.get("controller") is None else 0


async def _stdin_lines() -> Any:
    """Lines of stdin, read in a worker thread so the event loop never blocks on input."""
    loop = asyncio.get_running_loop()
    stdin = sys.stdin.buffer
    interactive = stdin.isatty()
    while True:
        if interactive:
            line = await loop.run_in_executor(None, stdin.readline)
            lines = [line] if line else []
        else:
            lines = await loop.run_in_executor(None, stdin.readlines, STDIN_CHUNK_BYTES)
        if not lines:
            return
        yield lines


async def cmd_produce(args: argparse.Namespace) -> int:
    from raftlog.client.producer import Producer
    t = _timeout(args)
    acks: Any = "all" if args.acks == "all" else int(args.acks)
    sep = args.key_separator.encode() if args.key_separator else None
    handles = []
    async with Producer(args.bootstrap, acks=acks, linger_ms=args.linger_ms,
                        bootstrap_timeout_ms=t, max_block_ms=max(t, 10_000)) as p:
        # Fail before reading input when the topic does not exist.
        await p.client.wait_for_topic(args.topic, t)
        async for lines in _stdin_lines():
            for raw in lines:
                line = raw.rstrip(b"\n").rstrip(b"\r")
                key = None
                if sep is not None:
                    k, found, v = line.partition(sep)
                    if found:
                        key, line = k, v
                handles.append(p.send(args.topic, line, key=key, partition=args.partition))
                if len(handles) % DRAIN_EVERY_RECORDS == 0:
                    await p.drain()
        await p.flush()
    ranges: dict[int, list[int]] = {}
    for h in handles:
        md = await h  # raises the first delivery error
        r = ranges.setdefault(md.partition, [md.offset, md.offset])
        r[0], r[1] = min(r[0], md.offset), max(r[1], md.offset)
    data = {"topic": args.topic, "records": len(handles),
            "partitions": {str(k): {"first_offset": v[0], "last_offset": v[1]}
                           for k, v in sorted(ranges.items())}}
    where = "; ".join(f"partition {k} offsets {v[0]}-{v[1]}" if v[0] != v[1]
                      else f"partition {k} offset {v[0]}" for k, v in sorted(ranges.items()))
    _emit(args, data, f"produced {len(handles)} record(s) to {args.topic}"
                      + (f" ({where})" if where and acks != 0 else ""))
    return 0


def _text(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", "replace")


async def cmd_consume(args: argparse.Namespace) -> int:
    from raftlog.client.consumer import Consumer
    from raftlog.client.structs import TopicPartition
    t = _timeout(args)
    if args.max_messages is not None and args.max_messages < 1:
        raise CliError("--max-messages must be >= 1")
    if args.group is not None:
        return await _consume_group(args, t)
    async with Consumer(bootstrap_servers=args.bootstrap, auto_offset_reset="earliest",
                        bootstrap_timeout_ms=t, request_timeout_ms=max(t, 10_000)) as c:
        n = await c.client.wait_for_topic(args.topic, t)
        if args.partition is not None and not 0 <= args.partition < n:
            raise CliError(f"topic {args.topic} has partitions 0..{n - 1}, "
                           f"not {args.partition}")
        tps = [TopicPartition(args.topic, p)
               for p in ([args.partition] if args.partition is not None else range(n))]
        c.assign(tps)
        if args.from_beginning:
            await c.seek_to_beginning()
        elif args.offset is not None:
            for tp in tps:
                c.seek(tp, args.offset)
        elif args.timestamp is not None:
            found = await c.offsets_for_times({tp: args.timestamp for tp in tps})
            ends = await c.end_offsets(tps)
            for tp in tps:
                c.seek(tp, found[tp].offset if found[tp] is not None else ends[tp])
        else:
            await c.seek_to_end()
        ends = None if args.follow else await c.end_offsets(tps)
        left = args.max_messages
        while True:
            if ends is not None:
                todo = [tp for tp in tps if await c.position(tp) < ends[tp]]
                if not todo:
                    break
            else:
                todo = tps
            got = await c.getmany(*todo, timeout_ms=CONSUME_POLL_MS,
                                  max_records=min(left, CONSUME_POLL_RECORDS) if left
                                  else CONSUME_POLL_RECORDS)
            out = [_format_record(args, r) for recs in got.values() for r in recs
                   if ends is None or r.offset < ends[TopicPartition(r.topic, r.partition)]]
            if out:
                left = _print_lines(out, left)
            if left is not None and left <= 0:
                break
    return 0


def _print_lines(lines: list[str], left: int | None) -> int | None:
    """Print up to `left` lines (all when None); what is left to print afterwards."""
    if left is not None:
        lines = lines[:left]
        left -= len(lines)
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return left


def _format_record(args: argparse.Namespace, r: Any) -> str:
    if args.format == "json":
        return json.dumps({"topic": r.topic, "partition": r.partition, "offset": r.offset,
                           "timestamp": r.timestamp, "key": _text(r.key), "value": _text(r.value),
                           "headers": [[k, _text(v)] for k, v in r.headers]})
    if args.print_key:
        return f"{_text(r.key) or ''}\t{_text(r.value) or ''}"
    return _text(r.value) or ""


async def _consume_group(args: argparse.Namespace, t: int) -> int:
    """`consume --group G`: a group member; prints what it is assigned, commits as it goes."""
    from raftlog.client.consumer import Consumer
    if args.partition is not None or args.offset is not None or args.timestamp is not None:
        raise CliError("--group cannot be combined with --partition/--offset/--timestamp "
                       "(the group assigns partitions and starts at its committed offsets)")
    left = args.max_messages
    async with Consumer(bootstrap_servers=args.bootstrap, group_id=args.group,
                        auto_offset_reset="earliest", bootstrap_timeout_ms=t,
                        request_timeout_ms=max(t, 10_000), enable_auto_commit=True,
                        auto_commit_interval_ms=1_000) as c:
        await c.client.wait_for_topic(args.topic, t)
        c.subscribe([args.topic])
        while True:
            got = await c.getmany(timeout_ms=CONSUME_POLL_MS,
                                  max_records=min(left, CONSUME_POLL_RECORDS) if left
                                  else CONSUME_POLL_RECORDS)
            out = [_format_record(args, r) for recs in got.values() for r in recs]
            if out:
                left = _print_lines(out, left)
                await c.commit()
            if left is not None and left <= 0:
                break
    return 0


def _parse_datetime_ms(text: str) -> int:
    import datetime
    try:
        return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise CliError(f"--to-datetime {text!r} is not an ISO date/time "
                       "(e.g. 2024-05-01T12:00:00)") from None


async def cmd_group(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        if args.action == "list":
            groups = await admin.list_groups()
            _emit(args, groups, table(["GROUP", "GENERATION", "PROTOCOL", "MEMBERS"],
                                      [[g["group"], g["generation"], g["protocol"], g["members"]]
                                       for g in groups]))
        elif args.action == "describe":
            d = await admin.describe_group(args.group)
            hosts = {m["member_id"]: m for m in d.get("members") or ()}
            head = (f"group {d['group']}: state {d['state']}, generation {d['generation']}, "
                    f"protocol {d['protocol'] or '-'}, coordinator {d.get('coordinator_id')}")
            members = table(["MEMBER", "INSTANCE", "HOST", "CLIENT", "ASSIGNMENT"],
                            [[m["member_id"], m.get("group_instance_id") or "-", m["host"],
                              m.get("client_id") or "-",
                              " ".join(f"{t}-{p}" for t, p in m["assignment"]) or "-"]
                             for m in d.get("members") or ()])
            offs = table(["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "OWNER", "HOST"],
                         [[o["topic"], o["partition"],
                           o["offset"] if o["offset"] >= 0 else "-", o["log_end_offset"],
                           o["lag"] if o["lag"] is not None else "-", o["owner"] or "-",
                           hosts[o["owner"]]["host"] if o["owner"] in hosts else "-"]
                          for o in d["offsets"]])
            _emit(args, d, f"{head}\n\n{members}\n\n{offs}")
        elif args.action == "delete":
            res = await admin.delete_group(args.group)
            _emit(args, res, f"deleted group {args.group} ({res['offsets_deleted']} offsets)")
        elif args.action == "reset-offsets":
            new = await admin.reset_offsets(
                args.group, args.topic, to_earliest=args.to_earliest, to_latest=args.to_latest,
                to_offset=args.to_offset, shift_by=args.shift_by, dry_run=args.dry_run,
                to_datetime_ms=(_parse_datetime_ms(args.to_datetime)
                                if args.to_datetime else None))
            rows = [[tp.topic, tp.partition, off] for tp, off in sorted(new.items())]
            _emit(args, [{"topic": r[0], "partition": r[1], "offset": r[2]} for r in rows],
                  table(["TOPIC", "PARTITION", "NEW-OFFSET"], rows)
                  + ("\n(dry run: nothing committed)" if args.dry_run else ""))
    return 0


def cmd_node_start(args: argparse.Namespace) -> int:
    from raftlog import launcher
    argv = ["--log-level", args.log_level]
    if args.config_file:
        argv += ["--config", args.config_file]
    if args.node_id is not None:
        argv += ["--node-id", str(args.node_id)]
    return launcher.main(argv)


async def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "topic":
        return await cmd_topic(args)
    if args.command == "produce":
        return await cmd_produce(args)
    if args.command == "consume":
        return await cmd_consume(args)
    if args.command == "cluster":
        return await cmd_cluster_status(args)
    if args.command == "group":
        return await cmd_group(args)
    raise CliError(f"unknown command {args.command}")


def _one_line(exc: BaseException) -> str:
    from raftlog.errors import RaftlogError
    if isinstance(exc, RaftlogError):
        text = f"{exc.message} ({exc.code.name})"
    elif isinstance(exc, CliError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR,
                        format="raftlog: %(levelname)s %(name)s: %(message)s")
    lib_log = logging.getLogger("raftlog")
    saved_level = lib_log.level
    if not args.verbose:
        # The CLI reports failures itself, in one line; keep library warnings out of the way.
        lib_log.setLevel(logging.CRITICAL)
    try:
        if args.command == "node":
            return cmd_node_start(args)
        args.bootstrap = resolve_bootstrap(args)
        return asyncio.run(_dispatch(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): not an error; keep Python from complaining at exit.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:
        if os.environ.get(ENV_DEBUG):
            raise
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return 1
    finally:
        lib_log.setLevel(saved_level)  # main() may run in-process (tests, embedding)


if __name__ == "__main__":
    sys.exit(main())
