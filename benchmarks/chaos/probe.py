"""The harness's only way to reach the lab's 10.x addresses: a helper that runs inside the client
namespace (`ip netns exec NS python -m benchmarks.chaos.probe`), reads one JSON request per stdin
line `{"method", "url", "body", "timeout"}` and answers one JSON line `{"status", "body"}` or
`{"error"}`. The harness (root namespace) talks to it through pipes only.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

from urllib.parse import urlsplit

from benchmarks.chaos.nsguard import host_allowed, require_private_netns
from raftlog.testing.cluster import HttpError, http_json


def _serve() -> None:
    require_private_netns("probe")
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if not host_allowed(urlsplit(req["url"]).hostname or ""):
                raise PermissionError(f"host of {req['url']} not allowed here")
            try:
                out: dict[str, Any] = {"status": 200, "body": http_json(
                    req.get("method", "GET"), req["url"], req.get("body"),
                    timeout_s=float(req.get("timeout", 2.0)))}
            except HttpError as exc:
                out = {"status": exc.status, "body": exc.body}
        except Exception as exc:  # connection refused, timeout, bad JSON: the harness decides
            out = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


class Probe:
    """Harness side: `Probe(["ip","netns","exec",ns], python, cwd)`; `.call("GET", url)`."""

    def __init__(self, prefix: list[str], python: str, cwd: str):
        self.proc = subprocess.Popen(prefix + [python, "-m", "benchmarks.chaos.probe"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=cwd, bufsize=1)
        self.lock = threading.Lock()

    def call(self, method: str, url: str, body: Any = None, timeout: float = 2.0) -> dict:
        with self.lock:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(json.dumps({"method": method, "url": url, "body": body,
                                              "timeout": timeout}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            return {"error": "probe exited"}
        return json.loads(line)

    def get(self, url: str, timeout: float = 2.0) -> Any:
        r = self.call("GET", url, timeout=timeout)
        if "error" in r or r.get("status", 500) >= 400:
            raise ConnectionError(r.get("error") or f"{r.get('status')} {r.get('body')}")
        return r["body"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin
                self.proc.stdin.close()
                self.proc.wait(3)
            except Exception:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    _serve()
