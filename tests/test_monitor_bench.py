"""Smoke test of `python -m monitor.bench` on its defaults (policy=scripted) and a tiny budget, run as a user would."""

import os
import re
import subprocess
import sys

import pytest

from monitor.bench import AGREEMENT

LAST_LINE = re.compile(r"ms_per_frame: ([\d.]+)  speedup_vs_pot: ([\d.]+) \(range ([\d.]+)–([\d.]+)\)")


@pytest.mark.slow  # a benchmark script end to end; POT agreement is checked in test_monitor_ot
def test_bench_defaults_agree_with_pot_and_end_with_machine_readable_line(tmp_path):
    budget = ["episodes=6", "alpha=0.5", "frames=3", "repeats=2", "numpy_frames=1"]
    result = subprocess.run(
        [sys.executable, "-m", "monitor.bench", *budget],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "FAILSCOPE_CACHE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, lines[-1]
    ms_per_frame, speedup, low, high = map(float, match.groups())
    assert ms_per_frame > 0 and 0 < low <= speedup <= high
    agreement = re.search(r"at matched convergence .*max relative difference ([\d.e+-]+) over 3 frames", result.stdout)
    assert agreement, result.stdout[-3000:]
    assert float(agreement.group(1)) <= AGREEMENT
