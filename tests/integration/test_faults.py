"""The short fault suite (``bench/faults.py --short``) as CI runs it: every fault converges, nothing breaks.

The suite starts its own control plane, Prometheus, KubeVirt stand-in and operator replicas, injects each
fault once (the leader SIGKILLed mid-round three times), and its checker reads the API server throughout:
no violation may happen, and every fault must converge within its budget (two rounds, plus the Lease's expiry
when the leader was lost, one scrape and one migration).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "faults.py"


@pytest.mark.timeout(900)
def test_short_fault_suite_has_no_violations_and_converges() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--short"], capture_output=True, text=True, timeout=880, check=False
    )
    output = done.stdout + done.stderr[-4000:]
    summary = re.search(
        r"faults: injected=(\d+) violations=(\d+) converged_within_2_rounds=(\d+)/(\d+)", output
    )
    assert summary is not None, output
    injected, violations, converged, total = map(int, summary.groups())
    assert injected >= 9, output
    assert violations == 0, output
    assert total == injected and converged == injected, output
    assert done.returncode == 0, output
