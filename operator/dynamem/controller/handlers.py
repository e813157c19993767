"""kopf registrations only: the watches that feed the operator's view, wake-ups, and the loop's life.

kopf watches the eight resources a round reads (VirtualMachineMemories, KubeVirt VMs, VMIs and their
VirtualMachineInstanceMigrations, Nodes, Pods, PersistentVolumeClaims and PersistentVolumes)
and hands each event to the :class:`~dynamem.controller.view.ClusterView`, which keeps small typed views and
is reconciled with fresh LISTs by the loop. Events wake the loop early (a spec edit, a VM start or stop, a
node change); otherwise it runs every ``--interval`` seconds. kopf runs standalone: which replica balances is
decided by a Lease (:mod:`dynamem.controller.leadership`), and every replica keeps watching, so a standby's
view is live, not paused. The liveness probe (``--liveness``) fails when the loop died or hangs
(:mod:`dynamem.controller.liveness`). The operator adds no finalizer to any object (kopf has only event
handlers here and stores nothing on objects; dynamem writes a VM's ``dynamem.io/placement`` with a change):
deleting a VirtualMachineMemory never waits for the operator, and leaves its VM with the memory it has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import kopf

from dynamem.controller.balancer import Balancer
from dynamem.controller.demand import PrometheusDemand, signal_queries
from dynamem.controller.demand_ahead import DemandAhead
from dynamem.controller.kubevirt_follower import KubeVirtFollower
from dynamem.controller.leadership import LeaderOnlyWriter, LeaseConfig, LeaseElector
from dynamem.controller.liveness import LoopStalled, loop_health, write_guard
from dynamem.controller.loop import OperatorState, balancing_loop, wake_on_leadership
from dynamem.controller.migrations import MIGRATION
from dynamem.controller.ports import ClusterWriter
from dynamem.controller.view import Kind
from dynamem.kube.api import KubeApi

logger = logging.getLogger("dynamem.operator")

VMM = ("dynamem.io", "v1alpha1", "virtualmachinememories")
VM = ("kubevirt.io", "v1", "virtualmachines")
VMI = ("kubevirt.io", "v1", "virtualmachineinstances")


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: dynamem registers event watchers only, no on.create/update/resume handler to diff for.

    kopf builds an object's diff-base (a deep copy of the whole body) on every watch event and diffs it with
    the last one it stored, whatever the handlers: at 10,000 VMs that is tens of thousands of deep copies for
    nobody. None is stored or read (the operator writes no annotation to any object).
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def register(state: OperatorState) -> kopf.OperatorRegistry:
    """A kopf registry with dynamem's handlers, bound to ``state``."""
    registry = kopf.OperatorRegistry()
    options = state.options

    @kopf.on.startup(registry=registry, errors=kopf.ErrorsMode.PERMANENT)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = "dynamem.io/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dynamem.io")
        settings.persistence.diffbase_storage = NoDiffBase()
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 30
        settings.networking.connect_timeout = 10
        # kopf posts core Events only from on.create/update/delete-style handlers, which dynamem has none of;
        # dynamem posts its own (events.k8s.io). Off, so the ClusterRole needs no core Events grant.
        settings.posting.enabled = False
        api = await KubeApi.connect(options.kubeconfig)
        if not options.all_namespaces:
            logger.warning(
                "watching namespaces %s only: node pools count only the pods and VMs there; "
                "use -A unless these nodes run nothing else",
                ", ".join(options.namespaces),
            )
        if options.metrics_port:
            state.metrics.serve(options.metrics_port, options.metrics_address)
        writer: ClusterWriter = api
        lease_check: Callable[[], None] | None = None
        if not options.standalone:
            lease = LeaseConfig.from_duration(
                options.lease_place(os.environ.get("POD_NAMESPACE")),
                options.lease_name,
                state.identity,
                options.lease_duration_s,
            )
            state.elector = LeaseElector(api.coordination, lease)
            guarded = LeaderOnlyWriter(api, state.elector)
            lease_check = guarded.check  # each retry of a write checks again, not only the first try
            writer = guarded
            state.tasks.append(asyncio.create_task(state.elector.run(), name="dynamem-lease"))
            state.tasks.append(asyncio.create_task(wake_on_leadership(state), name="dynamem-lease-wake"))

        api.guard_writes(write_guard(state.alive, lease_check))
        demand = PrometheusDemand(
            options.prometheus_url,
            token_file=options.prometheus_token_file,
            ca_file=options.prometheus_ca_file,
            signals=signal_queries(options.balance.shrink_window_s),
        )

        # the KubeVirt CR's migration limits and launcher selector, read now and with every periodic LIST
        kubevirt = KubeVirtFollower(
            api.kubevirt_configuration,
            options.round_options(),
            migrations_given=options.parallel_migrations_given,
        )
        await kubevirt.refresh()

        # read ahead of each round, so a round does not wait for Prometheus (demand_ahead.py)
        ahead = DemandAhead(demand, max_age_s=options.demand_max_age(), metrics=state.metrics)

        def make_balancer() -> Balancer:
            """A balancer for the term that starts now: its writes stop when the term ends."""
            elector = state.elector
            bound = writer if elector is None else LeaderOnlyWriter(api, elector, elector.term)
            return Balancer(bound, ahead, kubevirt.options, metrics=state.metrics)

        state.tasks.append(
            asyncio.create_task(
                balancing_loop(state, make_balancer, api, ahead, kubevirt), name="dynamem-balancer"
            )
        )
        state.tasks.append(asyncio.create_task(_close_on_cancel(api, demand), name="dynamem-clients"))

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account first, then the kubeconfig (kopf's own loaders, no client library)."""
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        """Stop the loop first, then the Lease (released on the way out), then the clients."""
        order = ("dynamem-balancer", "dynamem-lease-wake", "dynamem-lease", "dynamem-clients")
        for task in sorted(state.tasks, key=lambda t: order.index(t.get_name())):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @kopf.on.probe(registry=registry, id="balancing-loop")
    async def balancing_loop_alive(**_: Any) -> dict[str, object]:
        """``--liveness``: 500 when the loop or a task beside it died or hangs (:mod:`.liveness`); a permanent
        error, so kopf does not retry it while the kubelet waits for the answer. On the event loop (async), as
        the tasks it reads are."""
        try:
            health = loop_health(
                tasks=state.tasks,
                beat=state.beat,
                now=time.monotonic(),
                interval_s=options.interval_s,
                min_gap_s=options.min_gap_s,
                leading=state.elector.leading if state.elector is not None else True,
                rounds=state.rounds,
            )
        except LoopStalled as exc:
            logger.error("liveness probe fails: %s", exc)
            raise kopf.PermanentError(str(exc)) from exc
        return health.as_dict()

    def feed(kind: Kind) -> Any:
        # async: kopf runs a plain function in a thread pool, a hop per event (30,000 at start at 10,000 VMs)
        async def on_event(body: kopf.Body, type: str | None, **_: Any) -> None:
            changed = state.view.apply_event(kind, type, body)
            # VMMs: our own status writes do not wake the loop; spec edits, creations and deletions do.
            if kind is Kind.VMM:
                generation = body.get("metadata", {}).get("generation")
                observed = body.get("status", {}).get("observedGeneration")
                if type in {"ADDED", "DELETED"} or generation != observed:
                    state.wake.set()
            elif kind is not Kind.POD and changed:
                # only what a round reads: a node's status heartbeat (every node, every few seconds with
                # kwok or a kubelet) changes nothing dynamem uses
                state.wake.set()
                if kind is Kind.VMI:  # may show a change whose migration waits for it (loop._between_rounds)
                    state.vmi_changed.set()

        return on_event

    kopf.on.event(*VMM, registry=registry)(feed(Kind.VMM))
    kopf.on.event(*VM, registry=registry)(feed(Kind.VM))
    kopf.on.event(*VMI, registry=registry)(feed(Kind.VMI))
    kopf.on.event(*MIGRATION, registry=registry)(feed(Kind.MIGRATION))
    # The core group named ("v1"), not left open: a selector without a group has kopf scan every API group
    # at startup, and one aggregated API that answers 503 (metrics-server down, KubeVirt's
    # subresources.kubevirt.io while virt-api restarts) then ends kopf's resource observer, and with it the
    # operator, on every restart: a crash loop over an API dynamem never reads.
    kopf.on.event("v1", "nodes", registry=registry)(feed(Kind.NODE))
    kopf.on.event("v1", "pods", registry=registry)(feed(Kind.POD))
    kopf.on.event("v1", "persistentvolumeclaims", registry=registry)(feed(Kind.CLAIM))
    kopf.on.event("v1", "persistentvolumes", registry=registry)(feed(Kind.VOLUME))
    return registry


async def _close_on_cancel(api: KubeApi, demand: PrometheusDemand) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await demand.close()
        await api.close()
