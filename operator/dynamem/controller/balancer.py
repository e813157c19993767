"""One balancing round: observe, plan with the policy, act, report.

dynamem's policy plans the whole cluster at once (:func:`dynamem.policy.cluster.plan_cluster`): sizes and,
for every change, the node to run the VM on; a change is carried out as KubeVirt carries any memory change,
by a live migration, which dynamem makes itself, pinned to that node (:mod:`dynamem.controller.placement`).
``--policy node-local`` keeps the per-node plan (:func:`dynamem.policy.plan_node`), whose migrations the
workload-updater makes and the scheduler places; the other policies are per-node peers.

The round is level-triggered: it recomputes everything from what is observed now and writes only what
differs, so a round over a settled cluster makes no API writes at all. Acting follows KubeVirt's rules
(``shared/KUBEVIRT.md``): each change of ``memory.guest`` is a live migration, so

- shrinks are requested before grows;
- a grow is requested only when the room is really free: the node's guests, each counted at the larger of
  what it has and what it was asked to have (a shrink in flight still counts at its old size), plus the grow
  must fit the pool;
- one change in flight per VM (the policy holds a VM whose ``memory.guest`` differs from what the guest has);
- a stopped VM is set back to its startup memory, with ``maxGuest`` its maximum, so that its next boot starts
  at startup and can grow to maximum.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from dynamem.controller.cluster_state import with_promised_targets
from dynamem.controller.contests import Contest, Contests, Written, written_at
from dynamem.controller.leadership import NotLeading
from dynamem.controller.metrics import OperatorMetrics
from dynamem.controller.placement import Placement, Step, encode, recovered, step_of
from dynamem.controller.ports import ClusterWriter, DemandSource
from dynamem.controller.snapshot import (
    Hold,
    JoinCache,
    Managed,
    Observed,
    Phase,
    Snapshot,
    VmmView,
    build_snapshot,
    hold_reason,
    stuck,
)
from dynamem.controller.status import StatusBook, decided, desired_status
from dynamem.kube.api import (
    FIELD_MANAGER,
    FIELD_MANAGER_STOPPED,
    ApiException,
    FieldConflict,
    StaleObject,
    now_rfc3339,
    parse_rfc3339,
)
from dynamem.kube.kubevirt_config import MIGRATING_EVICTIONS
from dynamem.kube.launcher_resources import CPU_ALLOCATION_RATIO
from dynamem.kube.objects import ObjectKey, VmiView, VmView, hostnames, to_quantity
from dynamem.policy import POLICIES
from dynamem.policy.cluster import PARKED_AFTER_S, ClusterPlan, InFlight, plan_cluster
from dynamem.policy.model import BalanceConfig, NodePlan, VmDecision

logger = logging.getLogger("dynamem.balancer")

# Status writes in flight at once (each with its Event, when a condition changed): the first status of
# 10,000 VirtualMachineMemories goes at the API server's pace, not at 16 round trips at a time. The rate is
# --status-writes-per-second's business.
STATUS_WRITES_IN_FLIGHT = 48

# A VM whose write got no answer (after the client's own retries) waits this long before the next try.
TRANSIENT_BACKOFF_S = 30.0


# The operator's default policy: the cluster plan. "node-local" is today's per-node plan.
CLUSTER_POLICY = "dynamem"
NODE_LOCAL_POLICY = "node-local"
OPERATOR_POLICIES = (*sorted(POLICIES), NODE_LOCAL_POLICY)


def update_hold(options: RoundOptions, vmi: VmiView) -> str | None:
    """Why no memory change of this running VM may be asked now, from what the KubeVirt CR says (or could
    not say): KubeVirt's workload-updater would carry it out by evicting the VM, and its eviction strategy
    would let the eviction stop it (kube/kubevirt_config.py)."""
    if options.kubevirt_unread:
        return (
            "held: the KubeVirt CR could not be read yet (see the operator's log; dynamem needs list on "
            "kubevirts.kubevirt.io), so whether KubeVirt would carry out a memory change by evicting the VM "
            "is not known"
        )
    if not options.evict_updates:
        return None
    strategy = vmi.eviction_strategy or options.eviction_strategy or "None"
    if strategy in MIGRATING_EVICTIONS:
        return None
    return (
        "held: the KubeVirt CR's workloadUpdateMethods have Evict without LiveMigrate, so KubeVirt would "
        f"carry out a memory change by evicting the VM, and its eviction strategy {strategy} "
        + ("lets that stop it (a restart)" if strategy == "None" else "leaves it to another controller")
    )


@dataclass(frozen=True, slots=True)
class RoundOptions:
    balance: BalanceConfig = field(default_factory=lambda: BalanceConfig(grow_headroom_percent=0))
    policy: str = "dynamem"
    reserve: int = 0
    default_overhead: int = 0
    dry_run: bool = False
    force_ownership: bool = False  # take memory.guest from another field manager
    status_writes_per_s: float = 20.0
    # A change not carried out by then is taken back (KubeVirt's unschedulable-target timeout, 300 s, plus
    # a margin: pkg/virt-controller/watch/migration/migration.go, defaultUnschedulablePendingTimeoutSeconds).
    change_deadline_s: float = 360.0
    # Prometheus not answering for less than this long changes no status: a query that timed out once (a busy
    # Prometheus at 10,000 VMs) would otherwise flip every VM's DemandKnown to False and back, two status
    # writes per VM. Memory is held from the first failed read all the same.
    demand_error_grace_s: float = 60.0
    # the KubeVirt CR's developerConfiguration.nodeSelectors: every launcher pod, a target too, selects them
    launcher_node_selectors: tuple[tuple[str, str], ...] = ()
    # a VM off for longer than this keeps no hole of its own to start in (StoppedVm.parked)
    parked_after_s: float = PARKED_AFTER_S
    # the KubeVirt CR's developerConfiguration.memoryOvercommit: a launcher asks its guest x 100 / this
    memory_overcommit: int = 100
    # the KubeVirt CR's developerConfiguration.cpuAllocationRatio: a launcher asks its vCPUs / this of CPU
    cpu_allocation_ratio: int = CPU_ALLOCATION_RATIO
    # the KubeVirt CR's workloadUpdateMethods have Evict without LiveMigrate: KubeVirt would carry out a
    # running VM's memory change by evicting it, so none is made unless its eviction strategy migrates
    # (update_hold, kube/kubevirt_config.py); the CR's evictionStrategy, for VMIs that set none
    evict_updates: bool = False
    eviction_strategy: str | None = None
    kubevirt_unread: bool = False  # the KubeVirt CR has not been read yet: as if it evicted


@dataclass(slots=True)
class RoundResult:
    plans: dict[str, NodePlan] = field(default_factory=dict)
    memory_writes: int = 0
    status_writes: int = 0
    deferred: int = 0
    stale: int = 0  # writes refused because the VM changed since the view
    api_errors: int = 0  # writes that got no answer: the loop LISTs afresh
    migrations_created: int = 0  # dynamem's own migrations, pinned to the node its plan chose
    duration_s: float = 0.0
    snapshot: Snapshot | None = None

    @property
    def writes(self) -> int:
        return self.memory_writes + self.status_writes


@dataclass(frozen=True, slots=True)
class MemoryChange:
    """One write of a VM's memory. ``max_guest`` only for stopped VMs (a running VM keeps its ceiling)."""

    key: ObjectKey
    guest: int
    max_guest: int | None
    reason: str
    previous: int | None
    revert: bool = False  # taking back a request KubeVirt did not carry out
    hold: bool = True  # a revert holds the VM until its VMI restarts (not when the request was not dynamem's)
    target_node: str | None = None  # the node the plan chose: dynamem makes the migration there


