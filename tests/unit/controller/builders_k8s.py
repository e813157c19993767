"""Builders of raw Kubernetes and KubeVirt bodies, shaped as the API server returns them.

Paths follow ``shared/KUBEVIRT.md``. Sizes are quantity strings, as in a real body; ``None`` leaves a field
out. ``observed`` turns bodies into the views a balancing round reads, through the same functions the
operator's kopf indices call.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamem.controller.migrations import migration_view, with_failed_migrations
from dynamem.controller.snapshot import Observed, vmm_view
from dynamem.kube.api import ApiException, FieldConflict, StaleObject
from dynamem.kube.objects import node_view, pod_view, vm_view, vmi_view
from dynamem.kube.volumes import claim_view, volume_view

NS = "office"
Body = dict[str, Any]


def _meta(name: str, namespace: str | None = NS, **extra: Any) -> Body:
    meta: Body = {"name": name, "uid": f"uid-{name}"}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v is not None})
    return meta


def make_vm_body(
    name: str,
    *,
    namespace: str = NS,
    guest: str | None = "1Gi",
    max_guest: str | None = "4Gi",
    run_strategy: str | None = "Always",
    running: bool | None = None,
    page_size: str | None = None,
    request: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    restart_required: bool = False,
    off_since: str | None = None,
) -> Body:
    memory: Body = {}
    if guest is not None:
        memory["guest"] = guest
    if max_guest is not None:
        memory["maxGuest"] = max_guest
    if page_size is not None:
        memory["hugepages"] = {"pageSize": page_size}
    domain: Body = {"memory": memory, "devices": {}}
    if request is not None:
        domain["resources"] = {"requests": {"memory": request}}
    template_spec: Body = {"domain": domain}
    if node_selector is not None:
        template_spec["nodeSelector"] = dict(node_selector)
    spec: Body = {"template": {"spec": template_spec}}
    if run_strategy is not None:
        spec["runStrategy"] = run_strategy
    if running is not None:
        spec["running"] = running
    conditions = [{"type": "Ready", "status": "True"}]
    if off_since is not None:  # KubeVirt's VM controller: no VMI since then (syncReadyConditionFromVMI)
        conditions = [
            {"type": "Ready", "status": "False", "reason": "VMINotExists", "lastTransitionTime": off_since}
        ]
    if restart_required:
        conditions.append({"type": "RestartRequired", "status": "True"})
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": _meta(name, namespace, resourceVersion="7", generation=1),
        "spec": spec,
        "status": {"conditions": conditions},
    }


def make_vmi_body(
    name: str,
    *,
    namespace: str = NS,
    node: str | None = "host",
    phase: str | None = "Running",
    guest: str | None = "1Gi",
    at_boot: str | None = "1Gi",
    current: str | None = "1Gi",
    requested: str | None = None,
    overhead: str | None = None,
    hotplug: str | None = None,
    max_guest: str | None = "4Gi",
    migratable: str | None = "True",
) -> Body:
    """A VMI; ``hotplug`` is the status of its HotMemoryChange condition ("True", "False" or None: absent).

    As KubeVirt v1.7.0 makes a running one: ``maxGuest`` set (``defaults.go``, ``setupMemoryHotplug``, 4Gi
    here as a 1Gi guest x ``maxHotplugRatio`` 4) and ``LiveMigratable`` reported (``migratable``; None:
    absent, as before virt-handler's first sync)."""
    memory = {
        k: v
        for k, v in (
            ("guestAtBoot", at_boot),
            ("guestCurrent", current),
            ("guestRequested", requested),
            ("memoryOverhead", overhead),
        )
        if v is not None
    }
    status: Body = {"memory": memory, "conditions": []}
    if node is not None:
        status["nodeName"] = node
    if phase is not None:
        status["phase"] = phase
    if hotplug is not None:
        status["conditions"].append({"type": "HotMemoryChange", "status": hotplug})
    if migratable is not None:
        status["conditions"].append({"type": "LiveMigratable", "status": migratable})
    memory = {k: v for k, v in (("guest", guest), ("maxGuest", max_guest)) if v is not None}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": _meta(name, namespace),
        "spec": {"domain": {"memory": memory}},
        "status": status,
    }


