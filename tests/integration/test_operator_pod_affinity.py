"""Pod anti-affinity and topology spread between VMs, end to end: the real API server, kube-scheduler (its
``InterPodAffinity`` and ``PodTopologySpread`` filters) and kwok, the KubeVirt v1.7.0 stand-in, Prometheus
and the operator process with its default policy.

Two database VMs that must not share a node, which KubeVirt copies to their launcher pods and migration
targets: ``db-a`` runs on ``near``, ``db-b`` pages on ``home``. ``near`` has room for ``db-b``'s grow and
less than ``far``, so a plan that packs bins and reads neither rule picks ``near``.

- A required pod anti-affinity on ``app=db`` over ``kubernetes.io/hostname``: the scheduler refuses the
  target pod on ``near``, it stays Pending and KubeVirt fails the migration.
- A ``DoNotSchedule`` topology spread over hostnames with ``maxSkew`` 1: the scheduler would bind a target
  pinned to ``near`` (the pin leaves it one domain to count, ``kube/topology_spread.py``), and the two
  databases would end on one node, the spread the user asked for broken.

dynamem reads both (``kube/pod_affinity.py``, ``kube/topology_spread.py``, ``controller/eligibility.py``) and
pins its only migration to ``far``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client as k8s_client

from dynamem.sim.scenario import parse_scenario

from .operator_harness import Stack, scenario_stack, wait_until

HOSTNAME = "kubernetes.io/hostname"
DB = {"app": "db"}
ANTI_DB = {
    "affinity": {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": DB}, "topologyKey": HOSTNAME}
            ]
        }
    }
}
SPREAD_DB = {
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": HOSTNAME,
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": DB},
        }
    ]
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
    for world in scenario_stack(request, scenario):
        yield world, nodes


@pytest.mark.parametrize("rule", [ANTI_DB, SPREAD_DB], ids=["anti-affinity", "topology-spread"])
def test_a_vm_is_never_sent_where_its_anti_affinity_or_spread_forbids(
    stack: tuple[Stack, list[str]], rule: dict[str, Any]
) -> None:
    world, (_home, near, far) = stack
    wait_until("both running", lambda: world.has("db-a") and world.has("db-b"), timeout=60)
    core = k8s_client.CoreV1Api(world.api)
    # The databases' labels and rule, as their VM templates would give them: on both VMIs (each migration
    # target is rendered from its VMI) and db-a's labels on its running launcher pod, which db-b's target
    # must avoid (the pod's own rule is not read here: db-b's rule refuses near on its own).
    for name in ("db-a", "db-b"):
        world.custom.patch_namespaced_custom_object(
            "kubevirt.io",
            "v1",
            world.namespace,
            "virtualmachineinstances",
            name,
            {"metadata": {"labels": DB}, "spec": rule},
        )
    (launcher,) = core.list_namespaced_pod(world.namespace, label_selector="vm.kubevirt.io/name=db-a").items
    assert launcher.spec.node_name == near
    core.patch_namespaced_pod(launcher.metadata.name, world.namespace, {"metadata": {"labels": DB}})
    world.set_demand(**{"db-b": 1.2})  # paging at 1Gi: one grow covers it
    world.start_operator()

    world.grown_by_dynamem_to("db-b", far)
    assert world.vmi("db-a")["status"]["nodeName"] == near
