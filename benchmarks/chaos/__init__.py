"""Jepsen-style chaos harness for raftlog: a cluster in network namespaces, composable nemeses,
an operation history recorded by workload clients inside a namespace, and a pure checker.

`python -m benchmarks.chaos --nodes 3 --nemesis kill,partition --time 60 --seed 7`

Modules: netlab (namespaces, bridge, nft faults), looplab and linkproxy (the fallback without
namespaces: 127.0.0.1 and a TCP proxy per link, with link faults), nscluster (node processes inside namespaces),
probe (the only way the harness reaches 10.x addresses: a helper process inside the client
namespace), nemesis (seeded fault schedule), workload (producers/consumers, history as JSON lines),
replicas (byte comparison of the replicas' segment files), checker (anomalies, pure),
report (summary, JSON, PNG), runner (one run end to end).
"""
