"""Where a VM may go, end to end: the real API server, kube-scheduler and kwok, the KubeVirt v1.7.0 stand-in,
Prometheus and the operator process with its default policy (the cluster plan).

A paging VM on its node and three others it could move to: a large idle node with a ``NoSchedule`` taint it
does not tolerate, a large idle node that is cordoned, and a smaller one the scheduler would take. The plan
prefers the node with the most room, so without reading the scheduler's filters it would pick a large one,
whose target pod would stay Pending until KubeVirt fails the migration. dynamem reads them
(``controller/eligibility.py``): its only migration is pinned to the eligible node, the scheduler binds the
target pod there, and no migration fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI
from dynamem.sim.scenario import parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, wait_until

HOSTNAME = "kubernetes.io/hostname"


@pytest.fixture
def stack(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[tuple[Stack, list[str]]]:
    nodes = [unique_name(role) for role in ("home", "tainted", "cordoned", "eligible")]
    memory = ("8Gi", "32Gi", "32Gi", "6Gi")
    scenario = parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": n, "memory": m} for n, m in zip(nodes, memory, strict=True)],
            "vms": [{"name": "web", "node": nodes[0], "startup": "1Gi", "maximum": "4Gi"}],
            "demand": {"web": ["512Mi"]},
        }
    )
    made = Stack(control_plane, prometheus, namespace, scenario)
    yield made, nodes
    made.close()


def migrations(stack: Stack) -> list[Mapping[str, Any]]:
    found = stack.custom.list_namespaced_custom_object(
        "kubevirt.io", "v1", stack.namespace, "virtualmachineinstancemigrations"
    )
    return list(found["items"])


def test_a_tainted_and_a_cordoned_idle_node_are_never_chosen_the_vm_goes_to_the_eligible_one(
    stack: tuple[Stack, list[str]],
) -> None:
    world, (_home, tainted, cordoned, eligible) = stack
    wait_until("web running", lambda: world.has("web"), timeout=60)
    core = k8s_client.CoreV1Api(world.api)
    core.patch_node(
        tainted, {"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}
    )
    core.patch_node(cordoned, {"spec": {"unschedulable": True}})
    world.set_demand(web=1.2)  # one multiplicative step (1.5Gi) covers it
    world.start_operator()

    def moved() -> list[Mapping[str, Any]] | None:
        done = [m for m in migrations(world) if m.get("status", {}).get("phase") == "Succeeded"]
        return done if (world.has("web") or 0) > GI and done else None

    try:
        done = wait_until("web grown by a migration", moved, timeout=90, every=0.5)
    except AssertionError:
        logs = world.operator.logs()[-6000:] if world.operator else ""
        raise AssertionError(f"not grown: {migrations(world)}\n{logs}") from None
    everything = migrations(world)
    assert not [m for m in everything if m.get("status", {}).get("phase") == "Failed"]
    for m in everything:  # dynamem made every one, pinned to the eligible node
        assert m["metadata"]["labels"].get("dynamem.io/migration") == "true"
        assert m["spec"]["addedNodeSelector"] == {HOSTNAME: eligible}
    vmi = world.custom.get_namespaced_custom_object(
        "kubevirt.io", "v1", world.namespace, "virtualmachineinstances", "web"
    )
    assert vmi["status"]["nodeName"] == eligible
    assert world.guest("web") == world.has("web")
    assert not any(e["reason"] == "MemoryChangeReverted" for e in world.events("web"))
    assert done
