"""`make cluster` and `make cluster-down` (`python -m dynamem.testing.cluster`), as a person uses them: up
prints the export line, a second up is a no-op, kubectl works with the kubeconfig, down stops everything and a
second down is a no-op. Runs in its own DYNAMEM_CACHE so it never touches a cluster someone left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dynamem.testing.controlplane import binaries_dir


def cluster(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynamem.testing.cluster", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_cluster_up_and_down_are_idempotent(tmp_path: Path) -> None:
    env = {**os.environ, "DYNAMEM_CACHE": str(tmp_path), "DYNAMEM_CONTROLPLANE_BINARIES": str(binaries_dir())}
    try:
        up = cluster("up", env)
        assert up.returncode == 0, up.stdout + up.stderr
        kubeconfig = tmp_path / "cluster" / "kubeconfig"
        assert f"export KUBECONFIG={kubeconfig}" in up.stdout
        state = json.loads((tmp_path / "cluster" / "state.json").read_text())
        again = cluster("up", env)
        assert again.returncode == 0 and f"export KUBECONFIG={kubeconfig}" in again.stdout
        assert json.loads((tmp_path / "cluster" / "state.json").read_text())["pid"] == state["pid"]
        assert cluster("status", env).returncode == 0

        crds = subprocess.run(
            ["kubectl", "get", "crd", "-o", "name"],
            env={**env, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "virtualmachinememories.dynamem.io" in crds and "virtualmachines.kubevirt.io" in crds
    finally:
        down = cluster("down", env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not alive(state["pid"]), "the keeper and its servers are gone"
    assert cluster("status", env).returncode == 1
    second = cluster("down", env)
    assert second.returncode == 0 and "no local cluster is running" in second.stdout
