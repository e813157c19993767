"""From what the operator observed to the policy's input: one :class:`NodeState` per node.

Everything the balancing round decides from is built here, fresh each round (level-triggered), from the kopf
indices' views and the demand reading. The pool of a node is

    allocatable memory - requests of pods that are not VM launchers - each running VMI's overhead
    - the guest memory of VMs dynamem does not manage - a configurable reserve

so dynamem only ever hands out what nothing else on the node has claimed. A VM's last change time comes from
its VirtualMachineMemory status, so a restarted operator keeps honouring cooldowns.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dynamem.controller.ports import DemandReading
from dynamem.kube.api import parse_rfc3339
from dynamem.kube.objects import Body, NodeView, ObjectKey, PodView, VmiView, VmView, dig
from dynamem.policy.model import NodeState, VmState
from dynamem.settings import SettingsError, VmSettings


class Phase(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    STARTING = "Starting"
    MISSING = "VirtualMachineMissing"
    INVALID = "InvalidSettings"
    UNPLACED = "NodeUnknown"


@dataclass(frozen=True, slots=True)
class VmmView:
    """A VirtualMachineMemory as read from the cluster."""

    key: ObjectKey
    uid: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    body: Mapping[str, Any]


def vmm_view(body: Body) -> VmmView:
    return VmmView(
        key=ObjectKey.of(body),
        uid=str(dig(body, "metadata", "uid") or ""),
        generation=int(dig(body, "metadata", "generation") or 0),
        spec=dict(body.get("spec") or {}),
        status=dict(body.get("status") or {}),
        body={
            "apiVersion": body.get("apiVersion", "dynamem.io/v1alpha1"),
            "kind": body.get("kind", "VirtualMachineMemory"),
            "metadata": {
                k: dig(body, "metadata", k) for k in ("name", "namespace", "uid", "resourceVersion")
            },
        },
    )


@dataclass(frozen=True, slots=True)
class Managed:
    """One VirtualMachineMemory joined with its VM, VMI and demand."""

    vmm: VmmView
    phase: Phase
    settings: VmSettings | None = None
    error: str | None = None
    vm: VmView | None = None
    vmi: VmiView | None = None
    demand: int | None = None

    @property
    def key(self) -> ObjectKey:
        return self.vmm.key

    @property
    def node(self) -> str | None:
        return self.vmi.node if self.vmi is not None else None


@dataclass(frozen=True, slots=True)
class PoolBreakdown:
    """How a node's pool was worked out, for status, metrics and debugging."""

    node: str
    allocatable: int
    pods: int = 0
    overhead: int = 0
    unmanaged: int = 0
    reserve: int = 0

    @property
    def pool(self) -> int:
        return max(0, self.allocatable - self.pods - self.overhead - self.unmanaged - self.reserve)


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: tuple[NodeState, ...]
    pools: Mapping[str, PoolBreakdown]
    managed: Mapping[ObjectKey, Managed]
    demand_error: str | None = None
    vm_keys: Mapping[str, ObjectKey] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything one round reads from the cluster, as views."""

    vmms: Iterable[VmmView]
    vms: Iterable[VmView]
    vmis: Iterable[VmiView]
    nodes: Iterable[NodeView]
    pods: Iterable[PodView]


def _join(vmm: VmmView, vm: VmView | None, vmi: VmiView | None, demand: DemandReading) -> Managed:
    try:
        settings = VmSettings.from_spec(str(vmm.key), vmm.spec)
    except SettingsError as exc:
        return Managed(vmm, Phase.INVALID, error=str(exc), vm=vm, vmi=vmi)
    if vm is None:
        return Managed(vmm, Phase.MISSING, settings=settings)
    if vmi is not None and vmi.active:
        return Managed(vmm, Phase.RUNNING, settings, vm=vm, vmi=vmi, demand=demand.of(vmm.key))
    if not vm.desired_running:
        return Managed(vmm, Phase.STOPPED, settings, vm=vm, vmi=vmi)
    return Managed(vmm, Phase.STARTING, settings, vm=vm, vmi=vmi)


def stuck(item: Managed) -> bool:
    """KubeVirt will not carry out the VM's memory.guest: the hotplug failed, or it wants a restart.

    KubeVirt then leaves the request in the VM (and the VMI) and the guest at its old size, for good; the
    guest's size is the truth, and the request is to be taken back.
    """
    vm, vmi = item.vm, item.vmi
    if vm is None or vmi is None or vmi.current is None or vm.guest is None or vm.guest == vmi.current:
        return False
    return vmi.hotplug_failed or vm.restart_required


def hold_reason(item: Managed, held: Mapping[ObjectKey, str]) -> str | None:
    """Why a running VM gets no change this round, beyond what the policy itself decides."""
    if item.key in held:
        return held[item.key]
    if stuck(item):
        return "KubeVirt did not apply memory.guest (hotplug failed or restart required): held at its size"
    if item.vmi is not None and item.vmi.migrating:
        return "held: live migration in progress (KubeVirt refuses hotplug meanwhile)"
    return None


def vm_state(item: Managed, held: Mapping[ObjectKey, str] | None = None) -> VmState | None:
    """The policy's view of a running managed VM, or None if it cannot be balanced now.

    Its maximum is capped by the VMI's hotplug ceiling (``maxGuest`` as fixed at boot). A VM that cannot
    change now (hotplug failed, migrating, backing off after a refusal) is marked in flight at its size, so
    the policy holds it and counts it as it is.
    """
    vm, vmi, settings = item.vm, item.vmi, item.settings
    if vm is None or vmi is None or settings is None:
        return None
    current = vmi.current
    if current is None:
        return None
    requested = vm.guest if vm.guest is not None else current
    limits = settings.limits()
    ceiling = vmi.max_guest or vm.max_guest
    if ceiling is not None and ceiling < limits.maximum:
        top = max(ceiling, current)
        limits = replace(
            limits, maximum=top, startup=min(limits.startup, top), minimum=min(limits.minimum, top)
        )
    if hold_reason(item, held or {}) is not None and (stuck(item) or item.key in (held or {})):
        in_flight: int | None = current
    elif requested != current or vmi.hotplug_in_progress or vmi.migrating:
        in_flight = requested
    else:
        in_flight = None
    return VmState(
        name=str(item.key),
        limits=limits,
        assigned=current,
        demand=item.demand,
        boot_memory=vmi.guest_at_boot,
        hugepage=vm.hugepage,
        in_flight_to=in_flight,
        last_change_at=parse_rfc3339(item.vmm.status.get("lastChangeTime")),
    )


def build_snapshot(
    observed: Observed,
    demand: DemandReading,
    *,
    reserve: int = 0,
    default_overhead: int = 0,
    held: Mapping[ObjectKey, str] | None = None,
) -> Snapshot:
    """Join the observed objects and demand into per-node policy inputs.

    ``held``: VMs to keep as they are this round, with the reason (e.g. backing off after a refused change).
    """
    vms = {vm.key: vm for vm in observed.vms}
    vmis = {vmi.key: vmi for vmi in observed.vmis}
    node_views = {node.name: node for node in observed.nodes}
    managed = {vmm.key: _join(vmm, vms.get(vmm.key), vmis.get(vmm.key), demand) for vmm in observed.vmms}

    pods: dict[str, int] = defaultdict(int)
    for pod in observed.pods:
        if not pod.node or pod.finished:
            continue
        if pod.launcher:
            owner = vmis.get(ObjectKey(pod.key.namespace, pod.vmi)) if pod.vmi else None
            if owner is None or (owner.active and owner.node == pod.node):
                continue  # accounted through its VMI: guest memory plus overhead
            # its VMI runs elsewhere: the target of a live migration (every memory change is one), which
            # takes its requests on this node until the VMI moves here
        pods[pod.node] += pod.request

    overhead: dict[str, int] = defaultdict(int)
    unmanaged: dict[str, int] = defaultdict(int)
    states: dict[str, list[VmState]] = defaultdict(list)
    for vmi in vmis.values():
        if not vmi.active or vmi.node is None:
            continue
        overhead[vmi.node] += vmi.overhead if vmi.overhead is not None else default_overhead
        item = managed.get(vmi.key)
        state = vm_state(item, held) if item is not None and item.phase is Phase.RUNNING else None
        if state is None or vmi.node not in node_views:
            vm = vms.get(vmi.key)
            taken = max(vmi.current or 0, vm.guest or 0 if vm is not None else 0)
            unmanaged[vmi.node] += taken
            if item is not None and item.phase is Phase.RUNNING and vmi.node not in node_views:
                managed[vmi.key] = Managed(item.vmm, Phase.UNPLACED, item.settings, vm=item.vm, vmi=vmi)
            continue
        states[vmi.node].append(state)

    pools = {
        name: PoolBreakdown(
            node=name,
            allocatable=node.allocatable,
            pods=pods[name],
            overhead=overhead[name],
            unmanaged=unmanaged[name],
            reserve=reserve,
        )
        for name, node in sorted(node_views.items())
    }
    nodes = tuple(
        NodeState(name=name, pool=pools[name].pool, vms=tuple(sorted(states[name], key=lambda s: s.name)))
        for name in pools
    )
    vm_keys = {str(key): key for key in managed}
    return Snapshot(nodes, pools, managed, demand_error=demand.error, vm_keys=vm_keys)
