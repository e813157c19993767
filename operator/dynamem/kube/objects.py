"""Typed views of the Kubernetes and KubeVirt objects the operator reads.

The operator (through kopf indices) and the KubeVirt simulator both get raw JSON bodies. Every field dynamem
relies on is read here, once, into small frozen dataclasses with quantities already parsed to bytes, so the
rest of the code never digs through nested dicts and never parses a quantity twice. The paths follow
``shared/KUBEVIRT.md``: ``spec.template.spec.domain.memory.guest`` on the VirtualMachine, ``status.memory`` on
the VirtualMachineInstance.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple

from kubernetes.utils import parse_quantity

from dynamem.kube.migration_target import HOST_MODEL
from dynamem.kube.pod_affinity import AffinityTerm, LabelRequirement, PodAffinity, pod_affinity
from dynamem.kube.scheduling import PodPlacement, Taint, pod_placement, taint
from dynamem.kube.topology_spread import SpreadConstraint, spread_constraints

MI = 1024**2
GI = 1024**3

LAUNCHER_LABEL = "kubevirt.io"
LAUNCHER_VALUE = "virt-launcher"
# The labels KubeVirt v1.7.0 adds to a launcher pod's (pkg/virt-controller/services/template.go, podLabels)
CREATED_BY_LABEL = "kubevirt.io/created-by"
VM_NAME_LABEL = "vm.kubevirt.io/name"
VMI_ID_LABEL = "vmi.kubevirt.io/id"
HOSTNAME_LABEL = "kubernetes.io/hostname"
DOMAIN_ANNOTATION = "kubevirt.io/domain"
MIGRATION_JOB_ANNOTATION = "kubevirt.io/migrationJobName"  # on a migration's target pod
# On a VirtualMachine, written in the same server-side apply as memory.guest: where dynamem's change goes
# (controller.placement), so that a new leader finds the change in flight with its target and deadline.
PLACEMENT_ANNOTATION = "dynamem.io/placement"
# Written in the same apply as a change taken back: the hold that follows (controller.snapshot.Hold), so that
# a new leader keeps it though the status that records it was not written yet.
HOLD_ANNOTATION = "dynamem.io/hold"
RUNNING_STRATEGIES = frozenset({"Always", "RerunOnFailure", "Once"})
# The runStrategy under which a VM without a VMI is stopped for good (until someone changes the VM); under
# Manual, Once and RerunOnFailure a VM without a VMI may be started (or have ended) by KubeVirt or a user.
STOPPED_STRATEGY = "Halted"
GUEST_PATH = ("spec", "template", "spec", "domain", "memory", "guest")
GUEST_FIELD = tuple(f"f:{part}" for part in GUEST_PATH)  # the same, in managedFields' fieldsV1
DYNAMEM_MANAGERS = frozenset({"dynamem", "dynamem-stopped"})
# Managers that write with an update (not server-side apply) but re-assert their manifest at every sync:
# kubectl's client-side apply, and Helm (a three-way merge with the live object at every upgrade; Flux's
# helm-controller runs it under its own name). Any other client-side apply (Argo CD's default sync) is told
# by the annotation it leaves (LAST_APPLIED_ANNOTATION).
DECLARATIVE_UPDATERS = frozenset({"kubectl-client-side-apply", "helm", "helm-controller"})
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"

Body = Mapping[str, Any]


def quantity_bytes(value: object) -> int | None:
    """A Kubernetes quantity as whole bytes (rounded up), or None when absent or malformed."""
    if value is None or value == "":
        return None
    try:
        exact: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
        return math.ceil(exact)
    except (ValueError, TypeError, ArithmeticError):
        return None


def quantity_milli(value: object) -> int | None:
    """A Kubernetes quantity in thousandths, rounded up (CPU as the scheduler counts it: ``MilliValue``), or
    None when absent or malformed."""
    if value is None or value == "":
        return None
    try:
        exact: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
        return math.ceil(exact * 1000)
    except (ValueError, TypeError, ArithmeticError):
        return None


def dig(body: Body, *path: str) -> Any:
    """``body[a][b][c]`` or None when any step is missing or not a mapping."""
    node: Any = body
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def conditions(body: Body) -> dict[str, Mapping[str, Any]]:
    """The object's ``status.conditions`` by type."""
    items = dig(body, "status", "conditions") or []
    return {str(c.get("type")): c for c in items if isinstance(c, Mapping)}