def grows_that_fit(plan: NodePlan, snapshot: Snapshot) -> tuple[list[VmDecision], list[VmDecision]]:
    """Split a node's changes into those to request now and grows that must wait for room.

    Room is counted physically: every guest at the larger of what it has and what it was asked for.
    """
    node = next(n for n in snapshot.nodes if n.name == plan.node)
    held = sum(max(vm.assigned, vm.in_flight_to or 0) for vm in node.vms)
    now_: list[VmDecision] = []
    wait: list[VmDecision] = []
    for decision in plan.changes:
        if decision.change < 0:
            now_.append(decision)
            continue
        if held + decision.change <= plan.pool:
            held += decision.change
            now_.append(decision)
        else:
            wait.append(decision)
    return now_, wait


class Balancer:
    """Runs balancing rounds against a cluster writer, a demand source and the operator's metrics.

    What a round remembers in memory is only an optimisation or a short backoff; what must survive a restart
    or a change of leader (a hold on a VM KubeVirt refused, the time of the last change) is in the
    VirtualMachineMemory's status.
    """

    def __init__(
        self,
        writer: ClusterWriter,
        demand: DemandSource,
        options: RoundOptions,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if options.policy not in OPERATOR_POLICIES:
            raise ValueError(f"unknown policy {options.policy!r}; known: {', '.join(OPERATOR_POLICIES)}")
        self.writer = writer
        self.demand = demand
        self.options = options
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.book = StatusBook(per_second=options.status_writes_per_s)
        self.planned: dict[ObjectKey, int] = {}  # dry run: the last change reported per VM
        self.backoff: dict[ObjectKey, tuple[float, str]] = {}  # transient failures: held until, and why
        self.conflicts: dict[ObjectKey, Conflict] = {}  # owners named by the API server's conflict
        self.placements: dict[ObjectKey, Placement] = {}  # changes whose migration dynamem makes
        self.hostnames: dict[str, str] = {}  # node name to its hostname label, where they differ
        self.released: dict[ObjectKey, float] = {}  # asked_at of the last placement let go, per VM
        # asked_at of a change that no status records yet (taken over from another leader, or its status
        # write deferred by the rate or failed): written with the next status of that VM
        self.unrecorded: dict[ObjectKey, float] = {}
        # holds made whose status write was deferred or failed: in force, and written, until one is written
        self.unwritten_holds: dict[ObjectKey, Hold] = {}
        # the VMI uid of the last request of another manager taken back without a hold, per VM
        self.foreign_taken_back: dict[ObjectKey, str] = {}
        self.contests = Contests()  # --force-ownership: sizes written, and VMs held off after a fight
        self.joins = JoinCache()  # each VM's join, remade only when one of its views changed
        self.forgotten = 0  # the join cache's count of VirtualMachineMemories gone, when last forgotten here
        self.demand_failing_since: float | None = None  # when Prometheus stopped answering

    async def run_round(self, observed: Observed, *, started: float | None = None) -> RoundResult:
        """One round on ``observed``; ``started``: when the round began (``time.perf_counter()``), if before
        this call (the loop counts the making of ``observed`` in the round's duration)."""
        started = time.perf_counter() if started is None else started
        now = self.clock()
        reading = await self.demand.read()
        if reading.error:
            logger.warning("demand unknown this round, holding memory: %s", reading.error)
            if self.demand_failing_since is None:
                self.demand_failing_since = now
        else:
            self.demand_failing_since = None
        # statuses wait out a short Prometheus outage (memory is held all the same)
        statuses_wait = (
            self.demand_failing_since is not None
            and now - self.demand_failing_since < self.options.demand_error_grace_s
        )
        held = {key: why for key, (until, why) in self.backoff.items() if until > now}
        held.update(
            {key: f"held until its VMI restarts: {hold.reason}" for key, hold in self.unwritten_holds.items()}
        )
        observed = replace(observed, vms=tuple(observed.vms), nodes=tuple(observed.nodes))
        self.hostnames = hostnames(observed.nodes)
        kept = {
            vmm.key: contest
            for vmm in observed.vmms
            if "contest" in vmm.status and (contest := Contest.from_status(vmm.status["contest"])) is not None
        }
        remembers = self.conflicts or self.contests.keys() or kept
        vms = {vm.key: vm for vm in observed.vms} if remembers else {}
        self.contests.restore(kept, vms, now)
        if self.conflicts:
            self._end_conflicts(vms)
        fights = self.contests.find(vms, now)
        held.update({key: "held: memory.guest is owned by another field manager" for key in self.conflicts})
        for key, starting in unstarted_migrations(observed).items():
            held.setdefault(key, starting)
        if self.options.evict_updates or self.options.kubevirt_unread:
            for vmi in observed.vmis:
                why = update_hold(self.options, vmi) if vmi.active else None
                if why is not None:
                    held.setdefault(vmi.key, why)
        snapshot = build_snapshot(
            observed,
            reading,
            reserve=self.options.reserve,
            default_overhead=self.options.default_overhead,
            held=held,
            force_ownership=self.options.force_ownership,
            contested=self.contests.messages(),
            now=now,
            shrink_window_s=self.options.balance.shrink_window_s,
            cache=self.joins,
            promised={key: p.target for key, p in self.placements.items() if p.target},
            launcher_node_selectors=self.options.launcher_node_selectors,
            parked_after_s=self.options.parked_after_s,
            memory_overcommit=self.options.memory_overcommit,
            cpu_allocation_ratio=self.options.cpu_allocation_ratio,
        )
        result = RoundResult(snapshot=snapshot)
        for key, contest in fights:  # the status says so too, with a Warning Event (MemoryFieldContested)
            logger.warning("%s: %s", key, contest.message())
        changes: list[MemoryChange] = []
        moves: list[MemoryChange] = []
        decisions: dict[ObjectKey, tuple[VmDecision, NodePlan]] = {}
        if self.options.policy == CLUSTER_POLICY:
            self._plan_cluster(snapshot, now, result, changes, moves, decisions)
        else:
            self._plan_nodes(snapshot, now, result, changes, decisions)
        unwritten = self.unwritten_holds
        changes.extend(reverts(snapshot, now, self.options.change_deadline_s, self.unrecorded, unwritten))
        changes.extend(stopped_resets(snapshot, unwritten))
        for change in changes:
            if change.revert:
                self._release(change.key)

        # A change's time and a hold are kept in self.unrecorded and self.unwritten_holds from the moment they
        # are made until a status write records them: a round stopped midway (NotLeading) loses neither.
        changed_at: dict[ObjectKey, float] = dict(self.unrecorded)  # recorded with this round's changes
        holds: dict[ObjectKey, Hold] = {}
        for change in changes:
            item = snapshot.managed[change.key]
            placement = None
            if change.target_node and not change.revert:
                placement = Placement(
                    target=change.target_node,
                    guest=change.guest,
                    reason=change.reason,
                    asked_at=now,
                    source=item.node or "",
                )
            # dynamem's own change taken back: the hold goes with the revert, in the VM's dynamem.io/hold, so
            # a new leader keeps it though the status that records it is not written yet
            hold = hold_for(item, change.reason, now) if change.revert and change.hold else None
            outcome = await self._apply(change, item, now, placement, hold)
            if outcome is Outcome.WRITTEN:
                result.memory_writes += 1
                if not self.options.dry_run:  # a dry run changes nothing: no lastChangeTime
                    changed_at[change.key] = self.unrecorded[change.key] = now
                if change.revert and not self.options.dry_run and self._holds_after(change, item):
                    holds[change.key] = self.unwritten_holds[change.key] = hold or hold_for(
                        item, change.reason, now
                    )
            elif outcome is Outcome.REFUSED:
                refused = f"KubeVirt refused memory.guest {to_quantity(change.guest)}"
                holds[change.key] = self.unwritten_holds[change.key] = hold_for(item, refused, now)
            elif outcome is Outcome.STALE:
                result.stale += 1
            elif outcome is Outcome.FAILED:
                result.api_errors += 1
            if outcome is Outcome.WRITTEN and placement is not None and not self.options.dry_run:
                self.placements[change.key] = placement
        for move in moves:
            item = snapshot.managed[move.key]
            if self.options.dry_run:
                await self._event(item, "Normal", "MovePlanned", f"dry run: {move.reason}")
                continue
            self.placements[move.key] = Placement(
                target=move.target_node or "",
                guest=move.guest,
                reason=move.reason,
                asked_at=now,
                source=item.node or "",
                move_only=True,
            )
        result.migrations_created = await self._carry_out_placements(snapshot)

        self._carry_unwritten(snapshot, holds)
        pending = []
        for key, item in snapshot.managed.items():
            pair = decisions.get(key)
            decision, plan = (pair[0], pair[1]) if pair else (None, None)
            note = hold_reason(item, held) if item.phase is Phase.RUNNING else None
            if note is None and decision is not None and decision.in_flight and key in self.placements:
                note = f"held: change in flight: {self.placements[key].reason}"  # where it goes, and why
            part = decided(
                item,
                decision,
                plan,
                hold=holds.get(key, item.hold),
                owners=item.owners or (self.conflicts[key].managers if key in self.conflicts else ()),
                contest=self.contests.held.get(key),
                note=note,
            )
            if key not in changed_at and self.book.quiet(item, part, decision, now):
                continue  # its status says this decision already, and nothing measured moved enough
            status = desired_status(
                item,
                decision,
                plan,
                now=now,
                changed_at=changed_at.get(key),
                note=note,
                part=part,
            )
            needed, changed = self.book.triage(item, status, now, part)
            # a change or a hold made this round is written whatever Prometheus does: it must survive
            if needed and (not statuses_wait or key in changed_at or key in holds):
                last = self.book.written_at.get(key, -math.inf)
                pending.append((not changed, last, str(key), item, status))
        # decision changes first, then the statuses written longest ago: by name alone, the last names would
        # never get a measurement refresh while the rate is short of what moves
        pending.sort(key=lambda entry: entry[:3])
        self.book.refill(now)
        writes = [
            self.book.write(self.writer, item, status, now=now, checked=True)
            for _, _, _, item, status in pending
        ]
        written = await gather_limited(writes, limit=STATUS_WRITES_IN_FLIGHT)
        result.status_writes = sum(written)
        for (_, _, _, item, _), done in zip(pending, written, strict=True):
            if done:  # else deferred by the rate or failed: kept until a status says it
                self.unwritten_holds.pop(item.key, None)
                self.unrecorded.pop(item.key, None)
        self._forget_all_but(snapshot, now)

        result.duration_s = time.perf_counter() - started
        self.metrics.observe_round(
            snapshot,
            result.plans,
            result.duration_s,
            result.memory_writes,
            result.status_writes,
            demand_failed=bool(reading.error),
            write_failures=result.api_errors,
            contests=len(fights),
        )
        return result

    def _plan_nodes(
        self,
        snapshot: Snapshot,
        now: float,
        result: RoundResult,
        changes: list[MemoryChange],
        decisions: dict[ObjectKey, tuple[VmDecision, NodePlan]],
    ) -> None:
        """A per-node policy: each node on its own; the scheduler places the migrations."""
        name = CLUSTER_POLICY if self.options.policy == NODE_LOCAL_POLICY else self.options.policy
        policy = POLICIES[name]
        for node in snapshot.nodes:
            plan = policy(node, self.options.balance, now)
            result.plans[node.name] = plan
            for decision in plan.decisions:
                decisions[snapshot.vm_keys[decision.name]] = (decision, plan)
            to_make, to_wait = grows_that_fit(plan, snapshot)
            result.deferred += len(to_wait)
            for decision in to_wait:
                decisions[snapshot.vm_keys[decision.name]] = (_deferred(decision), plan)
            for decision in to_make:
                item = snapshot.managed[snapshot.vm_keys[decision.name]]
                changes.append(
                    MemoryChange(item.key, decision.assigned, None, decision.reason, decision.current)
                )

    def _plan_cluster(
        self,
        snapshot: Snapshot,
        now: float,
        result: RoundResult,
        changes: list[MemoryChange],
        moves: list[MemoryChange],
        decisions: dict[ObjectKey, tuple[VmDecision, NodePlan]],
    ) -> ClusterPlan:
        """dynamem's cluster plan: sizes and target nodes together, within the migration budget.

        Changes written but whose migration is not made yet count in the budget as in flight.
        """
        state = snapshot.cluster
        self._recover_placements(snapshot, now)
        deadline = self.options.change_deadline_s
        visible = {m.key for m in snapshot.migrations}
        for key, placement in list(self.placements.items()):  # carried out or gone since the last round
            item = snapshot.managed.get(key)
            step = step_of(placement, item.vmi if item is not None else None, snapshot.migrations)
            made = placement.migration
            if step in {Step.DONE, Step.GONE}:
                self._release(key)
            elif now - placement.asked_at > deadline and (
                made is None or ObjectKey(key.namespace, made) not in visible
            ):
                # its VMI never showed the change (memory.guest put back before KubeVirt copied it, say),
                # or the migration dynamem made is gone (deleted: `virtctl migrate-cancel`): the reverts
                # take back a change still asked at its deadline; the placement is let go here, or it would
                # keep a migration slot and its target's room for ever
                self._release(key)
        migrating = {m.vm for m in state.in_flight}
        waiting = tuple(  # not made yet, or made (between rounds, say) and not in the view yet
            InFlight(vm=str(key), source=p.source, target=p.target)
            for key, p in self.placements.items()
            if str(key) not in migrating
            and (p.migration is None or ObjectKey(key.namespace, p.migration) not in visible)
        )
        if waiting:
            state = replace(state, in_flight=(*state.in_flight, *waiting))
        state = with_promised_targets(
            state,
            [
                (str(key), p.target, p.guest)
                for key, p in self.placements.items()
                if p.target and (p.target, key) not in snapshot.bound
            ],
        )
        cluster = plan_cluster(state, self.options.balance, now)
        by_name = {d.name: d for d in cluster.decisions}
        nodes = {n.name: n for n in state.nodes}
        for node in snapshot.nodes:
            mine = tuple(by_name[vm.name] for vm in node.vms if vm.name in by_name)
            seen = nodes.get(node.name)
            # requests above the node's memory (VMs started there regardless): reported, and relieved by moves
            over = seen is not None and seen.requested > seen.memory
            # the node's own figures only: the cluster's counts (changes planned, migrations in flight) move
            # with every change anywhere, and rewrote every status on the node each time
            reason = (
                f"pod requests {seen.requested >> 20}Mi exceed the node's {seen.memory >> 20}Mi"
                if over and seen is not None
                else cluster.reason
            )
            plan = NodePlan(node.name, node.pool, mine, over, reason)
            result.plans[node.name] = plan
            for decision in mine:
                decisions[snapshot.vm_keys[decision.name]] = (decision, plan)
        for decision in cluster.changes:
            key = snapshot.vm_keys[decision.name]
            if decision.assigned != decision.current:
                changes.append(
                    MemoryChange(
                        key,
                        decision.assigned,
                        None,
                        decision.reason,
                        decision.current,
                        target_node=decision.target_node,
                    )
                )
            elif decision.target_node is not None:
                moves.append(
                    MemoryChange(
                        key, decision.current, None, decision.reason, None, target_node=decision.target_node
                    )
                )
        return cluster

    def _first_in_dry_run(self, change: MemoryChange) -> bool:
        """A dry run changes nothing, so the same change (or revert) comes back every round: whether this is
        the first round to plan it, to be said once."""
        if self.planned.get(change.key) == change.guest:
            return False
        self.planned[change.key] = change.guest
        return True

    def _carry_unwritten(self, snapshot: Snapshot, holds: dict[ObjectKey, Hold]) -> None:
        """Forget the holds and change times a status now records (or whose VMI restarted, or whose VM went);
        add the holds still unwritten to this round's ``holds``, so its statuses carry them."""
        for key, hold in list(self.unwritten_holds.items()):
            item = snapshot.managed.get(key)
            if item is None or not hold.applies(item.vm, item.vmi) or item.hold == hold:
                del self.unwritten_holds[key]
            else:
                holds.setdefault(key, hold)
        for key, asked in list(self.unrecorded.items()):
            item = snapshot.managed.get(key)
            recorded = parse_rfc3339(item.vmm.status.get("lastChangeTime")) if item is not None else None
            if item is None or (recorded is not None and recorded >= asked):
                del self.unrecorded[key]

    def _holds_after(self, change: MemoryChange, item: Managed) -> bool:
        """Whether taking ``change`` back holds the VM: always for dynamem's own request; for another
        manager's, from the second one taken back while the same VMI runs, so that a writer that keeps
        writing a size KubeVirt refuses gets no revert each round (its Event says who)."""
        if change.hold:
            return True
        uid = item.vmi.uid if item.vmi is not None else ""
        if self.foreign_taken_back.get(change.key) == uid:
            return True
        self.foreign_taken_back[change.key] = uid
        return False

    def _recover_placements(self, snapshot: Snapshot, now: float) -> None:
        """Take over the changes in flight that another leader (or this operator before a restart) placed:
        from each VM's ``dynamem.io/placement`` annotation and dynamem's migrations
        (:func:`dynamem.controller.placement.recovered`). One let go already is not taken again. A dry run
        takes over nothing: it would create the migration (a change to the cluster) and record the time."""
        if self.options.dry_run:
            return
        for key, item in snapshot.managed.items():
            if key in self.placements or item.vm is None or item.phase is not Phase.RUNNING:
                continue
            found = recovered(
                item.vm, item.vmi, snapshot.migrations, now, self.options.change_deadline_s, self.hostnames
            )
            if found is None:
                continue
            if key in self.released and abs(self.released[key] - found.asked_at) < 1.0:
                continue
            self.placements[key] = found
            if found.asked_at > (parse_rfc3339(item.vmm.status.get("lastChangeTime")) or 0.0):
                self.unrecorded[key] = found.asked_at  # lost before its status write: written this round
            made = f", its migration {found.migration}" if found.migration else ", no migration made yet"
            logger.info(
                "%s: took over the change to %s on %s in flight (asked %.0fs ago%s)",
                key,
                to_quantity(found.guest),
                found.target,
                now - found.asked_at,
                made,
            )

    def _release(self, key: ObjectKey) -> None:
        """Let go of a placement (carried out, lost, gone, taken back), so it is not recovered again."""
        placement = self.placements.pop(key, None)
        if placement is not None:
            self.released[key] = placement.asked_at

    async def _carry_out_placements(self, snapshot: Snapshot) -> int:
        """Make dynamem's migration of every placed change whose VMI shows it; notice lost races."""
        created = 0
        for key, placement in list(self.placements.items()):
            item = snapshot.managed.get(key)
            vmi = item.vmi if item is not None else None
            step = step_of(placement, vmi, snapshot.migrations)
            if step is Step.WAIT:
                continue
            if step is not Step.CREATE or item is None or vmi is None:
                self._release(key)
                if step is Step.LOST and item is not None:
                    note = (
                        f"another migration of {key.name} came first (KubeVirt's workload-updater): it goes "
                        f"where the scheduler puts it, not to {placement.target}"
                    )
                    logger.info("%s: %s", key, note)
                    await self._event(item, "Normal", "MigrationRaceLost", note)
                elif step is Step.DONE and vmi is not None and vmi.node and vmi.node != placement.target:
                    logger.info("%s landed on %s, not %s", key, vmi.node, placement.target)
                continue
            created += await self._create_migration(key, placement, item.vmm)
        return created

    async def carry_out_ready(self, observed: Observed) -> int:
        """Between rounds: make dynamem's migration of each placed change whose VMI shows it now.

        KubeVirt's workload-updater makes its own migration of such a VMI within 5 s of its showing the
        change, sooner while other migrations move (every migration event queues its next pass 5 s ahead, and
        the earliest wins), so the loop calls this as VMI events come in during its gap between rounds rather
        than leaving the migration to the next round. Only migrations are made here; what else a placement's
        step calls for (done, lost, gone) is the next round's."""
        waiting = {key: p for key, p in self.placements.items() if p.migration is None}
        if not waiting:
            return 0
        vmis = {vmi.key: vmi for vmi in observed.vmis if vmi.key in waiting}
        vmms = {vmm.key: vmm for vmm in observed.vmms if vmm.key in waiting}
        created = 0
        for key, placement in waiting.items():
            vmm = vmms.get(key)
            if vmm is None or step_of(placement, vmis.get(key), observed.migrations) is not Step.CREATE:
                continue
            created += await self._create_migration(key, placement, vmm)
        return created

    def waiting_placements(self) -> list[ObjectKey]:
        """The VMs whose change waits for its VMI to show it before dynamem makes its migration."""
        return [key for key, p in self.placements.items() if p.migration is None]

    async def _create_migration(self, key: ObjectKey, placement: Placement, vmm: VmmView) -> int:
        """Make dynamem's migration of ``key`` pinned to the placement's node: 1 if made, else 0 (the
        placement is then let go: the race is lost, or the workload-updater carries the change out)."""
        try:
            # pinned by the node's hostname label, which the scheduler matches (its name where they agree)
            name = await self.writer.create_migration(
                key.namespace,
                key.name,
                self.hostnames.get(placement.target, placement.target),
                reason=placement.reason,
            )
        except NotLeading:
            raise
        except ApiException as exc:
            self._release(key)
            if _race_lost(exc):  # KubeVirt's admission: a migration of this VMI exists
                note = f"migration to {placement.target} refused ({_message(exc)}): another came first"
                await self._vmm_event(vmm, "Normal", "MigrationRaceLost", note)
            else:  # said, not read as a race: a 403 (RBAC), a VMI KubeVirt will not migrate, a bad spec
                logger.warning("%s: migration to %s not created: %s", key, placement.target, exc)
                note = (
                    f"migration to {placement.target} refused ({exc.status}: {_message(exc)}); KubeVirt's "
                    "workload-updater may still carry the change out, where the scheduler puts it"
                )
                await self._vmm_event(vmm, "Warning", "MigrationRefused", note)
            return 0
        except Exception as exc:  # no answer: the workload-updater carries the change out anyway
            self._release(key)
            logger.warning("%s: migration to %s not created: %s", key, placement.target, exc)
            return 0
        self.placements[key] = replace(placement, migration=name)
        await self._vmm_event(
            vmm, "Normal", "MigrationCreated", f"{name} to {placement.target}: {placement.reason}"
        )
        return 1

    def _forget_all_but(self, snapshot: Snapshot, now: float) -> None:
        """Drop what is remembered of VMs that are gone, backoffs that ran out, conflicts that ended.

        Only after a VirtualMachineMemory went (the join cache counts them): what is remembered is only ever
        of VMs of some round, so while none went, every key remembered is still one of this round's."""
        if self.joins.dropped != self.forgotten:
            self.forgotten = self.joins.dropped
            keys = snapshot.managed.keys()
            for memory in (
                self.planned,
                self.backoff,
                self.conflicts,
                self.placements,
                self.released,
                self.foreign_taken_back,
                self.unwritten_holds,
                self.unrecorded,
            ):
                for key in memory.keys() - keys:  # a set difference: no Python loop over every VM
                    del memory[key]
            self.contests.forget(self.contests.keys() - keys)
            self.book.forget_all_but(keys)
        for key in [k for k, (until, _) in self.backoff.items() if until <= now]:
            del self.backoff[key]

    def _end_conflicts(self, vms: Mapping[ObjectKey, VmView]) -> None:
        """Forget a conflict the API server reported once a newer version of its VM shows that no other
        manager owns memory.guest any more: at the start of the round that first sees it, so that this very
        round plans the VM. The version the refused apply carried proves nothing (the view was older than the
        server's), so the conflict stands until the VM has moved on."""
        for key, conflict in list(self.conflicts.items()):
            vm = vms.get(key)
            moved_on = vm is not None and vm.resource_version != conflict.resource_version
            if vm is None or (moved_on and not vm.foreign_owners()):
                del self.conflicts[key]

    async def _apply(
        self,
        change: MemoryChange,
        item: Managed,
        now: float,
        placement: Placement | None = None,
        hold: Hold | None = None,
    ) -> Outcome:
        ns, name = change.key.namespace, change.key.name
        guest = to_quantity(change.guest)
        max_guest = to_quantity(change.max_guest) if change.max_guest is not None else None
        version = item.vm.resource_version if item.vm is not None else None
        try:
            answer = await self.writer.apply_vm_memory(
                ns,
                name,
                guest,
                max_guest,
                resource_version=version or None,
                force=self.options.force_ownership or take_over(item, change),
                dry_run=self.options.dry_run,
                placement=encode(placement) if placement is not None else None,
                hold=json.dumps(hold.to_status(), separators=(",", ":")) if hold is not None else None,
            )
        except NotLeading:
            raise
        except StaleObject:
            logger.info("%s changed since this round's view; decided again next round", change.key)
            return Outcome.STALE
        except FieldConflict as exc:  # the status gets FieldOwnedByOtherManager, and its Event
            logger.warning("%s: memory.guest owned by %s: not taken", change.key, ", ".join(exc.managers))
            self.conflicts[change.key] = Conflict(exc.managers or ("another manager",), version or "")
            return Outcome.CONFLICT
        except ApiException as exc:
            if exc.status == 404:
                return Outcome.STALE  # the VM is gone: the watch will say so
            if 400 <= exc.status < 500 and exc.status != 429:
                logger.error("KubeVirt refused memory.guest %s for %s: %s", guest, change.key, exc.reason)
                await self._event(
                    item, "Warning", "MemoryChangeRefused", f"memory.guest {guest} refused: {_message(exc)}"
                )
                return Outcome.REFUSED
            return self._failed(change, guest, exc, now)
        except Exception as exc:  # a dropped connection, a timeout: this VM waits, the others go on
            return self._failed(change, guest, exc, now)
        if not self.options.dry_run and max_guest is None:  # a running VM's size: fought over?
            uid = item.vm.uid if item.vm is not None else ""
            at = written_at(answer, FIELD_MANAGER)
            self.contests.wrote(change.key, Written(change.guest, version or "", at, uid))
        if change.revert:
            note = f"memory.guest -> {guest}: {change.reason}"
            if not self.options.dry_run:
                await self._event(item, "Warning", "MemoryChangeReverted", note)
            elif self._first_in_dry_run(change):
                await self._event(item, "Warning", "MemoryChangeReverted", f"dry run: {note}")
            return Outcome.WRITTEN
        before = to_quantity(change.previous) if change.previous else "unset"
        note = f"memory.guest {before} -> {guest}: {change.reason}"
        if self.options.dry_run:
            if self._first_in_dry_run(change):
                logger.info("%s: dry run: memory %s -> %s (%s)", change.key, before, guest, change.reason)
                await self._event(item, "Normal", "MemoryChangePlanned", f"dry run: {note}")
            return Outcome.WRITTEN
        self.metrics.patches.labels(direction=_direction(change)).inc()
        logger.info("%s: memory %s -> %s (%s)", change.key, before, guest, change.reason)
        await self._event(item, "Normal", _reason(change), note)
        return Outcome.WRITTEN

    def _failed(self, change: MemoryChange, guest: str, exc: Exception, now: float) -> Outcome:
        logger.warning("could not set memory of %s to %s: %s", change.key, guest, exc)
        self.backoff[change.key] = (now + TRANSIENT_BACKOFF_S, f"held: the API did not answer ({exc})"[:200])
        return Outcome.FAILED

    async def _event(self, item: Managed, type_: str, reason: str, note: str) -> None:
        await self._vmm_event(item.vmm, type_, reason, note)

    async def _vmm_event(self, vmm: VmmView, type_: str, reason: str, note: str) -> None:
        try:
            await self.writer.create_event(vmm.body, type_=type_, reason=reason, note=note, action="Balance")
        # best effort; a lapsed Lease (NotLeading) too: the next write stops the round
        except Exception as exc:
            logger.debug("event for %s not posted: %s", vmm.key, exc)


@dataclass(frozen=True, slots=True)
class Conflict:
    """The API server refused an apply of memory.guest: ``managers`` own it. ``resource_version``: the VM's
    version the apply carried (the view it was decided on)."""

    managers: tuple[str, ...]
    resource_version: str


class Outcome(StrEnum):
    WRITTEN = "written"
    STALE = "stale"  # the VM moved on since the view: decided again next round
    CONFLICT = "conflict"  # another field manager owns memory.guest
    REFUSED = "refused"  # KubeVirt (its webhook) said no: held until the VMI restarts
    FAILED = "failed"  # no answer: a short backoff, and a fresh LIST


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)[:500]
    except (TypeError, ValueError):
        return str(exc.reason)


