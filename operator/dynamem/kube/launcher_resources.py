"""What a virt-launcher pod asks, as KubeVirt v1.7.0 renders it (``pkg/virt-controller/services/
renderresources.go``): memory for its guest, its CPU, its ephemeral storage and the devices virt-handler's
device plugins serve.

Pure: the KubeVirt stand-in renders its launcher pods with it (:mod:`dynamem.kubevirt_sim.launcher`), and the
operator counts with it what a VM that is off would ask to start (``StoppedVm.others``), where no launcher pod
exists yet to read. A running VM's requests are read from its launcher pod instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamem.kube.objects import counted_resources, dig, quantity_bytes, to_quantity
from dynamem.policy.cluster import guest_request

__all__ = [
    "CPU_ALLOCATION_RATIO",
    "EPHEMERAL_STORAGE_OVERHEAD",
    "KVM_DEVICE",
    "TUN_DEVICE",
    "VHOST_NET_DEVICE",
    "VHOST_VSOCK_DEVICE",
    "launcher_cpu",
    "launcher_devices",
    "launcher_storage",
    "memory_request",
    "start_requests",
]

# KubeVirt's default cpuAllocationRatio (spec.configuration.developerConfiguration.cpuAllocationRatio)
CPU_ALLOCATION_RATIO = 10
# WithEphemeralStorageRequest (renderresources.go): added to the VMI's own ephemeral-storage request
EPHEMERAL_STORAGE_OVERHEAD = 50_000_000

KVM_DEVICE = "devices.kubevirt.io/kvm"
TUN_DEVICE = "devices.kubevirt.io/tun"
VHOST_NET_DEVICE = "devices.kubevirt.io/vhost-net"
VHOST_VSOCK_DEVICE = "devices.kubevirt.io/vhost-vsock"


def launcher_cpu(domain: Mapping[str, Any], ratio: int = CPU_ALLOCATION_RATIO) -> str:
    """The compute container's CPU request (``renderresources.go``): the VMI's ``resources.requests.cpu``
    when set (``ResourceRenderer.Requests`` letting it win), else its ``limits.cpu`` (the VMI's defaulting
    sets a request to its limit); with ``dedicatedCpuPlacement`` (``WithCPUPinning``) a whole CPU per vCPU,
    one more for ``isolateEmulatorThread``; else (``WithoutDedicatedCPU``) its vCPUs (``calcVCPUs``: cores x
    sockets x threads, 1 without a topology) over ``cpuAllocationRatio``, as a quantity rounds it: up to
    the millicore. Not played: I/O thread pools, the emulator thread's even-parity annotation, and CPUs an
    instancetype gives."""
    requested = dig(domain, "resources", "requests", "cpu")
    if requested is None:
        requested = dig(domain, "resources", "limits", "cpu")
    if requested is not None:
        return str(requested)
    topology = domain.get("cpu") or {}
    vcpus = 1
    if topology:
        vcpus = (
            int(topology.get("cores") or 1)
            * int(topology.get("sockets") or 1)
            * int(topology.get("threads") or 1)
        )
    if topology.get("dedicatedCpuPlacement") is True:
        return str(vcpus + (1 if topology.get("isolateEmulatorThread") is True else 0))
    return f"{-(-vcpus * 1000 // ratio)}m"


def memory_request(domain: Mapping[str, Any], guest: int | None, overcommit: int = 100) -> int | None:
    """The compute container's memory request for the guest, before the overhead (``WithMemoryRequests``):
    the VMI's ``resources.requests.memory``, else its ``limits.memory``, else ``memory.guest`` x 100 /
    memoryOvercommit (:func:`dynamem.policy.cluster.guest_request`); None without any of them."""
    own = quantity_bytes(dig(domain, "resources", "requests", "memory")) or quantity_bytes(
        dig(domain, "resources", "limits", "memory")
    )
    if own:
        return own
    return None if guest is None else guest_request(guest, overcommit)


def launcher_storage(domain: Mapping[str, Any]) -> str:
    """The compute container's ephemeral-storage request (``WithEphemeralStorageRequest``): the VMI's own
    plus 50M, or 50M."""
    storage = quantity_bytes(dig(domain, "resources", "requests", "ephemeral-storage")) or 0
    return to_quantity(storage + EPHEMERAL_STORAGE_OVERHEAD) if storage else "50M"


def launcher_devices(vmi_spec: Mapping[str, Any]) -> dict[str, str]:
    """The compute container's device limits (``renderresources.go``, ``getRequiredResources``, put in its
    limits by ``WithVirtualizationResources``; the API server defaults their requests to them): ``kvm``
    (``allowEmulation`` is off by default), ``tun`` unless the pod interface is not attached
    (``RequiresTunDevice``), ``vhost-net`` with a virtio interface (``hasVirtioIface``: no model is
    virtio), ``vhost-vsock`` with ``autoattachVSOCK``. Every node virt-handler serves advertises them."""
    devices = dig(vmi_spec, "domain", "devices") or {}
    interfaces = devices.get("interfaces") or []
    found = {KVM_DEVICE: "1"}
    if interfaces or devices.get("autoattachPodInterface") in (None, True):
        found[TUN_DEVICE] = "1"
    if any(i.get("model") in (None, "", "virtio") for i in interfaces if isinstance(i, Mapping)):
        found[VHOST_NET_DEVICE] = "1"
    if devices.get("autoattachVSOCK") is True:
        found[VHOST_VSOCK_DEVICE] = "1"
    return dict(sorted(found.items()))


def start_requests(
    vmi_spec: Mapping[str, Any], ratio: int = CPU_ALLOCATION_RATIO
) -> tuple[tuple[str, int], ...]:
    """What the first launcher of a VMI of this spec (a VM's template) asks beside memory and its pod slot,
    as the scheduler counts it: CPU in millicores, ephemeral storage in bytes, one of each device."""
    domain = vmi_spec.get("domain") or {}
    asked = {"cpu": launcher_cpu(domain, ratio), "ephemeral-storage": launcher_storage(domain)}
    return tuple(sorted(counted_resources({**asked, **launcher_devices(vmi_spec)}).items()))
