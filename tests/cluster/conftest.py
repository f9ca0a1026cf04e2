import pytest

from raftlog.testing.cluster import ProcessCluster


@pytest.fixture
def cluster3(tmp_path):
    """A running 3-node cluster of real processes; every process is killed afterwards."""
    c = ProcessCluster(str(tmp_path / "c"), 3)
    try:
        c.start()
        c.wait_ready(40)
        yield c
    finally:
        c.stop()
