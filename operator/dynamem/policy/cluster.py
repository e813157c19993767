"""Balance the cluster, not the node: one plan for sizes and placements (issue 9), pure.

On KubeVirt every change of a running VM's memory is a live migration to another node, so each change is also
a placement. ``plan_cluster`` makes one plan for the whole cluster, as a chain of pure steps over a per-VM
record (:class:`VmPlan`), each step leaving its reason on the record:

1. **estimate**: the demand of each VM from what KubeVirt shows. Used memory never exceeds the guest's size,
   so a guest whose usable memory is under ``paging_headroom_percent`` of what it has and which pages (swap
   traffic, in plus out, over ``paging_swap_bps`` or major faults over ``paging_faults_ps``, KubeVirt's own
   alert, ``pkg/monitoring/rules`` v1.8+) is short by an unknown amount: its demand is taken as its size times
   ``(100 + paging_growth_percent) / 100`` (multiplicative growth, so a guest whose demand jumps to 3.5 times
   its size reaches it in two or three changes), or its highest use over the window (``used_peak``) if that
   is more (a guest cut below the use it had, by another manager say, goes back to that use in one change).
   While the cluster has memory to spare (step 3), the grow to the target of that guess goes
   ``paging_spare_percent`` further (the demand reported stays the guess).
   Otherwise the demand is the highest use seen over the last ``shrink_window_s`` (``used_peak``): a VM
   shrinks only on use that stayed low, never on one sample. A use that rose steadily over that window
   (``used_rise_bps``, least squares, Prometheus' ``deriv``; by more than the dead band, so noise is no trend)
   is grown ahead of: the demand is at least the use now plus ``trend_horizon_s`` of that rise, so a ramp
   costs one change an hour instead of one per buffer step. A caller that knows the true demand (the oracle)
   passes it in ``demand``.
2. **size**: the levels of the per-node plan (floor, then demand, then buffer; weighted water-filling by
   priority), judged against the CLUSTER's memory: a VM short on a full node is not short if another node can
   take it at its size.
3. **worth**: a change pays for itself. A VM below its demand always may grow; a buffer-only grow must restore
   at least ``buffer_worth_percent`` of the bytes it migrates (its current size), and gets headroom
   (``move_headroom_percent`` of the shrink band) so that a steady rise needs fewer moves; a shrink must free
   at least the shrink band, unless the memory is needed (the cluster is short: then a VM gives back its
   buffer but is never cut below the size whose guest holds its demand without paging, which would only move
   unmet demand for a migration), and a VM changed less than ``shrink_window_s`` ago is not shrunk for
   idleness (it has not been idle at its size for a window; a shrink now and a grow at the next peak would
   be two migrations for nothing), nor while the cluster has more memory to spare than any VM can still
   grow by (:func:`_idle_kept`: that memory serves nobody yet). A paging VM whose demand is the multiplicative
   guess (not a peak or a rise it showed; not a hugepage VM) grows ``paging_spare_percent`` further while
   the cluster has memory to spare beyond every VM's target, the starts of every stopped VM (one for the
   parked) and three times the largest VM's hole (:func:`_spare`), highest priority first: an undershoot
   costs a step short and one more migration, an overshoot memory nobody needs yet and, after the shrink
   window, a shrink. Placement drops the extra rather than cut the grow or take a hole a stopped VM needs
   for it. When the cluster has less memory to spare beyond every VM's target than the largest VM needs to
   move or start at its floor, a VM above its target is shrunk in dead-band steps rather than only past the
   wide shrink band: memory held above targets is then what keeps other VMs from moving or starting.
4. **place**: each change names its target node (never the source): the new launcher request (size +
   overhead; under KubeVirt's memoryOvercommit, size x 100 / memoryOvercommit + overhead) must fit the
   node's free requests as the kube-scheduler counts them (memory less every launcher request on it,
   in-flight migration targets included, and the targets this plan already chose); among those,
   the node with the least room left (best fit, the scheduler's ``MostAllocated`` score): every change is a
   migration that needs a hole of the VM's whole new size on another node, so filling the small holes first
   keeps the large ones whole for the next large change (spreading, least allocated, leaves every node a
   hole too small for any big VM: on a full cluster that costs more unmet demand than it saves). A grow that
   fits nowhere is made as large as fits, or room is made by moving a smaller idle VM off a node, or a larger
   one above its target shrunk to it (two migrations, only when that serves demand, or for a shrink the
   cluster is short for: a full cluster whose holes are all smaller than any VM's new size otherwise freezes).
   Launcher pods waiting to start (``pending``) are placed first: each keeps a hole it fits in, or one is made
   by moving the smallest VM that frees it off a node. VMs defined but not running (``stopped``) may be
   started at any moment: no grow closes the hole one of them needs (its source, once left, counts), since
   once every hole is smaller than the VMs the cluster is frozen (a start is refused, and each shrink that
   would free memory is itself a migration that needs a hole of the VM's new size). The holes are packed
   largest first, one each, and no grow lowers the bytes of starts that fit; those parked (off for longer
   than ``--parked-after``) share one, for the largest that fits somewhere today.
5. **budget**: at most ``max_parallel_migrations`` in flight in the cluster (KubeVirt's
   ``parallelMigrationsPerCluster``) and ``max_outbound_migrations`` out of a node, counting the ones already
   running; the most urgent changes first (needed shrinks, which free the room the grows behind them take,
   then paging VMs by priority and deficit, then buffer grows, then idle shrinks).

A VM with a change in flight, with unknown demand, or whose last migration failed less than
:func:`retry_delay` (bounded backoff with jitter, at most ``retry_after_s``)
ago is held where it is. Bytes are ints; no I/O; ``now`` is passed in.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from dynamem.policy.balance import levels_of, pressure_of, status_of, water_fill
from dynamem.policy.model import BalanceConfig, MiB, VmDecision, VmLimits, format_bytes
from dynamem.records import frozen_record

__all__ = [
    "MEMORY",
    "PARKED_AFTER_S",
    "ClusterNode",
    "ClusterPlan",
    "ClusterState",
    "ClusterVm",
    "InFlight",
    "StoppedVm",
    "VmPlan",
    "estimate_demand",
    "guest_request",
    "is_paging",
    "plan_cluster",
    "retry_delay",
]


MEMORY = "memory"


def guest_request(size: int, overcommit: int) -> int:
    """What a launcher asks of ``memory`` for a guest of ``size`` under KubeVirt's memoryOvercommit
    (percent), before its overhead (v1.7.0 ``services/renderresources.go``, ``WithMemoryRequests``)."""
    return size if overcommit == 100 else size * 100 // overcommit


@frozen_record
class ClusterVm:
    """One running VM as KubeVirt shows it.

    ``assigned``: guest memory now; ``request``: its launcher pod's memory request (what it asks for its
    guest, :meth:`guest_request`, + overhead).
    ``used``/``available``/``usable``: the guest's used memory, MemTotal and MemAvailable (None: unknown).
    ``used_peak``: the highest ``used`` over the last ``shrink_window_s``. ``used_peak_seen``: that peak as
    measured, when the caller raised ``used_peak`` above it for a VM changed within the window (the
    operator counts such a VM as using what its size serves, ``controller/cluster_state.served_use``, so it
    is neither shrunk for idleness nor grown ahead of a rise its move uncovered); a needed shrink, the one a
    VM makes to make room for another (``_make_room``), goes by it. None: ``used_peak`` is the measured one.
    ``swap_bps``/``major_faults_ps``: paging rates (swap traffic in plus out; major faults a second).
    ``demand``: the true demand when the caller knows it
    (the oracle), else None. ``in_flight_to``: size of a change under way. ``last_failed_at``: when its last
    change failed.
    """

    name: str
    node: str
    limits: VmLimits
    assigned: int
    request: int
    boot_memory: int
    used: int | None
    available: int | None = None
    usable: int | None = None
    used_peak: int | None = None
    used_peak_seen: int | None = None
    swap_bps: float = 0.0
    major_faults_ps: float = 0.0
    used_rise_bps: float = 0.0
    demand: int | None = None
    hugepage: int = 2 * MiB
    in_flight_to: int | None = None
    last_change_at: float | None = None
    last_failed_at: float | None = None
    failures: int = 0  # failed migrations since its last success (0: not counted)
    allowed_nodes: frozenset[str] | None = None  # nodes its pods may go to (its nodeSelector); None: any
    # the resource its guest memory is requested as, "hugepages-2Mi" or "hugepages-1Gi" (None: "memory");
    # its launcher's `memory` request is then its overhead only
    pages: str | None = None
    # what its launcher pod requests of other resources the scheduler counts, the same at any guest size:
    # ("cpu", millicores), ("pods", 1), ("ephemeral-storage", bytes), ("devices.kubevirt.io/kvm", 1)...;
    # a node's room in each is ClusterNode.others
    others: tuple[tuple[str, int], ...] = ()
    # the memory request of its launcher pod on its node now, what its leaving frees there (None: request);
    # it may differ from ``request`` (a launcher rendered under an earlier memoryOvercommit, or with a
    # memory request set below its guest by hand)
    launcher_memory: int | None = None
    # VMs that required pod (anti-)affinity ties together share a group: one of them moves per round, as
    # the nodes each may go to were judged without the others' new places (None: in no group)
    group: str | None = None
    # KubeVirt's memoryOvercommit (percent) for its launchers: a VMI with no memory request of its own asks
    # its guest x 100 / overcommit (renderresources.go, WithMemoryRequests); 100 for one that has (its
    # request moves with each change, vm.go handleMemoryHotplugRequest) and for a hugepage VM
    overcommit: int = 100

    def guest_request(self, size: int) -> int:
        """What its launcher asks of ``memory`` for a guest of ``size``, before the overhead."""
        return guest_request(size, self.overcommit)

    def guest_fitting(self, request: int) -> int:
        """The largest guest whose :meth:`guest_request` is at most ``request``."""
        if self.overcommit == 100 or request < 0:
            return request
        return ((request + 1) * self.overcommit - 1) // 100

    @property
    def overhead(self) -> int:
        """What its launcher asks beyond its guest's request."""
        return self.request - self.guest_request(self.assigned)

    @property
    def resource(self) -> str:
        """The resource its guest memory counts against: ``memory`` or its ``hugepages-*``."""
        return self.pages or MEMORY


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """A node: its memory (allocatable) and the memory requests of every pod on it, as the scheduler
    counts; ``hugepages``: (resource, allocatable, requested) per ``hugepages-*`` resource it has;
    ``others``: the same for the other resources a launcher pod must fit in (``cpu`` in millicores,
    ``pods``, ``ephemeral-storage``, devices), which no change of size moves (a resource listed on no node:
    not counted; listed on some: a node without it has none)."""

    name: str
    memory: int
    requested: int
    hugepages: tuple[tuple[str, int, int], ...] = ()
    others: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class InFlight:
    """A migration under way: its VM, source node and target node (None while its target pod is pending)."""

    vm: str
    source: str
    target: str | None


