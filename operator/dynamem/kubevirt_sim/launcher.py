"""virt-launcher pods as KubeVirt v1.7.0 renders them, reduced to what scheduling sees.

A VMI runs in a virt-launcher pod; a live migration renders a second one, the target. What decides where a
pod may go is kept as KubeVirt writes it, everything else (containers' commands, volumes, security context)
is left out, since nothing here runs a container:

- labels (``pkg/virt-controller/services/template.go``, ``podLabels``; ``kube.objects.launcher_labels``):
  the VMI's own labels, then ``kubevirt.io: virt-launcher``, ``kubevirt.io/created-by: <VMI uid>``,
  ``vm.kubevirt.io/name`` and ``vmi.kubevirt.io/id``;
  annotation ``kubevirt.io/domain: <VMI name>``; owner: the VMI; ``generateName: virt-launcher-<name>-``;
- node selector (``template.go``, ``newNodeSelectorRenderer``; ``nodeselectorrenderer.go``,
  ``NewNodeSelectorRenderer``): ``kubevirt.io/schedulable: "true"``, which virt-handler sets on the nodes it
  serves, then the KubeVirt CR's ``developerConfiguration.nodeSelectors``, then the VMI's ``nodeSelector``
  (each later one wins a key);
- volumes (``rendervolumes.go``, ``withVMIVolumes``): the VMI's ``persistentVolumeClaim`` and
  ``dataVolume`` claims;
- devices (``renderresources.go``, ``getRequiredResources``): ``devices.kubevirt.io/kvm``, ``tun`` and
  ``vhost-net`` limits, which virt-handler's device plugins advertise on the nodes it serves;
- memory (``services/renderresources.go``, ``WithMemoryRequests``, ``WithMemoryOverhead``,
  ``WithHugePages``): the VMI's memory request if it has one, else ``memory.guest``; plus the launcher
  overhead. With hugepages the guest memory is requested as ``hugepages-<size>`` and ``memory`` is the
  overhead (plus any request above the guest);
- a migration target (``pkg/virt-controller/watch/migration/migration.go``, ``createTargetPod``) is rendered
  from the VMI's CURRENT spec (so with a pending memory change), gets a required pod anti-affinity to the
  VMI's pods on ``kubernetes.io/hostname`` (``createMigrationPodAntiAffinityRule``, appended to the VMI's
  own affinity, which the target keeps like the first pod): it can never land on the source node; the
  migration's ``spec.addedNodeSelector`` merged under the pod's own selector (the VMI's keys win); label
  ``kubevirt.io/migrationJobUID`` and annotation ``kubevirt.io/migrationJobName``.

A scenario's starting node is not a selector (a VMI selector would bind every migration target too): the
first launcher pod of such a VM gets ``spec.nodeName`` directly, which skips the scheduler, as a pod created
for a given node does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamem.kube.launcher_resources import (
    CPU_ALLOCATION_RATIO,
    KVM_DEVICE,
    TUN_DEVICE,
    VHOST_NET_DEVICE,
    launcher_cpu,
    launcher_devices,
    launcher_storage,
    memory_request,
)
from dynamem.kube.objects import GI, cpu_rejected_labels, dig, launcher_labels, quantity_bytes, to_quantity

APP_LABEL = "kubevirt.io"
LAUNCHER = "virt-launcher"
CREATED_BY_LABEL = "kubevirt.io/created-by"
VM_NAME_LABEL = "vm.kubevirt.io/name"
DOMAIN_ANNOTATION = "kubevirt.io/domain"
MIGRATION_JOB_LABEL = "kubevirt.io/migrationJobUID"
MIGRATION_JOB_ANNOTATION = "kubevirt.io/migrationJobName"
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"
HOSTNAME_LABEL = "kubernetes.io/hostname"

__all__ = [
    "APP_LABEL",
    "CREATED_BY_LABEL",
    "DEVICES_PER_NODE",
    "KUBEVIRT_DEFAULTS",
    "KVM_DEVICE",
    "LAUNCHER",
    "SCHEDULABLE_LABEL",
    "TUN_DEVICE",
    "VHOST_NET_DEVICE",
    "Rendering",
    "launcher_devices",
    "launcher_pod",
    "launcher_requests",
    "launcher_volumes",
]


@dataclass(frozen=True, slots=True)
class Rendering:
    """The KubeVirt CR's settings a launcher pod is rendered under (``pkg/virt-config``): its
    ``developerConfiguration`` ``memoryOvercommit`` (percent: a VMI with no memory request or limit of its own
    asks ``memory.guest`` x 100 / this; ``services/template.go``, ``VMIResourcePredicates``;
    ``renderresources.go``, ``WithMemoryRequests``), ``cpuAllocationRatio`` (vCPUs over this, as CPU;
    ``WithoutDedicatedCPU``) and ``nodeSelectors`` (every launcher's, under its VMI's own)."""

    memory_overcommit: int = 100
    cpu_allocation_ratio: int = CPU_ALLOCATION_RATIO
    node_selectors: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # KubeVirt refuses both at 0 and below (configuration.go, validateConfig)
        for name in ("memory_overcommit", "cpu_allocation_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)!r} must be greater than 0")


KUBEVIRT_DEFAULTS = Rendering()  # a cluster whose KubeVirt CR sets none of them


def launcher_requests(
    vmi_spec: Mapping[str, Any], overhead: int, rendering: Rendering = KUBEVIRT_DEFAULTS
) -> dict[str, str]:
    """The compute container's requests for a VMI spec (``renderresources.go``: memory, overhead,
    hugepages, CPU, ephemeral storage), under the KubeVirt CR's ``rendering``. ``memoryOvercommit`` is not
    played for hugepages."""
    domain = vmi_spec.get("domain") or {}
    common = {
        "cpu": launcher_cpu(domain, rendering.cpu_allocation_ratio),
        "ephemeral-storage": launcher_storage(domain),
    }
    guest = quantity_bytes(dig(domain, "memory", "guest"))
    page_size = dig(domain, "memory", "hugepages", "pageSize")
    memory = memory_request(domain, guest, 100 if page_size else rendering.memory_overcommit) or GI
    if page_size:
        hugepages = min(memory, guest) if guest else memory
        above_guest = max(0, memory - guest) if guest else 0
        return {
            f"hugepages-{page_size}": to_quantity(hugepages),
            "memory": to_quantity(above_guest + overhead),
            **common,
        }
    return {"memory": to_quantity(memory + overhead), **common}


# virt-handler's device plugins advertise each permanent device this many times (cmd/virt-handler, maxDevices)
DEVICES_PER_NODE = 1000


def launcher_volumes(vmi_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The claims the launcher mounts (``rendervolumes.go``, ``withVMIVolumes``: ``handlePVCVolume``,
    ``handleDataVolume``, a DataVolume's claim having its name), hotplugged ones left to their own pods. The
    scheduler's volume filters read them (``VolumeBinding``, ``VolumeZone``)."""
    found = []
    for volume in vmi_spec.get("volumes") or ():
        claim = volume.get("persistentVolumeClaim") or {}
        data = volume.get("dataVolume") or {}
        name = claim.get("claimName") or data.get("name")
        if name and not (claim.get("hotpluggable") or data.get("hotpluggable")):
            found.append({"name": str(volume.get("name")), "persistentVolumeClaim": {"claimName": str(name)}})
    return found


