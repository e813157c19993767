"""`make demo` keeps working: the whole demo (its own control plane, Prometheus, simulator and operator
process) plays the seed's workday, reaches the seed's numbers, writes its chart and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_plays_the_seed_workday(tmp_path: Path) -> None:
    chart = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, "-m", "dynamem.cli", "demo", "--out", str(chart), "--step-seconds", "20"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in (
        "step 0: finance 1, sales 1, engineering 1 GiB = the seed",
        "step 1: finance 3, sales 1, engineering 2 GiB = the seed",
        "step 2: finance 2, sales 1, engineering 3.5, service 1 GiB = the seed",
    ):
        assert line in result.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
