"""Refuse to talk to the lab from a namespace where 10.x could leave the machine.

Two checks, both must pass: the current network namespace is not the harness's root one (the
harness exports its inode as RAFTLOG_CHAOS_ROOT_NETNS), and it has no default route (the lab's
namespaces have none, so a wrong address fails at once instead of being routed out).
"""
from __future__ import annotations

import os
import sys

ENV = "RAFTLOG_CHAOS_ROOT_NETNS"


def current_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def has_default_route() -> bool:
    try:
        with open("/proc/net/route") as fh:
            next(fh, None)
            for line in fh:
                f = line.split()
                if len(f) > 2 and f[1] == "00000000":
                    return True
    except OSError:
        return True
    return False


LOOPBACK_ENV = "RAFTLOG_CHAOS_LOOPBACK"


def loopback_mode() -> bool:
    """The no-namespace fallback: everything on 127.0.0.1; callers must refuse other hosts."""
    return os.environ.get(LOOPBACK_ENV) == "1"


def host_allowed(host: str) -> bool:
    if loopback_mode():
        return host.startswith("127.")
    return True   # inside a lab namespace without a default route: nothing can leave


def unsafe_reason() -> str | None:
    if loopback_mode():
        return None
    root = os.environ.get(ENV)
    if not root:
        return f"{ENV} is not set (start through the harness)"
    if current_netns() == root:
        return "this is the root network namespace"
    if has_default_route():
        return "this namespace has a default route"
    return None


def require_private_netns(what: str) -> None:
    why = unsafe_reason()
    if why:
        sys.stderr.write(f"{what}: refusing to run: {why}; 10.x addresses could leave the "
                         "machine (start it with `ip netns exec <lab namespace>`)\n")
        sys.exit(3)
