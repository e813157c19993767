"""The kubevirt model: a scenario played as KubeVirt v1.7.0 carries out memory changes, by live migration.

What KubeVirt does (``/work/shared/KUBEVIRT.md``, "A change is a move"; files in kubevirt/kubevirt at v1.7.0),
and what this module plays:

- A change of a running VM's ``memory.guest``, up or down, is a live migration to ANOTHER node. The VM
  controller copies it to the VMI (``pkg/virt-controller/watch/vm/vm.go``, ``handleMemoryHotplugRequest``),
  the VMI controller sets ``HotMemoryChange`` (``watch/vmi/lifecycle.go``, ``requireMemoryHotplug``), the
  workload-updater creates a migration (``watch/workload-updater/workload-updater.go``, ``execute``), and the
  migration controller renders the target pod from the current VMI spec, so with the new memory request
  (``watch/migration/migration.go``, ``createTargetPod``), with a REQUIRED anti-affinity to the VMI's pods on
  ``kubernetes.io/hostname`` (``createMigrationPodAntiAffinityRule``): the target is never the source. Here a
  change becomes a migration whose target pod requests guest + ``overhead``; the policy may name the target
  node (:attr:`dynamem.policy.VmDecision.target_node`, carried out as the migration's ``addedNodeSelector``),
  else the kube-scheduler places it (:func:`dynamem.sim.scheduler.place_pod`).
- Throttling (``handleTargetPodCreation``): no new target pod while the running migrations (those running,
  or pending with a target pod, ``findRunningMigrations``) reach ``parallelMigrationsPerCluster``, or those
  out of the VM's node reach ``parallelOutboundMigrationsPerNode`` (``outboundMigrationsOnNode``). Here
  changes wait in a queue, in order, until a slot frees, within the step's wall time.
- An unschedulable target pod stays Pending and the migration fails after the pending timeout
  (``handlePendingPodTimeout``, ``defaultUnschedulablePendingTimeoutSeconds`` = 300): counted as a failed
  change; the VM keeps its size and node. A one-node cluster can therefore change nothing: every target pod
  is unschedulable (its anti-affinity excludes the only node), and the reason says so.
- While it runs, the VM holds its old request on the source and its new one on the target; it lasts
  (current size / bandwidth) seconds (KubeVirt's own default bandwidth is unlimited, ``virt-config.go``
  ``BandwidthPerMigrationDefault``; the scenario's ``migration.bandwidth`` stands for the link). When it ends,
  the VM runs on the target with its new size (virt-handler resizes virtio-mem there:
  ``pkg/virt-handler/migration-target.go``, ``finalizeMigration`` -> ``hotplugMemory``) and the source pod's
  request is released.
- Shrinks below the size the VM booted with are refused (``handleMemoryHotplugRequest``: "memory updated in
  template spec to a value lower than what the VM started with", ``RestartRequired``).
- Starts: a VM's first launcher pod goes to its scenario ``node`` when its request (startup + overhead) fits
  there (as the live stand-in binds it there directly), else where the kube-scheduler would put it; with no
  room anywhere it stays off and is tried again at the policy's next round (the next step, unless the
  scenario or the caller sets an interval: rounds within a step, see :func:`simulate_kubevirt`).

What the policy sees: only what KubeVirt's metrics show, and the VMs defined but off this step (``stopped``:
the launcher request each would ask to start, parked when it has been off for longer than a day as the
operator reads KubeVirt's Ready condition; the operator knows them by their VirtualMachineMemory). Each
running VM's demand is the guest's observed used memory (:class:`dynamem.sim.guest.GuestModel`: at most its
size less a kernel reserve), never its true demand (plus the paging signals the cluster plan reads). The
highest use and the rise over the window are read from the samples Prometheus would hold
(:mod:`dynamem.sim.series`: one series per node the VM ran on, scraped every 30 s, the rise bounded as the
operator's query bounds it), so a guest grown out of paging shows its uncovered use on a new series, not as a
rise. A per-node policy (``node-local``, ``proxmox``, ``xen``) plans node by node (``plan_node``), each node's
pool being its memory less the launcher overheads of its VMs and the target pods of migrations into it. A VM
with a change in flight is given to the policy as ``in_flight_to`` (held); the policy counts it at the larger
of its two sizes, so its node's pool is raised by the difference, since the source only holds the old request.

Scores use the true demand: unmet demand is true demand above the assigned size at the end of each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from dynamem.policy import BalanceConfig, GiB, VmDecision, VmLimits, VmState, format_bytes
from dynamem.policy.balance import pressure_of, status_of, vm_levels
from dynamem.policy.cluster import PARKED_AFTER_S, ClusterNode, ClusterState, ClusterVm, InFlight, StoppedVm
from dynamem.policy.cluster_peers import CLUSTER_POLICIES, ORACLE, ClusterPolicy
from dynamem.sim.guest import GuestModel
from dynamem.sim.result import (
    OFF,
    MigrationState,
    MigrationStep,
    Model,
    NodeStep,
    SimResult,
    StepResult,
    Summary,
    VmStep,
)
from dynamem.sim.scenario import MigrationSettings, Scenario, ScenarioError, ScenarioVm
from dynamem.sim.scheduler import place_pod
from dynamem.sim.series import SCRAPE_S, MemorySeries

__all__ = ["simulate_kubevirt"]

_EPSILON = 1e-9


@dataclass(slots=True)
class _Change:
    """A memory change on its way: queued (no target pod yet), pending (pod unschedulable) or running."""

    vm: str
    source: str
    size_from: int
    size_to: int
    named: str | None
    reason: str
    created_at: float | None = None
    target: str | None = None
    started_at: float | None = None
    ends_at: float | None = None
    unschedulable: str = ""


@dataclass(slots=True)
class _Vm:
    spec: ScenarioVm
    limits: VmLimits
    node: str
    assigned: int
    boot: int
    last_change_at: float | None = None
    last_failed_at: float | None = None
    change: _Change | None = None
    series: MemorySeries = field(default_factory=lambda: MemorySeries(3600.0))


@dataclass(slots=True)
class _Cluster:
    """Nodes, their launcher-pod requests, running VMs and the migrations on their way."""

    scenario: Scenario
    memory: dict[str, int]
    config_window: float = 3600.0
    requested: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    vms: dict[str, _Vm] = field(default_factory=dict)
    queue: list[_Change] = field(default_factory=list)
    ended: list[MigrationStep] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)
    landed: dict[str, tuple[float, str, int]] = field(default_factory=dict)  # VM: (when, source, old size)
    outcome: dict[str, str] = field(default_factory=dict)
    changes: int = 0
    migrated_bytes: int = 0
    failed: int = 0

    @property
    def overhead(self) -> int:
        return self.scenario.overhead

    def begin_step(self) -> None:
        self.peak = dict(self.requested)
        self.ended = []
        self.events = []
        self.moved = {}
        self.landed = {}
        self.outcome = {}

    def _add(self, node: str, amount: int) -> None:
        self.requested[node] += amount
        if self.requested[node] > self.peak[node]:
            self.peak[node] = self.requested[node]

    def start(self, spec: ScenarioVm, limits: VmLimits, size: int) -> str | None:
        """Place the VM's first launcher pod; returns None when started, else the scheduler's reason."""
        request = size + self.overhead
        node: str | None = spec.node
        if self.requested[spec.node] + request > self.memory[spec.node]:
            placement = place_pod(request, self.memory, self.requested)
            node = placement.node
            if node is None:
                return placement.reason
            self.events.append(
                f"{spec.name}: no room on {spec.node} for {format_bytes(request)}, {placement.reason}"
            )
        assert node is not None
        self._add(node, request)
        self.vms[spec.name] = _Vm(
            spec=spec,
            limits=limits,
            node=node,
            assigned=size,
            boot=size,
            series=MemorySeries(self.config_window),
        )
        self.events.append(f"{spec.name} started on {node} with {format_bytes(size)}")
        return None

    def stop(self, name: str, now: float) -> None:
        vm = self.vms.pop(name)
        self._add(vm.node, -(vm.assigned + self.overhead))
        change = vm.change
        if change is not None:
            self.queue.remove(change)
            if change.target is not None:
                self._add(change.target, -(change.size_to + self.overhead))
            if change.created_at is not None:
                self.failed += 1
                self._end(change, now, MigrationState.FAILED, "VM stopped")
        self.events.append(f"{name} stopped")

    def enqueue(self, vm: _Vm, decision: VmDecision) -> None:
        change = _Change(
            vm=vm.spec.name,
            source=vm.node,
            size_from=vm.assigned,
            size_to=decision.assigned,
            named=decision.target_node,
            reason=decision.reason,
        )
        vm.change = change
        self.queue.append(change)

    def state(
        self,
        demand: dict[str, int | None],
        guest: GuestModel,
        now: float,
        *,
        truth: bool,
        pending: tuple[StoppedVm, ...],
        stopped: tuple[StoppedVm, ...] = (),
    ) -> ClusterState:
        """What the policy is given: nodes and their requests, each running VM as its guest shows it."""
        vms = []
        scraped = _on_scrape(now)  # a round between two scrapes sees the samples Prometheus has, no more
        for spec in self.scenario.vms:
            vm = self.vms.get(spec.name)
            if vm is None:
                continue
            true = demand[spec.name]
            assert true is not None
            seen = guest.observe(true, vm.assigned)
            vm.series.trim(now)
            if scraped:
                vm.series.add(vm.node, now, 1, seen.available, seen.usable)
            vms.append(
                ClusterVm(
                    name=spec.name,
                    node=vm.node,
                    limits=vm.limits,
                    assigned=vm.assigned,
                    request=vm.assigned + self.overhead,
                    boot_memory=vm.boot,
                    used=seen.used,
                    available=seen.available,
                    usable=seen.usable,
                    used_peak=vm.series.peak(),
                    used_rise_bps=vm.series.rise(now),
                    swap_bps=seen.swap_in_bps + seen.swap_out_bps,  # as KubeVirt counts swap traffic
                    major_faults_ps=seen.major_faults_ps,
                    demand=true if truth else None,
                    hugepage=spec.hugepage,
                    in_flight_to=vm.change.size_to if vm.change is not None else None,
                    last_change_at=vm.last_change_at,
                    last_failed_at=vm.last_failed_at,
                )
            )
        nodes = tuple(ClusterNode(n.name, n.memory, self.requested[n.name]) for n in self.scenario.nodes)
        in_flight = tuple(InFlight(c.vm, c.source, c.target) for c in self.queue if c.created_at is not None)
        return ClusterState(
            nodes=nodes, vms=tuple(vms), in_flight=in_flight, pending=pending, stopped=stopped
        )

    def scrape(self, start: float, end: float, demand: dict[str, int | None], guest: GuestModel) -> None:
        """Prometheus' samples of every running VM in (start, end), every :data:`SCRAPE_S` seconds, on the
        series of the node it ran on then (a migration that ended in the step splits them at its end)."""
        first = math.floor(start / SCRAPE_S + _EPSILON) + 1
        last = math.ceil(end / SCRAPE_S - _EPSILON) - 1
        if last < first:
            return
        for name, vm in self.vms.items():
            true = demand[name]
            assert true is not None
            split = first
            landed = self.landed.get(name)
            if landed is not None:
                at, source, size = landed
                split = min(last + 1, max(first, math.ceil(at / SCRAPE_S - _EPSILON)))
                was = guest.observe(true, size)
                vm.series.add(source, first * SCRAPE_S, split - first, was.available, was.usable)
            now = guest.observe(true, vm.assigned)
            vm.series.add(vm.node, split * SCRAPE_S, last + 1 - split, now.available, now.usable)

    def run(self, start: float, end: float) -> None:
        """Play the migrations through the step's wall time [start, end), event by event."""
        now = start
        timeout = self.scenario.migration.pending_timeout
        while True:
            for change in sorted(
                (c for c in self.queue if c.ends_at is not None and c.ends_at <= now + _EPSILON),
                key=lambda c: (c.ends_at, c.vm),
            ):
                self._finish(change)
            for change in [c for c in self.queue if _timed_out(c, now, timeout)]:
                assert change.created_at is not None
                self.queue.remove(change)
                self.vms[change.vm].change = None
                self.vms[change.vm].last_failed_at = change.created_at + timeout
                self.failed += 1
                why = (
                    f"target pod unschedulable for {_seconds(timeout)} ({change.unschedulable}); "
                    f"{change.vm} keeps {format_bytes(change.size_from)} on {change.source}"
                )
                assert change.created_at is not None
                self._end(change, change.created_at + timeout, MigrationState.FAILED, why)
                self.outcome[change.vm] = f"change to {format_bytes(change.size_to)} failed: {why}"
                self.events.append(f"{change.vm}: change to {format_bytes(change.size_to)} failed: {why}")
            self._dispatch(now)
            times = [c.ends_at for c in self.queue if c.ends_at is not None]
            times += [
                c.created_at + timeout for c in self.queue if c.created_at is not None and c.target is None
            ]
            upcoming = min(times, default=None)
            if upcoming is None or upcoming >= end - _EPSILON:
                break
            now = max(now, upcoming)

    def _dispatch(self, now: float) -> None:
        """Create target pods as KubeVirt's limits allow, in order; schedule every pending one."""
        limits = self.scenario.migration
        in_flight = [c for c in self.queue if c.created_at is not None]
        for change in self.queue:
            if change.created_at is None:
                if len(in_flight) >= limits.per_cluster:
                    self.outcome[change.vm] = (
                        f"queued: {len(in_flight)} migrations in flight (parallelMigrationsPerCluster "
                        f"{limits.per_cluster})"
                    )
                    continue
                outbound = sum(1 for c in in_flight if c.source == change.source)
                if outbound >= limits.outbound_per_node:
                    self.outcome[change.vm] = (
                        f"queued: {outbound} migrations out of {change.source} (parallelOutbound"
                        f"MigrationsPerNode {limits.outbound_per_node})"
                    )
                    continue
                change.created_at = now
                in_flight.append(change)
            if change.target is not None:
                continue
            request = change.size_to + self.overhead
            placement = place_pod(
                request, self.memory, self.requested, avoid=change.source, only=change.named
            )
            if placement.node is None:
                if not change.unschedulable:
                    size = format_bytes(change.size_to)
                    self.events.append(f"{change.vm}: target pod for {size} pending: {placement.reason}")
                change.unschedulable = placement.reason
                self.outcome[change.vm] = f"target pod pending: {placement.reason}"
                continue
            change.target = placement.node
            change.started_at = now
            change.ends_at = now + change.size_from / limits.bandwidth
            self._add(placement.node, request)
            self.outcome[change.vm] = f"migrating {change.source} -> {placement.node}"

    def _finish(self, change: _Change) -> None:
        assert change.target is not None and change.ends_at is not None
        self.queue.remove(change)
        vm = self.vms[change.vm]
        self._add(change.source, -(change.size_from + self.overhead))
        vm.node = change.target
        vm.assigned = change.size_to
        vm.last_change_at = change.ends_at
        vm.change = None
        self.changes += 1
        self.migrated_bytes += change.size_from
        self.moved[change.vm] = change.source
        self.landed[change.vm] = (change.ends_at, change.source, change.size_from)
        took = change.ends_at - (change.ends_at if change.started_at is None else change.started_at)
        what = (
            f"{format_bytes(change.size_from)} -> {format_bytes(change.size_to)}, "
            f"{change.source} -> {change.target} in {_seconds(took)}"
        )
        self._end(change, change.ends_at, MigrationState.DONE, what)
        self.outcome[change.vm] = f"migrated {change.source} -> {change.target}"
        self.events.append(f"{change.vm}: migrated {what}")

    def _end(self, change: _Change, at: float, state: MigrationState, reason: str) -> None:
        assert change.created_at is not None
        self.ended.append(_record(change, state, at, reason))

    def migrations(self) -> tuple[MigrationStep, ...]:
        """Migrations ended in this step, then those in flight (target pod created) at its end."""
        running = [
            _record(c, MigrationState.RUNNING, None, self.outcome.get(c.vm, ""))
            for c in self.queue
            if c.created_at is not None
        ]
        return (*self.ended, *running)


