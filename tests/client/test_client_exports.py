"""Goal: the public names resolve from `raftlog` and `raftlog.client`, and importing the
package (or config/errors) stays light: no aiohttp until a client class is used. Method:
resolve every exported name; import in a fresh interpreter and inspect sys.modules."""
import subprocess
import sys

import raftlog
import raftlog.client


def test_every_exported_name_resolves():
    for name in raftlog.client.__all__:
        assert getattr(raftlog.client, name) is not None, name
    for name in raftlog.__all__:
        assert getattr(raftlog, name) is not None, name
    assert raftlog.Producer is raftlog.client.Producer
    assert raftlog.errors.NotLeaderOrFollowerError.retriable


def test_import_is_lazy():
    code = ("import sys, raftlog, raftlog.config, raftlog.errors, raftlog.client, "
            "raftlog.client.partitioner\n"
            "assert 'aiohttp' not in sys.modules, 'aiohttp imported too early'\n"
            "assert 'raftlog.client.producer' not in sys.modules\n"
            "raftlog.TopicPartition\n"
            "assert 'aiohttp' not in sys.modules, 'structs must not pull aiohttp'\n"
            "raftlog.Producer\n"
            "assert 'aiohttp' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_client_never_imports_broker_internals():
    code = ("import sys, raftlog\n"
            "from raftlog.client import Producer, Consumer, Admin\n"
            "import raftlog.cli\n"
            "bad = [m for m in sys.modules if m.split('.')[:2] in (['raftlog', 'server'], "
            "['raftlog', 'meta'], ['raftlog', 'storage'], ['raftlog', 'replication'])]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
