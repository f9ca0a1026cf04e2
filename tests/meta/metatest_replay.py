"""Replays a fixed, seeded command list through MetadataState and prints the snapshot as hex.

Run under different PYTHONHASHSEED values: identical output proves apply() does not depend on
str hash order (style B4 habit 5). Imported by the in-process tests for the same commands.
"""
from __future__ import annotations

import random
import sys

from raftlog.meta import commands as C
from raftlog.meta.state import MetadataState


def command_list(seed: int = 7, n: int = 400) -> list[bytes]:
    """A busy history: brokers come and go, topics with configs, ISR churn, groups."""
    rng = random.Random(seed)
    out = []
    brokers = list(range(1, 7))
    epochs: dict[int, int] = {}
    for b in brokers:
        out.append(C.register_broker(b, f"host-{b}", 9000 + b, f"inc-{b}-0", 1000 + b))
        epochs[b] = len(epochs) + 1
        out.append(C.unfence_broker(b, epochs[b]))
    names = [f"topic.{w}-{i}" for i, w in enumerate(("alpha", "beta", "gamma", "delta", "eps"))]
    for i, name in enumerate(names):
        reps = [[brokers[(p + k) % 6] for k in range(3)] for p in range(4)]
        cfg = {f"k{j}.{name}": str(rng.randrange(100)) for j in range(5)}
        if i % 2 or i == 0:     # topics 2 and 4 have no override: the carried default decides
            cfg["unclean.leader.election.enable"] = "true" if i % 2 else "false"
        out.append(C.create_topic(name, f"id-{name}", reps, cfg))
    next_epoch = len(epochs) + 1
    for step in range(n):
        r = rng.random()
        b = rng.choice(brokers)
        # A controller's config default for unclean election (format 2) on every third step.
        unclean = step % 3 == 0
        if r < 0.15:
            out.append(C.fence_broker(b, epochs[b], unclean_default=unclean))
        elif r < 0.3:
            out.append(C.unfence_broker(b, epochs[b], unclean_default=unclean))
        elif r < 0.36:
            out.append(C.register_broker(b, f"host-{b}", 9000 + b, f"inc-{b}-{step}", step))
            epochs[b] = next_epoch
            next_epoch += 1
        elif r < 0.6:
            name = rng.choice(names)
            p = rng.randrange(4)
            isr = sorted(rng.sample(brokers, rng.randrange(1, 4)))
            # A guessed epoch: some of these apply, most are stale; both paths get exercised.
            out.append(C.change_partition(name, p, rng.randrange(6), rng.choice(isr + [-1]), isr))
        elif r < 0.7:
            name = rng.choice(names)
            out.append(C.alter_topic_config(name, set_keys={f"x.{rng.randrange(9)}": str(step)},
                                            delete_keys=[f"k{rng.randrange(5)}.{name}"],
                                            unclean_default=unclean))
        elif r < 0.8:
            g = f"group-{rng.randrange(4)}"
            members = {f"m-{rng.randrange(50)}-{k}": [[rng.choice(names), k]] for k in range(3)}
            out.append(C.set_group_assignment(g, step + 1, rng.randrange(3), members, "range"))
        elif r < 0.85:
            out.append(C.allocate_producer_ids(rng.randrange(1, 1000)))
        elif r < 0.9:
            out.append(C.noop())
        else:
            out.append(C.elect_leaders([C.partition_change(
                rng.choice(names), rng.randrange(4), rng.randrange(6), b, [b])
                for _ in range(3)]))
    return out


def replay(blobs: list[bytes]) -> MetadataState:
    s = MetadataState()
    for blob in blobs:
        s.apply(blob)
    return s


if __name__ == "__main__":
    sys.stdout.write(replay(command_list()).snapshot().hex() + "\n")
