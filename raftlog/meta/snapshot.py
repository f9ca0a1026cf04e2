"""The canonical metadata snapshot: a MetadataView as deterministic msgpack bytes, and back.

Owns: the snapshot format. Every map is written as a list sorted by key and every record as a
fixed-order list, so equal views give equal bytes on every node and under every PYTHONHASHSEED
(tests compare them byte for byte). Pure: imports msgpack and meta/view only.
"""
from __future__ import annotations

from types import MappingProxyType

import msgpack

from raftlog.meta.view import (BrokerInfo, GroupInfo, MetadataView, PartitionInfo, TopicInfo,
                               frozen_map)

SNAPSHOT_FORMAT = 1


def snapshot_bytes(v: MetadataView) -> bytes:
    brokers = [[b.broker_id, b.host, b.http_port, b.incarnation, b.epoch, b.fenced,
                b.registered_ms] for b in (v.brokers[i] for i in sorted(v.brokers))]
    topics = [[t.name, t.topic_id, [[k, t.config[k]] for k in sorted(t.config)],
               [[list(p.replicas), p.leader, p.leader_epoch, list(p.isr), p.partition_epoch]
                for p in t.partitions]]
              for t in (v.topics[n] for n in sorted(v.topics))]
    groups = [[g.group, g.generation, g.protocol,
               [[m, [list(tp) for tp in g.assignment[m]]] for m in sorted(g.assignment)]]
              for g in (v.groups[n] for n in sorted(v.groups))]
    blob: bytes = msgpack.packb([SNAPSHOT_FORMAT, v.version, v.next_producer_id,
                                 v.last_broker_epoch, brokers, topics, groups], use_bin_type=True)
    return blob


def view_from_snapshot(blob: bytes) -> MetadataView:
    """Rebuild a view from `snapshot_bytes`; raises ValueError if the blob is not one."""
    try:
        fmt, version, next_pid, last_epoch, brokers, topics, groups = msgpack.unpackb(
            blob, raw=False, use_list=True)
        if fmt != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {fmt!r}, expected {SNAPSHOT_FORMAT}")
        bmap = {}
        for bid, host, port, inc, epoch, fenced, reg_ms in brokers:
            bmap[bid] = BrokerInfo(bid, host, port, inc, epoch, bool(fenced), reg_ms)
        tmap = {}
        for name, tid, config, parts in topics:
            pinfos = tuple(PartitionInfo(name, i, tuple(reps), leader, le, tuple(isr), pe)
                           for i, (reps, leader, le, isr, pe) in enumerate(parts))
            tmap[name] = TopicInfo(name, tid, frozen_map({k: val for k, val in config}), pinfos)
        gmap = {}
        for group, gen, protocol, assignment in groups:
            gmap[group] = GroupInfo(group, gen, protocol, frozen_map(
                {m: tuple((t, p) for t, p in tps) for m, tps in assignment}))
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"not a metadata snapshot: {e!r:.200}") from None
    return MetadataView(version=version, brokers=MappingProxyType(bmap),
                        topics=MappingProxyType(tmap), groups=MappingProxyType(gmap),
                        next_producer_id=next_pid, last_broker_epoch=last_epoch)