def _on_scrape(at: float) -> bool:
    """Whether Prometheus takes a sample at ``at`` (every :data:`SCRAPE_S` seconds from 0)."""
    return abs(at / SCRAPE_S - round(at / SCRAPE_S)) < _EPSILON


def _timed_out(change: _Change, now: float, timeout: float) -> bool:
    """An unschedulable target pod past KubeVirt's pending timeout (``handlePendingPodTimeout``)."""
    return (
        change.created_at is not None
        and change.target is None
        and change.created_at + timeout <= now + _EPSILON
    )


def _record(change: _Change, state: MigrationState, ended_at: float | None, reason: str) -> MigrationStep:
    assert change.created_at is not None
    return MigrationStep(
        vm=change.vm,
        source=change.source,
        target=change.target,
        bytes=change.size_from,
        state=state,
        size_from=change.size_from,
        size_to=change.size_to,
        created_at=change.created_at,
        started_at=change.started_at,
        ended_at=ended_at,
        reason=reason,
    )


def _seconds(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:.3g}s"


def _rounds(start: float, length: float, every: float) -> list[float]:
    """When the policy decides in the step of ``length`` seconds from ``start``: every ``every`` seconds (the
    last round may be shorter)."""
    count = max(1, math.ceil(length / every - _EPSILON))
    return [start + i * every for i in range(count)]


