"""`python -m benchmarks.chaos.report RUN_DIR` redraws a finished run's plot."""
from __future__ import annotations

import importlib.util
import json
import os

from benchmarks.chaos import report


def _run_dir(tmp_path) -> str:
    d = tmp_path / "run"
    d.mkdir()
    t0 = 1000.0
    events = []
    for op in range(1, 41):
        events.append({"type": "invoke", "op": op, "process": "p0", "partition": 0,
                       "value": f"v{op}", "time": t0 + op * 0.1})
        events.append({"type": "ok", "op": op, "process": "p0", "partition": 0, "offset": op - 1,
                       "latency": 0.01, "time": t0 + op * 0.1 + 0.01})
    (d / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (d / "result.json").write_text(json.dumps({
        "name": "test-run", "t0": t0,
        "faults": [{"type": "nemesis", "f": "kill-leader", "targets": [1],
                    "start": t0 + 1, "end": t0 + 2}]}))
    return str(d)


def test_replot_draws_the_png_or_says_matplotlib_is_missing(tmp_path, capsys):
    d = _run_dir(tmp_path)
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    rc = report.main([d])
    out, err = capsys.readouterr()
    png = os.path.join(d, "plot.png")
    if have_mpl:
        assert rc == 0 and out.strip() == png
        with open(png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert rc == 1 and "matplotlib missing" in err and not os.path.exists(png)


def test_replot_of_a_missing_run_or_no_argument_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 1
    assert "cannot read the run" in capsys.readouterr().err
    assert report.main([]) == 2
    assert "usage" in capsys.readouterr().err
