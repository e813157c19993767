"""Plays KubeVirt v1.7.0's virt-controller and virt-handler against a real API server and kube-scheduler.

Real VMs and KubeVirt's controllers cannot run on a machine without nested virtualisation and a container
runtime, so this stands in for them, following ``shared/KUBEVIRT.md`` and the v1.7.0 source (``docs/
kubevirt-sim.md`` lists what is played and what is not). The pods are real: the kube-scheduler places them and
kwok (the control plane's kubelet) runs and removes them.

- A VirtualMachine that should run gets a VirtualMachineInstance (``pkg/virt-controller/watch/vm/vm.go``);
  the VMI gets a virt-launcher pod (``watch/vmi/vmi.go``, rendered by :mod:`.launcher`) that the scheduler
  places, or that is bound to the scenario's starting node (annotation ``START_NODE_ANNOTATION`` on the VM:
  the node is where the VM starts, never a selector that would bind its migrations too). The VMI has
  ``status.memory`` {guestAtBoot, guestCurrent, guestRequested} from its creation, as the VMI mutator sets it
  (``pkg/defaults/defaults.go``, ``setGuestMemoryStatus``; v1.7.0's ``MemoryStatus`` has no
  ``memoryOverhead``, the CRD schema prunes it); when the pod runs, the VMI is ``Running`` on its node.
  A VM that should not run loses its VMI and its pods.
- virt-handler labels every Ready node ``kubevirt.io/schedulable=true`` (launcher pods select it).
- The KubeVirt CR's ``spec.configuration`` is followed as virt-controller's ``ClusterConfig`` follows it
  (``pkg/virt-config``, fed by an informer on the CR): read every tick, a change applies to the launchers and
  migration targets rendered from then on (``memoryOvercommit``, ``cpuAllocationRatio``, ``nodeSelectors``)
  and to the migration limits (``parallelMigrationsPerCluster``, ``parallelOutboundMigrationsPerNode``).
  What the CR does not set, or a cluster without one, takes :class:`SimulatorOptions`' values (by default
  KubeVirt's).
- A change of a running VM's ``memory.guest`` goes the way v1.7.0 takes it: the VM controller
  (``vm.go``, ``handleMemoryHotplugRequest``) copies it to the VMI spec, shifting the VMI's memory request and
  limit by the difference when it has them; it refuses while ``HotMemoryChange`` is True ("another memory
  hotplug is in progress") or the VMI is migrating, and sets ``RestartRequired`` on the VM below
  ``guestAtBoot``, above ``maxGuest`` or once ``HotMemoryChange`` is False. ``RestartRequired`` stays until
  the VMI stops or a new one starts (``cleanupRestartRequired``, from ``startVMI`` and ``stopVMI`` only), and
  while the VM has it no memory change is handled at all (``sync``: the live-update handlers run only without
  it), even one back to the running size. The VMI controller
  (``watch/vmi/lifecycle.go``, ``requireMemoryHotplug``) sets ``HotMemoryChange=True`` while the spec's guest
  differs from ``status.memory.guestRequested``. The workload-updater and migration controller
  (:mod:`.migrations`) carry it out as a live migration to another node.
- Each running VMI's guest is kept in :attr:`KubeVirtSimulator.guests` for the metrics (:mod:`.metrics`).

It polls (lists) rather than watches: simple, and fast enough for tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from dynamem.kube.api import KUBEVIRT, now_rfc3339
from dynamem.kube.kubevirt_config import KubeVirtSettings, configuration_of, kubevirt_settings
from dynamem.kube.objects import (
    GI,
    MI,
    ObjectKey,
    condition_is,
    conditions,
    dig,
    quantity_bytes,
    to_quantity,
    vm_view,
)
from dynamem.kubevirt_sim.launcher import (
    APP_LABEL,
    CREATED_BY_LABEL,
    KUBEVIRT_DEFAULTS,
    LAUNCHER,
    SCHEDULABLE_LABEL,
    Rendering,
    launcher_pod,
)
from dynamem.kubevirt_sim.migrations import (
    EVICTION_BATCH,
    EVICTION_BATCH_S,
    MEMORY_CHANGE,
    NODE_NAME_LABEL,
    MigrationController,
    MigrationOptions,
    World,
    pod_running_on,
    vmi_migrating,
)

logger = logging.getLogger("dynamem.kubevirt_sim")

MERGE = "application/merge-patch+json"
START_NODE_ANNOTATION = "kubevirt-sim.dynamem.io/start-node"
MIGRATIONS = "virtualmachineinstancemigrations"


def _live_update_problem(vmi: Mapping[str, Any], guest: int, max_guest: int | None) -> str | None:
    """``pkg/liveupdate/memory/memory.go``, ``ValidateLiveUpdateMemory``, as far as the stand-in's VMIs can
    fail it: the guest above maxGuest, either not aligned to 2Mi (1Gi with 1Gi hugepages), under 1Gi."""
    domain = dig(vmi, "spec", "domain") or {}
    if dig(domain, "cpu", "realtime") is not None:
        return "Memory hotplug is not compatible with realtime VMs"
    if dig(domain, "launchSecurity") is not None:
        return "Memory hotplug is not compatible with encrypted VMs"
    if max_guest is None:
        return None  # the caller's "not available for this VM configuration"
    block = GI if dig(domain, "memory", "hugepages", "pageSize") == "1Gi" else 2 * MI
    if guest > max_guest:
        return "Guest memory is greater than the configured maxGuest memory"
    if guest % block:
        return f"Guest memory must be {to_quantity(block)} aligned"
    if max_guest % block:
        return f"MaxGuest must be {to_quantity(block)} aligned"
    if guest < GI:
        return "Memory hotplug is only available for VMs with at least 1Gi of guest memory"
    return None


@dataclass
class GuestState:
    """What the simulator knows of one running guest, for its metrics."""

    key: ObjectKey
    node: str
    current: int
    at_boot: int
    overhead: int = 0


@dataclass
class SimulatorOptions:
    """``overhead``: launcher overhead per VMI (bytes). ``failing``: names of VMs whose memory change fails on
    the target node as KubeVirt reports it. ``migration``: KubeVirt's migration settings; ``rendering``: the
    KubeVirt CR's settings launchers are rendered under. The cluster's KubeVirt CR wins over both where it
    sets a value (:meth:`KubeVirtSimulator.follow_kubevirt_cr`)."""

    namespace: str | None = None
    poll_s: float = 0.25
    overhead: int = 0
    failing: set[str] = field(default_factory=set)
    migration: MigrationOptions = field(default_factory=MigrationOptions)
    rendering: Rendering = KUBEVIRT_DEFAULTS


class _Api:
    """The API calls the stand-in makes, on the asyncio client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    async def create_migration(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        created = await self.custom.create_namespaced_custom_object(
            *KUBEVIRT, namespace=namespace, plural=MIGRATIONS, body=dict(body)
        )
        return cast(Mapping[str, Any], created)

    async def patch_migration_status(self, key: ObjectKey, status: Mapping[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            *KUBEVIRT, namespace=key.namespace, plural=MIGRATIONS, name=key.name,
            body={"status": dict(status)}, _content_type=MERGE,
        )  # fmt: skip

    async def delete_migration(self, key: ObjectKey) -> None:
        try:
            await self.custom.delete_namespaced_custom_object(
                *KUBEVIRT, namespace=key.namespace, plural=MIGRATIONS, name=key.name
            )
        except ApiException as exc:
            if exc.status != 404:  # gone already: as KubeVirt, nothing to do
                raise

    async def patch_vmi(self, key: ObjectKey, patch: Mapping[str, Any]) -> None:
        """KubeVirt's VMI CRD has no status subresource: status goes with the object."""
        await self.custom.patch_namespaced_custom_object(
            *KUBEVIRT, namespace=key.namespace, plural="virtualmachineinstances", name=key.name,
            body=dict(patch), _content_type=MERGE,
        )  # fmt: skip

    async def patch_vm_status(self, key: ObjectKey, status: Mapping[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            *KUBEVIRT, namespace=key.namespace, plural="virtualmachines", name=key.name,
            body={"status": dict(status)}, _content_type=MERGE,
        )  # fmt: skip

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        created = await self.core.create_namespaced_pod(namespace, cast(Any, dict(body)))
        return cast(Mapping[str, Any], created.to_dict(serialize=True))

    async def delete_pod(self, key: ObjectKey) -> None:
        with contextlib.suppress(_NotFound):
            try:
                await self.core.delete_namespaced_pod(key.name, key.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    raise _NotFound from exc
                raise

    async def delete_vmi(self, key: ObjectKey) -> None:
        try:
            await self.custom.delete_namespaced_custom_object(
                *KUBEVIRT, namespace=key.namespace, plural="virtualmachineinstances", name=key.name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


class _NotFound(Exception):
    pass


@dataclass
class KubeVirtSimulator:
    """The stand-in for virt-controller and virt-handler. Run :meth:`run`; read :attr:`guests`."""

    api_client: client.ApiClient
    options: SimulatorOptions = field(default_factory=SimulatorOptions)
    clock: Callable[[], float] = time.monotonic
    guests: dict[ObjectKey, GuestState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api = _Api(self.api_client)
        self.custom = self.api.custom
        self.core = self.api.core
        self.migrations = MigrationController(
            self.api,
            self.options.migration,
            self.options.overhead,
            self.options.failing,
            self.clock,
            rendering=self.options.rendering,
        )
        self.kubevirt = KubeVirtSettings()
        self._unreadable: int | None = None  # the status the last read of the CR failed with

    @property
    def migrations_done(self) -> int:
        return self.migrations.succeeded

    async def _list(self, plural: str) -> list[Mapping[str, Any]]:
        if self.options.namespace:
            result = await self.custom.list_namespaced_custom_object(
                *KUBEVIRT, namespace=self.options.namespace, plural=plural
            )
        else:
            result = await self.custom.list_cluster_custom_object(*KUBEVIRT, plural=plural)
        return cast(list[Mapping[str, Any]], cast(Mapping[str, Any], result).get("items", []))

    async def _launcher_pods(self) -> list[Mapping[str, Any]]:
        selector = f"{APP_LABEL}={LAUNCHER}"
        if self.options.namespace:
            pods = await self.core.list_namespaced_pod(self.options.namespace, label_selector=selector)
        else:
            pods = await self.core.list_pod_for_all_namespaces(label_selector=selector)
        return [pod.to_dict(serialize=True) for pod in pods.items]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                logger.exception("simulator tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.options.poll_s)

    @property
    def rendering(self) -> Rendering:
        """What launchers are rendered under now (the KubeVirt CR's settings, else the options')."""
        return self.migrations.rendering

    async def follow_kubevirt_cr(self) -> None:
        """Read the KubeVirt CR's ``spec.configuration`` (the first CR's; no CRD or no CR: KubeVirt's
        defaults, that is the options'), and render and migrate by it from now on. A CR that cannot be read
        (not allowed, the API server restarting) leaves the settings as they were."""
        try:
            listed = cast(
                Mapping[str, Any], await self.custom.list_cluster_custom_object(*KUBEVIRT, plural="kubevirts")
            )
            config = configuration_of(listed)
        except ApiException as exc:
            if exc.status != 404:  # not allowed, or no answer now: what it had (the tick goes on)
                if exc.status != self._unreadable:
                    logger.warning("the KubeVirt CR is unreadable (%s %s)", exc.status, exc.reason)
                self._unreadable = exc.status
                return
            listed, config = {}, {}  # no KubeVirt CRD
        self._unreadable = None
        settings = kubevirt_settings(config)
        # a CR that lists no workloadUpdateMethods makes no automated updates (KubeVirt's own CR sets none);
        # without a CR the stand-in plays the documented install's, LiveMigrate
        self.migrations.update_methods = settings.update_methods if listed.get("items") else ("LiveMigrate",)
        self.migrations.eviction_strategy = settings.eviction_strategy
        # workload-updater.go: the CR's batchEvictionSize and batchEvictionInterval, else 10 a minute
        size, interval = settings.batch_eviction_size, settings.batch_eviction_interval_s
        self.migrations.eviction_batch = EVICTION_BATCH if size is None else size
        self.migrations.eviction_batch_s = EVICTION_BATCH_S if interval is None else interval
        if settings == self.kubevirt:
            return
        self.kubevirt = settings
        self.migrations.kubevirt_changed()  # workload-updater.go updateKubeVirt: its pass is queued
        base, limits = self.options.rendering, self.options.migration
        self.migrations.rendering = Rendering(
            memory_overcommit=settings.memory_overcommit or base.memory_overcommit,
            cpu_allocation_ratio=settings.cpu_allocation_ratio or base.cpu_allocation_ratio,
            node_selectors=settings.node_selectors or base.node_selectors,
        )
        self.migrations.options = replace(
            limits,
            per_cluster=settings.per_cluster or limits.per_cluster,
            outbound_per_node=settings.outbound_per_node or limits.outbound_per_node,
        )
        logger.info("KubeVirt CR followed: %s; %s", self.migrations.rendering, self.migrations.options)

    async def tick(self) -> None:
        await self.follow_kubevirt_cr()
        node_labels = await self._label_nodes()
        vms = {ObjectKey.of(b): b for b in await self._list("virtualmachines")}
        vmis = {ObjectKey.of(b): b for b in await self._list("virtualmachineinstances")}
        pods = await self._launcher_pods()
        for key, vm in vms.items():
            view = vm_view(vm)
            vmi = vmis.get(key)
            if view.desired_running and vmi is None:
                vmis[key] = await self._create_vmi(vm)
            elif not view.desired_running and vmi is not None:
                await self._stop(key, vmi, pods)
                vmis.pop(key)
            elif vmi is None:
                await self._ready_while_off(vm)
            else:
                await self._handle_memory_hotplug_request(vm, vmi)
        for key, vmi in list(vmis.items()):
            if key not in vms:  # an orphan VMI: KubeVirt's garbage collector would remove it
                await self._stop(key, vmi, pods)
                vmis.pop(key)
                continue
            await self._vmi_lifecycle(vms[key], vmi, pods)
        world = World(
            vmis={ObjectKey.of(b): b for b in await self._list("virtualmachineinstances")},
            pods=await self._launcher_pods(),
            migrations=await self._list(MIGRATIONS),
            node_labels=node_labels,
        )
        await self.migrations.run_updater(world)
        await self.migrations.sync(world)
        self._track_guests(world)

    # -- virt-handler ------------------------------------------------------------------------------------

    async def _label_nodes(self) -> dict[str, dict[str, str]]:
        """virt-handler marks the nodes it serves ``kubevirt.io/schedulable=true``; returns every node's
        labels."""
        found: dict[str, dict[str, str]] = {}
        nodes = await self.core.list_node()
        for body in (node.to_dict(serialize=True) for node in nodes.items):
            name = str(dig(body, "metadata", "name"))
            labels = dig(body, "metadata", "labels") or {}
            found[name] = {str(k): str(v) for k, v in labels.items()}
            conditions = dig(body, "status", "conditions") or []
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            if ready and labels.get(SCHEDULABLE_LABEL) != "true":
                await self.core.patch_node(name, {"metadata": {"labels": {SCHEDULABLE_LABEL: "true"}}})
                found[name][SCHEDULABLE_LABEL] = "true"
        return found

    def _track_guests(self, world: World) -> None:
        seen: set[ObjectKey] = set()
        for key, vmi in world.vmis.items():
            node = dig(vmi, "status", "nodeName")
            if dig(vmi, "status", "phase") != "Running" or not node:
                continue
            memory = dig(vmi, "status", "memory") or {}
            current = quantity_bytes(memory.get("guestCurrent")) or GI
            at_boot = quantity_bytes(memory.get("guestAtBoot")) or current
            overhead = (
                self.options.overhead
            )  # v1.7.0's VMI status has no memoryOverhead (schema.go MemoryStatus)
            guest = self.guests.get(key)
            if guest is None:
                self.guests[key] = GuestState(key, str(node), current, at_boot, overhead)
            else:
                guest.node, guest.current, guest.at_boot, guest.overhead = (
                    str(node),
                    current,
                    at_boot,
                    overhead,
                )
            seen.add(key)
        for key in [k for k in self.guests if k not in seen]:
            del self.guests[key]

    # -- VM controller -----------------------------------------------------------------------------------

    async def _create_vmi(self, vm: Mapping[str, Any]) -> Mapping[str, Any]:
        view = vm_view(vm)
        template = dict(dig(vm, "spec", "template", "spec") or {})
        # the VMI mutator stamps the CR's eviction strategy on a VMI that sets none (defaults.go,
        # setDefaultEvictionStrategy; KubeVirt's default is None): a later change of the CR leaves it be
        template.setdefault("evictionStrategy", self.kubevirt.eviction_strategy or "None")
        self._default_max_guest(template)
        labels = dict(dig(vm, "spec", "template", "metadata", "labels") or {})
        annotations = {}
        start = (dig(vm, "metadata", "annotations") or {}).get(START_NODE_ANNOTATION)
        if start:
            annotations[START_NODE_ANNOTATION] = start
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": view.key.name,
                "namespace": view.key.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "kubevirt.io/v1",
                        "kind": "VirtualMachine",
                        "name": view.key.name,
                        "uid": view.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template,
        }
        guest = dig(template, "domain", "memory", "guest")
        if guest is not None:
            # the VMI mutator sets the memory status at creation (defaults.go, setGuestMemoryStatus); the VMI
            # CRD has no status subresource, so the create keeps it
            at_start = {"guestAtBoot": guest, "guestCurrent": guest, "guestRequested": guest}
            body["status"] = {"memory": at_start}
        created = await self.custom.create_namespaced_custom_object(
            *KUBEVIRT, namespace=view.key.namespace, plural="virtualmachineinstances", body=body
        )
        # syncReadyConditionFromVMI with a VMI that has no Ready condition yet
        ready = {
            "type": "Ready",
            "status": "False",
            "reason": "VMIConditionMissing",
            "lastTransitionTime": now_rfc3339(),
        }
        # startVMI -> cleanupRestartRequired: the new VMI is rendered from the VM's spec as it is now
        others = [
            c
            for c in dig(vm, "status", "conditions") or []
            if c.get("type") not in {"Ready", "RestartRequired"}
        ]
        shown: dict[str, Any] = {"printableStatus": "Starting", "created": True, "ready": False}
        await self.api.patch_vm_status(view.key, {**shown, "conditions": [*others, ready]})
        logger.info("created VMI %s", view.key)
        return cast(Mapping[str, Any], created)

    def _default_max_guest(self, template: dict[str, Any]) -> None:
        """``pkg/defaults/defaults.go``, ``setupMemoryHotplug``, run by the VMI mutator: a VMI whose spec sets
        no ``maxGuest`` gets the CR's ``liveUpdateConfiguration.maxGuest``, else its guest x
        ``maxHotplugRatio`` (4), unless ``vmRolloutStrategy`` is ``Stage`` or ``ValidateLiveUpdateMemory``
        refuses that ceiling; without one its memory cannot change while it runs."""
        domain = dict(template.get("domain") or {})
        memory = dict(domain.get("memory") or {})
        if memory.get("maxGuest") is not None:
            return
        guest = quantity_bytes(memory.get("guest"))
        ceiling = self.kubevirt.default_max_guest(guest)
        if guest is None or ceiling is None or _live_update_problem({"spec": template}, guest, ceiling):
            return
        memory["maxGuest"] = to_quantity(ceiling)
        domain["memory"] = memory
        template["domain"] = domain

    async def _stop(self, key: ObjectKey, vmi: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> None:
        uid = dig(vmi, "metadata", "uid")
        await self.api.delete_vmi(key)
        for pod in pods:
            if (dig(pod, "metadata", "labels") or {}).get(CREATED_BY_LABEL) == uid:
                await self.api.delete_pod(ObjectKey(key.namespace, str(dig(pod, "metadata", "name"))))
        with contextlib.suppress(ApiException):
            await self.api.patch_vm_status(
                key,
                {"printableStatus": "Stopped", "ready": False, "created": False, "conditions": [_off_now()]},
            )
        self.guests.pop(key, None)
        logger.info("stopped %s", key)

    async def _ready_while_off(self, vm: Mapping[str, Any]) -> None:
        """``vm.go``, ``syncReadyConditionFromVMI`` without a VMI: Ready False, reason VMINotExists, its
        lastTransitionTime kept while it stays so (``conditions.go``, ``UpdateCondition``)."""
        ready = conditions(vm).get("Ready")
        if ready is not None and ready.get("status") == "False" and ready.get("reason") == "VMINotExists":
            return
        others = [c for c in dig(vm, "status", "conditions") or [] if c.get("type") != "Ready"]
        with contextlib.suppress(ApiException):  # deleted meanwhile
            await self.api.patch_vm_status(ObjectKey.of(vm), {"conditions": [*others, _off_now()]})

    async def _handle_memory_hotplug_request(self, vm: Mapping[str, Any], vmi: Mapping[str, Any]) -> None:
        """``vm.go``, ``handleMemoryHotplugRequest`` (and ``setRestartRequired``), in its order of checks;
        not at all while the VM has ``RestartRequired`` (``sync`` skips every live update then)."""
        if condition_is(vm, "RestartRequired"):
            return
        key = ObjectKey.of(vm)
        wanted = vm_view(vm).guest
        spec_guest = quantity_bytes(dig(vmi, "spec", "domain", "memory", "guest"))
        memory = dig(vmi, "status", "memory") or {}
        current = quantity_bytes(memory.get("guestCurrent"))
        if (
            wanted is None
            or spec_guest is None
            or current is None
            or dig(vmi, "status", "phase") != "Running"
        ):
            return
        restart: str | None = None
        if condition_is(vmi, MEMORY_CHANGE, "False"):
            restart = (
                "memory updated in template spec. Memory-hotplug failed and is not available for this VM "
                "configuration"
            )
        elif wanted == spec_guest:
            return
        else:
            at_boot = quantity_bytes(memory.get("guestAtBoot"))
            ceiling = quantity_bytes(dig(vmi, "spec", "domain", "memory", "maxGuest"))
            unsupported = _live_update_problem(vmi, wanted, ceiling)
            if condition_is(vmi, "LiveMigratable", "False"):
                restart = (
                    "memory updated in template spec. Memory-hotplug is only available for migratable VMs"
                )
            elif ceiling is None:
                restart = (
                    "memory updated in template spec. Memory-hotplug is not available for this VM "
                    "configuration"
                )
            elif condition_is(vmi, MEMORY_CHANGE, "True") or vmi_migrating(vmi):
                # "another memory hotplug is in progress" / "not allowed while VMI is migrating": retried
                return
            elif unsupported is not None:
                restart = f"memory hotplug not supported, {unsupported}"
            elif at_boot is not None and wanted < at_boot:
                restart = "memory updated in template spec to a value lower than what the VM started with"
            elif wanted > ceiling:
                restart = "memory updated in template spec to a value higher than what's available"
        if restart is not None:
            await self._set_restart_required(vm, restart)
            return
        delta = wanted - current
        domain: dict[str, Any] = {"memory": {"guest": to_quantity(wanted)}}
        resources: dict[str, Any] = {}
        request = quantity_bytes(dig(vmi, "spec", "domain", "resources", "requests", "memory"))
        if request:
            resources["requests"] = {"memory": to_quantity(max(request + delta, wanted))}
        limit = quantity_bytes(dig(vmi, "spec", "domain", "resources", "limits", "memory"))
        if limit:
            resources["limits"] = {"memory": to_quantity(limit + delta)}
        if resources:
            domain["resources"] = resources
        await self.api.patch_vmi(key, {"spec": {"domain": domain}})
        logger.info("%s: hotplugging memory to %s", key, to_quantity(wanted))

    async def _set_restart_required(self, vm: Mapping[str, Any], message: str) -> None:
        """``setRestartRequired``: the condition is only ever added here (its removal is the VMI's start or
        stop, :meth:`_create_vmi`, :meth:`_stop`)."""
        conditions: list[dict[str, str]] = [
            c for c in dig(vm, "status", "conditions") or [] if c.get("type") != "RestartRequired"
        ]
        conditions.append(
            {
                "type": "RestartRequired",
                "status": "True",
                "reason": "RestartRequired",
                "message": message,
                "lastTransitionTime": now_rfc3339(),
            }
        )
        await self.api.patch_vm_status(ObjectKey.of(vm), {"conditions": conditions})

    # -- VMI controller and virt-handler -----------------------------------------------------------------

    async def _fits_on(self, node: str, pod: Mapping[str, Any]) -> bool:
        """Whether ``pod``'s memory request fits beside the requests of the unfinished pods bound to ``node``.

        A pod bound by ``nodeName`` skips the scheduler; a real kubelet would then refuse it in admission
        (``pkg/kubelet/lifecycle/predicate.go``, ``generalFilter``: the scheduler's fit check), so the
        scenario's starting node is used only when the pod fits there.
        """
        try:
            body = await self.api.core.read_node(node)
        except ApiException:
            return False
        status = body.status
        allocatable = quantity_bytes(((status.allocatable if status else None) or {}).get("memory")) or 0
        bound = await self.api.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
        used = 0
        for other in bound.items:
            if other.status is not None and other.status.phase in ("Succeeded", "Failed"):
                continue
            for container in (other.spec.containers if other.spec else None) or []:
                requests = (container.resources.requests if container.resources else None) or {}
                used += quantity_bytes(requests.get("memory")) or 0
        wanted = sum(
            quantity_bytes(((c.get("resources") or {}).get("requests") or {}).get("memory")) or 0
            for c in dig(pod, "spec", "containers") or []
        )
        return used + wanted <= allocatable

    async def _vmi_lifecycle(
        self, vm: Mapping[str, Any], vmi: Mapping[str, Any], pods: list[Mapping[str, Any]]
    ) -> None:
        key = ObjectKey.of(vmi)
        phase = dig(vmi, "status", "phase") or "Pending"
        uid = dig(vmi, "metadata", "uid")
        mine = [p for p in pods if (dig(p, "metadata", "labels") or {}).get(CREATED_BY_LABEL) == uid]
        if phase in ("Pending", "Scheduling"):
            if not mine:
                start = (dig(vmi, "metadata", "annotations") or {}).get(START_NODE_ANNOTATION)
                rendering = self.rendering
                pod = launcher_pod(vmi, overhead=self.options.overhead, rendering=rendering)
                if start and await self._fits_on(start, pod):
                    pod = launcher_pod(
                        vmi, overhead=self.options.overhead, rendering=rendering, node_name=start
                    )
                else:
                    start = None  # no room there: the scheduler places it, as it does every VMI's pod
                created = await self.api.create_pod(key.namespace, pod)
                await self.api.patch_vmi(key, {"status": {"phase": "Scheduling"}})
                logger.info(
                    "%s: launcher pod %s (start node %s)", key, dig(created, "metadata", "name"), start
                )
                return
            node = next((n for n in map(pod_running_on, mine) if n), None)
            if node is not None:
                await self._started(vm, vmi, node)
            return
        if phase != "Running":
            return
        spec_guest = quantity_bytes(dig(vmi, "spec", "domain", "memory", "guest"))
        requested = quantity_bytes(dig(vmi, "status", "memory", "guestRequested"))
        max_guest = dig(vmi, "spec", "domain", "memory", "maxGuest")
        if (
            max_guest
            and spec_guest != requested
            and not any(c.get("type") == MEMORY_CHANGE for c in dig(vmi, "status", "conditions") or [])
        ):
            # lifecycle.go requireMemoryHotplug -> syncHotplugCondition: added once, with no reason
            conditions = [
                *(dig(vmi, "status", "conditions") or []),
                {"type": MEMORY_CHANGE, "status": "True"},
            ]
            await self.api.patch_vmi(key, {"status": {"conditions": conditions}})

    async def _started(self, vm: Mapping[str, Any], vmi: Mapping[str, Any], node: str) -> None:
        """virt-handler reports the domain running on ``node``."""
        key = ObjectKey.of(vmi)
        guest = quantity_bytes(dig(vmi, "spec", "domain", "memory", "guest")) or vm_view(vm).request or GI
        # set at the VMI's creation (_create_vmi); a VMI made by someone else has none yet
        memory = dig(vmi, "status", "memory") or {
            "guestAtBoot": to_quantity(guest),
            "guestCurrent": to_quantity(guest),
            "guestRequested": to_quantity(guest),
        }
        status = {
            "phase": "Running",
            "nodeName": node,
            "memory": memory,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now_rfc3339()},
                {"type": "LiveMigratable", "status": "True", "lastTransitionTime": now_rfc3339()},
            ],
        }
        await self.api.patch_vmi(key, {"metadata": {"labels": {NODE_NAME_LABEL: node}}, "status": status})
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": now_rfc3339()}  # the VMI's, copied
        others = [c for c in dig(vm, "status", "conditions") or [] if c.get("type") != "Ready"]
        shown: dict[str, Any] = {"printableStatus": "Running", "ready": True, "created": True}
        await self.api.patch_vm_status(key, {**shown, "conditions": [*others, ready]})
        logger.info("started %s on %s with %s", key, node, to_quantity(guest))


def _off_now() -> dict[str, str]:
    """The VM's Ready condition from the moment its VMI is gone (``syncReadyConditionFromVMI``)."""
    return {
        "type": "Ready",
        "status": "False",
        "reason": "VMINotExists",
        "message": "VMI does not exist",
        "lastTransitionTime": now_rfc3339(),
    }
