"""Where a VM may go, end to end: the real API server, kube-scheduler and kwok, the KubeVirt v1.7.0 stand-in,
Prometheus and the operator process with its default policy (the cluster plan).

A paging VM on its node and three others it could move to: a small idle node with a ``NoSchedule`` taint
it does not tolerate, a small idle node that is cordoned, and a large one the scheduler would take. The plan
fills the node with the least room left that fits (best fit, the scheduler's ``MostAllocated``), so without
reading the scheduler's filters it would pick a small one, whose target pod would stay Pending until KubeVirt
fails the migration. dynamem reads them
(``controller/eligibility.py``): its only migration is pinned to the eligible node, the scheduler binds the
target pod there, and no migration fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI, MI, quantity_bytes

from .operator_harness import Stack, first_node_stack, hog, wait_until


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        {"home": "8Gi", "tainted": "4Gi", "cordoned": "4Gi", "eligible": "16Gi"},
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

    world.grown_by_dynamem_to("web", eligible)
    assert world.guest("web") == world.has("web")
    assert not any(e["reason"] == "MemoryChangeReverted" for e in world.events("web"))


@pytest.fixture
def cpu_stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request, {"home": "4Gi", "near": "8Gi", "far": "16Gi"}, {"web": {"startup": "1Gi", "maximum": "4Gi"}}
    )


def _patch_web_vmi(world: Stack, spec: dict[str, object]) -> None:
    """A change of web's VMI spec, which its next migration target is rendered from (as the stand-in does)."""
    world.custom.patch_namespaced_custom_object(
        "kubevirt.io", "v1", world.namespace, "virtualmachineinstances", "web", {"spec": spec}
    )


@pytest.mark.parametrize("resource", ["cpu", "ephemeral-storage", "devices.kubevirt.io/kvm"])
def test_a_node_with_memory_but_not_the_launchers_other_requests_is_never_chosen(
    cpu_stack: tuple[Stack, list[str]], resource: str
) -> None:
    """``near`` has the room a bin packer picks for web's grow, but not what else its launcher requests, and
    the scheduler refuses the target there (``NodeResourcesFit``, ``fitsRequest``): ``cpu``, a pod requests
    all of it but 50m, and web's launcher requests 100m (one vCPU over ``cpuAllocationRatio`` 10);
    ``ephemeral-storage``, a pod requests all of it but 10M, and every launcher requests 50M
    (``WithEphemeralStorageRequest``); ``devices.kubevirt.io/kvm``, the node has no KVM, so virt-handler's
    device plugin advertises none healthy, and every launcher asks one (``getRequiredResources``): the
    well-known "Insufficient devices.kubevirt.io/kvm". dynamem counts each as it does memory and sends web
    to ``far``."""
    world, (_home, near, far) = cpu_stack
    wait_until("web running", lambda: world.has("web"), timeout=60)
    core = k8s_client.CoreV1Api(world.api)
    allocatable = core.read_node_status(near).status.allocatable
    if resource == "cpu":
        hog(world.api, world.namespace, near, {"cpu": f"{int(allocatable['cpu']) * 1000 - 50}m"})
    elif resource == "ephemeral-storage":
        hog(
            world.api,
            world.namespace,
            near,
            {"ephemeral-storage": f"{quantity_bytes(allocatable[resource]) - 10_000_000}"},
        )
    else:
        core.patch_node_status(near, {"status": {"allocatable": {**allocatable, resource: "0"}}})
        wait_until("no kvm", lambda: core.read_node_status(near).status.allocatable[resource] == "0")
    world.set_demand(web=1.2)
    world.start_operator()

    world.grown_by_dynamem_to("web", far)


def test_a_host_model_vm_goes_only_where_its_cpu_model_can_migrate(
    cpu_stack: tuple[Stack, list[str]],
) -> None:
    """A VMI with the ``host-model`` CPU (KubeVirt's default) on a node labelled with its host model: the
    target pod selects the nodes that can host that model (``cpu-model-migration.node.kubevirt.io/<model>``,
    ``prepareNodeSelectorForHostCpuModel``). ``near`` cannot, and has the room a bin packer picks: dynamem
    reads the selector KubeVirt will render and sends web to ``far``."""
    world, (home, near, far) = cpu_stack
    wait_until("web running", lambda: world.has("web"), timeout=60)
    core = k8s_client.CoreV1Api(world.api)
    core.patch_node(home, {"metadata": {"labels": {"host-model-cpu.node.kubevirt.io/Skylake": "true"}}})
    core.patch_node(far, {"metadata": {"labels": {"cpu-model-migration.node.kubevirt.io/Skylake": "true"}}})
    _patch_web_vmi(world, {"domain": {"cpu": {"model": "host-model"}}})
    world.set_demand(web=1.2)
    world.start_operator()

    world.grown_by_dynamem_to("web", far)
    # the target pod selects the source node's host model, as KubeVirt's prepareNodeSelectorForHostCpuModel
    # makes it (written out here, not with the function the stand-in and dynamem share)
    (target,) = (
        k8s_client.CoreV1Api(world.api)
        .list_namespaced_pod(world.namespace, label_selector="kubevirt.io/migrationJobUID")
        .items
    )
    assert target.spec.node_selector["cpu-model-migration.node.kubevirt.io/Skylake"] == "true"
    assert target.spec.node_name == far and near != far


