"""Pod anti-affinity between VMs, end to end: the real API server, kube-scheduler (its ``InterPodAffinity``
filter) and kwok, the KubeVirt v1.7.0 stand-in, Prometheus and the operator process with its default policy.

Two database VMs that must never share a node (a required pod anti-affinity on ``app=db`` over
``kubernetes.io/hostname``, which KubeVirt copies to their launcher pods and migration targets): ``db-a``
runs on ``near``, ``db-b`` pages on ``home``. ``near`` has room for ``db-b``'s grow and less than ``far``,
so a plan that packs bins and does not read inter-pod affinity picks ``near``: the scheduler refuses the
target pod there, it stays Pending and KubeVirt fails the migration. dynamem reads the anti-affinity
(``kube/pod_affinity.py``, ``controller/eligibility.py``) and pins its only migration to ``far``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client as k8s_client

from dynamem.sim.scenario import parse_scenario

from .operator_harness import Stack, wait_until

HOSTNAME = "kubernetes.io/hostname"
DB = {"app": "db"}
ANTI_DB = {
    "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": DB}, "topologyKey": HOSTNAME}
        ]
    }
}


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, unique_name: Callable[[str], str]
) -> Iterator[tuple[Stack, list[str]]]:
    nodes = [unique_name(role) for role in ("home", "near", "far")]
    home, near, _far = nodes
    scenario = parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": n, "memory": m} for n, m in zip(nodes, ("4Gi", "8Gi", "16Gi"), strict=True)],
            "vms": [
                {"name": "db-a", "node": near, "startup": "1Gi", "maximum": "4Gi"},
                {"name": "db-b", "node": home, "startup": "1Gi", "maximum": "4Gi"},
            ],
            "demand": {"db-a": ["512Mi"], "db-b": ["512Mi"]},
        }
    )
    world = Stack(
        request.getfixturevalue("control_plane"),
        request.getfixturevalue("prometheus"),
        request.getfixturevalue("namespace"),
        scenario,
    )
    try:
        yield world, nodes
    finally:
        world.close()


def test_a_vm_is_never_sent_next_to_a_vm_it_is_anti_affine_to(stack: tuple[Stack, list[str]]) -> None:
    world, (_home, near, far) = stack
    wait_until("both running", lambda: world.has("db-a") and world.has("db-b"), timeout=60)
    core = k8s_client.CoreV1Api(world.api)
    # The databases' labels and terms, as their VM templates would give them: on both VMIs (each migration
    # target is rendered from its VMI) and on db-a's running launcher pod, which db-b's target must avoid.
    for name in ("db-a", "db-b"):
        world.custom.patch_namespaced_custom_object(
            "kubevirt.io",
            "v1",
            world.namespace,
            "virtualmachineinstances",
            name,
            {"metadata": {"labels": DB}, "spec": {"affinity": ANTI_DB}},
        )
    (launcher,) = core.list_namespaced_pod(world.namespace, label_selector="vm.kubevirt.io/name=db-a").items
    assert launcher.spec.node_name == near
    core.patch_namespaced_pod(launcher.metadata.name, world.namespace, {"metadata": {"labels": DB}})
    world.set_demand(**{"db-b": 1.2})  # paging at 1Gi: one grow covers it
    world.start_operator()

    done = world.grown_by_migration("db-b")
    everything = world.migrations()
    assert not [m for m in everything if m.get("status", {}).get("phase") == "Failed"], everything
    for m in everything:  # dynamem made every one, pinned to the node the scheduler lets db-b's target go to
        assert m["metadata"]["labels"].get("dynamem.io/migration") == "true"
        assert m["spec"]["addedNodeSelector"] == {HOSTNAME: far}
    assert world.vmi("db-b")["status"]["nodeName"] == far
    assert world.vmi("db-a")["status"]["nodeName"] == near
    assert done
