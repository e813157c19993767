"""kopf registrations only: indices of what the operator watches, wake-ups, and the balancing loop's life.

The operator keeps six in-memory kopf indices (VirtualMachineMemories, KubeVirt VMs, VMIs and their
VirtualMachineInstanceMigrations, Nodes, Pods),
each holding the small typed views of :mod:`dynamem.kube.objects`. kopf fills every index before it calls
any other handler, so the first ``on.event`` call tells the loop that the picture is complete; later events
of the same resources wake the loop early (a spec edit, a VM start or stop, a node change), and otherwise it
runs every ``--interval`` seconds. The operator adds no finalizer and no annotation to any object: deleting a
VirtualMachineMemory never waits for the operator, and leaves its VM as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from dynamem.controller.balancer import Balancer
from dynamem.controller.demand import PrometheusDemand
from dynamem.controller.metrics import OperatorMetrics
from dynamem.controller.migrations import MIGRATION, migration_view, with_failed_migrations
from dynamem.controller.options import OperatorOptions
from dynamem.controller.peering import peering_active
from dynamem.controller.snapshot import Observed, vmm_view
from dynamem.kube.api import KubeApi
from dynamem.kube.objects import ObjectKey, node_view, pod_view, vm_view, vmi_view

logger = logging.getLogger("dynamem.operator")

VMM = ("dynamem.io", "v1alpha1", "virtualmachinememories")
VM = ("kubevirt.io", "v1", "virtualmachines")
VMI = ("kubevirt.io", "v1", "virtualmachineinstances")

T = TypeVar("T")

# Replicas started together register in the peering object within a second or two; none balances before
# this many seconds have passed, so a lower-priority replica never runs a round before it sees the leader.
PEERING_GRACE_S = 5.0


def _values(index: kopf.Index[Any, T]) -> Iterable[T]:
    for store in index.values():
        yield from store


@dataclass
class OperatorState:
    """What the registered handlers share: options, the loop's wake-up, its task."""

    options: OperatorOptions
    identity: str
    priority: int
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    indexed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    api: KubeApi | None = None
    rounds: int = 0
    started: float = field(default_factory=time.monotonic)

    async def is_active(self) -> bool:
        """Whether this replica balances now (kopf's peering rule; always in standalone mode)."""
        if self.options.standalone or self.api is None:
            return True
        if time.monotonic() - self.started < PEERING_GRACE_S:
            return False  # peers that start with us may not be registered yet
        try:
            if self.options.all_namespaces:
                bodies = [
                    await self.api.custom.get_cluster_custom_object(
                        "kopf.dev", "v1", "clusterkopfpeerings", self.options.peering
                    )
                ]
            else:  # kopf keeps one KopfPeering per watched namespace; a conflict in any pauses it
                bodies = [
                    await self.api.custom.get_namespaced_custom_object(
                        "kopf.dev", "v1", namespace, "kopfpeerings", self.options.peering
                    )
                    for namespace in self.options.namespaces
                ]
        except Exception as exc:
            logger.warning("peering object %r unreadable, not balancing: %s", self.options.peering, exc)
            return False
        now = dt.datetime.now(dt.UTC)
        for body in bodies:
            status = body.get("status") or {} if isinstance(body, dict) else {}
            if self.identity not in status or not peering_active(status, self.identity, self.priority, now):
                return False  # not registered there yet, or a live peer outranks us
        return True


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
            name: kwargs[name]
            for name in ("vmm_index", "vm_index", "vmi_index", "node_index", "pod_index", "migration_index")
        }

        def observe() -> Observed:
            return Observed(
                vmms=list(_values(indices["vmm_index"])),
                vms=list(_values(indices["vm_index"])),
                vmis=with_failed_migrations(
                    _values(indices["vmi_index"]), _values(indices["migration_index"])
                ),
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

    @kopf.index(*MIGRATION, id="migration_index", registry=registry)
    def migration_index(body: kopf.Body, **_: Any) -> dict[ObjectKey, object]:
        return {ObjectKey.of(body): migration_view(body)}

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
    for resource in (VM, VMI, MIGRATION):
        kopf.on.event(*resource, registry=registry)(wake)
    kopf.on.event("nodes", registry=registry)(wake)
    return registry


async def balancing_loop(state: OperatorState, balancer: Balancer, observe: Any) -> None:
    """Run a round every interval, or soon after a wake-up; only on the replica that peering lets act."""
    options = state.options
    await state.indexed.wait()
    was_active = True
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.wake.wait(), timeout=options.interval_s)
        state.wake.clear()
        try:
            active = await state.is_active()
            if active and not was_active:
                # kopf paused our watches while we stood by; it lists everything again on resuming. Balance
                # only once that fresh picture has started to arrive, not on what we saw before the pause.
                state.indexed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.indexed.wait(), timeout=30)
            was_active = active
            if not active:
                state.metrics.standby()
            else:
                result = await balancer.run_round(observe())
                state.rounds += 1
                logger.debug(
                    "round %d: %d memory writes, %d status writes, %d deferred, %.3fs",
                    state.rounds,
                    result.memory_writes,
                    result.status_writes,
                    result.deferred,
                    result.duration_s,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("balancing round failed; the next one starts afresh")
        await asyncio.sleep(options.min_gap_s)
