"""`dynamem kubevirt-sim SCENARIO.yaml` as a person runs it: against a kubeconfig, creating the scenario's
nodes, VMs and VirtualMachineMemories, serving KubeVirt's guest metrics and walking the demand trace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml
from kubernetes import client as k8s_client

from dynamem.testing.controlplane import ControlPlane, free_port


def run_sim(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dynamem.cli", "kubevirt-sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_kubevirt_sim_plays_a_scenario(
    control_plane: ControlPlane,
    core_v1: k8s_client.CoreV1Api,
    custom_objects: k8s_client.CustomObjectsApi,
    namespace: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    node = unique_name("sim")
    scenario = tmp_path / "two.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "step": "1m",
                "nodes": [{"name": node, "memory": "8Gi"}],
                "vms": [
                    {"name": "web", "node": node, "startup": "1Gi", "maximum": "4Gi", "priority": "high"},
                    {"name": "batch", "node": node, "startup": "2Gi", "minimum": "1Gi", "maximum": "6Gi"},
                ],
                "demand": {"web": ["700Mi", "900Mi", "900Mi"], "batch": ["1Gi", None, None]},
            }
        )
    )
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)}
    sim = run_sim(
        str(scenario),
        "--namespace",
        namespace,
        "--metrics-port",
        str(port),
        "--speed",
        "20",
        "--exit-at-end",
        env=env,
    )
    try:
        metrics = ""
        deadline = time.monotonic() + 30
        while not ('name="batch"' in metrics and 'name="web"' in metrics) and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            time.sleep(0.2)
        assert (
            f'kubevirt_vmi_memory_available_bytes{{name="web",namespace="{namespace}",node="{node}"}}'
            in metrics
        )
        assert "kubevirt_vmi_memory_usable_bytes" in metrics
        out, _ = sim.communicate(timeout=60)
    finally:
        sim.kill()
    assert sim.returncode == 0, out
    assert f"guest metrics: http://127.0.0.1:{port}/metrics" in out

    allocatable = core_v1.read_node(node).status.allocatable["memory"]
    assert allocatable == "8Gi"
    vmm = custom_objects.get_namespaced_custom_object(
        "dynamem.io", "v1alpha1", namespace, "virtualmachinememories", "batch"
    )
    assert vmm["spec"] == {"startup": "2Gi", "minimum": "1Gi", "maximum": "6Gi", "buffer": 20, "priority": 50}
    web = custom_objects.get_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", "web"
    )
    batch = custom_objects.get_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachines", "batch"
    )
    assert web["spec"]["runStrategy"] == "Always"
    assert batch["spec"]["runStrategy"] == "Halted", "batch's demand turns null at step 1: it is stopped"
    assert web["spec"]["template"]["spec"]["domain"]["memory"] == {"guest": "1Gi", "maxGuest": "4Gi"}
    vmis = custom_objects.list_namespaced_custom_object(
        "kubevirt.io", "v1", namespace, "virtualmachineinstances"
    )
    running = {i["metadata"]["name"]: i["status"] for i in vmis["items"]}
    assert set(running) == {"web"}
    assert running["web"]["nodeName"] == node
    assert running["web"]["memory"]["guestAtBoot"] == "1Gi"


def _sim_refusing(tmp_path: Path, vm_node: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``dynamem kubevirt-sim`` on a one-VM scenario whose VM starts on ``vm_node`` (the node is ``n``),
    with ``extra`` arguments; it must refuse before connecting anywhere."""
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        f"step: 1m\nnodes: [{{name: n, memory: 8Gi}}]\n"
        f"vms: [{{name: a, node: {vm_node}, startup: 1Gi, maximum: 2Gi}}]\ndemand: {{a: [1Gi]}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "dynamem.cli", "kubevirt-sim", str(scenario), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    return result


def test_kubevirt_sim_bad_scenario_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _sim_refusing(tmp_path, "m")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "scenario.yaml" in lines[0] and "'a'" in lines[0], result.stderr


def test_kubevirt_sim_refuses_a_memory_overcommit_kubevirt_would_refuse(tmp_path: Path) -> None:
    result = _sim_refusing(tmp_path, "n", "--memory-overcommit", "0")
    assert result.stderr.strip() == "dynamem kubevirt-sim: --memory-overcommit 0: must be greater than 0"


def test_kubevirt_sim_refuses_a_guest_under_1gi_as_the_crd_would(tmp_path: Path) -> None:
    """Before, its VirtualMachineMemory was refused by the CRD's rules with a traceback (the nodes made)."""
    scenario = tmp_path / "small.yaml"
    scenario.write_text(
        "step: 1m\nnodes: [{name: n, memory: 8Gi}]\n"
        "vms: [{name: a, node: n, startup: 512Mi, maximum: 2Gi}]\ndemand: {a: [300Mi]}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "dynamem.cli", "kubevirt-sim", str(scenario)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        f"dynamem kubevirt-sim: {scenario}: vm 'a': field 'startup': 512Mi is under 1Gi; KubeVirt hotplugs "
        "memory only from 1Gi (the VirtualMachineMemory CRD refuses it too); the hyperv model (--model "
        "hyperv) takes it"
    ]


def test_kubevirt_sim_makes_a_missing_namespace_and_names_what_the_api_server_refuses(
    control_plane: ControlPlane,
    core_v1: k8s_client.CoreV1Api,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """A namespace that does not exist yet is made (it was a 404 traceback); an object the API server refuses
    (here a VM name that is no Kubernetes name) is one line naming it and the server's answer, exit 2."""
    namespace, node = unique_name("fresh"), unique_name("sim")
    scenario = tmp_path / "bad-name.yaml"
    scenario.write_text(
        f"step: 1m\nnodes: [{{name: {node}, memory: 8Gi}}]\n"
        f"vms: [{{name: Web_1, node: {node}, startup: 1Gi, maximum: 2Gi}}]\ndemand: {{Web_1: [1Gi]}}\n"
    )
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)}
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dynamem.cli",
                "kubevirt-sim",
                str(scenario),
                "--namespace",
                namespace,
                "--metrics-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert core_v1.read_namespace(namespace).metadata.name == namespace
    finally:
        with contextlib.suppress(k8s_client.ApiException):
            core_v1.delete_namespace(namespace)
        with contextlib.suppress(k8s_client.ApiException):  # made before the VM was refused
            core_v1.delete_node(node)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"dynamem kubevirt-sim: the API server refused VirtualMachineMemory {namespace}/Web_1: 422 "
    ), lines
    assert "Traceback" not in result.stdout + result.stderr
