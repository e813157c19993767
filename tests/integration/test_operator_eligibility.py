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

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client

from .operator_harness import Stack, first_node_stack, wait_until

HOSTNAME = "kubernetes.io/hostname"


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        {"home": "8Gi", "tainted": "32Gi", "cordoned": "32Gi", "eligible": "6Gi"},
        {"web": {"startup": "1Gi", "maximum": "4Gi"}},
    )


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

    done = world.grown_by_migration("web")
    everything = world.migrations()
    assert not [m for m in everything if m.get("status", {}).get("phase") == "Failed"]
    for m in everything:  # dynamem made every one, pinned to the eligible node
        assert m["metadata"]["labels"].get("dynamem.io/migration") == "true"
        assert m["spec"]["addedNodeSelector"] == {HOSTNAME: eligible}
    vmi = world.vmi("web")
    assert vmi["status"]["nodeName"] == eligible
    assert world.guest("web") == world.has("web")
    assert not any(e["reason"] == "MemoryChangeReverted" for e in world.events("web"))
    assert done