def _race_lost(exc: ApiException) -> bool:
    """A migration refused because another of the VMI is under way: KubeVirt's webhook answers 400 ("in-flight
    migration detected", ``migration-create-admitter.go`` through ``webhooks.go``
    ``ToAdmissionResponseError``), which the API server relays; a 409 (the generated name taken) the same.
    Any other refusal is no race: a 422 is a spec the API server or a webhook refuses."""
    if exc.status == 409:
        return True
    return exc.status == 400 and "in-flight migration" in _message(exc)


def unstarted_migrations(observed: Observed) -> dict[ObjectKey, str]:
    """VMs to hold as they are while a migration of their VMI is made but not copying yet.

    KubeVirt v1.7.0 renders a migration's target pod when the migration is made, at the VMI's size then
    (``pkg/virt-controller/watch/migration/migration.go``, ``createTargetPod``), but its VM controller takes a
    change of memory.guest as long as the VMI is not migrating by its ``migrationState`` (``vm.go``,
    ``handleMemoryHotplugRequest`` -> ``migrations.IsMigrating``: a start and no end), which a migration
    gets only once its target is ready. A change written in between is copied into the VMI and hotplugged
    at the end of that migration (``migration-target.go``, ``hotplugMemory``, whose check of the pod's
    request passes for a VM without a memory request): the guest would have more than its launcher asks, and
    the node more in use than the scheduler counts. So a VM whose size is not changing (a plain move, an
    evacuation) is held until its migration copies or ends; one whose change is in flight is held by it."""
    unfinished = {m.vmi for m in observed.migrations if not m.final}
    if not unfinished:
        return {}
    asks = {vm.key: vm.guest for vm in observed.vms if vm.key in unfinished}
    return {
        vmi.key: "held: a migration of its VMI is starting (its target pod is made at the size it has)"
        for vmi in observed.vmis
        if vmi.key in unfinished
        and vmi.active
        and not vmi.migrating
        and asks.get(vmi.key) in {None, vmi.current}
    }