def launcher_pod(
    vmi: Mapping[str, Any],
    *,
    overhead: int,
    rendering: Rendering = KUBEVIRT_DEFAULTS,
    node_name: str | None = None,
    migration: Mapping[str, Any] | None = None,
    host_model: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The virt-launcher pod for ``vmi``: its first one (optionally bound to ``node_name``), or the target of
    ``migration``, under the KubeVirt CR's ``rendering``."""
    meta = vmi.get("metadata") or {}
    spec = vmi.get("spec") or {}
    name, uid = str(meta.get("name")), str(meta.get("uid"))
    labels = launcher_labels(vmi)
    annotations = {DOMAIN_ANNOTATION: name}
    selector = {
        SCHEDULABLE_LABEL: "true",
        **dict(rendering.node_selectors),
        **{str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
    }
    resources = launcher_requests(spec, overhead, rendering)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                "name": "compute",
                "image": "quay.io/kubevirt/virt-launcher:v1.7.0",
                "resources": {
                    "requests": resources,
                    "limits": {
                        **{k: v for k, v in resources.items() if k.startswith("hugepages-")},
                        **launcher_devices(spec),
                    },
                },
            }
        ],
    }
    if migration is not None:
        added = dig(migration, "spec", "addedNodeSelector") or {}
        selector = {**{str(k): str(v) for k, v in added.items()}, **selector, **(host_model or {})}
        labels[MIGRATION_JOB_LABEL] = str(dig(migration, "metadata", "uid"))
        annotations[MIGRATION_JOB_ANNOTATION] = str(dig(migration, "metadata", "name"))
        # createMigrationPodAntiAffinityRule: the term is appended to the VMI's own affinity
        affinity = copy.deepcopy(dict(spec.get("affinity") or {}))
        anti = dict(affinity.get("podAntiAffinity") or {})
        terms = list(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        terms.append(
            {"labelSelector": {"matchLabels": {CREATED_BY_LABEL: uid}}, "topologyKey": HOSTNAME_LABEL}
        )
        anti["requiredDuringSchedulingIgnoredDuringExecution"] = terms
        affinity["podAntiAffinity"] = anti
        pod_spec["affinity"] = affinity
    elif spec.get("affinity"):
        pod_spec["affinity"] = copy.deepcopy(spec["affinity"])
    for label in cpu_rejected_labels(dig(spec, "domain", "cpu")):  # setNodeAffinityForPod
        pod_spec["affinity"] = _rejecting(pod_spec.get("affinity"), label)
    if volumes := launcher_volumes(spec):
        pod_spec["volumes"] = volumes
    if node_name is not None:
        pod_spec["nodeName"] = node_name
    pod_spec["nodeSelector"] = selector
    if spec.get("tolerations"):
        pod_spec["tolerations"] = spec["tolerations"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"virt-launcher-{name}-",
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachineInstance",
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": pod_spec,
    }


def _rejecting(affinity: Mapping[str, Any] | None, label: str) -> dict[str, Any]:
    """``affinity`` with ``label`` rejected (``DoesNotExist``) in every required node affinity term, or in a
    term of its own when there is none (v1.7.0 ``template.go``, ``modifyNodeAffintyToRejectLabel``)."""
    result = copy.deepcopy(dict(affinity or {}))
    requirement = {"key": label, "operator": "DoesNotExist"}
    node = dict(result.get("nodeAffinity") or {})
    required = node.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        for term in required.get("nodeSelectorTerms") or []:
            term["matchExpressions"] = [*(term.get("matchExpressions") or []), requirement]
    else:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": [requirement]}]
        }
    result["nodeAffinity"] = node
    return result