def condition_is(body: Body, kind: str, status: str = "True") -> bool:
    found = conditions(body).get(kind)
    return found is not None and str(found.get("status")) == status


class ObjectKey(NamedTuple):
    """A namespaced object's identity; a VirtualMachineMemory and its VM share it.

    A named tuple, not a dataclass: a round looks up some 300,000 keys in dicts at 10,000 VMs, and a
    tuple's hash and equality are CPython's own, where a dataclass calls its generated ``__hash__`` and
    ``__eq__`` in Python each time.
    """

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, body: Body) -> ObjectKey:
        return cls(str(dig(body, "metadata", "namespace") or ""), str(dig(body, "metadata", "name") or ""))


@dataclass(frozen=True, slots=True)
class VmView:
    """What dynamem needs of a KubeVirt VirtualMachine."""

    key: ObjectKey
    uid: str
    guest: int | None
    max_guest: int | None
    hugepage: int
    request: int | None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    desired_running: bool = False
    restart_required: bool = False
    resource_version: str = ""
    generation: int = 0
    run_strategy: str = ""  # the VM's runStrategy, or what ``running`` means: Always / Halted
    instancetype: str | None = None  # memory comes from this instancetype: not dynamem's to change
    guest_owners: tuple[tuple[str, str], ...] = ()  # (manager, operation) owning memory.guest
    guest_declared: bool = False  # the last client-side apply's manifest (its annotation) sets memory.guest
    placement: str | None = None  # the PLACEMENT_ANNOTATION dynamem wrote with its last change, as written
    hold: str | None = None  # the HOLD_ANNOTATION written with a change taken back, as written
    # when another manager last wrote memory.guest (its managedFields entry's time, RFC 3339), or None
    guest_written_by_others: str | None = None
    # the resource its guest memory is requested as with hugepages ("hugepages-2Mi"), else None: memory
    pages: str | None = None
    # since when it has had no VMI (RFC 3339), or None: see :func:`off_since`
    off_since: str | None = None
    # what of its template decides its launcher's requests beside memory: spec.domain's cpu, resources and
    # devices (kube.launcher_resources.start_requests)
    launcher_spec: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stopped_for_good(self) -> bool:
        """runStrategy Halted (or ``running: false``): stopped until someone changes the VM."""
        return self.run_strategy == STOPPED_STRATEGY

    def applied_by_others(self) -> tuple[str, ...]:
        """Managers that claim memory.guest declaratively: a GitOps tool, say.

        Server-side apply (operation ``Apply``); a client-side apply, which records itself as an ``Update``
        (``kubectl-client-side-apply``, ``argocd-controller`` in Argo CD's default sync) but re-applies its
        manifest like any GitOps tool, told by its ``last-applied-configuration`` annotation setting
        memory.guest; and Helm, whose upgrades merge the chart's value back. Others (``kubectl create`` or
        ``edit``, a controller's update) only wrote the field once.
        """
        return tuple(
            sorted(
                {
                    m
                    for m, op in self.guest_owners
                    if m not in DYNAMEM_MANAGERS
                    and (op == "Apply" or m in DECLARATIVE_UPDATERS or self.guest_declared)
                }
            )
        )

    def owned_by_others_than(self, manager: str) -> bool:
        """Someone besides ``manager`` owns memory.guest (server-side apply would report a conflict)."""
        return any(m != manager for m, _ in self.guest_owners)

    def foreign_owners(self) -> tuple[str, ...]:
        """Owners of memory.guest that are not dynamem's own field managers."""
        return tuple(sorted({m for m, _ in self.guest_owners if m not in DYNAMEM_MANAGERS}))

    def guest_from_others(self) -> bool:
        """memory.guest was last written by another manager: it owns the field and dynamem does not.

        A write that changes a field moves its ownership to the writer (server-side apply's field
        management), so after ``kubectl edit`` or a controller's update of memory.guest, dynamem's managers no
        longer own it. A VM without managedFields says nothing: False.
        """
        return bool(self.guest_owners) and all(m not in DYNAMEM_MANAGERS for m, _ in self.guest_owners)


def hugepage_bytes(domain: Body | None) -> int:
    """The alignment a guest's memory needs: 1Gi with 1Gi hugepages, else 2Mi."""
    size = quantity_bytes(dig(domain or {}, "memory", "hugepages", "pageSize"))
    return GI if size == GI else 2 * MI