def make_vmm_body(
    name: str,
    *,
    namespace: str = NS,
    startup: object = "1Gi",
    maximum: object = "4Gi",
    minimum: object = None,
    buffer: object = None,
    priority: object = None,
    status: Mapping[str, Any] | None = None,
    resource_version: str = "1",
    generation: int = 1,
) -> Body:
    spec = {
        k: v
        for k, v in (
            ("startup", startup),
            ("minimum", minimum),
            ("maximum", maximum),
            ("buffer", buffer),
            ("priority", priority),
        )
        if v is not None
    }
    body: Body = {
        "apiVersion": "dynamem.io/v1alpha1",
        "kind": "VirtualMachineMemory",
        "metadata": _meta(name, namespace, resourceVersion=resource_version, generation=generation),
        "spec": spec,
    }
    if status is not None:
        body["status"] = dict(status)
    return body


def make_node_body(
    name: str = "host",
    *,
    allocatable: str | None = "8Gi",
    capacity: str | None = None,
    unschedulable: bool = False,
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] = (),
) -> Body:
    """A node; labelled ``kubevirt.io/schedulable=true`` (virt-handler's mark, every launcher pod selects it)
    and ``kubernetes.io/hostname`` unless ``labels`` says otherwise."""
    status: Body = {}
    if allocatable is not None:
        status["allocatable"] = {"cpu": "8", "memory": allocatable}
    if capacity is not None:
        status["capacity"] = {"cpu": "8", "memory": capacity}
    spec: Body = {"unschedulable": True} if unschedulable else {}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    meta = dict(_meta(name, None))
    meta["labels"] = dict(
        labels if labels is not None else {"kubevirt.io/schedulable": "true", "kubernetes.io/hostname": name}
    )
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": status}


def make_pod_body(
    name: str,
    *,
    namespace: str = NS,
    node: str | None = "host",
    requests: Iterable[str | None] = ("256Mi",),
    init_requests: Iterable[str | None] = (),
    overhead: str | None = None,
    launcher: bool = False,
    phase: str = "Running",
    domain: str | None = None,
) -> Body:
    """A pod with one container per entry of ``requests`` (None: a container with no memory request).

    ``domain``: the VMI a launcher pod runs (KubeVirt's ``kubevirt.io/domain`` annotation)."""

    def container(i: int, request: str | None, prefix: str) -> Body:
        resources: Body = {"requests": {"cpu": "100m", "memory": request}} if request is not None else {}
        return {"name": f"{prefix}{i}", "image": "busybox", "resources": resources}

    spec: Body = {"containers": [container(i, r, "c") for i, r in enumerate(requests)]}
    init = [container(i, r, "init") for i, r in enumerate(init_requests)]
    if init:
        spec["initContainers"] = init
    if overhead is not None:
        spec["overhead"] = {"memory": overhead}
    if node is not None:
        spec["nodeName"] = node
    labels = {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": name} if launcher else {"app": name}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(
            name,
            namespace,
            labels=labels,
            **({"annotations": {"kubevirt.io/domain": domain}} if domain else {}),
        ),
        "spec": spec,
        "status": {"phase": phase},
    }


def observed(
    *,
    vmms: Iterable[Body] = (),
    vms: Iterable[Body] = (),
    vmis: Iterable[Body] = (),
    nodes: Iterable[Body] = (),
    pods: Iterable[Body] = (),
    migrations: Iterable[Body] = (),
    claims: Iterable[Body] = (),
    volumes: Iterable[Body] = (),
) -> Observed:
    """The views a round reads, built from bodies by the functions the kopf indices use."""
    migration_views = [migration_view(b) for b in migrations]
    return Observed(
        vmms=[vmm_view(b) for b in vmms],
        vms=[vm_view(b) for b in vms],
        vmis=with_failed_migrations([vmi_view(b) for b in vmis], migration_views),
        nodes=[node_view(b) for b in nodes],
        pods=[pod_view(b) for b in pods],
        migrations=migration_views,
        claims=[claim_view(b) for b in claims],
        volumes=[volume_view(b) for b in volumes],
    )


