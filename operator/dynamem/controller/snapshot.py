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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dynamem.controller.demand import DemandReading
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


def vm_state(item: Managed) -> VmState | None:
    """The policy's view of a running managed VM, or None if it cannot be balanced now."""
    vm, vmi, settings = item.vm, item.vmi, item.settings
    if vm is None or vmi is None or settings is None:
        return None
    current = vmi.current
    if current is None:
        return None
    requested = vm.guest if vm.guest is not None else current
    return VmState(
        name=str(item.key),
        limits=settings.limits(),
        assigned=current,
        demand=item.demand,
        boot_memory=vmi.guest_at_boot,
        hugepage=vm.hugepage,
        in_flight_to=requested if requested != current or vmi.hotplug_in_progress else None,
        last_change_at=parse_rfc3339(item.vmm.status.get("lastChangeTime")),
    )


def build_snapshot(
    observed: Observed,
    demand: DemandReading,
    *,
    reserve: int = 0,
    default_overhead: int = 0,
) -> Snapshot:
    """Join the observed objects and demand into per-node policy inputs."""
    vms = {vm.key: vm for vm in observed.vms}
    vmis = {vmi.key: vmi for vmi in observed.vmis}
    node_views = {node.name: node for node in observed.nodes}
    managed = {vmm.key: _join(vmm, vms.get(vmm.key), vmis.get(vmm.key), demand) for vmm in observed.vmms}

    pods: dict[str, int] = defaultdict(int)
    for pod in observed.pods:
        if pod.node and not pod.launcher and not pod.finished:
            pods[pod.node] += pod.request

    overhead: dict[str, int] = defaultdict(int)
    unmanaged: dict[str, int] = defaultdict(int)
    states: dict[str, list[VmState]] = defaultdict(list)
    for vmi in vmis.values():
        if not vmi.active or vmi.node is None:
            continue
        overhead[vmi.node] += vmi.overhead if vmi.overhead is not None else default_overhead
        item = managed.get(vmi.key)
        state = vm_state(item) if item is not None and item.phase is Phase.RUNNING else None
        if state is None or vmi.node not in node_views:
            vm = vms.get(vmi.key)
            held = max(vmi.current or 0, vm.guest or 0 if vm is not None else 0)
            unmanaged[vmi.node] += held
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
