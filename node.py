#!/usr/bin/env python3
"""Launch raftlog: `python node.py --config cluster.toml` starts every node of the file;
`--node-id N` runs one node in the foreground. See raftlog/launcher.py."""
import sys

from raftlog.launcher import main

if __name__ == "__main__":
    sys.exit(main())
