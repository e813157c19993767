"""Baselines: how other systems would share the same node, re-derived from /work/shared/PEERS.md.

The simulator runs every policy on the same scenario, so dynamem's numbers mean something only next to
faithful peers. Each peer reads the same :class:`NodeState` and returns the same :class:`NodePlan`, so the
table, the JSON and the charts treat them alike. All of them live in a KubeVirt world: a running VM cannot go
below its boot memory (that floor applies to every peer), assignments are aligned like dynamem's, and a VM
whose change is in flight or whose demand is unknown is left where it is.

- ``static``: KubeVirt today. Every VM keeps the memory it started with.
- ``proxmox``: PVE's auto-ballooning (pvestatd every 10 s). goal = 80 % of host memory - host used; host used
  is what the guests really use (resident memory, modelled as min(assigned, demand)), as /proc/meminfo would
  show it. Grows serve pressured VMs first, shrinks take from VMs with free memory first, both fall back to
  all; targets are min + (sum(balloon - min) + goal) x shares / total shares, at most 100 MiB per VM per
  cycle, nothing while |goal| <= 10 MiB. Shares = 20 x priority (medium 50 -> Proxmox's default 1000; 0 opts
  out). One round runs ``step_s / 10 s`` cycles, as pvestatd would in that wall time.
- ``xen``: XenServer's squeezed. Blind to demand: every VM gets the same fraction f of its range
  [dynamic-min, dynamic-max] = [floor, maximum], one f per host so that everything fits beside a small
  reserve.
- ``oracle``: dynamem's levels with no dead band, no cooldown and no change limit: the bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from dynamem.policy.balance import plan_node, plan_oracle, pressure_of, status_of, vm_levels
from dynamem.policy.model import BalanceConfig, MiB, NodePlan, NodeState, VmDecision, VmState, format_bytes

__all__ = ["POLICIES", "Policy", "plan_proxmox", "plan_static", "plan_xen"]

Policy = Callable[[NodeState, BalanceConfig, float], NodePlan]

_PROXMOX_IDLE = 10 * MiB
_PROXMOX_DEFAULT_SHARES = 1000


def _decide(vm: VmState, config: BalanceConfig, assigned: int, reason: str) -> VmDecision:
    _, floor, _, _, target, _ = vm_levels(vm, config)
    return VmDecision(
        name=vm.name,
        current=vm.assigned,
        assigned=assigned,
        floor=floor,
        demand=vm.demand,
        target=target,
        pressure=pressure_of(assigned, vm.demand),
        status=status_of(assigned, vm.demand, target),
        reason=reason,
        in_flight=vm.in_flight_to is not None,
    )


def _held(vm: VmState) -> str | None:
    if vm.in_flight_to is not None:
        return "held: change in flight"
    if vm.demand is None:
        return "held: demand unknown"
    return None


def _finish(node: NodeState, config: BalanceConfig, decisions: list[VmDecision], name: str) -> NodePlan:
    floors = sum(d.floor for d in decisions)
    total = sum(d.assigned for d in decisions)
    over = floors > node.pool
    if over:
        reason = (
            f"{name}: over-subscribed: floors {format_bytes(floors)} exceed pool {format_bytes(node.pool)}"
        )
    else:
        reason = f"{name}: {format_bytes(total)} of {format_bytes(node.pool)} assigned"
    return NodePlan(node.name, node.pool, tuple(decisions), over, reason)


def plan_static(node: NodeState, config: BalanceConfig, now: float) -> NodePlan:
    """KubeVirt today: guest memory never changes after start."""
    decisions = [_decide(vm, config, vm.assigned, "static: memory fixed at start") for vm in node.vms]
    return _finish(node, config, decisions, "static")


def plan_xen(node: NodeState, config: BalanceConfig, now: float) -> NodePlan:
    """squeezed: one fraction of every VM's [dynamic-min, dynamic-max] range, as much as fits."""
    levels = [vm_levels(vm, config) for vm in node.vms]
    fixed = 0
    free_floor = 0
    span = 0
    for vm, (_, floor, top, _, _, _) in zip(node.vms, levels, strict=True):
        if _held(vm) is not None:
            fixed += max(vm.assigned, vm.in_flight_to or 0)
        else:
            free_floor += floor
            span += top - floor
    room = node.pool - config.xen_reserve_bytes - fixed - free_floor
    decisions = []
    for vm, (al, floor, top, _, _, _) in zip(node.vms, levels, strict=True):
        held = _held(vm)
        if held is not None:
            decisions.append(_decide(vm, config, max(vm.assigned, vm.in_flight_to or 0), held))
            continue
        if room <= 0 or span == 0:
            assigned = floor
        elif room >= span:
            assigned = top
        else:
            extra = room * (top - floor) // span
            assigned = floor + extra - extra % al
        decisions.append(_decide(vm, config, assigned, "xen: same fraction of range for every VM"))
    return _finish(node, config, decisions, "xen")


