"""A short Jepsen-style run in network namespaces (3 nodes, kill + partition, fixed seed):
fails on any anomaly. Skips only where namespaces cannot be built (not root, no `ip netns`)."""
import pytest

from benchmarks.chaos import netlab
from benchmarks.chaos.report import summary_lines
from benchmarks.chaos.runner import Run, RunConfig

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(150)]


def test_short_chaos_run_kill_and_partition_has_no_anomaly(tmp_path):
    why = netlab.preflight()
    if why:
        pytest.skip(f"chaos run needs network namespaces: {why}")
    err = netlab.ensure_nft()
    if err:
        pytest.skip(f"chaos run needs nftables: {err}")
    cfg = RunConfig(nodes=3, nemesis="kill,partition", time=36, seed=11, partitions=3,
                    rate=150, results=str(tmp_path / "results"), quiet=True,
                    hold=(3.0, 5.0), gap=(2.0, 4.0))
    res = Run(cfg).run()
    text = "\n".join(summary_lines(res))
    assert len(res["faults"]) >= 2, text
    assert res["check"]["ok"] > 500, text
    assert res["check"]["valid"], text
    assert res["replica_convergence_s"] is not None, text
