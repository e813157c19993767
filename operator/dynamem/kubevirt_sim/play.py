"""Playing a scenario file (the simulator's format) on a real API server.

Creates the scenario's nodes (``Node`` objects whose allocatable memory is the scenario's pool plus the
per-VM overhead the simulator reports), its KubeVirt VirtualMachines (``memory.guest`` at startup,
``maxGuest`` at maximum; the scenario's node is where a VM STARTS, an annotation the stand-in reads to bind
its first launcher pod there, never a node selector, which would bind every migration target too) and their
VirtualMachineMemories, then walks the demand trace: a VM runs while its demand is not null, and its guest
reports that demand through the simulator's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from dynamem.kube.api import DYNAMEM, KUBEVIRT, VMM_PLURAL
from dynamem.kube.objects import ObjectKey, to_quantity
from dynamem.kubevirt_sim.controller import START_NODE_ANNOTATION
from dynamem.kubevirt_sim.launcher import DEVICES_PER_NODE, KVM_DEVICE, TUN_DEVICE, VHOST_NET_DEVICE
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.sim.scenario import Scenario, ScenarioVm

logger = logging.getLogger("dynamem.kubevirt_sim.play")

MERGE = "application/merge-patch+json"


POOL_LABEL = "dynamem.io/pool"


def node_body(name: str, memory: int, cpu: str = "64", pool: str | None = None) -> dict[str, Any]:
    resources = {"memory": to_quantity(memory), "cpu": cpu, "pods": "250", "ephemeral-storage": "100Gi"}
    # virt-handler's device plugins (cmd/virt-handler maxDevices), which every launcher pod asks one of
    resources |= {device: str(DEVICES_PER_NODE) for device in (KVM_DEVICE, TUN_DEVICE, VHOST_NET_DEVICE)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "dynamem.io/simulated": "true",
                **({POOL_LABEL: pool} if pool else {}),
            },
        },
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Simulated", "message": "dynamem"}],
        },
    }


def vm_body(vm: ScenarioVm, namespace: str, running: bool, pool: str | None = None) -> dict[str, Any]:
    """The scenario's VM; with ``pool``, its VMI selects the pool's nodes (so do its migration targets)."""
    settings = vm.settings
    memory: dict[str, Any] = {
        "guest": to_quantity(settings.startup),
        "maxGuest": to_quantity(settings.maximum),
    }
    if vm.hugepages:  # the scenario names its page size: backed by hugepages (spec.domain.memory.hugepages)
        memory["hugepages"] = {"pageSize": to_quantity(vm.hugepage)}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": vm.name,
            "namespace": namespace,
            "labels": {"dynamem.io/scenario": "true"},
            "annotations": {START_NODE_ANNOTATION: vm.node},
        },
        "spec": {
            "runStrategy": "Always" if running else "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/vm": vm.name}},
                "spec": {
                    **({"nodeSelector": {POOL_LABEL: pool}} if pool else {}),
                    "domain": {
                        "memory": memory,
                        "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                    },
                    "volumes": [
                        {"name": "root", "containerDisk": {"image": "quay.io/containerdisks/fedora:41"}}
                    ],
                },
            },
        },
    }


def vmm_body(vm: ScenarioVm, namespace: str) -> dict[str, Any]:
    s = vm.settings
    spec: dict[str, Any] = {
        "startup": to_quantity(s.startup),
        "maximum": to_quantity(s.maximum),
        "buffer": s.buffer,
        "priority": s.priority,
    }
    if s.minimum != s.startup:
        spec["minimum"] = to_quantity(s.minimum)
    return {
        "apiVersion": "dynamem.io/v1alpha1",
        "kind": "VirtualMachineMemory",
        "metadata": {"name": vm.name, "namespace": namespace},
        "spec": spec,
    }


class SetupError(Exception):
    """The API server refused an object of the scenario; the message names the object and gives its answer."""


async def _create(call: Any, *args: Any, allowed: tuple[int, ...] = (409,), **kwargs: Any) -> None:
    """Create an object, or keep the one there (409); any answer not ``allowed`` is a :class:`SetupError`."""
    try:
        await call(*args, **kwargs)
    except ApiException as exc:
        if exc.status in allowed:
            return
        body = kwargs.get("body", args[-1] if args else {})
        meta = body.get("metadata", {})
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        try:
            answer = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            answer = exc.reason
        raise SetupError(
            f"{body.get('kind', 'object')} {where}{meta.get('name')}: {exc.status} {answer}"
        ) from exc


async def create_node(api_client: client.ApiClient, name: str, memory: int, pool: str | None = None) -> None:
    """A Node object with ``memory`` allocatable and a Ready condition (kwok keeps it, as a kubelet would)."""
    core = client.CoreV1Api(api_client)
    body = node_body(name, memory, pool=pool)
    await _create(core.create_node, body)
    await core.patch_node_status(
        name, {"status": body["status"]}, _content_type="application/merge-patch+json"
    )


@dataclass
class ScenarioPlayer:
    """Sets up a scenario on the cluster and keeps the VMs' run state in step with its demand trace."""

    api_client: client.ApiClient
    scenario: Scenario
    namespace: str
    feed: DemandFeed
    overhead: int = 0
    pool: str | None = None  # label value marking this scenario's nodes, selected by its VMs

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.running: dict[str, bool] = {}

    def keys(self) -> Mapping[str, ObjectKey]:
        return {vm.name: ObjectKey(self.namespace, vm.name) for vm in self.scenario.vms}

    async def setup(self) -> None:
        """The scenario's namespace (made when missing, as ``kubectl create namespace``), nodes, VMs and their
        VirtualMachineMemories; raises :class:`SetupError` when the API server refuses one."""
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        # 403: a user who may not create namespaces uses one that exists (else the first VM's 404 says so)
        await _create(client.CoreV1Api(self.api_client).create_namespace, namespace, allowed=(403, 409))
        for node in self.scenario.nodes:
            count = sum(1 for vm in self.scenario.vms if vm.node == node.name)
            await create_node(self.api_client, node.name, node.memory + count * self.overhead, self.pool)
        for vm in self.scenario.vms:
            running = self.scenario.demand[vm.name][0] is not None
            self.running[vm.name] = running
            await _create(
                self.custom.create_namespaced_custom_object,
                *DYNAMEM,
                namespace=self.namespace,
                plural=VMM_PLURAL,
                body=vmm_body(vm, self.namespace),
            )
            await _create(
                self.custom.create_namespaced_custom_object,
                *KUBEVIRT,
                namespace=self.namespace,
                plural="virtualmachines",
                body=vm_body(vm, self.namespace, running, self.pool),
            )
        for name, key in self.keys().items():
            self.feed.traces[key] = self.scenario.demand[name]

    async def sync_run_state(self) -> None:
        """Start the VMs whose demand turned non-null at this step, stop those whose turned null."""
        step = min(self.feed.step(), self.scenario.steps - 1)
        for vm in self.scenario.vms:
            running = self.scenario.demand[vm.name][step] is not None
            if self.running.get(vm.name) == running:
                continue
            await self.custom.patch_namespaced_custom_object(
                *KUBEVIRT,
                namespace=self.namespace,
                plural="virtualmachines",
                name=vm.name,
                body={"spec": {"runStrategy": "Always" if running else "Halted"}},
                _content_type=MERGE,
            )
            self.running[vm.name] = running
            logger.info("step %d: %s %s", step, vm.name, "started" if running else "stopped")

    async def play(self, stop: asyncio.Event, on_step: Callable[[int], None] | None = None) -> None:
        """Follow the trace until its end (then keep the last step) or until ``stop``."""
        last = -1
        while not stop.is_set():
            step = self.feed.step()
            if step != last:
                await self.sync_run_state()
                if on_step is not None:
                    on_step(step)
                last = step
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)
