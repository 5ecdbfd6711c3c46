"""Smoke test of `python -m monitor.bench` on a tiny budget, run as a user would."""

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_prints_table_and_machine_readable_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "monitor.bench", "episodes=6", "alpha=0.5", "repeats=1", "numpy_frames=1"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "FAILSCOPE_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ms_per_frame: [\d.]+  speedup_vs_pot: [\d.]+", last), last
    assert "our OT vs POT: max relative difference" in result.stdout
