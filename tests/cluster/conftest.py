import pytest

from raftlog.testing.cluster import running_cluster


@pytest.fixture
def cluster3(tmp_path):
    """A running 3-node cluster of real processes; every process is killed afterwards."""
    with running_cluster(str(tmp_path / "c"), 3) as c:
        yield c
