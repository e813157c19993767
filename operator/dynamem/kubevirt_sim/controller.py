"""Plays KubeVirt's virt-controller and virt-handler against a real API server.

Real VMs and KubeVirt's controllers cannot run on a machine without nested virtualisation and a container
runtime, so this stands in for them, following ``shared/KUBEVIRT.md``:

- a VirtualMachine that should run gets a VirtualMachineInstance, placed on the node its node selector names,
  else on the first node where its memory fits; the VMI's ``status`` gets ``nodeName``, ``phase: Running`` and
  ``memory`` {guestAtBoot, guestCurrent, guestRequested, memoryOverhead};
- a VM that should not run loses its VMI;
- a change of the VM's ``memory.guest`` while it runs is carried out as a memory hotplug: the VMI's spec is
  updated, condition ``HotMemoryChange=True`` is set, and after a configurable delay (the live migration)
  ``guestCurrent`` and ``guestRequested`` take the new size and the condition goes away. Below ``guestAtBoot``
  the VM gets ``RestartRequired`` instead, as KubeVirt does;
- each running VMI reports its guest's memory as ``kubevirt_vmi_memory_*`` metrics (:mod:`.metrics`).

It polls (lists) rather than watches: simple, and fast enough for tests and the demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from dynamem.kube.api import KUBEVIRT, now_rfc3339
from dynamem.kube.objects import (
    GI,
    ObjectKey,
    dig,
    node_view,
    to_quantity,
    vm_view,
    vmi_view,
)

logger = logging.getLogger("dynamem.kubevirt_sim")

MERGE = "application/merge-patch+json"


@dataclass
class Hotplug:
    to: int
    started: float


@dataclass
class GuestState:
    """What the simulator knows of one running guest, for its metrics."""

    key: ObjectKey
    node: str
    current: int
    at_boot: int


@dataclass
class SimulatorOptions:
    namespace: str | None = None
    poll_s: float = 0.25
    hotplug_delay_s: float = 1.0
    overhead: int = 0
    failing: set[str] = field(default_factory=set)  # names of VMs whose hotplugs fail, as KubeVirt reports


@dataclass
class KubeVirtSimulator:
    """The stand-in for virt-controller and virt-handler. Run :meth:`run`; read :attr:`guests`."""

    api_client: client.ApiClient
    options: SimulatorOptions = field(default_factory=SimulatorOptions)
    clock: Callable[[], float] = time.monotonic
    guests: dict[ObjectKey, GuestState] = field(default_factory=dict)
    hotplugs: dict[ObjectKey, Hotplug] = field(default_factory=dict)
    hotplugs_done: int = 0

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    async def _list(self, plural: str) -> list[Mapping[str, Any]]:
        if self.options.namespace:
            result = await self.custom.list_namespaced_custom_object(
                *KUBEVIRT, namespace=self.options.namespace, plural=plural
            )
        else:
            result = await self.custom.list_cluster_custom_object(*KUBEVIRT, plural=plural)
        return cast(list[Mapping[str, Any]], cast(Mapping[str, Any], result).get("items", []))

    async def _nodes(self) -> list[Mapping[str, Any]]:
        nodes = await self.core.list_node()
        return [node.to_dict(serialize=True) for node in nodes.items]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                logger.exception("simulator tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.options.poll_s)

    async def tick(self) -> None:
        vms = {ObjectKey.of(b): b for b in await self._list("virtualmachines")}
        vmis = {ObjectKey.of(b): b for b in await self._list("virtualmachineinstances")}
        nodes = [node_view(b) for b in await self._nodes()]
        started: set[ObjectKey] = set()
        for key, vm in vms.items():
            view = vm_view(vm)
            vmi = vmis.get(key)
            if view.desired_running and vmi is None:
                await self._start(vm, vmis, nodes)
                started.add(key)
            elif not view.desired_running and vmi is not None:
                await self._stop(key, vm)
            elif vmi is not None:
                await self._reconcile(vm, vmi)
        for key in list(self.guests):
            if key not in vms or (key not in vmis and key not in started):
                self.guests.pop(key, None)
                self.hotplugs.pop(key, None)
        for key in vmis:
            if key not in vms:  # an orphan VMI: KubeVirt's garbage collector would remove it
                await self._delete_vmi(key)

    def _place(
        self, vm: Mapping[str, Any], vmis: Mapping[ObjectKey, Mapping[str, Any]], nodes: list[Any]
    ) -> str:
        view = vm_view(vm)
        wanted = view.node_selector.get("kubernetes.io/hostname")
        if wanted:
            return wanted
        need = (view.guest or view.request or GI) + self.options.overhead
        used: dict[str, int] = {}
        for body in vmis.values():
            other = vmi_view(body)
            if other.node:
                used[other.node] = used.get(other.node, 0) + (other.current or 0) + (other.overhead or 0)
        for node in sorted(nodes, key=lambda n: n.name):
            if node.schedulable and used.get(node.name, 0) + need <= node.allocatable:
                return str(node.name)
        raise RuntimeError(f"no node has room for VM {view.key} ({to_quantity(need)})")

    async def _start(
        self, vm: Mapping[str, Any], vmis: Mapping[ObjectKey, Mapping[str, Any]], nodes: list[Any]
    ) -> None:
        view = vm_view(vm)
        try:
            node = self._place(vm, vmis, nodes)
        except RuntimeError as exc:
            logger.warning("%s", exc)
            return
        guest = view.guest or view.request or GI
        template = dict(dig(vm, "spec", "template", "spec") or {})
        body = {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstance",
            "metadata": {
                "name": view.key.name,
                "namespace": view.key.namespace,
                "labels": {"kubevirt.io/nodeName": node},
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
        await self.custom.create_namespaced_custom_object(
            *KUBEVIRT, namespace=view.key.namespace, plural="virtualmachineinstances", body=body
        )
        status = {
            "phase": "Running",
            "nodeName": node,
            "memory": {
                "guestAtBoot": to_quantity(guest),
                "guestCurrent": to_quantity(guest),
                "guestRequested": to_quantity(guest),
                "memoryOverhead": to_quantity(self.options.overhead) if self.options.overhead else "0",
            },
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now_rfc3339()}],
        }
        await self._patch_status("virtualmachineinstances", view.key, status)
        await self._patch_status(
            "virtualmachines", view.key, {"printableStatus": "Running", "ready": True, "created": True}
        )
        self.guests[view.key] = GuestState(view.key, node, guest, guest)
        logger.info("started %s on %s with %s", view.key, node, to_quantity(guest))

    async def _stop(self, key: ObjectKey, vm: Mapping[str, Any]) -> None:
        await self._delete_vmi(key)
        await self._patch_status(
            "virtualmachines",
            key,
            {"printableStatus": "Stopped", "ready": False, "created": False, "conditions": None},
        )
        self.guests.pop(key, None)
        self.hotplugs.pop(key, None)
        logger.info("stopped %s", key)

    async def _delete_vmi(self, key: ObjectKey) -> None:
        try:
            await self.custom.delete_namespaced_custom_object(
                *KUBEVIRT, namespace=key.namespace, plural="virtualmachineinstances", name=key.name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _reconcile(self, vm: Mapping[str, Any], vmi: Mapping[str, Any]) -> None:
        """Carry out a memory.guest change of a running VM, as KubeVirt's hotplug does."""
        view, instance = vm_view(vm), vmi_view(vmi)
        key = view.key
        current = instance.current or view.guest or GI
        at_boot = instance.guest_at_boot or current
        guest = self.guests.setdefault(key, GuestState(key, instance.node or "", current, at_boot))
        guest.node = instance.node or guest.node
        wanted = view.guest
        pending = self.hotplugs.get(key)
        if pending is not None:
            if self.clock() - pending.started >= self.options.hotplug_delay_s:
                await self._finish_hotplug(key, pending.to)
            return
        if wanted is None or wanted == current:
            if view.restart_required:
                await self._set_restart_required(key, False)
            return
        if wanted < at_boot:
            if not view.restart_required:
                await self._set_restart_required(key, True)
            return
        if instance.hotplug_failed and instance.spec_guest == wanted:
            return  # KubeVirt does not retry a failed hotplug of the same size by itself
        if view.restart_required:
            await self._set_restart_required(key, False)
        await self.custom.patch_namespaced_custom_object(
            *KUBEVIRT,
            namespace=key.namespace,
            plural="virtualmachineinstances",
            name=key.name,
            body={"spec": {"domain": {"memory": {"guest": to_quantity(wanted)}}}},
            _content_type=MERGE,
        )
        await self._patch_status(
            "virtualmachineinstances",
            key,
            {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "HotMemoryChange", "status": "True", "lastTransitionTime": now_rfc3339()},
                ]
            },
        )
        self.hotplugs[key] = Hotplug(wanted, self.clock())
        logger.info("%s: hotplug %s -> %s", key, to_quantity(current), to_quantity(wanted))

    async def _finish_hotplug(self, key: ObjectKey, size: int) -> None:
        if key.name in self.options.failing:
            # KubeVirt's failure: the VMI keeps the new spec, the guest its old size; the condition says so.
            failed = {
                "type": "HotMemoryChange",
                "status": "False",
                "reason": "Memory Hotplug Failed",
                "message": "simulated failure",
                "lastTransitionTime": now_rfc3339(),
            }
            await self._patch_status(
                "virtualmachineinstances", key, {"conditions": [{"type": "Ready", "status": "True"}, failed]}
            )
            self.hotplugs.pop(key, None)
            return
        await self._patch_status(
            "virtualmachineinstances",
            key,
            {
                "memory": {"guestCurrent": to_quantity(size), "guestRequested": to_quantity(size)},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        )
        self.hotplugs.pop(key, None)
        if key in self.guests:
            self.guests[key].current = size
        self.hotplugs_done += 1

    async def _set_restart_required(self, key: ObjectKey, on: bool) -> None:
        conditions: list[dict[str, str]] = []
        if on:
            conditions.append(
                {
                    "type": "RestartRequired",
                    "status": "True",
                    "reason": "MemoryBelowBoot",
                    "message": "memory.guest is below what the VM booted with: a restart is required",
                    "lastTransitionTime": now_rfc3339(),
                }
            )
        await self._patch_status("virtualmachines", key, {"conditions": conditions})

    async def _patch_status(self, plural: str, key: ObjectKey, status: Mapping[str, Any]) -> None:
        """VMs have a status subresource; KubeVirt's VMI CRD has none, so its status goes with the object."""
        patch = (
            self.custom.patch_namespaced_custom_object
            if plural == "virtualmachineinstances"
            else self.custom.patch_namespaced_custom_object_status
        )
        await patch(
            *KUBEVIRT,
            namespace=key.namespace,
            plural=plural,
            name=key.name,
            body={"status": dict(status)},
            _content_type=MERGE,
        )