def take_over(item: Managed, change: MemoryChange) -> bool:
    """Whether the apply may take memory.guest from its other owners: never from a declarative one.

    Server-side apply reports a conflict with ANY other owner of a field whose value it changes: one that
    merely created the VM (``kubectl create``, operation ``Update``), and dynamem's other field manager (a
    running VM's changes are applied as ``dynamem``, a stopped VM's as ``dynamem-stopped``). Those do not
    re-assert the value, so dynamem takes the field over from them; the apply still carries the
    resourceVersion of the VM it decided on, so it never overwrites a value, nor an ownership, it has not
    seen. A declarative owner (a GitOps tool: server-side apply, or kubectl's client-side apply) is never
    overridden: the round holds such a VM before it gets here (``FieldOwnedByOtherManager``), unless
    ``--force-ownership``.
    """
    if item.vm is None or item.vm.applied_by_others():
        return False
    manager = FIELD_MANAGER_STOPPED if change.max_guest is not None else FIELD_MANAGER
    return item.vm.owned_by_others_than(manager)


def hold_for(item: Managed, reason: str, now: float) -> Hold:
    """A hold until this VMI restarts; for a VM without a running VMI, until its spec changes."""
    vmi = item.vmi if item.vmi is not None and item.vmi.active else None
    if vmi is not None:
        return Hold(reason=reason, vmi_uid=vmi.uid, since=now_rfc3339(now))
    generation = item.vm.generation if item.vm is not None else 0
    return Hold(reason=reason, vm_generation=generation, since=now_rfc3339(now))


