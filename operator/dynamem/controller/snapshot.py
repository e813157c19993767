"""From what the operator observed to the policy's input: one :class:`NodeState` per node.

Everything the balancing round decides from is built here, fresh each round (level-triggered), from the kopf
indices' views and the demand reading. The pool of a node is

    allocatable memory - requests of pods that are not VM launchers - each running VMI's overhead
    - the guest memory of VMs dynamem does not manage - a configurable reserve

so dynamem only ever hands out what nothing else on the node has claimed. A VM's last change time comes from
its VirtualMachineMemory status, so a restarted operator keeps honouring cooldowns.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dynamem.controller.cluster_state import (
    cluster_state,
    current_launchers,
    launcher_overheads,
    node_others,
    node_page_requests,
    node_requests,
)
from dynamem.controller.eligibility import SCHEDULABLE_LABEL
from dynamem.controller.migrations import MigrationView
from dynamem.controller.placement import decode
from dynamem.controller.ports import DemandReading
from dynamem.kube.api import parse_rfc3339
from dynamem.kube.launcher_resources import CPU_ALLOCATION_RATIO, memory_request, start_requests
from dynamem.kube.migration_target import carried_selector, host_model_selector
from dynamem.kube.objects import HOSTNAME_LABEL, Body, NodeView, ObjectKey, PodView, VmiView, VmView, dig
from dynamem.kube.pod_affinity import PlacedPod
from dynamem.kube.volumes import ClaimView, VolumeView
from dynamem.policy.cluster import PARKED_AFTER_S, ClusterState, StoppedVm
from dynamem.policy.model import NodeState, VmState
from dynamem.records import frozen_record
from dynamem.settings import SettingsError, VmSettings


class Phase(StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"  # runStrategy Halted and no VMI: memory.guest may be set back to startup
    STARTING = "Starting"
    NOT_RUNNING = "NotRunning"  # Manual, Once, RerunOnFailure without a VMI: may start any moment
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
class Hold:
    """A VM that KubeVirt refused, kept as it is until its VMI restarts (or, stopped, until its spec changes).

    Kept in the VirtualMachineMemory's ``status.hold``, so a restarted operator or a new leader honours it.
    """

    reason: str
    vmi_uid: str = ""  # held while this VMI lives; "" for a stopped VM
    vm_generation: int = 0  # a stopped VM: held until its generation changes
    since: str = ""

    def to_status(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "vmiUID": self.vmi_uid,
            "vmGeneration": self.vm_generation,
            "since": self.since,
        }

    @classmethod
    def from_status(cls, raw: object) -> Hold | None:
        if not isinstance(raw, Mapping) or not raw.get("reason"):
            return None
        return cls(
            reason=str(raw["reason"]),
            vmi_uid=str(raw.get("vmiUID") or ""),
            vm_generation=int(raw.get("vmGeneration") or 0),
            since=str(raw.get("since") or ""),
        )

    @classmethod
    def from_annotation(cls, raw: str | None) -> Hold | None:
        """The hold written with a change taken back (the VM's ``dynamem.io/hold``, in the same apply), for
        when no status records it yet: a leader lost between the two writes leaves it in the cluster. Anyone
        who may edit the VM may edit it: what is not such a hold is none (never an error that stops the
        round for every VM)."""
        if not raw:
            return None
        try:
            return cls.from_status(json.loads(raw))
        except (ValueError, TypeError, OverflowError, RecursionError):
            return None

    def applies(self, vm: VmView | None, vmi: VmiView | None) -> bool:
        """Still in force: the same VMI runs, or the stopped VM is unchanged and has not started."""
        if self.vmi_uid:
            return vmi is not None and vmi.uid == self.vmi_uid
        running = vmi is not None and vmi.active
        return not running and vm is not None and vm.generation == self.vm_generation


@frozen_record
class Managed:
    """One VirtualMachineMemory joined with its VM, VMI and demand.

    ``hold``: a refusal by KubeVirt still in force (persisted in the status). ``blocked``: why KubeVirt's
    preconditions forbid a memory change now (not live-migratable, RestartRequired, memory from an
    instancetype, memory.guest owned by another field manager); re-checked every round, never written.
    ``owners``: the other field managers that own memory.guest, when that blocks dynamem.
    """

    vmm: VmmView
    phase: Phase
    settings: VmSettings | None = None
    error: str | None = None
    vm: VmView | None = None
    vmi: VmiView | None = None
    demand: int | None = None
    hold: Hold | None = None
    blocked: str | None = None
    owners: tuple[str, ...] = ()

    @property
    def key(self) -> ObjectKey:
        return self.vmm.key

    @property
    def node(self) -> str | None:
        return self.vmi.node if self.vmi is not None else None

    def asked_at(self) -> float | None:
        """When dynamem last changed this VM's memory: the VirtualMachineMemory's ``lastChangeTime``, or the
        ``askedAt`` of the placement annotation written with memory.guest now asked for (in the same apply, so
        a leader lost before its status write still leaves the time in the cluster), whichever is later."""
        times = [parse_rfc3339(self.vmm.status.get("lastChangeTime"))]
        placement = decode(self.vm.placement) if self.vm is not None else None
        if placement is not None and self.vm is not None and placement.guest == self.vm.guest:
            times.append(placement.asked_at)
        return max((t for t in times if t is not None), default=None)


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
    cluster: ClusterState = field(default_factory=lambda: ClusterState(nodes=(), vms=()))
    migrations: tuple[MigrationView, ...] = ()
    # (node, VMI) of every launcher pod bound to a node and not finished: a migration's target pod once bound
    bound: frozenset[tuple[str, ObjectKey]] = frozenset()


@dataclass(frozen=True, slots=True)
class Observed:
    """Everything one round reads from the cluster, as views."""

    vmms: Iterable[VmmView]
    vms: Iterable[VmView]
    vmis: Iterable[VmiView]
    nodes: Iterable[NodeView]
    pods: Iterable[PodView]
    migrations: Iterable[MigrationView] = ()
    claims: Iterable[ClaimView] = ()
    volumes: Iterable[VolumeView] = ()


# A VirtualMachineMemory's validated settings are kept by uid, generation and spec instead of being validated
# again every round (10,000 pydantic validations cost about half a second).
_SETTINGS: dict[tuple[str, int, frozenset[tuple[str, Any]]], VmSettings | SettingsError] = {}


def settings_of(vmm: VmmView) -> VmSettings | SettingsError:
    try:
        cache_key: tuple[str, int, frozenset[tuple[str, Any]]] | None = (
            vmm.uid,
            vmm.generation,
            frozenset(vmm.spec.items()),
        )
    except TypeError:  # a nested value: validated every time (and refused by the settings model anyway)
        cache_key = None
    found = _SETTINGS.get(cache_key) if vmm.uid and cache_key is not None else None
    if found is None:
        try:
            found = VmSettings.from_spec(str(vmm.key), vmm.spec)
        except SettingsError as exc:
            found = exc
        if vmm.uid and cache_key is not None:
            if len(_SETTINGS) > 200_000:
                _SETTINGS.clear()
            _SETTINGS[cache_key] = found
    return found


def _join(
    vmm: VmmView, vm: VmView | None, vmi: VmiView | None, force_ownership: bool, contest: str | None = None
) -> Managed:
    """The join of one VirtualMachineMemory with its VM and VMI, without demand (see :class:`JoinCache`).

    ``contest``: why memory.guest is left to its other owners for now, whatever ``force_ownership`` says
    (they fought dynamem over it: :mod:`dynamem.controller.contests`)."""
    settings = settings_of(vmm)
    if isinstance(settings, SettingsError):
        return Managed(vmm, Phase.INVALID, error=str(settings), vm=vm, vmi=vmi)
    if vm is None:
        return Managed(vmm, Phase.MISSING, settings=settings)
    # the status' hold, else the one written with the revert (a leader lost before its status write): the
    # first that is in force (a status not yet rewritten after a restart may hold the old VMI's)
    hold = next(
        (
            h
            for h in (Hold.from_status(vmm.status.get("hold")), Hold.from_annotation(vm.hold))
            if h is not None and h.applies(vm, vmi)
        ),
        None,
    )
    # those that fought dynamem for memory.guest keep it for now, whatever --force-ownership says
    owners = vm.foreign_owners() if contest is not None else () if force_ownership else vm.applied_by_others()
    if vmi is not None and vmi.active:
        phase = Phase.RUNNING
    elif vm.stopped_for_good and (vmi is None or not vmi.active) and (vmi is None or vmi.phase in FINAL):
        phase = Phase.STOPPED
    elif vm.run_strategy in {"Manual", "Once", "RerunOnFailure"} and vmi is None:
        phase = Phase.NOT_RUNNING
    else:
        phase = Phase.STARTING  # a VMI on its way (or a stopping one): its memory and maxGuest are left alone
    return Managed(
        vmm,
        phase,
        settings,
        vm=vm,
        vmi=vmi,
        hold=hold,
        blocked=precondition_problem(vm, vmi if phase is Phase.RUNNING else None, owners, contest),
        owners=owners,
    )


def _same(a: object, b: object) -> bool:
    """The same view: views are immutable, so the same object (the store's, until the object changes) or an
    equal one (a VMI view remade each round with its failed migration) gives the same join."""
    return a is b or (a is not None and b is not None and a == b)


def _same_views(
    held: tuple[VmmView, VmView | None, VmiView | None, tuple[bool, str | None], Managed],
    vmm: VmmView,
    vm: VmView | None,
    vmi: VmiView | None,
) -> bool:
    return _same(held[0], vmm) and _same(held[1], vm) and _same(held[2], vmi)


@dataclass
class JoinCache:
    """Each VirtualMachineMemory's join with its VM and VMI, and its policy input, kept across rounds.

    The operator's view keeps one immutable view per object, replaced only when the object's resourceVersion
    changes (:class:`dynamem.controller.view.Store`). A round at rest sees the same views as the last one, so
    the join (settings, hold, preconditions, phase) and the policy's :class:`VmState` are made again only for
    the VMs one of whose three views changed; demand, which moves every scrape, is set on the kept join. An
    entry is dropped when its VirtualMachineMemory is gone. The result is what :func:`_join` and
    :func:`vm_state` give; the cache only skips recomputing it.
    """

    joins: dict[
        ObjectKey, tuple[VmmView, VmView | None, VmiView | None, tuple[bool, str | None], Managed]
    ] = field(default_factory=dict)
    states: dict[ObjectKey, tuple[Managed, bool, VmState | None]] = field(default_factory=dict)
    dropped: int = 0  # VirtualMachineMemories gone, all told: what is remembered of them elsewhere can go too
    _names: dict[str, ObjectKey] | None = (
        None  # each joined key by its name (str), made again when keys change
    )

    def join(
        self,
        vmm: VmmView,
        vm: VmView | None,
        vmi: VmiView | None,
        demand: DemandReading,
        force_ownership: bool,
        contest: str | None = None,
    ) -> Managed:
        key = vmm.key
        held = self.joins.get(key)
        ownership = (force_ownership, contest)
        if (
            held is not None
            and held[3] == ownership
            # the same view objects (a round at rest), else equal ones
            and ((held[0] is vmm and held[1] is vm and held[2] is vmi) or _same_views(held, vmm, vm, vmi))
        ):
            base = held[4]
        else:
            base = _join(vmm, vm, vmi, force_ownership, contest)
            if held is None:
                self._names = None
            self.joins[key] = (vmm, vm, vmi, ownership, base)
        if base.phase is not Phase.RUNNING:
            return base
        measured = demand.by_vm.get(key)
        if measured is None:
            return base
        # Managed(**base, demand=measured), spelt out: dataclasses.replace costs ten times as much
        return Managed(
            base.vmm,
            base.phase,
            base.settings,
            base.error,
            base.vm,
            base.vmi,
            measured,
            base.hold,
            base.blocked,
            base.owners,
        )

    def state(self, item: Managed, held: Mapping[ObjectKey, str]) -> VmState | None:
        """:func:`vm_state` of ``item``, remade only when its join or its being held changed."""
        key = item.vmm.key
        entry = self.joins.get(key)
        base = entry[4] if entry is not None else None
        if base is None or base.phase is not item.phase or base.vmi is not item.vmi:
            return vm_state(item, held)  # changed within this round (e.g. unplaced): not cached
        is_held = key in held
        kept = self.states.get(key)
        if kept is not None and kept[0] is base and kept[1] == is_held:
            state = kept[2]
        else:
            state = vm_state(base, held)
            self.states[key] = (base, is_held, state)
        if state is None or state.demand == item.demand:
            return state
        return VmState(  # replace(state, demand=item.demand), spelt out (see join)
            state.name,
            state.limits,
            state.assigned,
            item.demand,
            state.boot_memory,
            state.hugepage,
            state.in_flight_to,
            state.last_change_at,
        )

    def names(self) -> Mapping[str, ObjectKey]:
        """Each joined VirtualMachineMemory's key by its name (``namespace/name``), once :meth:`keep_only` has
        run this round: the same mapping while no key comes or goes."""
        if self._names is None:
            self._names = {str(key): key for key in self.joins}
        return self._names

    def keep_only(self, keys: Mapping[ObjectKey, object]) -> None:
        """Drop the entries of VirtualMachineMemories that are gone (``keys``: this round's, every one of them
        joined this round); :attr:`dropped` counts them."""
        # every key of this round was joined into ``joins``: as many entries as keys means none is gone (and
        # ``states`` only holds keys ``joins`` holds)
        if len(self.joins) == len(keys):
            return
        self._names = None
        for memory in (self.joins, self.states):
            for key in memory.keys() - keys.keys():  # a set difference: no Python loop over 10,000 keys
                del memory[key]
                self.dropped += memory is self.joins


FINAL = frozenset({"Succeeded", "Failed"})


def precondition_problem(
    vm: VmView, vmi: VmiView | None, owners: tuple[str, ...], contest: str | None = None
) -> str | None:
    """Why KubeVirt (or another owner) forbids dynamem to change this VM's memory now, or None.

    KubeVirt's VM controller (``pkg/virt-controller/watch/vm/vm.go``, ``handleMemoryHotplugRequest``) and its
    admission webhook refuse a memory change of a VMI that is not live-migratable (every change is a
    migration; ``types.go`` ``IsMigratable`` wants the ``LiveMigratable`` condition True, so a VMI that has
    none yet is not), of a VMI without ``maxGuest`` (hotplug not set up at its start), of a VM that waits for
    a restart (``RestartRequired``), and of a VM whose memory comes from an instancetype (the webhook refuses
    ``domain.memory`` next to an instancetype). ``contest``: why the other owners keep memory.guest for now
    (they fought dynamem over it).
    """
    if vm.instancetype:
        return f"memory comes from instancetype {vm.instancetype}: dynamem does not change it"
    if owners:
        if contest is not None:
            return contest
        return f"memory.guest is owned by field manager {', '.join(owners)}: not taken (--force-ownership)"
    if vmi is None:
        return None
    if vmi.live_migratable is False:
        why = f" ({vmi.not_migratable_why})" if vmi.not_migratable_why else ""
        return f"not live-migratable{why}: KubeVirt cannot carry out a memory change"
    if vmi.live_migratable is None:  # virt-handler has not reported yet; KubeVirt's IsMigratable is False
        return "KubeVirt has not said yet whether it can live-migrate (no LiveMigratable condition)"
    if vmi.max_guest is None:
        return (
            "no maxGuest on its VMI: KubeVirt set up no memory hotplug at its start (vmRolloutStrategy "
            "Stage, or a size it cannot hotplug), so a change needs a restart"
        )
    if vm.restart_required and (vm.guest is None or vm.guest == vmi.current):
        return "KubeVirt wants a restart (RestartRequired): no memory change until the VM restarts"
    return None


def stuck(item: Managed) -> bool:
    """KubeVirt will not carry out the VM's memory.guest: the hotplug failed or it wants a restart.

    KubeVirt then leaves the guest at its old size for good; the guest's size is the truth, and the request
    is to be taken back. A failed migration is not that: KubeVirt v1.7.0 leaves the VMI as it was with
    ``HotMemoryChange=True`` (``pkg/virt-controller/watch/migration/migration.go``,
    ``handlePendingPodTimeout`` -> ``deleteTimedOutTargetPod``), and its workload-updater migrates such a
    VMI again (``watch/workload-updater/workload-updater.go``, ``doesRequireMigration`` ->
    ``isHotplugInProgress``; the migration controller's ``handleMigrationBackoff`` spaces its retries 20 s,
    40 s, ...). The change stays in flight, and is taken back only if it is not done by its deadline
    (:func:`dynamem.controller.balancer.overdue`).
    """
    vm, vmi = item.vm, item.vmi
    if vm is None or vmi is None or vmi.current is None or vm.guest is None or vm.guest == vmi.current:
        return False
    return vmi.hotplug_failed or vm.restart_required


def held_as_is(item: Managed, held: Mapping[ObjectKey, str]) -> bool:
    """The VM keeps its size this round whatever the policy would like."""
    return item.key in held or item.hold is not None or item.blocked is not None or stuck(item)


def hold_reason(item: Managed, held: Mapping[ObjectKey, str]) -> str | None:
    """Why a running VM gets no change this round, beyond what the policy itself decides."""
    if item.key in held:
        return held[item.key]
    if item.hold is not None:
        return f"held until its VMI restarts: {item.hold.reason}"
    if item.blocked is not None:
        return f"held: {item.blocked}"
    if stuck(item):
        return "held: KubeVirt did not apply memory.guest (hotplug failed, or restart required)"
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
    if held_as_is(item, held or {}):
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
        last_change_at=item.asked_at(),
    )


def _selected(selector: Mapping[str, str], nodes: Mapping[str, NodeView]) -> frozenset[str] | None:
    """The nodes whose labels match a nodeSelector (None: no selector, any node)."""
    if not selector:
        return None
    wanted = set(selector.items())
    return frozenset(name for name, node in nodes.items() if wanted <= set(node.labels))


def _carried_selectors(
    pods: Iterable[PodView],
    vmis: Mapping[ObjectKey, VmiView],
    migrations: Iterable[MigrationView],
    nodes: Mapping[str, NodeView],
) -> dict[ObjectKey, tuple[tuple[str, str], ...]]:
    """Per VMI, the node selector its launcher pod on its node passes on to its next migration target
    beyond the VMI's own (:mod:`dynamem.kube.migration_target`): the pod's selector less what the migration
    that made it added (its ``addedNodeSelector``; that migration gone: a hostname pinning the pod's own
    node), and for a ``host-model`` CPU the host-model keys made from its node's labels when it has none.
    VMIs that get nothing more than their own are left out."""
    by_key = {m.key: m for m in migrations}
    found: dict[ObjectKey, tuple[tuple[str, str], ...]] = {}
    for pod in pods:
        if not (pod.launcher and pod.vmi and pod.node) or pod.finished or pod.terminating:
            continue
        key = ObjectKey(pod.key.namespace, pod.vmi)
        vmi = vmis.get(key)
        if vmi is None or vmi.node != pod.node or not (pod.node_selector or vmi.host_model):
            continue
        own = dict(vmi.node_selector)
        made_by = by_key.get(ObjectKey(pod.key.namespace, pod.migration)) if pod.migration else None
        added = dict(made_by.added) if made_by else ({HOSTNAME_LABEL: pod.node} if pod.migration else {})
        selector = carried_selector(dict(pod.node_selector), added, own)
        node = nodes.get(pod.node)
        if vmi.host_model and node is not None:
            selector.update(host_model_selector(selector, dict(node.labels)) or {})
        extra = {k: v for k, v in selector.items() if k != SCHEDULABLE_LABEL and k not in own}
        if extra:
            found[key] = tuple(sorted(extra.items()))
    return found


def _parked(vm: VmView, now: float | None, parked_after_s: float) -> bool:
    """A VM off for longer than ``parked_after_s`` (by KubeVirt's Ready condition, :func:`off_since`); one
    whose time off is not known may start at any moment."""
    since = parse_rfc3339(vm.off_since)
    return now is not None and since is not None and now - since > parked_after_s


def build_snapshot(
    observed: Observed,
    demand: DemandReading,
    *,
    reserve: int = 0,
    default_overhead: int = 0,
    held: Mapping[ObjectKey, str] | None = None,
    force_ownership: bool = False,
    contested: Mapping[ObjectKey, str] | None = None,
    now: float | None = None,
    shrink_window_s: float = 3600.0,
    cache: JoinCache | None = None,
    promised: Mapping[ObjectKey, str] | None = None,
    launcher_node_selectors: tuple[tuple[str, str], ...] = (),
    parked_after_s: float = PARKED_AFTER_S,
    memory_overcommit: int = 100,
    cpu_allocation_ratio: int = CPU_ALLOCATION_RATIO,
) -> Snapshot:
    """Join the observed objects and demand into per-node policy inputs.

    ``held``: VMs to keep as they are this round, with the reason (e.g. backing off after a refused change).
    ``contested``: VMs whose memory.guest is left to its other owners for now, with why (they fought back).
    ``cache``: the joins of earlier rounds (a balancer keeps one); without it every join is made afresh.
    ``promised``: the target node of each of dynamem's changes in flight: its target pod, once made, is
    scheduled there, and counts there for inter-pod affinity until it is bound (then it is a pod like any).
    ``launcher_node_selectors``: the KubeVirt CR's cluster-wide selector, which every target selects.
    ``parked_after_s``: a VM off for longer than this is parked (``StoppedVm.parked``).
    ``memory_overcommit``: the KubeVirt CR's ``developerConfiguration.memoryOvercommit``: a launcher of a VMI
    with no memory request of its own asks its guest x 100 / that (:func:`launcher_overcommit`).
    ``cpu_allocation_ratio``: the CR's ``developerConfiguration.cpuAllocationRatio``: a VM that is off asks
    its vCPUs / that of CPU to start (:func:`dynamem.kube.launcher_resources.start_requests`).
    """
    joins = cache if cache is not None else JoinCache()
    held = held or {}
    vms = {vm.key: vm for vm in observed.vms}
    vmis = {vmi.key: vmi for vmi in observed.vmis}
    node_views = {node.name: node for node in observed.nodes}
    contested = contested or {}
    managed = {
        vmm.key: joins.join(
            vmm, vms.get(vmm.key), vmis.get(vmm.key), demand, force_ownership, contested.get(vmm.key)
        )
        for vmm in observed.vmms
    }
    joins.keep_only(managed)

    pods: dict[str, int] = defaultdict(int)
    pod_list = list(observed.pods)
    for pod in pod_list:
        if not pod.node or pod.finished:
            continue
        if pod.launcher:
            owner = vmis.get(ObjectKey(pod.key.namespace, pod.vmi)) if pod.vmi else None
            if owner is None or (owner.active and owner.node == pod.node):
                continue  # accounted through its VMI: guest memory plus overhead
            # its VMI runs elsewhere: the target of a live migration (every memory change is one), which
            # takes its requests on this node until the VMI moves here
        pods[pod.node] += pod.request

    launchers = current_launchers(pod_list, vmis)  # each running VMI's launcher pod on its node
    overheads = launcher_overheads(launchers, vmis, memory_overcommit)  # what each asks beyond its guest
    overhead: dict[str, int] = defaultdict(int)
    unmanaged: dict[str, int] = defaultdict(int)
    states: dict[str, list[VmState]] = defaultdict(list)
    for vmi in vmis.values():
        if not vmi.active or vmi.node is None:
            continue
        overhead[vmi.node] += overheads.get(vmi.key, default_overhead)
        item = managed.get(vmi.key)
        state = joins.state(item, held) if item is not None and item.phase is Phase.RUNNING else None
        if state is None or vmi.node not in node_views:
            vm = vms.get(vmi.key)
            taken = max(vmi.current or 0, vm.guest or 0 if vm is not None else 0)
            unmanaged[vmi.node] += taken
            if item is not None and item.phase is Phase.RUNNING and vmi.node not in node_views:
                managed[vmi.key] = replace(item, phase=Phase.UNPLACED, demand=None)
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
    vm_keys = joins.names()  # {str(key): key for key in managed}, kept while no VM comes or goes
    migrations = tuple(observed.migrations)
    # the pods bound to a node, each with the VMI it launches ("namespace/name"), if it is a launcher
    bound_pods = [
        (pod, pod.node, str(ObjectKey(pod.key.namespace, pod.vmi)) if pod.launcher and pod.vmi else None)
        for pod in pod_list
        if pod.node
    ]
    # a pod nominated to a node (it preempted pods there) is counted there, as the scheduler counts it for
    # the pods it places next, at least as high in priority (addGENominatedPods: dynamem counts it for all);
    # a launcher waiting to start is kept a hole of its own below instead
    bound_pods += [(pod, pod.nominated, None) for pod in pod_list if pod.nominated and not pod.launcher]
    requested = node_requests(
        [(node, launches, pod.request, pod.finished) for pod, node, launches in bound_pods],
        vmis,
        default_overhead,
        memory_overcommit,
    )
    page_requests = node_page_requests(
        [(node, launches, dict(pod.hugepages), pod.finished) for pod, node, launches in bound_pods], vmis
    )
    # launcher pods of VMIs waiting to start (no node yet; unschedulable while no node has room): the plan
    # keeps a hole for each (KubeVirt's target pods of migrations belong to a VMI that has a node)
    pending = tuple(
        (pod.request, owner, pod.others)
        for pod in pod_list
        if pod.launcher
        and not pod.node
        and not pod.finished
        and pod.vmi
        and (owner := vmis.get(ObjectKey(pod.key.namespace, pod.vmi))) is not None
        and owner.node is None
    )
    # what the VMs defined but not running would ask to start, their launcher's memory request: the VM's
    # resources.requests.memory, else its limits.memory, else its memory.guest (set back to startup while
    # stopped) x 100 / the KubeVirt CR's memoryOvercommit, plus the overhead of a launcher (the largest of
    # the running VMIs', at least --default-overhead). The plan keeps
    # a hole for each, and one for the largest of those parked: off for longer than --parked-after (a VM
    # stopped last night is started this morning; one off for weeks may stay off); the hole must have room
    # for what its launcher asks beside memory too (CPU, ephemeral storage, devices). A hugepage VM's guest
    # is requested as hugepages, not memory; a VM whose memory comes from an instancetype has no size here
    # to go by.
    launcher_overhead = max(overheads.values(), default=default_overhead)
    stopped = tuple(
        StoppedVm(
            (
                memory_request(
                    item.vm.launcher_spec.get("domain") or {},
                    item.vm.guest or item.settings.startup,
                    memory_overcommit,
                )
                or 0
            )
            + max(default_overhead, launcher_overhead),
            _selected(item.vm.node_selector, node_views),
            others=start_requests(item.vm.launcher_spec, cpu_allocation_ratio),
            parked=_parked(item.vm, now, parked_after_s),
        )
        for item in managed.values()
        if item.phase in (Phase.STOPPED, Phase.NOT_RUNNING)
        and item.vm is not None
        and item.settings is not None
        and item.vm.pages is None
        and (item.vm.instancetype is None or item.vm.request or item.vm.guest)
    )
    bound = frozenset(
        (pod.node, ObjectKey(pod.key.namespace, pod.vmi))
        for pod in pod_list
        if pod.node and pod.launcher and pod.vmi and not pod.finished
    )
    # inter-pod affinity and topology spread are judged only where some pod or VMI has a required term or a
    # DoNotSchedule constraint (kube.pod_affinity, kube.topology_spread)
    tied = any(pod.anti for pod in pod_list) or any(vmi.affinity.terms or vmi.spread for vmi in vmis.values())
    placed = [
        PlacedPod(pod.node, pod.key.namespace, dict(pod.labels), pod.anti, pod.terminating)
        for pod in (pod_list if tied else ())
        if pod.node and not pod.finished
    ]
    for vmi in vmis.values() if tied else ():  # running with its launcher pod not in view: counted as one
        if vmi.active and vmi.node is not None and (vmi.node, vmi.key) not in bound:
            placed.append(PlacedPod(vmi.node, vmi.key.namespace, dict(vmi.pod_labels), vmi.affinity.anti))
    for key, target in (promised or {}).items() if tied else ():
        moving = vmis.get(key)
        if moving is not None and moving.active and moving.node != target and (target, key) not in bound:
            placed.append(PlacedPod(target, key.namespace, dict(moving.pod_labels), moving.affinity.anti))
    others = node_others(
        node_views, ((node, launches, pod.others, pod.finished) for pod, node, launches in bound_pods), vmis
    )
    by_name = {volume.key.name: volume for volume in observed.volumes}
    bound_to = {
        claim.key: by_name[claim.volume]
        for claim in observed.claims
        if claim.volume and claim.volume in by_name
    }
    cluster = cluster_state(
        volumes=bound_to,
        carried=_carried_selectors(pod_list, vmis, migrations, node_views),
        cluster_wide=launcher_node_selectors,
        nodes={name: node.allocatable for name, node in node_views.items()},
        requested=requested,
        page_requests=page_requests,
        cordoned=frozenset(name for name, node in node_views.items() if not node.schedulable),
        node_views=node_views,
        states=states,
        vmis=vmis,
        keys=vm_keys,
        migrations=list(migrations),
        demand=demand,
        reserve=reserve,
        default_overhead=default_overhead,
        now=now,
        shrink_window_s=shrink_window_s,
        pending=pending,
        stopped=stopped,
        placed=placed,
        others=others,
        launcher_others={key: pod.others for key, pod in launchers.items()},
        launcher_memory={key: pod.request for key, pod in launchers.items()},
        overheads=overheads,
        overcommit=memory_overcommit,
    )
    return Snapshot(
        nodes,
        pools,
        managed,
        demand_error=demand.error,
        vm_keys=vm_keys,
        cluster=cluster,
        migrations=migrations,
        bound=bound,
    )