@pytest.fixture
def overhead_stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        {"home": "4Gi", "near": "3Gi", "far": "8Gi"},
        {"web": {"startup": "1Gi", "maximum": "4Gi"}},
        overhead_mib=512,
    )


def test_a_target_is_chosen_for_what_its_launcher_asks_beyond_the_guest(
    overhead_stack: tuple[Stack, list[str]],
) -> None:
    """Every launcher asks 512Mi beyond its guest (KubeVirt's overhead: vCPUs, devices, graphics), which a
    v1.7.0 VMI does not report and the operator is not told (``--default-overhead`` 0). dynamem reads it from
    the launcher pod (its request less its guest): web's grow (to 2.75Gi: x1.5 and as far again into spare
    memory) fits ``near`` (3Gi, the least room left, what a bin packer picks) as a guest, not with its
    overhead, so it goes where guest and overhead fit and no migration fails. Taken for 0, the target pod
    stays Pending on ``near`` (Insufficient memory) and KubeVirt fails the migration."""
    world, (_home, near, far) = overhead_stack
    wait_until("web running", lambda: world.has("web"), timeout=60)
    world.set_demand(web=1.2)
    world.start_operator()

    world.grown_by_migration("web")
    everything = world.migrations()
    assert not [m for m in everything if m.get("status", {}).get("phase") == "Failed"], everything
    node = world.vmi("web")["status"]["nodeName"]
    launcher = (
        k8s_client.CoreV1Api(world.api)
        .list_namespaced_pod(world.namespace, field_selector=f"spec.nodeName={node}")
        .items
    )
    (pod,) = launcher
    asked = quantity_bytes(pod.spec.containers[0].resources.requests["memory"]) or 0
    room = {near: 3 * GI, far: 8 * GI}[node]
    assert asked == (world.has("web") or 0) + 512 * MI and asked <= room


ZONE = "topology.kubernetes.io/zone"


def test_a_vm_goes_only_to_a_zone_its_volume_reaches(
    cpu_stack: tuple[Stack, list[str]], request: pytest.FixtureRequest
) -> None:
    """web's disk is a shared (ReadWriteMany) volume in zone a, as zonal storage is: bound to a
    PersistentVolume whose node affinity and zone label say zone a. ``near`` (zone b) has the room a bin
    packer picks; the scheduler refuses web's target there (``VolumeBinding``: the volume's node affinity;
    ``VolumeZone``). dynamem reads the claim and its volume and sends web to ``far`` (zone a)."""
    world, (home, near, far) = cpu_stack
    wait_until("web running", lambda: world.has("web"), timeout=60)
    core = k8s_client.CoreV1Api(world.api)
    for node, zone in ((home, "a"), (near, "b"), (far, "a")):
        core.patch_node(node, {"metadata": {"labels": {ZONE: zone}}})
    volume_name = f"pv-{world.namespace}"[:63]
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume_name, "labels": {ZONE: "a"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": "/var/lib/dynamem-test"},
                "claimRef": {"namespace": world.namespace, "name": "web-disk"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["a"]}]}
                        ]
                    }
                },
            },
        }
    )
    request.addfinalizer(lambda: core.delete_persistent_volume(volume_name))
    # bound as the PV controller binds a claim (no kube-controller-manager runs here)
    core.create_namespaced_persistent_volume_claim(
        world.namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "web-disk", "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": volume_name,
            },
        },
    )
    core.patch_namespaced_persistent_volume_claim_status(
        "web-disk", world.namespace, {"status": {"phase": "Bound", "accessModes": ["ReadWriteMany"]}}
    )
    _patch_web_vmi(world, {"volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": "web-disk"}}]})
    world.set_demand(web=1.2)
    world.start_operator()

    world.grown_by_dynamem_to("web", far)
    (target,) = core.list_namespaced_pod(world.namespace, label_selector="kubevirt.io/migrationJobUID").items
    assert [v.persistent_volume_claim.claim_name for v in target.spec.volumes] == ["web-disk"]