def _direction(change: MemoryChange) -> str:
    return "grow" if change.previous is None or change.guest > change.previous else "shrink"


def _reason(change: MemoryChange) -> str:
    return "MemoryIncreased" if _direction(change) == "grow" else "MemoryDecreased"


def _deferred(decision: VmDecision) -> VmDecision:
    """A grow that waits for a shrink elsewhere to finish: reported, not yet made."""
    return replace(decision, assigned=decision.current, reason=f"{decision.reason}; waiting for room")


def stopped_resets(snapshot: Snapshot, unwritten: Collection[ObjectKey] = ()) -> list[MemoryChange]:
    """Stopped VMs whose memory.guest or maxGuest is not startup / maximum yet.

    Only VMs stopped for good (runStrategy Halted, no VMI): a VM that is starting, or may be started at any
    moment (Manual, Once, RerunOnFailure), keeps its maxGuest, since changing it sets RestartRequired and
    blocks hotplug. KubeVirt wants both aligned (2Mi, 1Gi with 1Gi hugepages): startup is rounded up,
    maximum down (never below startup). ``unwritten``: VMs held by a hold no status records yet.
    """
    found: list[MemoryChange] = []
    for item in snapshot.managed.values():
        if item.phase is not Phase.STOPPED or item.vm is None or item.settings is None:
            continue
        if item.hold is not None or item.blocked is not None or item.key in unwritten:
            continue
        unit = item.vm.hugepage
        startup = -(-item.settings.startup // unit) * unit
        maximum = max(startup, item.settings.maximum // unit * unit)
        if item.vm.guest != startup or item.vm.max_guest != maximum:
            found.append(MemoryChange(item.key, startup, maximum, "stopped: back to startup", item.vm.guest))
    return found


def overdue(item: Managed, now: float, deadline_s: float, unrecorded: float | None = None) -> bool:
    """A change asked for more than ``deadline_s`` ago that the guest still does not have.

    When it was asked: :meth:`Managed.asked_at` (so a leader lost before its status write still leaves the
    deadline in the cluster). A request of another manager (``kubectl edit``) was asked when that manager
    last wrote the VM (its managedFields entry's time, which any field it writes moves), whenever dynamem
    last changed the VM: it is not taken back the round it is seen. An entry without a time falls back to
    dynamem's times. ``unrecorded``: when dynamem asked a change that no status records yet (its status write
    deferred or failed), which counts as dynamem's time too.

    Never while a live migration of the VMI is copying (its ``status.migrationState`` has a start and no
    end): a large guest may take longer than the deadline to copy, and KubeVirt bounds that itself (v1.7.0
    ``pkg/virt-config/virt-config.go``: ``MigrationProgressTimeout`` 150 s without progress,
    ``MigrationCompletionTimeoutPerGiB`` 150 s a GiB). Taken back mid-copy, the change would land all the
    same and then need a second migration to undo, with the VM held. The deadline is for a change whose
    migration cannot start (a target pod that stays unschedulable, migrations that keep failing)."""
    vm, vmi = item.vm, item.vmi
    if vm is None or vmi is None or vmi.current is None or vm.guest is None or vm.guest == vmi.current:
        return False
    if vmi.migrating:
        return False
    written = parse_rfc3339(vm.guest_written_by_others) if vm.guest_from_others() else None
    ours = max((t for t in (item.asked_at(), unrecorded) if t is not None), default=None)
    asked = written if written is not None else ours
    return asked is not None and now - asked > deadline_s


# How much longer a change may take while dynamem's own migration of it still goes: KubeVirt's longest pending
# timeout (900 s, a target pod pending for a reason other than unschedulable, migration.go).
OWN_MIGRATION_GRACE_S = 900.0


def reverts(
    snapshot: Snapshot,
    now: float,
    deadline_s: float,
    unrecorded: Mapping[ObjectKey, float] | None = None,
    unwritten: Collection[ObjectKey] = (),
) -> list[MemoryChange]:
    """Take back requests KubeVirt refused (hotplug failed, restart required) or did not carry out by the
    deadline (its migrations failing meanwhile, retried by KubeVirt): memory.guest back to what the guest
    has; the VM is then held until its VMI restarts, so that dynamem does not ask for the same again.

    Another manager's request (``kubectl edit`` of memory.guest to less than the guest booted with, which
    KubeVirt answers with RestartRequired) is taken back too, since dynamem keeps the field, but holds
    nothing: dynamem did not ask for it, and balancing the VM goes on once KubeVirt has cleared its refusal
    (v1.7.0 keeps ``RestartRequired`` until the VM restarts, ``vm.go`` ``cleanupRestartRequired``).
    A manager that applies memory.guest declaratively blocks the VM instead and is never taken back.
    ``unrecorded``: per VM, when dynamem asked a change whose status is not written yet; ``unwritten``: VMs
    held by a hold no status records yet.

    Not overdue while a migration dynamem made for the VMI is still going, whatever its phase, for up to
    :data:`OWN_MIGRATION_GRACE_S` more: KubeVirt ends it itself (its target pod's pending timeouts, v1.7.0
    ``migration.go`` ``handlePendingPodTimeout``: 300 s unschedulable from the pod's creation, 900 s
    otherwise; held back by the parallel limits it has none), and it goes on after a take-back: the
    workload-updater aborts only its own migrations (``workload-updater.go``, ``shouldAbortMigration``), so
    dynamem's would move the VM at its old size and leave it held. Once it has ended, a change still not
    carried out is taken back; so is one whose migration KubeVirt keeps going past the grace (queued behind
    its limits through a long drain, virt-controller down)."""
    found: list[MemoryChange] = []
    ours_going = {m.vmi for m in snapshot.migrations if m.dynamem and not m.final}
    for item in snapshot.managed.values():
        if item.phase is not Phase.RUNNING or item.vmi is None or not item.vmi.current:
            continue
        if item.blocked is not None and item.owners:
            continue  # another manager owns memory.guest: not ours to take back
        if item.hold is not None or item.key in unwritten:
            continue  # taken back (or refused) already: held until the VMI restarts, not retried
        requested = item.vm.guest if item.vm is not None else None
        if requested is None or requested == item.vmi.current:
            continue  # the guest has what was asked (or nothing was): neither stuck nor overdue
        if stuck(item):
            reason = (
                f"KubeVirt did not apply {to_quantity(requested or 0)} "
                "(its hotplug failed, or a restart is required)"
            )
        elif overdue(
            item,
            now,
            deadline := deadline_s + (OWN_MIGRATION_GRACE_S if item.vmi.key in ours_going else 0.0),
            (unrecorded or {}).get(item.key),
        ):
            reason = f"{to_quantity(requested or 0)} not carried out within {deadline:.0f}s"
        else:
            continue
        ours = item.vm is None or not item.vm.guest_from_others()
        if not ours:
            by = ", ".join(item.vm.foreign_owners()) if item.vm is not None else ""
            reason = f"{reason}; asked by {by}, not dynamem"
        found.append(
            MemoryChange(item.key, item.vmi.current, None, reason, requested, revert=True, hold=ours)
        )
    return found


async def gather_limited(coros: list[Any], limit: int = 16) -> list[Any]:
    """Run coroutines with at most ``limit`` at once (API writes of a large round). The first to raise
    (``NotLeading``: the Lease lapsed) cancels the others, queued or under way: with ``gather`` they went on
    writing last round's statuses after the round had stopped."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    tasks: list[asyncio.Task[Any]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(c)) for c in coros]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    finally:
        for coro in coros:  # those cancelled while queued never started: closed, not left unawaited
            coro.close()
    return [task.result() for task in tasks]