HOTPLUG_MIN_GUEST = GiB
"""KubeVirt hotplugs memory only for guests of 1Gi or more (``pkg/liveupdate/memory/memory.go``, v1.7.0,
``ValidateLiveUpdateMemory``)."""


def check_hotplug_sizes(scenario: Scenario, fields: tuple[str, ...] = ("startup",)) -> None:
    """Refuse a VM whose startup (and the other ``fields``) is under 1Gi: on KubeVirt it could never change.

    The model needs only the startup: a running VM never goes below its boot size, so a smaller minimum
    changes nothing. The VirtualMachineMemory CRD refuses a minimum under 1Gi too, which
    ``dynamem kubevirt-sim`` (it creates them) checks by passing ``("startup", "minimum")``."""
    for vm in scenario.vms:
        for name in fields:
            value = getattr(vm.settings, name)
            if value < HOTPLUG_MIN_GUEST:
                raise ScenarioError(
                    f"{scenario.source}: vm {vm.name!r}: field {name!r}: {format_bytes(value)} is under "
                    "1Gi; KubeVirt hotplugs memory only from 1Gi (the VirtualMachineMemory CRD refuses it "
                    "too); the hyperv model (--model hyperv) takes it"
                )


def simulate_kubevirt(
    scenario: Scenario,
    policy: str,
    config: BalanceConfig,
    guest: GuestModel,
    plan_fn: ClusterPolicy | None = None,
    interval_s: float | None = None,
) -> SimResult:
    """Play ``scenario`` through the named policy, every change a live migration; deterministic.

    ``plan_fn`` plans instead of ``CLUSTER_POLICIES[policy]`` (e.g. a policy not in the registry). The oracle
    is given the true demand, and its migrations are free and instant (no limits, no duration).
    """
    check_hotplug_sizes(scenario)
    if plan_fn is None:
        plan_fn = CLUSTER_POLICIES[policy]
    truth = policy == ORACLE
    if interval_s is None:
        interval_s = scenario.interval_seconds or scenario.step_seconds
    if truth:
        unbounded = 1 << 30
        scenario = scenario.model_copy(
            update={
                "migration": MigrationSettings(
                    bandwidth=1 << 60,
                    per_cluster=unbounded,
                    outbound_per_node=unbounded,
                    pending_timeout=scenario.migration.pending_timeout,
                )
            }
        )
    cluster = _Cluster(
        scenario=scenario,
        memory={n.name: n.memory for n in scenario.nodes},
        config_window=config.shrink_window_s,
    )
    cluster.requested = {n.name: 0 for n in scenario.nodes}
    limits = {vm.name: vm.settings.limits() for vm in scenario.vms}
    overhead = scenario.overhead
    unmet = Fraction(0)
    unstarted = Fraction(0)
    shortfall = Fraction(0)
    over_steps = 0
    refused = 0
    refused_changes = 0
    steps: list[StepResult] = []
    one_node = len(scenario.nodes) == 1

    off_since: dict[str, float] = {}  # as KubeVirt's Ready condition shows it (kube.objects.off_since)
    for step in range(scenario.steps):
        now = step * scenario.step_seconds
        cluster.begin_step()
        if step == 0 and one_node:
            cluster.events.append(
                f"one node ({scenario.nodes[0].name}): KubeVirt changes a running VM's memory by live "
                "migration to another node (the target pod's required anti-affinity excludes the source), "
                "so no change can be carried out here"
            )
        demand_now = {vm.name: scenario.demand[vm.name][step] for vm in scenario.vms}
        off = [vm.name for vm in scenario.vms if demand_now[vm.name] is None]
        # off since the step after the one it last ran in (a VM off from the start: since the start)
        off_since.update({n: now + scenario.step_seconds for n, d in demand_now.items() if d is not None})
        for spec in scenario.vms:
            if demand_now[spec.name] is None and spec.name in cluster.vms:
                cluster.stop(spec.name, now)
        # A step's demand holds for all its rounds; a VM that could not start is tried again each round.
        not_started: dict[str, str] = {}
        seen: dict[str, int] = {}
        for at in _rounds(now, scenario.step_seconds, interval_s):
            for spec in scenario.vms:
                if demand_now[spec.name] is None or spec.name in cluster.vms:
                    continue
                al = max(config.alignment, spec.hugepage)
                startup = -(-limits[spec.name].startup // al) * al
                why = cluster.start(spec, limits[spec.name], startup)
                if why is None:
                    not_started.pop(spec.name, None)
                    continue
                if spec.name not in not_started:
                    refused += 1
                    request = format_bytes(startup + overhead)
                    cluster.events.append(f"{spec.name} did not start: request {request}: {why}")
                not_started[spec.name] = why
            # launcher pods waiting to start, and those of the VMs that are off (defined, not running)
            pending = tuple(StoppedVm(limits[name].startup + overhead) for name in not_started)
            stopped = tuple(
                StoppedVm(
                    limits[name].startup + overhead, parked=at - off_since.get(name, 0.0) > PARKED_AFTER_S
                )
                for name in off
            )
            state = cluster.state(demand_now, guest, at, truth=truth, pending=pending, stopped=stopped)
            for vm_state in state.vms:
                seen[vm_state.name] = vm_state.used if vm_state.used is not None else 0
            plan = plan_fn(state, config, at)
            reasons = {d.name: d.reason for d in plan.decisions}
            for decision in plan.changes:
                vm = cluster.vms[decision.name]
                if decision.assigned < vm.boot:
                    why = (
                        f"shrink to {format_bytes(decision.assigned)} refused: below the "
                        f"{format_bytes(vm.boot)} it booted with (RestartRequired)"
                    )
                    if cluster.outcome.get(decision.name) != why:  # once a step, not once a round
                        refused_changes += 1
                        cluster.events.append(f"{decision.name}: {why}")
                    cluster.outcome[decision.name] = why
                    continue
                if decision.target_node == vm.node:
                    cluster.outcome[decision.name] = f"target {vm.node} is its own node: not carried out"
                    continue
                cluster.enqueue(vm, decision)
            until = min(at + interval_s, now + scenario.step_seconds)
            cluster.run(at, until)
            cluster.scrape(at, until, demand_now, guest)

        vm_out: dict[str, VmStep] = {}
        used_on: dict[str, int] = {n.name: 0 for n in scenario.nodes}
        assigned_on: dict[str, int] = {n.name: 0 for n in scenario.nodes}
        for spec in scenario.vms:
            name = spec.name
            true = demand_now[name]
            running = cluster.vms.get(name)
            if running is None:
                unstarted += true or 0
                vm_out[name] = VmStep(
                    node=spec.node,
                    demand=true,
                    assigned=0,
                    pressure=None,
                    status=OFF,
                    target=0,
                    reason="off" if true is None else f"did not start: {not_started.get(name, 'no room')}",
                )
                continue
            assert true is not None
            assigned = running.assigned
            truth_probe = VmState(
                name, running.limits, assigned, true, boot_memory=running.boot, hugepage=spec.hugepage
            )
            target = vm_levels(truth_probe, config)[4]
            unmet += max(0, true - assigned)
            shortfall += max(0, target - assigned)
            observed = guest.observe(true, assigned).used
            used_on[running.node] += observed
            assigned_on[running.node] += assigned
            reason = reasons.get(name, "started")
            outcome = cluster.outcome.get(name)
            if outcome is not None:
                reason = f"{reason}; {outcome}"
            migrating_to = None
            if running.change is not None and running.change.created_at is not None:
                migrating_to = running.change.target or "?"
            vm_out[name] = VmStep(
                node=running.node,
                demand=true,
                assigned=assigned,
                pressure=pressure_of(assigned, true),
                status=status_of(assigned, true, target).value,
                target=target,
                reason=reason,
                changed=name in cluster.moved,
                observed=observed,
                seen=seen.get(name),
                moved_from=cluster.moved.get(name),
                migrating_to=migrating_to,
            )
        node_out = {
            n.name: NodeStep(
                memory=n.memory,
                assigned=assigned_on[n.name],
                reason=plan.reason,
                requested=cluster.requested[n.name],
                peak_requested=cluster.peak[n.name],
                used=used_on[n.name],
            )
            for n in scenario.nodes
        }
        over_steps += any(node_out[n].peak_requested > node_out[n].memory for n in node_out)
        steps.append(
            StepResult(
                step=step,
                vms=vm_out,
                nodes=node_out,
                events=tuple(cluster.events),
                migrations=cluster.migrations(),
            )
        )

    summary = Summary(
        unmet_demand=float(unmet / GiB),
        buffer_shortfall=float(shortfall / GiB),
        changes=cluster.changes,
        over_capacity_steps=over_steps,
        refused_starts=refused,
        refused_changes=refused_changes,
        migrations=cluster.changes,
        migrated_bytes=cluster.migrated_bytes,
        failed_changes=cluster.failed,
        unstarted_demand=float(unstarted / GiB),
    )
    return SimResult(
        policy=policy,
        scenario=scenario,
        steps=tuple(steps),
        summary=summary,
        model=Model.KUBEVIRT,
        interval_s=interval_s,
    )
