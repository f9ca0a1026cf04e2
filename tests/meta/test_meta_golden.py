"""Golden scripts: every file in testdata/ is a sequence of commands with the exact results and
printed state they must produce (see metatest_golden.py for the format; REWRITE=1 regenerates).
Goal: pin the state machine's decisions (epochs, CAS outcomes, elections) so any change shows
up as a reviewed diff."""
from __future__ import annotations

from pathlib import Path

import pytest

from metatest_golden import run_file

FILES = sorted((Path(__file__).parent / "testdata").glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden(path: Path) -> None:
    expected, actual = run_file(path)
    assert actual == expected


def test_golden_files_exist() -> None:
    assert len(FILES) >= 5
