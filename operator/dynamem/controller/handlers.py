"""kopf registrations only: indices of what the operator watches, wake-ups, and the balancing loop's life.

The operator keeps five in-memory kopf indices (VirtualMachineMemories, KubeVirt VMs and VMIs, Nodes, Pods),
each holding the small typed views of :mod:`dynamem.kube.objects`. kopf fills every index before it calls
any other handler, so the first ``on.event`` call tells the loop that the picture is complete; later events
of the same resources wake the loop early (a spec edit, a VM start or stop, a node change), and otherwise it
runs every ``--interval`` seconds. The operator adds no finalizer and no annotation to any object: deleting a
VirtualMachineMemory never waits for the operator, and leaves its VM as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, TypeVar

import kopf

from dynamem.controller.balancer import Balancer
from dynamem.controller.demand import PrometheusDemand
from dynamem.controller.loop import OperatorState, balancing_loop
from dynamem.controller.snapshot import Observed, vmm_view
from dynamem.kube.api import KubeApi
from dynamem.kube.objects import ObjectKey, node_view, pod_view, vm_view, vmi_view

logger = logging.getLogger("dynamem.operator")

VMM = ("dynamem.io", "v1alpha1", "virtualmachinememories")
VM = ("kubevirt.io", "v1", "virtualmachines")
VMI = ("kubevirt.io", "v1", "virtualmachineinstances")

T = TypeVar("T")


def _values(index: kopf.Index[Any, T]) -> Iterable[T]:
    for store in index.values():
        yield from store


def register(state: OperatorState) -> kopf.OperatorRegistry:
    """A kopf registry with dynamem's handlers, bound to ``state``."""
    registry = kopf.OperatorRegistry()
    options = state.options

    @kopf.on.startup(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        settings.persistence.finalizer = "dynamem.io/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dynamem.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="dynamem.io")
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.posting.level = logging.WARNING
        state.api = await KubeApi.connect(options.kubeconfig)
        if not options.all_namespaces:
            logger.warning(
                "watching namespaces %s only: node pools count only the pods and VMs there; "
                "use -A unless these nodes run nothing else",
                ", ".join(options.namespaces),
            )
        if options.metrics_port:
            state.metrics.serve(options.metrics_port, options.metrics_address)
        balancer = Balancer(
            state.api,
            PrometheusDemand(options.prometheus_url),
            options.round_options(),
            metrics=state.metrics,
        )
        indices = {
            name: kwargs[name] for name in ("vmm_index", "vm_index", "vmi_index", "node_index", "pod_index")
        }

        def observe() -> Observed:
            return Observed(
                vmms=list(_values(indices["vmm_index"])),
                vms=list(_values(indices["vm_index"])),
                vmis=list(_values(indices["vmi_index"])),
                nodes=list(_values(indices["node_index"])),
                pods=list(_values(indices["pod_index"])),
            )

        state.task = asyncio.create_task(balancing_loop(state, balancer, observe), name="dynamem-balancer")

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, then the kubeconfig (kopf's own loaders, no client library)."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        if state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
        if state.api is not None:
            await state.api.close()

    @kopf.index(*VMM, id="vmm_index", registry=registry)
    def vmm_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, object]:
        return {ObjectKey.of(body): vmm_view(body)}

    @kopf.index(*VM, id="vm_index", registry=registry)
    def vm_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, object]:
        return {ObjectKey.of(body): vm_view(body)}

    @kopf.index(*VMI, id="vmi_index", registry=registry)
    def vmi_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, object]:
        return {ObjectKey.of(body): vmi_view(body)}

    @kopf.index("nodes", id="node_index", registry=registry)
    def node_index(body: kopf.Body, **_: Any) -> dict[str, object]:
        view = node_view(body)
        return {view.name: view}

    @kopf.index("pods", id="pod_index", registry=registry, field="spec.nodeName", value=kopf.PRESENT)
    def pod_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, object]:
        return {ObjectKey.of(body): pod_view(body)}

    def wake(**_: Any) -> None:
        state.indexed.set()
        state.wake.set()

    def wake_on_spec_change(body: kopf.Body, type: str | None, **_: Any) -> None:
        """VMMs: our own status writes do not wake the loop; a spec edit, a creation or a deletion does."""
        generation = body.get("metadata", {}).get("generation")
        observed = body.get("status", {}).get("observedGeneration")
        state.indexed.set()
        if type in {"ADDED", "DELETED", None} or generation != observed:
            state.wake.set()

    kopf.on.event(*VMM, registry=registry)(wake_on_spec_change)
    for resource in (VM, VMI):
        kopf.on.event(*resource, registry=registry)(wake)
    kopf.on.event("nodes", registry=registry)(wake)
    return registry