HUGEPAGES_PREFIX = "hugepages-"


def hugepages_resource(domain: Body | None) -> str | None:
    """The resource a VMI's guest memory is requested as when hugepages back it: ``hugepages-<pageSize>``,
    the page size as written (KubeVirt v1.7.0 ``renderresources.go``, ``WithHugePages``:
    ``k8sv1.ResourceHugePagesPrefix + vmMemory.Hugepages.PageSize``); None without hugepages."""
    size = dig(domain or {}, "memory", "hugepages", "pageSize")
    return f"{HUGEPAGES_PREFIX}{size}" if size else None


def hugepages_of(resources: Body | None) -> dict[str, int]:
    """The ``hugepages-*`` quantities of a resource list (allocatable, requests), in bytes."""
    found: dict[str, int] = {}
    for name, value in (resources or {}).items():
        amount = quantity_bytes(value) if str(name).startswith(HUGEPAGES_PREFIX) else None
        if amount is not None:
            found[str(name)] = amount
    return found


def desired_running(body: Body) -> bool:
    strategy = dig(body, "spec", "runStrategy")
    if strategy is not None:
        return str(strategy) in RUNNING_STRATEGIES
    return bool(dig(body, "spec", "running"))


def run_strategy(body: Body) -> str:
    strategy = dig(body, "spec", "runStrategy")
    if strategy is not None:
        return str(strategy)
    return "Always" if dig(body, "spec", "running") else STOPPED_STRATEGY


def guest_owners(body: Body) -> tuple[tuple[str, str], ...]:
    """The field managers that own ``spec.template.spec.domain.memory.guest``, with their operation."""
    return tuple((str(entry.get("manager")), str(entry.get("operation"))) for entry in _guest_entries(body))


