"""A hugepage-backed VM grows where hugepages have room, end to end: the real API server, kube-scheduler and
kwok, the KubeVirt v1.7.0 stand-in, Prometheus and the operator process (the cluster plan).

KubeVirt v1.7.0 requests a hugepage VM's guest as ``hugepages-<pageSize>`` and only the overhead as
``memory`` (``pkg/virt-controller/services/renderresources.go``, ``WithHugePages``); the scheduler fits each
against the node's own allocatable. A paging 2Mi-hugepage VM and two nodes to move to: "bare", with some
memory and no hugepages, and "paged", with more memory and hugepages to spare. Counted against ``memory``
the plan would pick "bare" (the fuller node, as a best fit does), where the target pod never fits; counted
per resource it picks "paged".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI, quantity_bytes

from .operator_harness import Stack, first_node_stack, wait_until

HOSTNAME = "kubernetes.io/hostname"
PAGES = "hugepages-2Mi"


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        {"home": "8Gi", "bare": "4Gi", "paged": "16Gi"},
        {"web": {"startup": "1Gi", "maximum": "4Gi", "hugepage": "2Mi"}},
    )


def give_hugepages(core: k8s_client.CoreV1Api, node: str, amount: str) -> None:
    """Hugepages reserved on the node, as a kubelet reports them in capacity and allocatable."""
    status = core.read_node_status(node).status
    core.patch_node_status(
        node,
        {
            "status": {
                "capacity": {**status.capacity, PAGES: amount},
                "allocatable": {**status.allocatable, PAGES: amount},
            }
        },
    )
    wait_until(
        f"{node} has {amount} of {PAGES}", lambda: core.read_node_status(node).status.allocatable.get(PAGES)
    )


def test_a_hugepage_vm_grows_on_the_node_with_hugepages_not_the_one_with_memory(
    stack: tuple[Stack, list[str]],
) -> None:
    world, (home, _bare, paged) = stack
    core = k8s_client.CoreV1Api(world.api)
    give_hugepages(core, home, "2Gi")
    give_hugepages(core, paged, "8Gi")
    wait_until("web running", lambda: world.has("web"), timeout=60)
    launcher = core.list_namespaced_pod(world.namespace).items[0]
    requests = launcher.spec.containers[0].resources.requests
    assert requests[PAGES] == "1Gi" and quantity_bytes(requests["memory"]) < GI  # the guest is in hugepages
    world.set_demand(web=1.2)
    world.start_operator()

    world.grown_by_migration("web")
    everything = world.migrations()
    assert not [m for m in everything if m.get("status", {}).get("phase") == "Failed"]
    assert all(m["spec"]["addedNodeSelector"] == {HOSTNAME: paged} for m in everything)
    vmi = world.vmi("web")
    assert vmi["status"]["nodeName"] == paged
    target = core.read_namespaced_pod(vmi["status"]["migrationState"]["targetPod"], world.namespace)
    assert quantity_bytes(target.spec.containers[0].resources.requests[PAGES]) == world.has("web")