@dataclass
class Apply:
    namespace: str
    name: str
    guest: str
    max_guest: str | None
    dry_run: bool
    resource_version: str | None = None
    force: bool = False
    placement: str | None = None  # the dynamem.io/placement annotation applied with it
    hold: str | None = None  # the dynamem.io/hold annotation applied with it


@dataclass
class Event:
    name: str
    type_: str
    reason: str
    note: str
    action: str


@dataclass
class FakeWriter:
    """A ClusterWriter that records every write, and answers some as the API server would.

    ``fail_apply``: VMs whose memory writes KubeVirt's webhook refuses (422); ``stale_apply``: VMs that
    changed since the view (a 409 on the resourceVersion); ``conflict_apply``: VMs whose memory.guest another
    field manager owns; ``down_apply``: VMs whose writes get no answer (503 after retries).
    """

    applies: list[Apply] = field(default_factory=list)
    statuses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    fail_apply: set[str] = field(default_factory=set)
    stale_apply: set[str] = field(default_factory=set)
    conflict_apply: dict[str, tuple[str, ...]] = field(default_factory=dict)
    down_apply: set[str] = field(default_factory=set)
    throttle_apply: set[str] = field(default_factory=set)  # 429 Too Many Requests, after the client's retries
    fail_status: set[str] = field(default_factory=set)
    migrations: list[tuple[str, str, str, str]] = field(default_factory=list)  # namespace, vmi, node, reason
    refuse_migration: set[str] = field(default_factory=set)  # VMIs with a migration already (admission 400)
    forbid_migration: set[str] = field(default_factory=set)  # 403: a ClusterRole without create on migrations

    async def create_migration(
        self, namespace: str, vmi: str, node: str, *, reason: str, dry_run: bool = False
    ) -> str:
        if vmi in self.forbid_migration:
            message = f"virtualmachineinstancemigrations.kubevirt.io is forbidden: cannot create ({vmi})"
            raise ApiException(status=403, reason="Forbidden", body=json.dumps({"message": message}))
        if vmi in self.refuse_migration:  # as the API server relays KubeVirt's webhook (webhooks.go: 400)
            message = (
                'admission webhook "migration-create-validator.kubevirt.io" denied the request: in-flight '
                "migration detected. Active migration job (1234) is currently already in progress for VMI "
                f"{vmi}."
            )
            raise ApiException(status=400, reason="Bad Request", body=json.dumps({"message": message}))
        self.migrations.append((namespace, vmi, node, reason))
        return f"{vmi}-dynamem-{len(self.migrations)}"

    async def apply_vm_memory(
        self,
        namespace: str,
        name: str,
        guest: str,
        max_guest: str | None,
        *,
        resource_version: str | None,
        force: bool = False,
        dry_run: bool = False,
        placement: str | None = None,
        hold: str | None = None,
    ) -> Mapping[str, Any]:
        if name in self.fail_apply:
            body = json.dumps({"message": f"admission webhook denied {name}"})
            raise ApiException(status=422, reason="Unprocessable Entity", body=body)
        if name in self.stale_apply:
            raise StaleObject(f"the object has been modified: {name}")
        if name in self.conflict_apply:
            raise FieldConflict(self.conflict_apply[name], f"conflict on {name}")
        if name in self.down_apply:
            raise ApiException(status=503, reason="Service Unavailable")
        if name in self.throttle_apply:
            raise ApiException(status=429, reason="Too Many Requests")
        self.applies.append(
            Apply(namespace, name, guest, max_guest, dry_run, resource_version, force, placement, hold)
        )
        return {}

    async def patch_vmm_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if name in self.fail_status:
            raise RuntimeError(f"conflict on {name}")
        self.statuses.append((name, copy.deepcopy(dict(status))))

    async def create_event(
        self,
        regarding: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        note: str,
        action: str,
        now: float | None = None,
    ) -> None:
        self.events.append(Event(str(regarding["metadata"]["name"]), type_, reason, note, action))

    def clear(self) -> None:
        self.applies.clear()
        self.statuses.clear()
        self.events.clear()
        self.migrations.clear()
