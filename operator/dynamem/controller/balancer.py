"""One balancing round: observe, plan every node with the policy, act, report.

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
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from dynamem.controller.metrics import OperatorMetrics
from dynamem.controller.ports import ClusterWriter, DemandSource
from dynamem.controller.snapshot import (
    Managed,
    Observed,
    Phase,
    Snapshot,
    build_snapshot,
    hold_reason,
    stuck,
)
from dynamem.controller.status import StatusBook, desired_status
from dynamem.kube.objects import ObjectKey, to_quantity
from dynamem.policy import POLICIES
from dynamem.policy.model import BalanceConfig, NodePlan, VmDecision

logger = logging.getLogger("dynamem.balancer")

# A VM whose change KubeVirt refused or failed is held this long before dynamem tries again.
FAILURE_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class RoundOptions:
    balance: BalanceConfig = field(default_factory=lambda: BalanceConfig(grow_headroom_percent=0))
    policy: str = "dynamem"
    reserve: int = 0
    default_overhead: int = 0
    dry_run: bool = False


@dataclass(slots=True)
class RoundResult:
    plans: dict[str, NodePlan] = field(default_factory=dict)
    memory_writes: int = 0
    status_writes: int = 0
    deferred: int = 0
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
    """Runs balancing rounds against a cluster writer, a demand source and the operator's metrics."""

    def __init__(
        self,
        writer: ClusterWriter,
        demand: DemandSource,
        options: RoundOptions,
        *,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if options.policy not in POLICIES:
            raise ValueError(f"unknown policy {options.policy!r}; known: {', '.join(sorted(POLICIES))}")
        self.writer = writer
        self.demand = demand
        self.options = options
        self.metrics = metrics or OperatorMetrics()
        self.clock = clock
        self.book = StatusBook()
        self.planned: dict[ObjectKey, int] = {}  # dry run: the last change reported per VM
        self.backoff: dict[ObjectKey, tuple[float, str]] = {}  # held until, and why
        self.failed: dict[ObjectKey, int] = {}  # the last refused memory.guest per VM (one Event each)

    async def run_round(self, observed: Observed) -> RoundResult:
        started = time.perf_counter()
        now = self.clock()
        reading = await self.demand.read()
        if reading.error:
            logger.warning("demand unknown this round, holding memory: %s", reading.error)
        held = {key: why for key, (until, why) in self.backoff.items() if until > now}
        snapshot = build_snapshot(
            observed,
            reading,
            reserve=self.options.reserve,
            default_overhead=self.options.default_overhead,
            held=held,
        )
        policy = POLICIES[self.options.policy]
        result = RoundResult(snapshot=snapshot)
        changes: list[MemoryChange] = []
        decisions: dict[ObjectKey, tuple[VmDecision, NodePlan]] = {}
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
        changes.extend(reverts(snapshot))
        changes.extend(stopped_resets(snapshot))

        changed_at: dict[ObjectKey, float] = {}
        for change in changes:
            if await self._apply(change, snapshot.managed[change.key], now):
                result.memory_writes += 1
                if not self.options.dry_run:  # a dry run changes nothing: no lastChangeTime
                    changed_at[change.key] = now

        writes = []
        for key, item in snapshot.managed.items():
            pair = decisions.get(key)
            status = desired_status(
                item,
                pair[0] if pair else None,
                pair[1] if pair else None,
                now=now,
                changed_at=changed_at.get(key),
                note=hold_reason(item, held) if item.phase is Phase.RUNNING else None,
            )
            writes.append(self.book.write(self.writer, item, status, now=now))
        result.status_writes = sum(await gather_limited(writes))
        self._forget_all_but(snapshot.managed.keys(), now)

        result.duration_s = time.perf_counter() - started
        self.metrics.observe_round(
            snapshot, result.plans, result.duration_s, result.memory_writes, result.status_writes
        )
        return result

    def _forget_all_but(self, keys: Collection[ObjectKey], now: float) -> None:
        """Drop what is remembered of VMs that are gone, and backoffs that ran out."""
        for memory in (self.planned, self.failed, self.backoff):
            for key in [k for k in memory if k not in keys]:
                del memory[key]
        for key in [k for k, (until, _) in self.backoff.items() if until <= now]:
            del self.backoff[key]
        self.book.forget_all_but(keys)

    async def _apply(self, change: MemoryChange, item: Managed, now: float) -> bool:
        ns, name = change.key.namespace, change.key.name
        guest = to_quantity(change.guest)
        max_guest = to_quantity(change.max_guest) if change.max_guest is not None else None
        try:
            await self.writer.apply_vm_memory(ns, name, guest, max_guest, dry_run=self.options.dry_run)
        except Exception as exc:  # an API refusal must not stop the round for every other VM
            logger.error("could not set memory of %s to %s: %s", change.key, guest, exc)
            self.backoff[change.key] = (now + FAILURE_BACKOFF_S, f"held: memory.guest {guest} was refused")
            if self.failed.get(change.key) != change.guest:  # one Event per refused value, not per round
                self.failed[change.key] = change.guest
                await self._event(
                    item, "Warning", "MemoryChangeFailed", f"setting memory.guest to {guest}: {exc}"
                )
            return False
        self.failed.pop(change.key, None)
        if change.revert:
            self.backoff[change.key] = (
                now + FAILURE_BACKOFF_S,
                f"held after a failed change: {change.reason}",
            )
            await self._event(
                item, "Warning", "MemoryChangeReverted", f"memory.guest -> {guest}: {change.reason}"
            )
            return True
        before = to_quantity(change.previous) if change.previous else "unset"
        note = f"memory.guest {before} -> {guest}: {change.reason}"
        if self.options.dry_run:
            # The VM does not change, so the same plan comes back every round: say it once per plan.
            if self.planned.get(change.key) != change.guest:
                self.planned[change.key] = change.guest
                logger.info("%s: dry run: memory %s -> %s (%s)", change.key, before, guest, change.reason)
                await self._event(item, "Normal", "MemoryChangePlanned", f"dry run: {note}")
            return True
        self.metrics.patches.labels(direction=_direction(change)).inc()
        logger.info("%s: memory %s -> %s (%s)", change.key, before, guest, change.reason)
        await self._event(item, "Normal", _reason(change), note)
        return True

    async def _event(self, item: Managed, type_: str, reason: str, note: str) -> None:
        try:
            await self.writer.create_event(
                item.vmm.body, type_=type_, reason=reason, note=note, action="Balance"
            )
        except Exception as exc:  # events are best effort
            logger.debug("event for %s not posted: %s", item.key, exc)


def _direction(change: MemoryChange) -> str:
    return "grow" if change.previous is None or change.guest > change.previous else "shrink"


def _reason(change: MemoryChange) -> str:
    return "MemoryIncreased" if _direction(change) == "grow" else "MemoryDecreased"


def _deferred(decision: VmDecision) -> VmDecision:
    """A grow that waits for a shrink elsewhere to finish: reported, not yet made."""
    return replace(decision, assigned=decision.current, reason=f"{decision.reason}; waiting for room")


def stopped_resets(snapshot: Snapshot) -> list[MemoryChange]:
    """Stopped VMs whose memory.guest or maxGuest is not startup / maximum yet.

    KubeVirt wants both aligned (2Mi, 1Gi with 1Gi hugepages): startup is rounded up, maximum down (never
    below startup).
    """
    found: list[MemoryChange] = []
    for item in snapshot.managed.values():
        if item.phase is not Phase.STOPPED or item.vm is None or item.settings is None:
            continue
        unit = item.vm.hugepage
        startup = -(-item.settings.startup // unit) * unit
        maximum = max(startup, item.settings.maximum // unit * unit)
        if item.vm.guest != startup or item.vm.max_guest != maximum:
            found.append(MemoryChange(item.key, startup, maximum, "stopped: back to startup", item.vm.guest))
    return found


def reverts(snapshot: Snapshot) -> list[MemoryChange]:
    """Take back requests KubeVirt did not carry out: memory.guest back to what the guest has."""
    found: list[MemoryChange] = []
    for item in snapshot.managed.values():
        if item.phase is Phase.RUNNING and stuck(item) and item.vmi is not None and item.vmi.current:
            requested = item.vm.guest if item.vm is not None else None
            reason = (
                f"KubeVirt did not apply {to_quantity(requested or 0)} (hotplug failed or restart required)"
            )
            found.append(MemoryChange(item.key, item.vmi.current, None, reason, requested, revert=True))
    return found


async def gather_limited(coros: list[Any], limit: int = 16) -> list[Any]:
    """Run coroutines with at most ``limit`` at once (API writes of a large round)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