def plan_proxmox(node: NodeState, config: BalanceConfig, now: float) -> NodePlan:
    """PVE auto-ballooning, ``step_s / period`` cycles of pvestatd's algorithm."""
    vms = node.vms
    levels = [vm_levels(vm, config) for vm in vms]
    balloon = [max(vm.assigned, vm.in_flight_to or 0) for vm in vms]
    mins = [lv[1] for lv in levels]
    maxs = [lv[2] for lv in levels]
    shares = [20 * vm.limits.priority for vm in vms]
    managed = [i for i, vm in enumerate(vms) if _held(vm) is None and shares[i] > 0]
    target_used = node.pool * config.proxmox_target_percent // 100
    cycles = max(1, int(config.step_s // config.proxmox_period_s))
    for _ in range(cycles):
        used = 0
        for i, vm in enumerate(vms):
            used += balloon[i] if vm.demand is None or vm.demand > balloon[i] else vm.demand
        goal = target_used - used
        if -_PROXMOX_IDLE <= goal <= _PROXMOX_IDLE:
            break
        roomy = [i for i in managed if _has_free(balloon[i], vms[i].demand, mins[i])]
        pressured = [i for i in managed if i not in set(roomy)]
        start = list(balloon)
        first = pressured if goal > 0 else roomy
        rest = _proxmox_change(first, goal, start, balloon, mins, maxs, shares, config.proxmox_max_change)
        if abs(rest) > _PROXMOX_IDLE:
            _proxmox_change(managed, rest, start, balloon, mins, maxs, shares, config.proxmox_max_change)
        if balloon == start:
            break
    decisions = []
    for i, vm in enumerate(vms):
        held = _held(vm)
        if held is not None or shares[i] == 0:
            decisions.append(_decide(vm, config, balloon[i], held or "proxmox: shares 0, not ballooned"))
            continue
        al = levels[i][0]
        assigned = max(mins[i], balloon[i] - balloon[i] % al)
        decisions.append(_decide(vm, config, assigned, "proxmox: auto-ballooning by shares"))
    return _finish(node, config, decisions, "proxmox")


def _has_free(balloon: int, demand: int | None, minimum: int) -> bool:
    """Proxmox's "enough free memory": free > 25 % of the minimum and not below the minimum."""
    free = balloon - (demand or 0)
    return 4 * free > minimum and balloon >= minimum


def _proxmox_change(
    members: list[int],
    amount: int,
    start: list[int],
    balloon: list[int],
    mins: list[int],
    maxs: list[int],
    shares: list[int],
    max_change: int,
) -> int:
    """Move ``amount`` bytes (sign: direction) over ``members`` by shares; returns what was not moved."""
    rest = amount
    done: set[int] = set()
    repeat = True
    progress = True
    while rest and repeat and progress:
        repeat = False
        progress = False
        active = [i for i in members if i not in done]
        if not active:
            break
        shares_total = sum(shares[i] or _PROXMOX_DEFAULT_SHARES for i in active)
        alloc = sum(balloon[i] - mins[i] for i in active) + rest
        moved = 0
        for i in active:
            desired = mins[i] + alloc * (shares[i] or _PROXMOX_DEFAULT_SHARES) // shares_total
            if desired > maxs[i]:
                desired = maxs[i]
                repeat = True
            elif desired < mins[i]:
                desired = mins[i]
                repeat = True
            if amount > 0 and desired > start[i]:
                new = min(start[i] + max_change, desired)
            elif desired < start[i]:
                new = max(start[i] - max_change, desired)
            else:
                done.add(i)
                continue
            change = new - balloon[i]
            if change:
                balloon[i] = new
                moved += change
                progress = True
                repeat = True
        rest -= moved
    return rest


POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        "dynamem": plan_node,
        "static": plan_static,
        "proxmox": plan_proxmox,
        "xen": plan_xen,
        "oracle": plan_oracle,
    }
)
