"""raftlog: a Kafka-class distributed commit log in Python, with Raft metadata and no ZooKeeper."""

__version__ = "0.1.0"