def guest_declared(body: Body) -> bool:
    """The manifest of the last client-side apply (``kubectl apply``, Argo CD's default sync), kept in the
    ``kubectl.kubernetes.io/last-applied-configuration`` annotation, sets memory.guest: the next apply of
    it sets the field back."""
    text = (dig(body, "metadata", "annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    if not isinstance(text, str) or '"guest"' not in text:
        return False
    try:
        manifest = json.loads(text)
    except ValueError:
        return False
    return isinstance(manifest, Mapping) and dig(manifest, *GUEST_PATH) is not None


def guest_written_by_others(body: Body) -> str | None:
    """The latest ``time`` of a managedFields entry of another manager than dynamem's owning memory.guest."""
    times = [
        str(entry["time"])
        for entry in _guest_entries(body)
        if entry.get("manager") not in DYNAMEM_MANAGERS and entry.get("time")
    ]
    return max(times, default=None)  # RFC 3339 in UTC, as the API server writes it: sorts as it reads


def _guest_entries(body: Body) -> list[Mapping[str, Any]]:
    return [
        entry
        for entry in dig(body, "metadata", "managedFields") or []
        if isinstance(entry, Mapping) and dig(entry, "fieldsV1", *GUEST_FIELD) is not None
    ]


def vm_view(body: Body) -> VmView:
    domain = dig(body, "spec", "template", "spec", "domain") or {}
    selector = dig(body, "spec", "template", "spec", "nodeSelector") or {}
    return VmView(
        key=ObjectKey.of(body),
        uid=str(dig(body, "metadata", "uid") or ""),
        guest=quantity_bytes(dig(domain, "memory", "guest")),
        max_guest=quantity_bytes(dig(domain, "memory", "maxGuest")),
        hugepage=hugepage_bytes(domain),
        pages=hugepages_resource(domain),
        request=quantity_bytes(dig(domain, "resources", "requests", "memory")),
        node_selector={str(k): str(v) for k, v in selector.items()},
        desired_running=desired_running(body),
        restart_required=condition_is(body, "RestartRequired"),
        resource_version=str(dig(body, "metadata", "resourceVersion") or ""),
        generation=int(dig(body, "metadata", "generation") or 0),
        run_strategy=run_strategy(body),
        instancetype=(dig(body, "spec", "instancetype", "name") or None),
        guest_owners=guest_owners(body),
        guest_written_by_others=guest_written_by_others(body),
        guest_declared=guest_declared(body),
        placement=(dig(body, "metadata", "annotations") or {}).get(PLACEMENT_ANNOTATION) or None,
        hold=(dig(body, "metadata", "annotations") or {}).get(HOLD_ANNOTATION) or None,
        off_since=off_since(body),
        launcher_spec={"domain": {k: domain[k] for k in ("cpu", "resources", "devices") if k in domain}},
    )


def off_since(body: Body) -> str | None:
    """Since when a VM has had no VMI, as KubeVirt's VM controller reports it: its Ready condition, False
    with reason ``VMINotExists``, keeps the time its VMI went away (or the VM was made), since the condition
    is replaced only when its status or reason changes (v1.7.0 ``pkg/virt-controller/watch/vm/vm.go``,
    ``syncReadyConditionFromVMI``; ``pkg/controller/conditions.go``,
    ``VirtualMachineConditionManager.UpdateCondition``). None when the condition says otherwise (a VMI
    is there, or was a moment ago) or is not there (not synced yet): not known to be off for long."""
    ready = conditions(body).get("Ready")
    if ready is not None and str(ready.get("status")) == "False" and ready.get("reason") == "VMINotExists":
        return str(ready.get("lastTransitionTime") or "") or None
    return None


@dataclass(frozen=True, slots=True)
class VmiView:
    """What dynamem needs of a KubeVirt VirtualMachineInstance (a running VM)."""

    key: ObjectKey
    node: str | None
    phase: str
    spec_guest: int | None
    guest_at_boot: int | None
    guest_current: int | None
    guest_requested: int | None
    overhead: int | None
    hotplug_in_progress: bool = False
    hotplug_failed: bool = False
    max_guest: int | None = None
    migrating: bool = False
    moved_at: str | None = None  # status.migrationState.endTimestamp: when its last live migration ended
    uid: str = ""
    live_migratable: bool | None = None  # the VMI's LiveMigratable condition; None when not reported
    not_migratable_why: str = ""
    # creation time of its latest migration when that one failed and none is going (controller.migrations)
    failed_migration_at: float | None = None
    failed_migrations: int = 0  # ... and how many failed since its last success (controller.migrations)
    node_selector: tuple[tuple[str, str], ...] = ()  # spec.nodeSelector: its launcher pods go only there
    # what its launcher pods get from its spec for scheduling: nodeSelector, tolerations, node affinity
    placement: PodPlacement = field(default_factory=PodPlacement)
    # the resource its guest memory is requested as with hugepages ("hugepages-2Mi"), else None: memory
    pages: str | None = None
    # the labels its launcher pods get (launcher_labels) and the required pod (anti-)affinity of its spec
    pod_labels: tuple[tuple[str, str], ...] = ()
    affinity: PodAffinity = field(default_factory=PodAffinity)
    spread: tuple[SpreadConstraint, ...] = ()  # its DoNotSchedule topology spread constraints
    host_model: bool = False  # spec.domain.cpu.model is host-model (kube.migration_target)
    # node labels its launcher pods' required node affinity rejects (cpu_rejected_labels)
    cpu_rejects: tuple[str, ...] = ()
    claims: tuple[str, ...] = ()  # the PersistentVolumeClaims its launcher pods mount (kube.volumes)
    # spec.domain.resources sets a memory request or limit: its launchers ask that (moved by each change of
    # size), not memory.guest x 100 / memoryOvercommit (renderresources.go, WithMemoryRequests)
    own_request: bool = False
    eviction_strategy: str | None = None  # spec.evictionStrategy; None: the KubeVirt CR's decides

    @property
    def active(self) -> bool:
        """Placed on a node and not finished: its memory counts against the node."""
        return self.node is not None and self.phase not in {"Succeeded", "Failed"}

    @property
    def current(self) -> int | None:
        """Memory the guest has now: what libvirt reports, else what the spec says."""
        return self.guest_current if self.guest_current is not None else self.spec_guest


def vmi_claims(spec: Body) -> tuple[str, ...]:
    """The claims a VMI's launcher pod mounts (``withVMIVolumes``): its ``persistentVolumeClaim`` volumes'
    ``claimName``, its ``dataVolume`` volumes' ``name``, its ``ephemeral`` volumes' claim, less the
    hotplugged ones."""
    found: list[str] = []
    for volume in spec.get("volumes") or ():
        if not isinstance(volume, Mapping):
            continue
        claim = volume.get("persistentVolumeClaim")
        data = volume.get("dataVolume")
        ephemeral = dig(volume, "ephemeral", "persistentVolumeClaim")
        if isinstance(claim, Mapping) and not claim.get("hotpluggable"):
            found.append(str(claim.get("claimName") or ""))
        elif isinstance(data, Mapping) and not data.get("hotpluggable"):
            found.append(str(data.get("name") or ""))
        elif isinstance(ephemeral, Mapping):
            found.append(str(ephemeral.get("claimName") or ""))
    return tuple(sorted(set(found) - {""}))


def launcher_labels(body: Body) -> dict[str, str]:
    """The labels of a VMI's launcher pods, a migration's target too (KubeVirt v1.7.0
    ``pkg/virt-controller/services/template.go``, ``podLabels``): the VMI's own, then KubeVirt's, the VM name
    label ``dns.SanitizeHostname``'s (``spec.hostname``, else the name up to its first dot, at most 63
    characters) and the VMI id ``CalculateVirtualMachineInstanceID``'s (the name, hashed above 63
    characters). A target's ``kubevirt.io/migrationJobUID`` is not known before it is made."""
    name = str(dig(body, "metadata", "name") or "")
    labels = {str(k): str(v) for k, v in (dig(body, "metadata", "labels") or {}).items()}
    labels[LAUNCHER_LABEL] = LAUNCHER_VALUE
    labels[CREATED_BY_LABEL] = str(dig(body, "metadata", "uid") or "")
    labels[VM_NAME_LABEL] = str(dig(body, "spec", "hostname") or "") or name.split(".")[0][:63]
    labels[VMI_ID_LABEL] = (
        name if len(name) <= 63 else f"{name[:54]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    )
    return labels


def vmi_view(body: Body) -> VmiView:
    memory = dig(body, "status", "memory") or {}
    labels = launcher_labels(body)
    return VmiView(
        key=ObjectKey.of(body),
        node=dig(body, "status", "nodeName") or None,
        phase=str(dig(body, "status", "phase") or "Pending"),
        spec_guest=quantity_bytes(dig(body, "spec", "domain", "memory", "guest")),
        guest_at_boot=quantity_bytes(memory.get("guestAtBoot")),
        guest_current=quantity_bytes(memory.get("guestCurrent")),
        guest_requested=quantity_bytes(memory.get("guestRequested")),
        overhead=quantity_bytes(memory.get("memoryOverhead")),
        hotplug_in_progress=condition_is(body, "HotMemoryChange", "True"),
        hotplug_failed=condition_is(body, "HotMemoryChange", "False"),
        # The VMI's hotplug ceiling, fixed at boot: the VM's maxGuest, the cluster's, or guest x ratio.
        max_guest=quantity_bytes(dig(body, "spec", "domain", "memory", "maxGuest")),
        migrating=_migrating(dig(body, "status", "migrationState")),
        moved_at=str(dig(body, "status", "migrationState", "endTimestamp") or "") or None,
        uid=str(dig(body, "metadata", "uid") or ""),
        node_selector=tuple(
            sorted((str(k), str(v)) for k, v in (dig(body, "spec", "nodeSelector") or {}).items())
        ),
        placement=pod_placement(dig(body, "spec") or {}),
        pages=hugepages_resource(dig(body, "spec", "domain")),
        pod_labels=tuple(sorted(labels.items())),
        affinity=pod_affinity(dig(body, "spec") or {}, str(dig(body, "metadata", "namespace") or ""), labels),
        spread=spread_constraints(dig(body, "spec") or {}, labels),
        host_model=dig(body, "spec", "domain", "cpu", "model") == HOST_MODEL,
        cpu_rejects=cpu_rejected_labels(dig(body, "spec", "domain", "cpu")),
        claims=vmi_claims(dig(body, "spec") or {}),
        own_request=bool(
            quantity_bytes(dig(body, "spec", "domain", "resources", "requests", "memory"))
            or quantity_bytes(dig(body, "spec", "domain", "resources", "limits", "memory"))
        ),
        live_migratable=_condition_status(body, "LiveMigratable"),
        eviction_strategy=str(dig(body, "spec", "evictionStrategy") or "") or None,
        not_migratable_why=str(
            conditions(body).get("LiveMigratable", {}).get("message")
            or conditions(body).get("LiveMigratable", {}).get("reason")
            or ""
        ),
    )


def _condition_status(body: Body, kind: str) -> bool | None:
    found = conditions(body).get(kind)
    if found is None:
        return None
    return str(found.get("status")) == "True"


OBSOLETE_HOST_MODEL_LABEL = "node-labeller.kubevirt.io/obsolete-host-model"  # v1.NodeHostModelIsObsoleteLabel
CPU_FEATURE_LABEL = "cpu-feature.node.kubevirt.io/"  # v1.CPUFeatureLabel


def cpu_rejected_labels(cpu: object) -> tuple[str, ...]:
    """The node labels KubeVirt's launcher pods reject by required node affinity (``DoesNotExist``), from the
    VMI's ``spec.domain.cpu`` (v1.7.0 ``pkg/virt-controller/services/template.go``, ``setNodeAffinityForPod``:
    a host-model CPU, or none given, rejects nodes labelled ``obsolete-host-model``; each feature with policy
    ``forbid`` rejects nodes that have it)."""
    cpu = cpu if isinstance(cpu, Mapping) else {}
    rejected = []
    if cpu.get("model") in (None, "", HOST_MODEL):
        rejected.append(OBSOLETE_HOST_MODEL_LABEL)
    for feature in cpu.get("features") or ():
        if isinstance(feature, Mapping) and feature.get("policy") == "forbid" and feature.get("name"):
            rejected.append(f"{CPU_FEATURE_LABEL}{feature['name']}")
    return tuple(rejected)


def _migrating(state: object) -> bool:
    """A live migration has started and not ended (KubeVirt refuses hotplug meanwhile).

    As KubeVirt v1.7.0 reads it (``pkg/util/migrations/migrations.go``, ``IsMigrating``): a start and no
    ``endTimestamp``. A migration that fails mid-copy gets ``failed`` and ``endTimestamp`` but never
    ``completed`` (``pkg/virt-handler/migration-source.go``, the ``migrationMetadata.Failed`` branch), so
    ``completed`` alone would keep it migrating until the next migration's handoff.
    """
    if not isinstance(state, Mapping) or not state.get("startTimestamp"):
        return False
    return not (state.get("endTimestamp") or state.get("completed") or state.get("failed"))


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    allocatable: int
    schedulable: bool = True
    labels: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs: a VMI's nodeSelector matches these
    taints: tuple[Taint, ...] = ()
    hugepages: tuple[tuple[str, int], ...] = ()  # allocatable per hugepages-* resource, in bytes
    # allocatable of the other resources the scheduler counts (counted_resources): cpu in millicores, pods,
    # ephemeral-storage and extended resources (devices.kubevirt.io/kvm, SR-IOV VFs, GPUs) in units
    others: tuple[tuple[str, int], ...] = ()


def hostnames(nodes: Iterable[NodeView]) -> dict[str, str]:
    """Node name to its ``kubernetes.io/hostname`` label, for the nodes where the two differ (a kubelet run
    with ``--hostname-override``): a migration pinned by ``addedNodeSelector`` names the label, which is what
    the scheduler matches, not the node's name."""
    found = {}
    for node in nodes:
        label = dict(node.labels).get(HOSTNAME_LABEL)
        if label is not None and label != node.name:
            found[node.name] = label
    return found


def node_view(body: Body) -> NodeView:
    allocatable = quantity_bytes(dig(body, "status", "allocatable", "memory"))
    if allocatable is None:
        allocatable = quantity_bytes(dig(body, "status", "capacity", "memory")) or 0
    return NodeView(
        name=str(dig(body, "metadata", "name") or ""),
        allocatable=allocatable,
        schedulable=not bool(dig(body, "spec", "unschedulable")),
        labels=tuple(sorted((str(k), str(v)) for k, v in (dig(body, "metadata", "labels") or {}).items())),
        taints=tuple(taint(t) for t in dig(body, "spec", "taints") or () if isinstance(t, Mapping)),
        hugepages=tuple(sorted(hugepages_of(dig(body, "status", "allocatable")).items())),
        others=tuple(sorted(counted_resources(dig(body, "status", "allocatable"), PODS).items())),
    )


@dataclass(frozen=True, slots=True)
class PodView:
    """A pod's memory requests on a node; virt-launcher pods are accounted through their VMIs instead."""

    key: ObjectKey
    node: str | None
    request: int
    launcher: bool
    finished: bool
    vmi: str | None = None  # a launcher's VMI (its ``kubevirt.io/domain`` annotation)
    hugepages: tuple[tuple[str, int], ...] = ()  # requests per hugepages-* resource, counted as ``request``
    labels: tuple[tuple[str, str], ...] = ()
    anti: tuple[AffinityTerm, ...] = ()  # its required pod anti-affinity terms (kube.pod_affinity)
    terminating: bool = False  # deleted, waiting to be gone (metadata.deletionTimestamp)
    # its requests of the other resources the scheduler counts (counted_resources), none of them zero
    others: tuple[tuple[str, int], ...] = ()
    # a launcher's node selector, and the migration that made it when it is a target (its name)
    node_selector: tuple[tuple[str, str], ...] = ()
    migration: str | None = None
    # not bound yet, but nominated to a node (status.nominatedNodeName: it preempted pods there, which are
    # terminating): the scheduler counts it on that node for other pods (addGENominatedPods)
    nominated: str | None = None


CPU = "cpu"
PODS = "pods"
EPHEMERAL_STORAGE = "ephemeral-storage"


def _scheduled(name: str, *extra: str) -> bool:
    """Whether the scheduler counts resource ``name`` (``framework.Resource.Add``: cpu, memory,
    ephemeral-storage, and the scalar resources, ``IsScalarResourceName``: ``hugepages-*`` and every name
    with a ``/``, extended or prefixed native; attachable volumes are the volume plugins' and no pod asks
    them), or is one of ``extra``."""
    return (
        name in (CPU, "memory", EPHEMERAL_STORAGE, *extra) or name.startswith(HUGEPAGES_PREFIX) or "/" in name
    )


def _amounts(resources: object, *extra: str) -> dict[str, int]:
    """A resource list's amounts of the resources the scheduler counts (:func:`_scheduled`), as it counts
    them: ``cpu`` in millicores (``MilliValue``), the others in units rounded up (``Value``: bytes of
    ``memory``, ``hugepages-*`` and ``ephemeral-storage``, devices of an extended resource)."""
    found: dict[str, int] = {}
    for name, value in resources.items() if isinstance(resources, Mapping) else ():
        key = str(name)
        if not _scheduled(key, *extra):
            continue
        amount = quantity_milli(value) if key == CPU else quantity_bytes(value)
        if amount is not None:
            found[key] = amount
    return found


def counted_resources(resources: object, *extra: str) -> dict[str, int]:
    """The amounts in a resource list (a node's allocatable, a pod's requests) of the resources a launcher
    pod must fit in beyond its memory and hugepages (``NodeResourcesFit``, ``fitsRequest``): ``cpu``,
    ``ephemeral-storage`` and extended resources (KubeVirt's ``devices.kubevirt.io/*``, SR-IOV, GPUs), and
    ``extra`` (``pods``, for a node)."""
    return {key: amount for key, amount in _amounts(resources, *extra).items() if _other(key)}


def _other(resource: str) -> bool:
    return resource != "memory" and not resource.startswith(HUGEPAGES_PREFIX)


def pod_requests(spec: Body, status: Body | None = None) -> dict[str, int]:
    """A pod's requests of every resource the scheduler counts (:func:`_amounts`), as it counts them
    (``k8s.io/component-helpers/resource`` v0.34, ``PodRequests``, ``AggregateContainerRequests``): the sum
    of its containers' and its restartable (sidecar) init containers', or more if an init container (with
    the sidecars started before it) asks more; the pod-level ``resources.requests`` where set; plus the
    pod's ``overhead``. A container being resized in place (``InPlacePodVerticalScaling``, on by default
    since 1.33) asks the most of its spec, its status' ``resources.requests`` and its ``allocatedResources``,
    as the scheduler reads it (``UseStatusResources``, ``determineContainerReqs``; an infeasible resize:
    the status' alone)."""
    asks = _container_asks(status)
    total: dict[str, int] = {}
    for container in spec.get("containers") or ():
        for key, amount in asks(container).items():
            total[key] = total.get(key, 0) + amount
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for container in spec.get("initContainers") or ():
        restartable = isinstance(container, Mapping) and container.get("restartPolicy") == "Always"
        # the status is read for sidecars only (AggregateContainerRequests): a plain init container has run
        asked = asks(container) if restartable else _amounts(dig(container, "resources", "requests"))
        if isinstance(container, Mapping) and container.get("restartPolicy") == "Always":
            for key, amount in asked.items():
                total[key] = total.get(key, 0) + amount
                sidecars[key] = sidecars.get(key, 0) + amount
            running = dict(sidecars)
        else:
            running = {key: asked.get(key, 0) + sidecars.get(key, 0) for key in {*asked, *sidecars}}
        for key, amount in running.items():
            init_peak[key] = max(init_peak.get(key, 0), amount)
    for key, amount in init_peak.items():
        total[key] = max(total.get(key, 0), amount)
    total.update(_amounts(dig(spec, "resources", "requests")))  # PodLevelResources
    for key, amount in _amounts(spec.get("overhead")).items():
        total[key] = total.get(key, 0) + amount
    return total


def _container_asks(status: Body | None) -> Callable[[Any], dict[str, int]]:
    """What each container asks, its status' resources read as :func:`pod_requests` says."""
    found: dict[str, Mapping[str, Any]] = {}
    status = status if isinstance(status, Mapping) else None
    for key in ("containerStatuses", "initContainerStatuses"):
        statuses = (status or {}).get(key)
        for cs in statuses if isinstance(statuses, list) else ():
            if isinstance(cs, Mapping) and isinstance(cs.get("resources"), Mapping) and cs.get("name"):
                found[str(cs["name"])] = cs
    conditions = (status or {}).get("conditions")
    infeasible = any(
        isinstance(c, Mapping) and c.get("type") == "PodResizePending" and c.get("reason") == "Infeasible"
        for c in (conditions if isinstance(conditions, list) else ())
    )

    def asks(container: Any) -> dict[str, int]:
        own = _amounts(dig(container, "resources", "requests"))
        cs = found.get(str(container.get("name"))) if isinstance(container, Mapping) else None
        if cs is None:
            return own
        lists = [_amounts(dig(cs, "resources", "requests")), _amounts(cs.get("allocatedResources"))]
        if not infeasible:
            lists.append(own)
        return {key: max(each.get(key, 0) for each in lists) for key in set().union(*lists)}

    return asks


def pod_view(body: Body) -> PodView:
    spec = dig(body, "spec") or {}
    requests = pod_requests(spec, dig(body, "status"))
    labels = dig(body, "metadata", "labels") or {}
    launcher = labels.get(LAUNCHER_LABEL) == LAUNCHER_VALUE
    pages = {k: v for k, v in requests.items() if k.startswith(HUGEPAGES_PREFIX)}
    return PodView(
        key=ObjectKey.of(body),
        node=spec.get("nodeName") or None,
        request=requests.get("memory", 0),
        launcher=launcher,
        finished=dig(body, "status", "phase") in {"Succeeded", "Failed"},
        vmi=(dig(body, "metadata", "annotations") or {}).get(DOMAIN_ANNOTATION),
        hugepages=tuple(sorted(pages.items())),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
        terminating=bool(dig(body, "metadata", "deletionTimestamp")),
        # the scheduler checks no request of 0 (fitsRequest)
        others=tuple(sorted((k, v) for k, v in requests.items() if v and _other(k))),
        node_selector=tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items()))
        if launcher
        else (),
        migration=(dig(body, "metadata", "annotations") or {}).get(MIGRATION_JOB_ANNOTATION)
        if launcher
        else None,
        nominated=None if spec.get("nodeName") else (dig(body, "status", "nominatedNodeName") or None),
        anti=tuple(
            t
            for t in pod_affinity(spec, str(dig(body, "metadata", "namespace") or ""), labels, False).anti
            if not _own_vmi_only(t, labels)
        ),
    )


def _own_vmi_only(term: AffinityTerm, labels: Mapping[str, str]) -> bool:
    """KubeVirt's term on a migration target (``createMigrationPodAntiAffinityRule``): away from the pods of
    its own VMI on their node. It refuses only a VM's own node to its next target, which no plan picks; left
    out, a cluster whose pods have no other terms needs no inter-pod affinity judged at all."""
    own = labels.get(CREATED_BY_LABEL)
    return (
        own is not None
        and term.topology_key == HOSTNAME_LABEL
        and term.selector.requirements == (LabelRequirement(CREATED_BY_LABEL, "In", frozenset({str(own)})),)
    )


def to_quantity(value: int) -> str:
    """Bytes as the shortest exact Kubernetes quantity: 3Gi, 3584Mi, 1536Ki or plain bytes."""
    for suffix, unit in (("Ti", 1024**4), ("Gi", GI), ("Mi", MI), ("Ki", 1024)):
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