PARKED_AFTER_S = 86400.0
"""A VM off for longer than a day is parked: one stopped last night is started this morning. The operator's
``--parked-after`` default; the simulator's scenarios are a day long, so none of their VMs is parked."""


@dataclass(frozen=True, slots=True)
class StoppedVm:
    """A VM defined but not running, or one whose launcher waits to start: what its launcher asks of
    ``memory`` (``request``), the nodes it may start on (None: any), its requests of the other resources
    counted beside its pod slot (``others``: cpu, devices), and whether it is parked: off for longer than
    :data:`PARKED_AFTER_S` (the operator's ``--parked-after``), it may stay off for weeks, so the parked VMs
    share one hole (for the largest that fits) where every other VM that is off keeps one of its own."""

    request: int
    allowed_nodes: frozenset[str] | None = None
    others: tuple[tuple[str, int], ...] = ()
    parked: bool = False


@dataclass(frozen=True, slots=True)
class ClusterState:
    """Nodes, running VMs, migrations in flight, the requests of launcher pods waiting to start (``pending``:
    VMs that want to run and found no node with room; the plan keeps their memory free) and those the VMs
    defined but not running would ask to start (``stopped``: their launchers' memory requests; any may be
    started at any moment, so no grow closes the hole one needs to start, :func:`_closes_start_hole`)."""

    nodes: tuple[ClusterNode, ...]
    vms: tuple[ClusterVm, ...]
    in_flight: tuple[InFlight, ...] = ()
    pending: tuple[StoppedVm, ...] = ()
    stopped: tuple[StoppedVm, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """A decision per VM (in the order of the state's VMs); a change names its target node."""

    decisions: tuple[VmDecision, ...]
    reason: str
    order: tuple[str, ...] = ()

    @property
    def changes(self) -> tuple[VmDecision, ...]:
        """Decisions that change or move a VM, in the order to carry them out.

        The plan's ``order`` first; then shrinks (largest first), grows (largest first) and plain moves.
        """
        moving = {
            d.name: d
            for d in self.decisions
            if not d.in_flight and (d.assigned != d.current or d.target_node is not None)
        }
        first = [moving.pop(name) for name in self.order if name in moving]
        rest = sorted(
            moving.values(),
            key=lambda d: (0 if d.change < 0 else 1 if d.change > 0 else 2, -abs(d.change), d.name),
        )
        return (*first, *rest)


@dataclass(slots=True)
class VmPlan:
    """The per-VM record the plan's steps fill in, in order: estimate, size, worth, place."""

    vm: ClusterVm
    unit: int = 0
    floor: int = 0
    top: int = 0
    demand: int | None = None
    level: int = 0
    target: int = 0
    room_target: int = 0  # the target a needed shrink goes to (ClusterVm.used_peak_seen), else target
    paging: bool = False
    held: str | None = None
    want: int = 0
    size: int = 0
    target_node: str | None = None
    kind: str = ""
    guessed: bool = False
    beyond: int = 0
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def is_paging(vm: ClusterVm, config: BalanceConfig) -> bool:
    """KubeVirt's "short of memory" signal: little usable memory and paging (swap traffic
    in and out, or major faults)."""
    if vm.used is None:
        return False
    available = vm.available if vm.available is not None else vm.assigned
    usable = vm.usable if vm.usable is not None else max(0, available - vm.used)
    tight = usable * 100 < config.paging_headroom_percent * available
    return tight and (vm.swap_bps > config.paging_swap_bps or vm.major_faults_ps > config.paging_faults_ps)


def _ahead(vm: ClusterVm, config: BalanceConfig) -> int:
    """What a steady rise in use adds over ``trend_horizon_s``: nothing unless use rose over the shrink
    window by more than the dead band (noise around a level is no trend) and is still at the window's peak
    (a rise that stopped and turned back down, a step up and down again, is no rise to grow ahead of)."""
    rise = vm.used_rise_bps * config.shrink_window_s
    band = max(config.dead_band_bytes, vm.assigned * config.dead_band_percent // 100)
    if config.trend_horizon_s <= 0 or rise < band:
        return 0
    if vm.used is not None and vm.used_peak is not None and vm.used < vm.used_peak - band:
        return 0
    return int(vm.used_rise_bps * config.trend_horizon_s)


def estimate_demand(vm: ClusterVm, config: BalanceConfig) -> tuple[int | None, bool]:
    """(demand, paging): the true demand if known; a multiplicative guess while paging; else peak use."""
    demand, paging, _ = _estimate(vm, config)
    return demand, paging


def _estimate(vm: ClusterVm, config: BalanceConfig) -> tuple[int | None, bool, int]:
    """:func:`estimate_demand`, and what a rise in use added to it (:func:`_ahead`; 0 with true demand)."""
    if vm.demand is not None:
        return vm.demand, vm.demand > vm.assigned, 0
    if vm.used is None:
        return None, False, 0
    ahead = _ahead(vm, config)
    if is_paging(vm, config):
        grown = _guess(vm, config)
        # a guest cut below the use it had within the window (by another manager, say) goes back to that
        # use at once, not by x1.5 steps that end there anyway once it stops paging
        return max(grown, vm.used + ahead, vm.used_peak or 0), True, ahead
    peak = vm.used if vm.used_peak is None or vm.used_peak < vm.used else vm.used_peak
    return max(peak, vm.used + ahead), False, ahead


def _guess(vm: ClusterVm, config: BalanceConfig) -> int:
    """A paging guest's demand when nothing it shows says more: its size x (100 + paging_growth_percent) %."""
    return vm.assigned * (100 + config.paging_growth_percent) // 100


def _room_target(record: VmPlan, config: BalanceConfig) -> int:
    """The target of a VM whose peak the caller raised, by its measured peak (``used_peak_seen``), once its
    use has come down from that peak: what it keeps when it makes room for another VM (``_make_room``), a
    needed shrink; else its target."""
    vm = record.vm
    if vm.used_peak_seen is None or vm.used_peak is None or vm.used_peak_seen >= vm.used_peak:
        return record.target
    band = max(config.dead_band_bytes, vm.assigned * config.dead_band_percent // 100)
    if vm.used is None or vm.used > vm.used_peak_seen - band:
        # its use is at its measured peak or above: still filling the size it was just given (a paging
        # grow's peak is the use its old size capped), not a VM whose use came down: no shrink for room
        return record.target
    seen, paging, _ = _estimate(replace(vm, used_peak=vm.used_peak_seen), config)
    if seen is None or paging:
        return record.target
    return min(record.target, levels_of(vm.limits, vm.boot_memory, vm.hugepage, seen, config)[4])


def _levels(record: VmPlan, config: BalanceConfig) -> None:
    vm = record.vm
    record.unit, record.floor, record.top, record.level, record.target, _ = levels_of(
        vm.limits, vm.boot_memory, vm.hugepage, record.demand, config
    )


def plan_cluster(state: ClusterState, config: BalanceConfig, now: float) -> ClusterPlan:
    """dynamem's cluster plan: estimate, size against the cluster, worth, place, budget."""
    records = [VmPlan(vm=vm) for vm in state.vms]
    for record in records:
        vm = record.vm
        record.demand, record.paging, ahead = _estimate(vm, config)
        record.guessed = record.paging and vm.demand is None and record.demand == _guess(vm, config)
        if ahead and vm.used is not None and record.demand == vm.used + ahead:
            record.notes.append(f"use rising: demand taken {ahead // MiB}Mi above use, an hour ahead")
        _levels(record, config)
        record.room_target = _room_target(record, config)
        record.size = vm.assigned
        if vm.in_flight_to is not None:
            record.held = "held: change in flight"
        elif record.demand is None:
            record.held = "held: demand unknown"
        elif vm.last_failed_at is not None and now - vm.last_failed_at < retry_delay(
            vm.name, vm.failures, config
        ):
            record.held = f"held: last migration failed {now - vm.last_failed_at:.0f}s ago"
        elif (
            config.cooldown_s > 0
            and vm.last_change_at is not None
            and now - vm.last_change_at < config.cooldown_s
        ):
            record.held = "held: cooldown"
    short = False
    for resource in sorted({r.vm.resource for r in records}):
        short = _size(records, state, config, resource) or short
    spare, hole = _beyond_targets(records, state)
    free = _spare(spare, hole, state)
    _worth(records, config, short, now, spare < hole, _idle_kept(records, config, short, free))
    if not short and spare >= hole:
        _grow_into_spare(records, config, free)
    order = _place(records, state, config)
    decisions = tuple(_decision(r, config) for r in records)
    moving = sum(1 for d in decisions if not d.in_flight and d.assigned != d.current)
    total = sum(n.memory for n in state.nodes)
    reason = (
        f"cluster {'short' if short else 'fits'}: {moving} changes planned, "
        f"{len(state.in_flight)} migrations in flight, {format_bytes(total)} of node memory"
    )
    return ClusterPlan(decisions, reason, tuple(order))


def _size(records: list[VmPlan], state: ClusterState, config: BalanceConfig, resource: str = MEMORY) -> bool:
    """Levels of the VMs whose guests take ``resource``, against the cluster's ``resource`` (``memory`` less
    every launcher's overhead, or a ``hugepages-*``); returns whether it is short (some level shared)."""
    if resource == MEMORY:
        capacity = _in_guest_bytes(
            sum(n.memory for n in state.nodes)
            - sum(r.vm.overhead for r in records)
            - sum(p.request for p in state.pending),
            records,
        )
    else:
        capacity = sum(total for n in state.nodes for name, total, _ in n.hugepages if name == resource)
    records = [r for r in records if r.vm.resource == resource]
    plannable = [r for r in records if r.held is None]
    held_total = sum(max(r.vm.assigned, r.vm.in_flight_to or 0) for r in records if r.held is not None)
    room = capacity - held_total
    for r in records:
        r.want = r.vm.assigned if r.held is not None else r.target
    floors = sum(r.floor for r in plannable)
    if floors >= room:
        for r in plannable:
            r.want = r.floor
        return True
    room -= floors
    need2 = sum(r.level - r.floor for r in plannable)
    weights = [r.vm.limits.priority for r in plannable]
    units = [r.unit for r in plannable]
    if need2 > room:
        grants = water_fill([r.level - r.floor for r in plannable], weights, units, room)
        for r, grant in zip(plannable, grants, strict=True):
            r.want = r.floor + grant
        return True
    room -= need2
    need3 = sum(r.target - r.level for r in plannable)
    if need3 > room:
        grants = water_fill([r.target - r.level for r in plannable], weights, units, room)
        for r, grant in zip(plannable, grants, strict=True):
            r.want = r.level + grant
        return True
    return False


def _beyond_targets(records: list[VmPlan], state: ClusterState) -> tuple[int, int]:
    """(spare, hole): the cluster's memory beyond every VM's target (or its size when larger), and the largest
    hole a VM needs to move or start at its floor. The cluster is tight when spare < hole: memory held above
    targets is then what keeps VMs from moving or starting (every change needs a hole of a VM's whole size on
    another node), so it is given back in dead-band steps, not only once it exceeds the wide shrink band."""
    capacity = (
        sum(n.memory for n in state.nodes)
        - sum(r.vm.overhead for r in records)
        - sum(p.request for p in state.pending)
    )
    in_memory = [r for r in records if r.vm.resource == MEMORY]  # a hugepage VM's guest is not in `memory`
    spare = capacity - sum(
        r.vm.guest_request(max(r.vm.assigned, r.target, r.vm.in_flight_to or 0)) for r in in_memory
    )
    return spare, max((_ask(r.vm, r.floor).memory for r in in_memory), default=0)


def _in_guest_bytes(requests: int, records: list[VmPlan]) -> int:
    """``requests`` of ``memory`` as the guest memory they hold: more under KubeVirt's memoryOvercommit,
    where a launcher asks less than its guest, at the ratio of the running guests to what they ask."""
    if all(r.vm.overcommit == 100 for r in records):
        return requests
    guests = sum(r.vm.assigned for r in records if r.vm.resource == MEMORY)
    asked = sum(r.vm.guest_request(r.vm.assigned) for r in records if r.vm.resource == MEMORY)
    return requests * guests // asked if asked > 0 else requests


def _spare(spare: int, hole: int, state: ClusterState) -> int:
    """What paging VMs may take beyond their guessed grows (``paging_spare_percent``): the memory beyond every
    target less the starts of every stopped VM (of the parked, the largest) and three of the largest
    holes, so that what is handed out keeps room for those starts and for the moves behind them.
    Measured (bench/compare.py, 27 scenarios, docs/cluster-plan.md): one hole has lower totals but wins
    fewer scenarios and migrates more GiB; not counting every stopped VM leaves late VMs no room to
    start."""
    starts = sum(s.request for s in state.stopped if not s.parked)
    starts += max((s.request for s in state.stopped if s.parked), default=0)
    return max(0, spare - _SPARE_HOLES * hole - starts)


_SPARE_HOLES = 3


def _idle_kept(records: list[VmPlan], config: BalanceConfig, short: bool, spare: int) -> str | None:
    """Why no VM is shrunk for idleness this round, or None: the cluster has more memory to spare (``spare``,
    :func:`_spare`) than ``idle_spare_ranges`` times the largest grow any VM could still ask (its maximum less
    its target). On KubeVirt a shrink is a migration, and the memory it would free serves nobody until some
    VM wants it; when one does, the cluster's spare falls under that line (or it is short) and the shrink is
    made then. Measured (bench/compare.py, 27 scenarios, both cadences): the same unserved demand on every
    scenario, 3 to 6 % fewer GiB migrated (the office days' evening shrinks)."""
    if short or config.idle_spare_ranges is None:
        return None
    in_memory = [r for r in records if r.vm.resource == MEMORY]
    widest = max((r.top - r.target for r in in_memory), default=0)
    if spare <= config.idle_spare_ranges * widest:
        return None
    return (
        f"not shrunk for idleness: the cluster has {format_bytes(spare)} to spare, more than any VM can "
        f"still grow by ({format_bytes(widest)})"
    )


def _worth(
    records: list[VmPlan], config: BalanceConfig, short: bool, now: float, tight: bool, idle_kept: str | None
) -> None:
    """Drop changes that do not pay for their migration; mark the kind of each change that stays
    (``idle_kept``: why no VM shrinks for idleness this round, :func:`_idle_kept`)."""
    for r in records:
        if r.held is not None:
            continue
        cur = r.vm.assigned
        want = r.want
        if cur < r.floor:
            r.kind, r.want = "floor", max(want, r.floor)
            continue
        if cur > r.top:
            r.kind, r.want = "maximum", min(want, r.top)
            continue
        if want > cur:
            gain = want - cur
            band = max(config.dead_band_bytes, cur * config.dead_band_percent // 100)
            below_demand = r.paging or cur < r.level
            if below_demand:
                if gain < band:
                    r.want = cur
                    r.notes.append("grow within the dead band: not worth a migration")
                    continue
                r.kind = "demand"
                continue
            if gain < band or gain * 100 < config.buffer_worth_percent * cur:
                r.want = cur
                r.notes.append("buffer grow not worth a migration")
                continue
            r.kind = "buffer"
            if not short and config.move_headroom_percent > 0:
                wide = max(config.shrink_band_bytes, r.target * config.shrink_band_percent // 100)
                extra = wide * config.move_headroom_percent // 100
                extra -= extra % r.unit
                r.want = min(r.top, want + extra)
            continue
        if want < cur:
            hold = _holding(r, config)
            if short and want < hold:
                # A shortage takes a running VM's buffer, not its demand: a VM cut below its demand pages at
                # once, and the memory it frees only moves unmet demand to another VM, for a migration. Its
                # demand is what its guest shows as used, so the least it keeps is the size whose guest holds
                # that use without paging (cut to the use itself, the guest's kernel reserve pushes it out).
                keep = min(cur, hold)
                want = r.want = keep - keep % r.unit
                if want >= cur:
                    r.want = cur
                    r.notes.append("cluster short: kept, not cut below its demand")
                    continue
            freed = cur - want
            if short:
                band = max(config.dead_band_bytes, cur * config.dead_band_percent // 100)
                if freed >= band:
                    r.kind = "needed"
                    continue
            wide = max(config.shrink_band_bytes, want * config.shrink_band_percent // 100)
            settled = r.vm.last_change_at is None or now - r.vm.last_change_at >= config.shrink_window_s
            if tight:  # memory above targets blocks moves and starts: given back in dead-band steps
                band = max(config.dead_band_bytes, cur * config.dead_band_percent // 100)
                if band <= freed < wide and settled:
                    r.notes.append("cluster tight: memory above its target given back")
                wide = band
            if freed >= wide and settled and idle_kept is not None:
                r.want = cur
                r.notes.append(idle_kept)
                continue
            if freed >= wide and settled:
                r.kind = "idle"
                continue
            if freed >= wide:
                r.want = cur
                r.notes.append("changed less than the shrink window ago: not shrunk for idleness")
                continue
            r.want = cur
            r.notes.append("within shrink band")


def _grow_into_spare(records: list[VmPlan], config: BalanceConfig, spare: int) -> None:
    """Grow each paging VM whose demand is the multiplicative guess (not its window's peak or its rise, which
    are seen) ``paging_spare_percent`` of its grow further, at most its maximum and what is left of
    ``spare``, highest priority and largest grow first. The extra is only asked: placement drops it rather
    than cut the grow or close a stopped VM's hole for it. Hugepage VMs take no ``memory`` spare."""
    wanting = [r for r in records if r.kind == "demand" and r.guessed and r.vm.resource == MEMORY]
    wanting.sort(key=lambda r: (-r.vm.limits.priority, -(r.want - r.vm.assigned), r.vm.name))
    for r in wanting:
        extra = min((r.want - r.vm.assigned) * config.paging_spare_percent // 100, r.top - r.want, spare)
        extra -= extra % r.unit
        if extra > 0:
            r.want += extra
            r.beyond = extra
            spare -= extra


def _holding(r: VmPlan, config: BalanceConfig) -> int:
    """The least size whose guest holds the VM's demand (``level``) without paging: that use within MemTotal
    less the paging headroom (``paging_headroom_percent``), plus what the guest's kernel keeps for itself (its
    size less MemTotal, as it shows now); aligned up, at most its maximum."""
    vm = r.vm
    kept = max(0, vm.assigned - vm.available) if vm.available is not None else 0
    need = -(-r.level * 100 // (100 - config.paging_headroom_percent)) + kept
    need = -(-need // r.unit) * r.unit
    return max(r.level, min(r.top, need))


_MINUTE = 60.0
# Shrinks that free memory someone needs go first: each frees its whole request on its source once it has
# left, which is where the grows behind it can go (a full cluster has no other room).
_ORDER = {"floor": 0, "maximum": 1, "needed": 2, "demand": 3, "buffer": 4, "idle": 5}


PODS = "pods"
_START: tuple[tuple[str, int], ...] = ((PODS, 1),)  # what any launcher waiting to start asks beyond memory


class _Ask(NamedTuple):
    """What a launcher pod asks of a node: its ``memory`` request, its guest's ``hugepages-*`` (resource,
    bytes), and its requests of the other resources counted (``cpu``, ``pods``)."""

    memory: int
    pages: tuple[str, int] | None = None
    others: tuple[tuple[str, int], ...] = ()


def _held(vm: ClusterVm) -> _Ask:
    """What ``vm``'s launcher asks of its node now, which its leaving frees: its launcher pod's requests
    where known, else its request at its size."""
    held = _ask(vm, vm.assigned)
    return held if vm.launcher_memory is None else held._replace(memory=vm.launcher_memory)


def _ask(vm: ClusterVm, size: int) -> _Ask:
    """The requests of ``vm``'s launcher at guest ``size``: a hugepage VM's guest is requested as its
    ``hugepages-*`` and its ``memory`` is the overhead (KubeVirt v1.7.0 ``renderresources.go``,
    ``WithHugePages``)."""
    if vm.pages is None:
        return _Ask(vm.guest_request(size) + vm.overhead, None, vm.others)
    return _Ask(vm.overhead, (vm.pages, size), vm.others)


class _Room:
    """Free launcher requests per node and resource as the plan places changes, the way the scheduler will see
    them (``memory``, each ``hugepages-*`` a node has, and the other resources counted: ``cpu``, ``pods``).

    ``real``: free now. ``credit``: requests of VMs this plan moves off the node, free once they have left. A
    change that fits only with credit is carried out later (its target pod waits, Pending, until the VMs
    leave); the scheduler keeps no room for a pending pod, so once a node has such a change the plan puts
    nothing more there (``locked``), else a later pod could take the room first; and the VM of such a change
    frees no credit on its own source (:meth:`move`).
    """

    def __init__(self, state: ClusterState) -> None:
        self.memory = {n.name: n.memory for n in state.nodes}
        self.total = {(n.name, MEMORY): n.memory for n in state.nodes}
        self.real = {(n.name, MEMORY): n.memory - n.requested for n in state.nodes}
        for n in state.nodes:
            for resource, total, requested in (*n.hugepages, *n.others):
                self.total[(n.name, resource)] = total
                self.real[(n.name, resource)] = total - requested
        self.counted = {resource for n in state.nodes for resource, _, _ in n.others}
        self.credit = dict.fromkeys(self.real, 0)
        self.locked: set[str] = set()

    def free(self, node: str, resource: str = MEMORY, real: bool = False) -> int:
        """Free ``resource`` on ``node`` for this plan; ``real``: free now, not counting VMs that leave."""
        if node in self.locked or (node, resource) not in self.real:
            return 0
        return self.real[(node, resource)] + (0 if real else self.credit[(node, resource)])

    def fits(self, node: str, ask: _Ask, leaving: _Ask | None = None, real: bool = False) -> bool:
        """Whether ``ask`` fits on ``node`` (once a VM asking ``leaving`` has left it; ``real``: in the room
        free now)."""
        memory, pages, others = ask
        if self.free(node, real=real) + (leaving.memory if leaving else 0) < memory:
            return False
        if not self._others_fit(node, others, leaving.others if leaving else (), real):
            return False
        if pages is None:
            return True
        back = leaving.pages[1] if leaving and leaving.pages and leaving.pages[0] == pages[0] else 0
        return self.free(node, pages[0], real) + back >= pages[1]

    def _others_fit(
        self,
        node: str,
        others: tuple[tuple[str, int], ...],
        leaving: tuple[tuple[str, int], ...] = (),
        real: bool = False,
    ) -> bool:
        """Whether requests ``others`` (cpu, pods, devices...) fit on ``node``; a resource counted nowhere
        fits."""
        for resource, amount in others:
            if resource not in self.counted:
                continue
            back = sum(a for r, a in leaving if r == resource)
            if self.free(node, resource, real) + back < amount:
                return False
        return True

    def guest_room(self, node: str, vm: ClusterVm) -> int:
        """The largest guest of ``vm`` that fits on ``node``."""
        if not self._others_fit(node, vm.others):
            return 0
        if vm.pages is None:
            return vm.guest_fitting(self.free(node) - vm.overhead)
        return self.free(node, vm.pages) if self.free(node) >= vm.overhead else 0

    def best(
        self,
        ask: _Ask,
        source: str,
        avoid: str | None = None,
        allowed: frozenset[str] | None = None,
        real: bool = False,
    ) -> str | None:
        """The node other than ``source`` (among ``allowed``, None: any) where ``ask`` fits with the least
        room left in the resource its guest takes, in percent of the node (most allocated, the scheduler's
        bin-packing score): holes are filled and the large ones kept whole, so the next large change finds a
        node in one move. ``real``: only in the room free now (a VM moved to make room for another must not
        wait in turn)."""
        memory, pages, _ = ask
        resource, request = pages if pages is not None else (MEMORY, memory)
        best: tuple[int, str] | None = None
        for name in sorted(self.memory):
            if (
                name in (source, avoid)
                or not self.fits(name, ask, real=real)
                or (allowed is not None and name not in allowed)
            ):
                continue
            score = -((self.free(name, resource) - request) * 100 // max(1, self.total[(name, resource)]))
            if best is None or score > best[0]:
                best = (score, name)
        return None if best is None else best[1]

    def take(self, node: str, ask: _Ask) -> bool:
        """Take ``ask`` on ``node``; whether it waits for VMs to leave the node first (used credit)."""
        memory, pages, others = ask
        waits = self._take((node, MEMORY), memory)
        if pages is not None:
            waits = self._take((node, pages[0]), pages[1]) or waits
        for resource, amount in others:
            if resource in self.counted:
                waits = self._take((node, resource), amount) or waits
        return waits

    def _take(self, key: tuple[str, str], request: int) -> bool:
        real = self.real.setdefault(key, 0)
        self.credit.setdefault(key, 0)
        if real >= request:
            self.real[key] -= request
            return False
        self.credit[key] -= request - real
        self.real[key] = 0
        self.locked.add(key[0])
        return True

    def move(self, source: str, target: str, ask: _Ask, leaving: _Ask) -> None:
        """A VM asking ``leaving`` on ``source`` moves to ``target`` asking ``ask``. Its source's room is
        credit for later changes only if its own target pod need not wait for others to leave: KubeVirt does
        not create the target pods in the plan's order (its in-flight and per-node limits hold some back), so
        a pod that waits may take room meant for one held back, and a chain of waits closes into a cycle whose
        migrations all fail after the pending timeout. One wait, never a wait on a wait."""
        if not self.take(target, ask):
            self.leave(source, leaving)

    def leave(self, node: str, ask: _Ask) -> None:
        memory, pages, others = ask
        self.credit[(node, MEMORY)] += memory
        for resource, amount in (*((pages,) if pages is not None else ()), *others):
            key = (node, resource)
            self.credit[key] = self.credit.get(key, 0) + amount
            self.real.setdefault(key, 0)
            self.total.setdefault(key, 0)


def retry_delay(name: str, failures: int, config: BalanceConfig) -> float:
    """How long after its last failed migration a VM is held before the plan moves it again: bounded
    exponential backoff with jitter. ``retry_base_s`` after the first failure (KubeVirt's own first backoff,
    ``migration.go`` ``handleMigrationBackoff``), doubling with each failure since its last success, at most
    ``retry_after_s``; less a jitter of up to half, drawn from the VM's name and count (the plan stays a pure
    function) so that VMs failed together do not retry together. ``failures`` 0 (not counted, as in the
    simulator): the flat ``retry_after_s``."""
    if failures <= 0:
        return config.retry_after_s
    delay = min(config.retry_after_s, config.retry_base_s * 2.0 ** min(failures - 1, 32))
    jitter = zlib.crc32(f"{name}/{failures}".encode()) / 2**32
    return delay * (1.0 - jitter / 2)


class _Helper(NamedTuple):
    """A VM moved off a node to make room there: its record, the node it goes to, its size there."""

    record: VmPlan
    target: str
    size: int

    @property
    def freed(self) -> str:
        """The node it leaves, where the room is made."""
        return self.record.vm.node

    def move(self) -> _Move:
        vm = self.record.vm
        return _move(vm, self.target, self.size)


@dataclass
class _Placement:
    """One placement pass: the room left on every node, the migration budget (``in_flight`` of ``budget`` in
    the cluster, ``outbound`` of ``per_node`` out of each node), and the VMs planned, in order."""

    room: _Room
    movable: dict[str, VmPlan]
    budget: int
    per_node: int
    in_flight: int
    outbound: dict[str, int]
    planned: set[str] = field(default_factory=set)
    order: list[str] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)  # affinity groups with a VM planned to move

    def out_of(self, node: str) -> int:
        return self.outbound.get(node, 0)

    def grouped(self, vm: ClusterVm, other: ClusterVm | None = None) -> bool:
        """Whether ``vm`` may not move this round: a VM of its affinity group moves (or is ``other``)."""
        return vm.group is not None and (
            vm.group in self.groups or (other is not None and vm.group == other.group)
        )

    def commit(self, r: VmPlan, target: str, size: int) -> None:
        """Plan ``r``'s move to ``target`` at ``size``: its room, its share of the budget, its turn."""
        vm = r.vm
        self.room.move(*_move(vm, target, size))
        self.outbound[vm.node] = self.out_of(vm.node) + 1
        self.in_flight += 1
        r.size = size
        r.target_node = target
        self.planned.add(vm.name)
        self.order.append(vm.name)
        if vm.group is not None:
            self.groups.add(vm.group)


def _place(records: list[VmPlan], state: ClusterState, config: BalanceConfig) -> list[str]:
    """Name a target node per change, within the migration budget, most urgent first; returns the order."""
    outbound: dict[str, int] = {}
    for m in state.in_flight:
        outbound[m.source] = outbound.get(m.source, 0) + 1
    # A round standing for step_s seconds (the simulator) starts the budget once per minute of it (KubeVirt's
    # queue keeps at most max_parallel_migrations in flight at once); a live round (step_s 0) starts one.
    rounds = max(1, int(config.step_s // _MINUTE))
    plan = _Placement(
        room=_Room(state),
        movable={r.vm.name: r for r in records if r.held is None},
        budget=config.max_parallel_migrations * rounds,
        per_node=config.max_outbound_migrations * rounds,
        in_flight=len(state.in_flight),
        outbound=outbound,
    )
    room = plan.room
    changes = [r for r in records if r.held is None and r.want != r.vm.assigned]
    changes.sort(
        key=lambda r: (
            _ORDER[r.kind],
            -r.vm.limits.priority if r.kind == "demand" else 0,
            -abs(r.want - r.beyond - r.vm.assigned),
            r.vm.name,
        )
    )
    # Launcher pods waiting to start (a VMI Pending, unschedulable) keep a hole they fit in, largest first:
    # no grow takes it. With no such hole, one is made by moving the smallest VM that frees it off a node
    # (at its planned size when that is a shrink), if it fits elsewhere: a start serves a whole VM's demand
    # for one migration of a VM that keeps its size.
    for waiting in sorted(state.pending, key=lambda p: p.request, reverse=True):
        ask = _Ask(waiting.request, None, (*waiting.others, *_START))
        node = room.best(ask, "", allowed=waiting.allowed_nodes)
        if node is None and plan.in_flight < plan.budget:
            made = _room_for_start(ask, waiting.allowed_nodes, plan)
            if made is not None:
                helper = made.record
                plan.commit(helper, made.target, made.size)
                node = made.freed
                why = f"make room on {node} for a VM waiting to start"
                if made.size == helper.vm.assigned:
                    helper.kind = "room"
                    helper.reason = f"moved to {why}"
                else:
                    helper.notes.append(f"moved off to {why}")
        if node is not None:
            room.take(node, ask)
    for r in changes:
        vm = r.vm
        if r.vm.name in plan.planned:
            continue
        if len(state.nodes) < 2:
            r.notes.append("one node: a change needs another node to migrate to")
            break
        if plan.in_flight >= plan.budget:
            r.notes.append(
                f"deferred: {plan.in_flight} migrations in flight or planned (budget {plan.budget})"
            )
            continue
        if plan.out_of(vm.node) >= plan.per_node:
            r.notes.append(f"deferred: {plan.per_node} migrations already out of {vm.node}")
            continue
        if plan.grouped(vm):
            r.notes.append("deferred: a VM tied to it by pod affinity moves this round")
            continue
        node = _place_beyond(r, room, state.stopped) if r.beyond else None
        size = r.want
        if node is None:
            node = room.best(_ask(vm, size), vm.node, allowed=vm.allowed_nodes)
        if node is None and size > vm.assigned:
            # As large as fits somewhere, if that still relieves or restores enough.
            most = max(
                (
                    room.guest_room(n, vm)
                    for n in room.memory
                    if n != vm.node and (vm.allowed_nodes is None or n in vm.allowed_nodes)
                ),
                default=0,
            )
            fit = most - most % r.unit
            enough = vm.assigned + max(config.dead_band_bytes, vm.assigned * config.dead_band_percent // 100)
            if fit >= enough and (
                r.kind == "demand" or fit * 100 >= (100 + config.buffer_worth_percent) * vm.assigned
            ):
                size = fit
                node = room.best(_ask(vm, size), vm.node, allowed=vm.allowed_nodes)
                r.notes.append(f"as much as fits: {format_bytes(size)} of {format_bytes(r.want)}")
        # Not enough anywhere: room made by moving an idle VM off a node (two migrations), for a VM
        # below its demand and for a shrink the cluster needs (a full cluster otherwise freezes: every hole
        # smaller than any VM's new size, no change can move anywhere).
        helped: _Helper | None = None
        if node is None and r.kind in ("demand", "needed") and plan.in_flight + 2 <= plan.budget:
            helped = _make_room(r, size, plan, config)
            if helped is not None:
                node = helped.freed
        if node is None:
            r.notes.append(f"no node has room for {format_bytes(_ask(vm, size).memory)}")
            continue
        moves = [_move(vm, node, size)]
        if helped is not None:
            moves.insert(0, helped.move())
        # a grow, or a shrink whose helper takes free room: neither may close a hole a stopped VM needs
        if (size > vm.assigned or helped is not None) and (
            hole := _closes_start_hole(room, moves, state.stopped)
        ):
            done = "grown" if size > vm.assigned else "shrunk with a VM moved for it"
            r.notes.append(
                f"not {done}: it would take the hole a stopped VM needs to start ({format_bytes(hole)})"
            )
            continue
        if helped is not None:  # made only with the grow it is for
            helper = helped.record
            plan.commit(helper, helped.target, helped.size)
            helper.kind = "room"
            helper.reason = f"moved to make room on {helped.freed} for {vm.name}"
            if helped.size < helper.vm.assigned:  # the shrink it was kept from is made now
                helper.reason = f"shrunk to its target and {helper.reason}"
                helper.notes = [n for n in helper.notes if n.startswith("use rising")]
        plan.commit(r, node, size)
    return plan.order


_Move = tuple[str, str, _Ask, _Ask]  # source, target, what the VM asks there, what it asked on its source


def _move(vm: ClusterVm, target: str, size: int) -> _Move:
    """``vm`` moved to ``target`` at ``size``, as the room counts it."""
    return vm.node, target, _ask(vm, size), _held(vm)


def _place_beyond(r: VmPlan, room: _Room, stopped: tuple[StoppedVm, ...]) -> str | None:
    """The node for a grow with memory to spare beyond its guess, whole; or None, and the extra dropped, when
    it fits nowhere or would take the hole a stopped VM needs: the guess is then placed as any grow."""
    vm = r.vm
    node = room.best(_ask(vm, r.want), vm.node, allowed=vm.allowed_nodes)
    if node is not None and not _closes_start_hole(room, [_move(vm, node, r.want)], stopped):
        return node
    r.want -= r.beyond
    r.beyond = 0
    return None


def _closes_start_hole(room: _Room, moves: list[_Move], stopped: tuple[StoppedVm, ...]) -> int:
    """The launcher request of a VM that is off and has a hole to start in now but would have none once
    ``moves`` are done (each source given back what its VM asked there), or 0. Without such a hole a start is
    refused, and a cluster with every hole smaller than a VM is frozen: each later change is a migration that
    needs a hole of a VM's whole size. Every VM that may start at any moment keeps a hole of its own; those
    parked (``StoppedVm.parked``) share one, for the largest of them that fits somewhere. The holes are
    packed largest first, each into the fullest node it fits (:func:`_starts_fitting`); the moves close one
    when fewer bytes of starts fit after them. A VM that fits nowhere today does not turn this off for the
    smaller ones."""
    if not stopped:
        return 0
    free = {n: room.free(n) for n in room.memory}
    # a node without a pod slot, CPU or a device left for a start has no hole for it, where the plan is told
    # the node's room in those (ClusterNode.others)
    others = {r: {n: room.free(n, r) for n in room.memory} for r in sorted(room.counted)}
    parked = [vm for vm in stopped if vm.parked and _starts_fitting([vm], free, others)]
    kept = [vm for vm in stopped if not vm.parked] + sorted(parked, key=lambda vm: vm.request)[-1:]
    kept.sort(key=lambda vm: vm.request, reverse=True)
    before = _starts_fitting(kept, free, others)
    if not before:
        return 0
    for source, target, ask, leaving in moves:
        free[target] -= ask[0]
        free[source] = free.get(source, 0) + leaving[0]
        for resource, left in others.items():
            left[target] -= dict(ask.others).get(resource, 0)
            left[source] = left.get(source, 0) + dict(leaving.others).get(resource, 0)
    after = _starts_fitting(kept, free, others)
    if sum(kept[i].request for i in after) >= sum(kept[i].request for i in before):
        return 0
    return max(kept[i].request for i in before if i not in after)


def _starts_fitting(
    starts: list[StoppedVm], free: dict[str, int], others: Mapping[str, Mapping[str, int]]
) -> set[int]:
    """The indexes of ``starts`` that get a hole each when placed in their order, each into the node with the
    least ``memory`` free it fits (ties by name) that also has what it asks of each resource in ``others``
    (resource to free per node: ``pods``, one slot each; ``cpu``, devices...; a resource not there is not
    counted). The nodes are kept sorted by what they have free, so a start finds its node by bisection, not
    by a scan of every node (one that may start on a few nodes only scans from there)."""
    left = sorted((f, n) for n, f in free.items())
    rest = {resource: dict(by_node) for resource, by_node in others.items()}
    placed = set()
    for i, vm in enumerate(starts):
        asks = [(r, a) for r, a in (*vm.others, *_START) if r in rest]
        for at in range(bisect_left(left, (vm.request, "")), len(left)):
            room, node = left[at]
            if (vm.allowed_nodes is None or node in vm.allowed_nodes) and all(
                rest[r].get(node, 0) >= a for r, a in asks
            ):
                del left[at]
                insort(left, (room - vm.request, node))
                for r, a in asks:
                    rest[r][node] -= a
                placed.add(i)
                break
    return placed


def _room_for_start(ask: _Ask, allowed: frozenset[str] | None, plan: _Placement) -> _Helper | None:
    """The smallest VM to move off a node (among ``allowed``, None: any; at its planned size when that is a
    shrink) so that a launcher pod asking ``ask`` waiting to start fits there."""
    room = plan.room
    best: tuple[int, str, _Helper] | None = None
    for name, other in sorted(plan.movable.items()):
        o = other.vm
        if name in plan.planned or other.paging or o.node in room.locked or o.pages is not None:
            continue
        if plan.grouped(o):
            continue
        if plan.out_of(o.node) >= plan.per_node:
            continue
        if (allowed is not None and o.node not in allowed) or not room.fits(o.node, ask, leaving=_held(o)):
            continue
        size = other.want if other.want < o.assigned else o.assigned
        away = room.best(_ask(o, size), o.node, allowed=o.allowed_nodes, real=True)
        if away is None:
            continue
        if best is None or size < best[0]:
            best = (size, name, _Helper(other, away, size))
    return None if best is None else best[2]


def _make_room(r: VmPlan, size: int, plan: _Placement, config: BalanceConfig) -> _Helper | None:
    """A VM to move off a node so that ``r`` fits there at ``size``.

    A VM smaller than ``r`` moves at its size. A larger one only when it is above its target by the dead band
    or more (kept there by the shrink band or window; the target by its measured peak, ``room_target``, for
    a VM the operator counts at its size after a change): it moves at that target, the shrink it would make
    anyway, so that a paging VM is not kept from its memory for as long as a VM above its target stays put
    (two 8Gi nodes: a paging 2.75Gi VM fits nowhere at 4Gi while a 3.6Gi VM sits at a 3Gi target beside two
    small ones, 7.6Gi free in all). For a grow, a smaller VM goes anywhere but ``r``'s node (measured: letting
    it go there costs more on the generated scenarios every minute, docs/cluster-plan.md); a VM shrinking to
    its target, or any helper of a shrink, may go to ``r``'s node into room free there now: the two VMs trade
    places."""
    room = plan.room
    best: tuple[int, str, _Helper] | None = None
    for name, other in sorted(plan.movable.items()):
        o = other.vm
        if name in plan.planned or name == r.vm.name or o.node == r.vm.node or other.want != o.assigned:
            continue
        if other.paging or o.node in room.locked or plan.grouped(o, r.vm):
            continue
        moved = o.assigned
        if o.assigned >= r.vm.assigned:
            band = max(config.dead_band_bytes, o.assigned * config.dead_band_percent // 100)
            if o.pages is not None or not 0 < other.room_target <= o.assigned - band:
                continue
            moved = other.room_target
        if plan.out_of(o.node) >= plan.per_node:
            continue
        if not room.fits(o.node, _ask(r.vm, size), leaving=_held(o)):
            continue
        if r.vm.allowed_nodes is not None and o.node not in r.vm.allowed_nodes:
            continue
        avoid = None if size < r.vm.assigned or moved < o.assigned else r.vm.node
        away = room.best(_ask(o, moved), o.node, avoid=avoid, allowed=o.allowed_nodes, real=True)
        if away is None:
            continue
        if best is None or o.assigned < best[0]:
            best = (o.assigned, name, _Helper(other, away, moved))
    return None if best is None else best[2]


def _decision(r: VmPlan, config: BalanceConfig) -> VmDecision:
    vm = r.vm
    size = r.size
    if r.held is not None:
        reason = r.held
    elif r.kind == "room":
        reason = r.reason
    elif size > vm.assigned:
        reason = {
            "floor": "grow to floor",
            "demand": "grow: paging, demand unknown, multiplied"
            if r.paging and vm.demand is None
            else "grow to meet demand",
            "buffer": "grow to restore buffer, with headroom",
        }.get(r.kind, "grow")
    elif size < vm.assigned:
        reason = {
            "maximum": "shrink to maximum",
            "needed": "shrink: memory needed elsewhere",
            "idle": "shrink: use stayed low for the window",
        }.get(r.kind, "shrink")
    else:
        reason = "on target" if r.want == vm.assigned else "kept"
    if r.beyond and size > vm.assigned:
        reason += f", {format_bytes(r.beyond)} further with memory to spare in the cluster"
    if r.target_node is not None:
        reason += f"; to {r.target_node}"
    if r.notes:
        reason += "; " + "; ".join(r.notes)
    demand = r.demand
    return VmDecision(
        name=vm.name,
        current=vm.assigned,
        assigned=size,
        floor=r.floor,
        demand=demand,
        target=r.target,
        pressure=pressure_of(size, demand),
        status=status_of(size, demand, r.target),
        reason=reason,
        in_flight=vm.in_flight_to is not None,
        target_node=r.target_node,
    )
