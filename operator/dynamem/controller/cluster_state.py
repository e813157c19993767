"""From the operator's view to the cluster plan's input (:class:`dynamem.policy.cluster.ClusterState`).

Room is counted as the kube-scheduler counts it (``pkg/scheduler/framework/plugins/noderesources/fit.go``,
``fitsRequest``; ``pkg/scheduler/framework/types.go``, ``NodeInfo.AddPod``): a node's allocatable memory less
the memory requests (and, per resource, the ``hugepages-*`` requests) of every pod bound to it, whatever its
state, until the pod object is gone, so a terminating pod (a migration's source launcher on its way out)
still takes its requests, and a migration's target pod takes its requests from the moment it is bound. Pods
that have finished (Succeeded or Failed) are not counted (``NodeInfo`` drops them when the pod informer
removes them; the scheduler's cache skips them).
A running VMI whose launcher pod is not in the view is counted at its guest memory plus overhead, as its pod
would request. A configurable ``reserve`` is kept back from every node; a cordoned node has no room (the
scheduler's ``NodeUnschedulable`` filter). Where each VM may go at all (cordons, taints against its
tolerations, its node selector and required node affinity) is :mod:`dynamem.controller.eligibility`'s: the
plan chooses among those nodes only.

Each running VM dynamem may change becomes a :class:`ClusterVm` carrying what its guest shows (used, usable,
available, peak use, paging rates; :class:`dynamem.controller.ports.GuestSignals`), its launcher request
(what it asks for its guest, x 100 / the KubeVirt CR's memoryOvercommit where it has no memory request of its
own, + overhead), and what it is doing: a VM held for any reason (a hold, a blocked precondition, a change
or migration in flight) is marked in flight at its size, so the plan keeps it where and as it is. Migrations
not yet final are the plan's in-flight budget. A hugepage-backed VM's guest counts against its ``hugepages-*``
resource, its launcher's ``memory`` request being its overhead only (KubeVirt v1.7.0
``pkg/virt-controller/services/renderresources.go``, ``WithHugePages``: the hugepages request is the VMI's
memory request capped at ``memory.guest``; ``memory`` is the overhead plus whatever the request is above the
guest).
A VM changed less than the shrink window ago is not shrunk for idleness: its use at this size has not stayed
low for a window yet, so its peak is taken as the use its size is the target of (its size less its buffer,
:func:`served_use`), never as the size itself, which would call for a buffer on top and grow it again after
every change. So is a VM whose highest use over the window is not known (Prometheus did not answer that
query, or left the VM out of its answer): one sample of low use is no window of it. A VM whose last sample
was taken at another size than it has now (the scrape before its last change) has unknown demand: the plan
holds it until a sample of its new size comes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace

from dynamem.controller.eligibility import EligibleNodes, affinity_groups
from dynamem.controller.migrations import MigrationView
from dynamem.controller.ports import NO_SIGNALS, DemandReading, GuestSignals
from dynamem.kube.api import parse_rfc3339
from dynamem.kube.objects import PODS, NodeView, ObjectKey, PodView, VmiView
from dynamem.kube.pod_affinity import PlacedPod
from dynamem.kube.volumes import VolumeView
from dynamem.policy.cluster import ClusterNode, ClusterState, ClusterVm, InFlight, StoppedVm, guest_request
from dynamem.policy.model import VmState

__all__ = [
    "cluster_state",
    "current_launchers",
    "launcher_overcommit",
    "launcher_overheads",
    "node_others",
    "node_page_requests",
    "node_requests",
    "sampled_at",
    "served_use",
    "with_promised_targets",
]

# MemTotal is the guest's size less what its kernel keeps: about 110Mi plus 1.7 % in the guests fitted to
# real ones (dynamem.sim.guest), 12.5 % of a 1Gi guest. A sample whose MemTotal is further under the size the
# VMI has now than this allowance was taken at another size (every change moves at least the dead band).
_KERNEL_ALLOWANCE_BYTES = 128 * 1024 * 1024
_KERNEL_ALLOWANCE_PERCENT = 5
# A guest's kernel may keep more for itself: a kdump reservation (RHEL 9's default crashkernel is 192Mi for
# 1-4Gi guests, 256Mi up to 64Gi, 512Mi above, where 5 % covers it) on top of the above. Once no change has
# been asked for SETTLED_AFTER_S, every sample is of the size the VM has, and this much more is allowed.
_RESERVATION_ALLOWANCE_BYTES = 512 * 1024 * 1024
SETTLED_AFTER_S = 600.0


def _settled(now: float | None, asked: float | None, moved: float | None) -> bool:
    """No change asked (``last_change_at``) and no live migration ended (the VMI's ``migrationState``) for
    :data:`SETTLED_AFTER_S`: a change lands when its migration ends, which may be long after it was asked
    (a target pod pending for minutes, a long copy), and another manager's change moves no ask time."""
    return all(at is None or (now is not None and now - at >= SETTLED_AFTER_S) for at in (asked, moved))


def sampled_at(signals: GuestSignals, size: int, settled: bool = False) -> bool:
    """Whether the guest's last sample was taken at ``size`` (unknown MemTotal: assumed so).

    Right after a change (a migration), the last scrape may still be of the guest before it: its MemTotal
    (``available``) is then not the new size, and neither its use (which would call for a shrink back) nor
    its paging (which the change was to end) says anything of the guest now: the VM is held until a sample
    of the new size comes. MemTotal is never above the size, and under it by the kernel's share only.

    ``settled``: no change asked for :data:`SETTLED_AFTER_S` (or never): the old size's series are long
    gone, and a guest whose kernel keeps more than the fitted share (a kdump reservation) is taken at its
    word, up to ``_RESERVATION_ALLOWANCE_BYTES`` more; held for ever instead, it was never grown however it
    paged. Beyond that (a guest that did not take the memory plugged into it) it stays held.
    """
    if signals.available is None:
        return True
    allowance = _KERNEL_ALLOWANCE_BYTES + size * _KERNEL_ALLOWANCE_PERCENT // 100
    if settled:
        allowance += _RESERVATION_ALLOWANCE_BYTES
    return size - allowance <= signals.available <= size


def served_use(size: int, buffer_percent: int) -> int:
    """The use whose target (use / (1 - buffer), as :func:`dynamem.policy.balance.vm_levels` counts it) is
    ``size``: rounded up, so that target is ``size`` again, not a page under it."""
    return -(-size * (100 - buffer_percent) // 100)


def launcher_overcommit(vmi: VmiView, overcommit: int) -> int:
    """The memoryOvercommit (percent) ``vmi``'s launchers are rendered under: the KubeVirt CR's
    ``overcommit`` for a VMI with no memory request or limit of its own, else 100 (KubeVirt v1.7.0
    ``services/renderresources.go``, ``WithMemoryRequests``: the request, else the limit, else
    ``memory.guest`` x 100 / memoryOvercommit; a request moves with each change of size, ``vm.go``,
    ``handleMemoryHotplugRequest``). A hugepage VM is taken at 100: its guest is requested as hugepages."""
    return 100 if vmi.own_request or vmi.pages else overcommit


def node_requests(
    pods: list[tuple[str, str | None, int, bool]],
    vmis: Mapping[ObjectKey, VmiView],
    default_overhead: int,
    overcommit: int = 100,
) -> dict[str, int]:
    """Memory requested per node: every unfinished pod bound there; a VMI without a launcher pod in the view
    at what its launcher asks for its guest memory (``overcommit``: the KubeVirt CR's memoryOvercommit) plus
    overhead. ``pods``: (node, namespace/VMI it launches or None, request, finished).
    """
    requested: dict[str, int] = defaultdict(int)
    launched: set[tuple[str, str]] = set()
    for node, launches, request, finished in pods:
        if finished:
            continue
        requested[node] += request
        if launches is not None:
            launched.add((node, launches))
    for key, instance in vmis.items():
        if not instance.active or instance.node is None or (instance.node, str(key)) in launched:
            continue
        overhead = instance.overhead if instance.overhead is not None else default_overhead
        # with hugepages its guest is requested as hugepages-* (node_page_requests), memory is the overhead
        guest = 0 if instance.pages else instance.current or 0
        requested[instance.node] += guest_request(guest, launcher_overcommit(instance, overcommit)) + overhead
    return requested


def node_others(
    nodes: Mapping[str, NodeView],
    pods: Iterable[tuple[str, str | None, tuple[tuple[str, int], ...], bool]],
    vmis: Mapping[ObjectKey, VmiView],
) -> dict[str, tuple[tuple[str, int, int], ...]]:
    """Per node, (resource, allocatable, requested) of every other resource it reports that a launcher must
    fit in, as the scheduler's ``NodeResourcesFit`` counts them: ``cpu``, ``ephemeral-storage`` and extended
    resources (``devices.kubevirt.io/kvm``...) requested by every unfinished pod bound there, and ``pods``,
    their number plus each running VMI whose launcher is not in view. ``pods``: (node, namespace/VMI it
    launches or None, its requests of those resources, finished)."""
    requested: dict[tuple[str, str], int] = defaultdict(int)
    launched: set[tuple[str, str]] = set()
    for node, launches, asks, finished in pods:
        if finished:
            continue
        for resource, amount in asks:
            requested[(node, resource)] += amount
        requested[(node, PODS)] += 1
        if launches is not None:
            launched.add((node, launches))
    for key, instance in vmis.items():
        if instance.active and instance.node is not None and (instance.node, str(key)) not in launched:
            requested[(instance.node, PODS)] += 1
    return {
        name: tuple((resource, total, requested.get((name, resource), 0)) for resource, total in view.others)
        for name, view in nodes.items()
    }


def current_launchers(pods: Iterable[PodView], vmis: Mapping[ObjectKey, VmiView]) -> dict[ObjectKey, PodView]:
    """Each VMI's launcher pod on the VMI's node, unfinished and not on its way out: what its next target
    asks beside memory, what its leaving frees, and what its overhead is read from."""
    return {
        key: pod
        for pod in pods
        if pod.launcher
        and pod.vmi
        and pod.node
        and not pod.finished
        and not pod.terminating
        and (key := ObjectKey(pod.key.namespace, pod.vmi)) in vmis
        and vmis[key].node == pod.node
    }


def launcher_overheads(
    launchers: Mapping[ObjectKey, PodView], vmis: Mapping[ObjectKey, VmiView], overcommit: int = 100
) -> dict[ObjectKey, int]:
    """The launcher overhead of each running VMI: what its VMI reports (``status.memory.memoryOverhead``,
    newer KubeVirt), else what its launcher pod on its node (``launchers``: :func:`current_launchers`)
    requests beyond its guest. KubeVirt renders a
    launcher's memory request as the guest plus its overhead (``renderresources.go``, ``WithMemoryRequests``,
    ``WithMemoryOverhead``), and a change of size shifts a VMI's own memory request by the change
    (``vm.go``, ``handleMemoryHotplugRequest``), so what a launcher asks beyond its guest is what the VM's
    next target will ask beyond its new size. With hugepages the guest is requested as hugepages and the
    ``memory`` request is all overhead. v1.7.0 reports no overhead, and it varies with the VM (vCPUs,
    devices, graphics): without this reading a target chosen for size + ``--default-overhead`` may not fit
    the node and fail after the pending timeout. Under the KubeVirt CR's ``memoryOvercommit``
    (``overcommit``) a launcher of a VMI without a memory request of its own asks its guest x 100 /
    overcommit (:func:`launcher_overcommit`), and its overhead is what it asks beyond that. A launcher that
    asks less than its guest otherwise (a request below ``memory.guest`` set by hand, or a launcher rendered
    before the CR's ratio was raised) is taken at 0 overhead: its next target asks at least its new size
    (``handleMemoryHotplugRequest``). One rendered before the ratio was lowered is read with a larger
    overhead than it has, which its next target over-asks by (safe) until the VM has moved."""
    found = {key: vmi.overhead for key, vmi in vmis.items() if vmi.overhead is not None}
    for key, pod in launchers.items():
        vmi = vmis[key]
        # the guest its launcher was rendered for: after a migration the VMI moves to the new launcher and
        # asks its new size (guestRequested) before the guest reports it (guestCurrent)
        rendered = vmi.guest_requested if vmi.guest_requested is not None else vmi.current
        if key in found or not vmi.active or rendered is None:
            continue
        asked = guest_request(rendered, launcher_overcommit(vmi, overcommit))
        found[key] = pod.request if vmi.pages else max(0, pod.request - asked)
    return found


def node_page_requests(
    pods: list[tuple[str, str | None, Mapping[str, int], bool]], vmis: Mapping[ObjectKey, VmiView]
) -> dict[tuple[str, str], int]:
    """Hugepages requested per (node, ``hugepages-*`` resource): every unfinished pod bound there; a hugepage
    VMI without a launcher pod in the view at its guest memory. ``pods``: (node, namespace/VMI it launches or
    None, hugepages requests, finished)."""
    requested: dict[tuple[str, str], int] = defaultdict(int)
    launched: set[tuple[str, str]] = set()
    for node, launches, pages, finished in pods:
        if finished:
            continue
        for resource, amount in pages.items():
            requested[(node, resource)] += amount
        if launches is not None:
            launched.add((node, launches))
    for key, instance in vmis.items():
        if instance.pages and instance.active and instance.node and (instance.node, str(key)) not in launched:
            requested[(instance.node, instance.pages)] += instance.current or 0
    return requested


def cluster_state(
    *,
    nodes: Mapping[str, int],
    requested: Mapping[str, int],
    cordoned: frozenset[str] = frozenset(),
    page_requests: Mapping[tuple[str, str], int] | None = None,
    node_views: Mapping[str, NodeView] | None = None,
    states: Mapping[str, list[VmState]],
    vmis: Mapping[ObjectKey, VmiView],
    keys: Mapping[str, ObjectKey],
    migrations: list[MigrationView],
    demand: DemandReading,
    reserve: int,
    default_overhead: int,
    now: float | None = None,
    shrink_window_s: float = 3600.0,
    pending: Iterable[tuple[int, VmiView, tuple[tuple[str, int], ...]]] = (),
    stopped: tuple[StoppedVm, ...] = (),
    placed: Iterable[PlacedPod] = (),
    others: Mapping[str, tuple[tuple[str, int, int], ...]] | None = None,
    launcher_others: Mapping[ObjectKey, tuple[tuple[str, int], ...]] | None = None,
    overheads: Mapping[ObjectKey, int] | None = None,
    launcher_memory: Mapping[ObjectKey, int] | None = None,
    carried: Mapping[ObjectKey, tuple[tuple[str, str], ...]] | None = None,
    cluster_wide: tuple[tuple[str, str], ...] = (),
    volumes: Mapping[ObjectKey, VolumeView] | None = None,
    overcommit: int = 100,
) -> ClusterState:
    """The plan's input. ``nodes``: allocatable per node; ``states``: the per-node policy inputs of the
    managed running VMs (their limits, size, change in flight); ``keys``: a VM's name in those to its key;
    ``node_views``: the nodes as observed, for where each VM may go (None: anywhere) and their hugepages;
    ``page_requests``: hugepages requested per (node, resource); ``pending``: (memory request, VMI, other
    requests) of each launcher pod waiting to start (:func:`_waiting`); ``stopped``: those the VMs defined
    but not running would ask to start;
    ``placed``: the pods on the nodes (and targets about to be), for inter-pod affinity; ``others``: per
    node, its room in the other resources (:func:`node_others`); ``launcher_others``: the requests of each
    VMI's launcher pod on its node beyond memory and hugepages (cpu, ephemeral storage, devices), which its
    migration target asks the same (none in view: not counted); ``overheads``: each VMI's launcher overhead
    where known (:func:`launcher_overheads`), else its VMI's or ``default_overhead``; ``launcher_memory``:
    the memory request of each VMI's launcher pod on its node, what its leaving frees;
    ``carried``: the node selector each VMI's launcher passes on to its next target beyond the VMI's own
    (:mod:`dynamem.kube.migration_target`); ``cluster_wide``: the KubeVirt CR's launcher node selector;
    ``volumes``: the PersistentVolume each claim is bound to (:mod:`dynamem.kube.volumes`); ``overcommit``:
    the KubeVirt CR's memoryOvercommit (:func:`launcher_overcommit`)."""
    pages = page_requests or {}
    views = node_views or {}
    eligibility = (
        None
        if node_views is None
        else EligibleNodes(node_views.values(), placed, cluster_wide, volumes=volumes or {})
    )
    tied = [vmi for vmi in vmis.values() if (vmi.affinity.terms or vmi.spread) and vmi.active]
    groups = affinity_groups(vmi for vmi in vmis.values() if vmi.active) if tied else {}
    cluster_nodes = tuple(
        ClusterNode(
            name=name,
            memory=max(0, memory - reserve),
            # a cordoned node takes no new pod (the scheduler's NodeUnschedulable filter): no room
            requested=max(requested.get(name, 0), memory) if name in cordoned else requested.get(name, 0),
            hugepages=tuple(
                (resource, total, pages.get((name, resource), 0))
                for resource, total in (views[name].hugepages if name in views else ())
            ),
            others=(others or {}).get(name, ()),
        )
        for name, memory in sorted(nodes.items())
    )
    vms: list[ClusterVm] = []
    for node, node_states in sorted(states.items()):
        for state in node_states:
            key = keys[state.name]
            vmi = vmis[key]
            overhead = (overheads or {}).get(
                key, vmi.overhead if vmi.overhead is not None else default_overhead
            )
            signals = demand.signals.get(key, NO_SIGNALS)  # demand.signals_of, without a call per VM
            changed = state.last_change_at
            settled = _settled(now, changed, parse_rfc3339(vmi.moved_at))
            used = state.demand if sampled_at(signals, state.assigned, settled) else None
            peak = seen = signals.used_peak
            recent = now is not None and changed is not None and now - changed < shrink_window_s
            if recent or (peak is None and used is not None):
                # at this size for less than the window, or its highest use over the window not read (the
                # peak query failed or left it out): its use has not been seen to stay low for a window; a
                # needed shrink (room for a paging VM) still goes by the peak measured (used_peak_seen)
                peak = max(peak or 0, served_use(state.assigned, state.limits.buffer))
            allowed = None if eligibility is None else eligibility.of(vmi, (carried or {}).get(key, ()))
            vms.append(
                ClusterVm(
                    name=state.name,
                    node=node,
                    limits=state.limits,
                    assigned=state.assigned,
                    request=guest_request(state.assigned, launcher_overcommit(vmi, overcommit)) + overhead,
                    boot_memory=state.boot_memory or state.assigned,
                    used=used,
                    available=signals.available,
                    usable=signals.usable,
                    used_peak=peak,
                    used_peak_seen=seen if seen is not None and peak is not None and seen < peak else None,
                    swap_bps=signals.swap_bps,
                    major_faults_ps=signals.major_faults_ps,
                    used_rise_bps=signals.used_rise_bps,
                    hugepage=state.hugepage,
                    in_flight_to=state.in_flight_to,
                    last_change_at=state.last_change_at,
                    last_failed_at=vmi.failed_migration_at,
                    failures=vmi.failed_migrations,
                    allowed_nodes=allowed,
                    pages=vmi.pages,
                    group=groups.get(str(key)),
                    others=(*(launcher_others or {}).get(key, ()), (PODS, 1)),
                    launcher_memory=(launcher_memory or {}).get(key),
                    overcommit=launcher_overcommit(vmi, overcommit),
                )
            )
    in_flight = tuple(
        InFlight(vm=str(m.vmi), source=vmis[m.vmi].node or "", target=None)
        for m in migrations
        if not m.final and m.vmi in vmis and vmis[m.vmi].node is not None
    )
    return ClusterState(
        nodes=cluster_nodes,
        vms=tuple(vms),
        in_flight=in_flight,
        pending=_waiting(pending, eligibility, cluster_nodes),
        stopped=stopped,
    )


def _waiting(
    pending: Iterable[tuple[int, VmiView, tuple[tuple[str, int], ...]]],
    eligibility: EligibleNodes | None,
    nodes: tuple[ClusterNode, ...],
) -> tuple[StoppedVm, ...]:
    """The launchers waiting to start that memory could start: each with the nodes its VMI may go to and its
    other requests. One that no node may take (its selector, affinity, taints, volumes), or that asks a
    resource no node has (a GPU, an SR-IOV VF), waits for something no memory frees: the plan keeps no hole
    for it and moves no VM for it."""
    reported = {resource for node in nodes for resource, total, _ in node.others if total > 0}
    found = []
    for request, vmi, others in pending:
        allowed = None if eligibility is None else eligibility.of(vmi)
        if allowed is not None and not allowed:
            continue
        if reported and any(resource not in reported for resource, _ in others):
            continue
        found.append(StoppedVm(request, allowed, tuple(others)))
    return tuple(found)


def with_promised_targets(state: ClusterState, promised: Iterable[tuple[str, str, int]]) -> ClusterState:
    """``state`` with the target requests of dynamem's changes in flight whose target pod is not bound yet
    taken on their target nodes. ``promised``: (VM name, target node, guest size) per such change.

    The scheduler keeps no room for a pod that is not bound (a migration not made yet, or its target pod
    Pending until a VM leaves the node): a later round that saw the room free would place another VM there,
    whose target pod could take it first, and the first change's target would stay unschedulable until
    KubeVirt fails its migration (``handlePendingPodTimeout``). A target pod once bound is counted on its
    node like any pod (:func:`node_requests`), so it is not passed here.
    """
    vms = {vm.name: vm for vm in state.vms}
    memory: dict[str, int] = defaultdict(int)
    pages: dict[tuple[str, str], int] = defaultdict(int)  # also the other resources (cpu, pods, devices)
    for name, target, size in promised:
        vm = vms.get(name)
        overhead = vm.overhead if vm is not None else 0
        if vm is not None and vm.pages is not None:
            memory[target] += overhead
            pages[(target, vm.pages)] += size
        else:
            memory[target] += (vm.guest_request(size) if vm is not None else size) + overhead
        for resource, amount in vm.others if vm is not None else ():
            pages[(target, resource)] += amount
    if not memory:
        return state
    nodes = tuple(
        replace(
            node,
            requested=node.requested + memory.get(node.name, 0),
            hugepages=tuple(
                (resource, total, taken + pages.get((node.name, resource), 0))
                for resource, total, taken in node.hugepages
            ),
            others=tuple(
                (resource, total, taken + pages.get((node.name, resource), 0))
                for resource, total, taken in node.others
            ),
        )
        for node in state.nodes
    )
    return replace(state, nodes=nodes)
