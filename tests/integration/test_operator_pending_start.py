"""A VM started where no node has room waits with its launcher pod Pending, and dynamem makes room for it, end
to end: the real API server, kube-scheduler and kwok, the KubeVirt v1.7.0 stand-in, Prometheus and the
operator process.

``home`` (4Gi) holds ``web`` (2Gi) and ``app`` (1Gi), ``side`` (3Gi) holds ``db`` (2Gi): 1Gi free on each, and
none of them may shrink (each is at the memory it booted with). ``big`` (2Gi) is started: the scheduler finds
no node for its launcher pod, which stays Pending. The plan keeps a hole for a VM waiting to start, or makes
one by moving the smallest VM whose leaving frees it (``policy/cluster.py``, ``_room_for_start``): ``app``
moves to ``side``, and the scheduler binds big's launcher on ``home``. This needs the operator to see pods
that have no node yet, which its view of the cluster once left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s_client

from dynamem.kubevirt_sim.controller import START_NODE_ANNOTATION
from dynamem.sim.scenario import parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, wait_until


@pytest.fixture
def stack(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[tuple[Stack, str, str]]:
    home, side = unique_name("home"), unique_name("side")
    scenario = parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": home, "memory": "4Gi"}, {"name": side, "memory": "3Gi"}],
            "vms": [
                {"name": "web", "node": home, "startup": "2Gi", "maximum": "2Gi"},
                {"name": "app", "node": home, "startup": "1Gi", "maximum": "1Gi"},
                {"name": "db", "node": side, "startup": "2Gi", "maximum": "2Gi"},
                {"name": "big", "node": side, "startup": "2Gi", "maximum": "2Gi"},
            ],
            "demand": {"web": ["512Mi"], "app": ["512Mi"], "db": ["512Mi"], "big": [None]},
        }
    )
    world = Stack(control_plane, prometheus, namespace, scenario)
    try:
        yield world, home, side
    finally:
        world.close()


def test_room_is_made_for_a_vm_whose_launcher_waits_to_start(stack: tuple[Stack, str, str]) -> None:
    world, home, side = stack
    for vm in ("web", "app", "db"):
        wait_until(f"{vm} running", lambda vm=vm: world.has(vm), timeout=60)
    # big starts where the scheduler puts it (the scenario's start node would bind its pod)
    world.custom.patch_namespaced_custom_object(
        "kubevirt.io",
        "v1",
        world.namespace,
        "virtualmachines",
        "big",
        {"metadata": {"annotations": {START_NODE_ANNOTATION: None}}, "spec": {"runStrategy": "Always"}},
    )
    world.set_demand(big=0.5)
    core = k8s_client.CoreV1Api(world.api)

    def waiting() -> bool:
        pods = core.list_namespaced_pod(world.namespace, label_selector="kubevirt.io=virt-launcher").items
        return any(
            p.metadata.annotations.get("kubevirt.io/domain") == "big" and not p.spec.node_name for p in pods
        )

    wait_until("big's launcher Pending: no node has 2Gi", waiting, timeout=60)
    world.start_operator()

    wait_until("big running", lambda: world.has("big"), timeout=120)
    assert world.vmi("big")["status"]["nodeName"] == home
    assert world.vmi("app")["status"]["nodeName"] == side  # moved by dynamem to make the room
    (moved,) = world.migrations()
    assert moved["metadata"]["labels"].get("dynamem.io/migration") == "true"
    assert moved["spec"]["vmiName"] == "app"
    world.check_kubevirt_invariants()
