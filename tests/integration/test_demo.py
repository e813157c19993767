"""`make demo` keeps working: the whole demo (its own control plane with kube-scheduler and kwok, Prometheus,
the KubeVirt stand-in and the operator process) plays the seed's workday on three nodes, checks KubeVirt's
invariants (every change a move to another node, launcher requests never above a node's allocatable memory,
every VM ending with at least its demand), shows where the VMs went, writes its chart and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_plays_the_seed_workday_on_kubevirt(tmp_path: Path) -> None:
    chart = tmp_path / "demo.png"
    result = subprocess.run(
        [sys.executable, "-m", "dynamem.cli", "demo", "--out", str(chart), "--step-seconds", "20"],
        capture_output=True,
        text=True,
        timeout=420,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "KubeVirt invariant broken" not in out
    assert "where the VMs went (every change a live migration):" in out
    moves = re.findall(
        r"^\s+\+\s*[\d.]+s (\w+): (host-[abc]) [\d.]+ GiB -> (host-[abc]) [\d.]+ GiB$", out, re.M
    )
    assert moves, out[-3000:]
    assert all(source != target for _, source, target in moves)  # every change left its node
    assert {vm for vm, _, _ in moves} >= {"finance", "engineering"}  # the two that grew during the day
    assert re.search(r"migrations: \d+ succeeded, 0 failed", out)
    assert "end of the day: every VM has at least its demand" in " ".join(out.split())
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
