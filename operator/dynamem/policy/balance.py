"""The balancing algorithm: how one node's pool is shared between its VMs in one round.

Hyper-V's Dynamic Memory (the seed) hands memory out by need: every VM first gets its floor, then the memory
its guest uses, then a buffer on top (target = demand / (1 - buffer)); priority decides who gets memory first
when there is not enough. We keep that shape as three *levels*, each filled for every VM before the next level
gets anything, so no VM keeps a buffer while a neighbour is short of the memory it uses:

1. floor = max(minimum, guestAtBoot): KubeVirt cannot take a running VM below what it booted with;
2. demand, capped at the maximum;
3. target = ceil(demand x 100 / (100 - buffer)), clamped to [floor, maximum].

A level that cannot be filled is shared by weighted water-filling (each VM's share proportional to its
priority, capped at its need; priority 0 gets only what nobody with a weight needs). Memory left after the
third level stays unassigned: it is the room for VMs that start and for bursts.

KubeVirt changes guest memory by live migration, so each change is expensive. After the ideal allocation is
known, hysteresis keeps VMs where they are when a change is not worth a migration:

- a dead band (default max(128Mi, 5 % of the current assignment)) for small grows and shrinks;
- a wider shrink band (default max(512Mi, 25 % of the target)) for a VM above its target on a node where
  everything fits: memory is handed out quickly and taken back slowly (asymmetric hysteresis);
- on a tight or short node the pool is shared out, so memory only moves from one VM to another and every move
  costs two migrations: shares that moved by less than the shrink band are kept;
- a VM whose demand crept into its buffer grows a little past its target (half its shrink band by default)
  when spare memory allows, so a steady rise needs fewer steps.

None of this costs paging: a VM below its demand on a node with room always grows; kept memory is given back,
largest first, when the plan would not fit or a neighbour is below its demand (no VM keeps buffer while a
neighbour pages); a VM outside [floor, maximum] always moves; and on a short node the memory the hysteresis
leaves idle goes to the paging VMs furthest below their share, so the node pages no more than the ideal plan
(``plan_oracle``, no hysteresis). Cooldowns, changes already in flight and a per-node change limit are inputs
too, so the operator's plan is the simulator's plan.

Speed: the common round (everything fits) is a few integer operations per VM; water-filling sorts only the
VMs of a short level. All arithmetic is on ints (bytes), exactly: no floats, no Decimals in the loop, so the
seed's numbers come out to the byte. Alignment: each VM to max(config alignment, its hugepage size); floors
round up, everything else rounds down.
"""

from __future__ import annotations

from fractions import Fraction

from dynamem.policy.model import (
    BalanceConfig,
    MemoryStatus,
    NodePlan,
    NodeState,
    VmDecision,
    VmLimits,
    VmState,
    format_bytes,
)

__all__ = ["levels_of", "plan_node", "plan_oracle", "pressure_of", "status_of", "vm_levels", "water_fill"]

_OK = MemoryStatus.OK
_LOW = MemoryStatus.LOW
_WARNING = MemoryStatus.WARNING


def _held_within(reason: str, current: int, hold: int) -> str:
    """The reason of a held VM, which is still brought within its floor and maximum (a minimum or boot size
    raised above it, a maximum lowered below it: limits hold whatever the demand)."""
    if hold > current:
        return f"{reason}; grown to its floor"
    if hold < current:
        return f"{reason}; shrunk to its maximum"
    return reason


def vm_levels(vm: VmState, config: BalanceConfig) -> tuple[int, int, int, int, int, int]:
    """(alignment, floor, maximum, demand level, target, raw target) of one VM, aligned, in bytes.

    With unknown demand, the demand level and target are the floor (raw target 0).
    """
    return levels_of(vm.limits, vm.boot_memory, vm.hugepage, vm.demand, config)


def levels_of(
    lim: VmLimits, boot: int | None, hugepage: int, demand: int | None, config: BalanceConfig
) -> tuple[int, int, int, int, int, int]:
    """:func:`vm_levels` of a VM with these limits, boot memory, page size and demand (no VmState made)."""
    al = config.alignment if hugepage <= config.alignment else hugepage
    floor = lim.minimum
    if boot is not None and boot > floor:
        floor = boot
    floor = -(-floor // al) * al
    top = lim.maximum // al * al
    if top < floor:
        top = floor
    if demand is None:
        return al, floor, top, floor, floor, 0
    level = -(-demand // al) * al
    if level < floor:
        level = floor
    elif level > top:
        level = top
    raw = -(-demand * 100 // (100 - lim.buffer))
    target = raw // al * al
    if target > top:
        target = top
    if target < level:
        target = level
    return al, floor, top, level, target, raw


def status_of(assigned: int, demand: int | None, target: int) -> MemoryStatus:
    """Warning below demand, Low below target, else OK (unknown demand: OK, nothing to compare)."""
    if demand is None:
        return _OK
    if assigned < demand:
        return _WARNING
    if assigned < target:
        return _LOW
    return _OK


def pressure_of(assigned: int, demand: int | None) -> int | None:
    """round(100 x demand / assigned), halves up, exact."""
    if demand is None or assigned <= 0:
        return None
    return (200 * demand + assigned) // (2 * assigned)


def water_fill(needs: list[int], weights: list[int], units: list[int], available: int) -> list[int]:
    """Share ``available`` bytes between needs, proportionally to weight, each capped at its need.

    Exact and aligned: shares are multiples of each entry's unit and sum to at most ``available``. Entries
    with weight 0 get only what is left once every weighted entry is satisfied (then they share equally).
    Ties go to the higher weight, then to the earlier entry.
    """
    count = len(needs)
    grants = [0] * count
    if available <= 0:
        return grants
    if sum(needs) <= available:
        return list(needs)
    weighted = [i for i in range(count) if needs[i] > 0 and weights[i] > 0]
    left = _fill(weighted, needs, weights, units, available, grants)
    if left > 0:
        zero = [i for i in range(count) if needs[i] > 0 and weights[i] == 0]
        _fill(zero, needs, [1] * count, units, left, grants)
    return grants


def _fill(
    members: list[int],
    needs: list[int],
    weights: list[int],
    units: list[int],
    available: int,
    grants: list[int],
) -> int:
    """Weighted water-filling over ``members``; writes ``grants``, returns the bytes left over."""
    if not members:
        return available
    weight = sum(weights[i] for i in members)
    # Saturate, smallest need per weight first, while a member's need is below its fair share.
    members = sorted(members, key=lambda i: Fraction(needs[i], weights[i]))
    rest = 0
    for rank, i in enumerate(members):
        if needs[i] * weight <= available * weights[i]:
            grants[i] = needs[i]
            available -= needs[i]
            weight -= weights[i]
        else:
            rest = rank
            break
    else:
        return available
    short = members[rest:]
    spent = 0
    for i in short:
        share = available * weights[i] // weight
        share -= share % units[i]
        grants[i] = share
        spent += share
    left = available - spent
    # Alignment left a little over: one more unit each, highest weight first.
    for i in sorted(short, key=lambda i: -weights[i]):
        unit = units[i]
        if left >= unit and grants[i] + unit <= needs[i]:
            grants[i] += unit
            left -= unit
    return left


def plan_node(node: NodeState, config: BalanceConfig, now: float) -> NodePlan:
    """dynamem's plan for one node: levels, water-filling, then the dead band and the limits."""
    return _plan(node, config, now, churn_control=True)


def plan_oracle(node: NodeState, config: BalanceConfig, now: float) -> NodePlan:
    """The bound: the same levels with no dead band, no cooldown and no change limit."""
    return _plan(node, config, now, churn_control=False)


def _plan(node: NodeState, config: BalanceConfig, now: float, *, churn_control: bool) -> NodePlan:
    vms = node.vms
    pool = node.pool
    count = len(vms)
    units = [0] * count
    floors = [0] * count
    tops = [0] * count
    levels = [0] * count
    targets = [0] * count
    raws = [0] * count
    current = [0] * count
    chosen = [0] * count
    held: dict[int, str] = {}
    in_flight: set[int] = set()
    plannable: list[int] = []
    held_total = 0
    cooldown = config.cooldown_s if churn_control else 0.0

    for i, vm in enumerate(vms):
        al, floor, top, level, target, raw = vm_levels(vm, config)
        units[i] = al
        floors[i] = floor
        tops[i] = top
        levels[i] = level
        targets[i] = target
        raws[i] = raw
        cur = vm.assigned
        current[i] = cur
        if vm.in_flight_to is not None:
            hold = cur if cur > vm.in_flight_to else vm.in_flight_to
            held[i] = "held: change in flight"
            in_flight.add(i)
        elif vm.demand is None:
            hold = cur if cur > floor else floor
            if hold > top:
                hold = top
            held[i] = _held_within("held: demand unknown", cur, hold)
        elif cooldown > 0.0 and vm.last_change_at is not None and now - vm.last_change_at < cooldown:
            hold = cur if cur > floor else floor
            if hold > top:
                hold = top
            held[i] = _held_within(
                f"held: cooldown ({cooldown - (now - vm.last_change_at):.0f}s left)", cur, hold
            )
        else:
            plannable.append(i)
            continue
        chosen[i] = hold
        held_total += hold

    # Level 1: floors.
    floor_total = 0
    for i in plannable:
        floor_total += floors[i]
    room = pool - held_total - floor_total
    over_subscribed = room < 0
    short_level = 0
    if over_subscribed:
        for i in plannable:
            chosen[i] = floors[i]
    else:
        # Level 2: demand (capped at maximum).
        need2 = 0
        for i in plannable:
            need2 += levels[i] - floors[i]
        if need2 <= room:
            room -= need2
            need3 = 0
            for i in plannable:
                need3 += targets[i] - levels[i]
            if need3 <= room:
                # Level 3 fits: everyone gets its target.
                for i in plannable:
                    chosen[i] = targets[i]
            else:
                short_level = 3
                grants = water_fill(
                    [targets[i] - levels[i] for i in plannable],
                    [vms[i].limits.priority for i in plannable],
                    [units[i] for i in plannable],
                    room,
                )
                for k, i in enumerate(plannable):
                    chosen[i] = levels[i] + grants[k]
        else:
            short_level = 2
            grants = water_fill(
                [levels[i] - floors[i] for i in plannable],
                [vms[i].limits.priority for i in plannable],
                [units[i] for i in plannable],
                room,
            )
            for k, i in enumerate(plannable):
                chosen[i] = floors[i] + grants[k]

    ideal = chosen[:]
    released: set[int] = set()
    deferred: set[int] = set()
    widened: set[int] = set()
    if churn_control and not over_subscribed:
        _hysteresis(
            plannable, config, pool, held_total, short_level, vms, units, current, ideal, chosen,
            floors, tops, levels, targets, released, widened,
        )  # fmt: skip
        limit = config.max_changes_per_node
        if limit is not None:
            _limit_changes(plannable, limit, pool, held_total, current, chosen, levels, vms, deferred)

    decisions = []
    total = 0
    for i, vm in enumerate(vms):
        assigned = chosen[i]
        total += assigned
        demand = vm.demand
        target = targets[i]
        reason = held.get(i)
        if reason is None:
            reason = _reason(
                i, current[i], assigned, ideal[i], floors[i], tops[i], levels[i], target, raws[i],
                vm.limits.priority, over_subscribed, i in released, i in deferred, i in widened,
            )  # fmt: skip
        decisions.append(
            VmDecision(
                vm.name,
                current[i],
                assigned,
                floors[i],
                demand,
                target,
                None if demand is None or assigned <= 0 else (200 * demand + assigned) // (2 * assigned),
                _WARNING if demand is not None and assigned < demand else _LOW if assigned < target else _OK,
                reason,
                i in in_flight,
            )
        )
    if over_subscribed:
        floors_total = held_total + floor_total
        summary = (
            f"over-subscribed: floors {format_bytes(floors_total)} exceed pool {format_bytes(pool)} "
            f"by {format_bytes(floors_total - pool)}; move VMs away"
        )
    elif short_level == 2:
        summary = f"short: demand exceeds pool {format_bytes(pool)}, shared by priority"
    elif short_level == 3:
        summary = f"tight: demand met, buffers shared by priority in pool {format_bytes(pool)}"
    else:
        summary = f"fits: {format_bytes(total)} of {format_bytes(pool)} assigned"
    return NodePlan(node.name, pool, tuple(decisions), over_subscribed, summary)


def _hysteresis(
    plannable: list[int],
    config: BalanceConfig,
    pool: int,
    held_total: int,
    short_level: int,
    vms: tuple[VmState, ...],
    units: list[int],
    current: list[int],
    ideal: list[int],
    chosen: list[int],
    floors: list[int],
    tops: list[int],
    levels: list[int],
    targets: list[int],
    released: set[int],
    widened: set[int],
) -> None:
    """Keep changes that are not worth a live migration from happening; give way when memory is needed.

    - Everything fits: a grow or shrink inside the dead band is not made, and a VM above its full target
      keeps its excess while that is below the shrink band (asymmetric hysteresis).
    - Tight or short (the pool is shared out, so memory moves only from one VM to another and every move
      costs two migrations): a VM whose share moved by less than the shrink band keeps what it has, even
      below its demand when the whole node is short (moving memory between paging VMs does not lower the
      paging).
    - Then the invariants are restored: kept excess is released, largest first, while the plan would not
      fit or while a neighbour is below its demand; a VM below its demand on a node with room always grows;
      and on a short node the memory left idle goes to the kept VMs furthest below their share, so the node
      pages no more than with the ideal plan.
    - Everything fits and a VM grows anyway because its demand crept into its buffer: it gets headroom of
      ``grow_headroom_percent`` of its shrink band above its target, from spare memory, highest priority
      first, so a steady rise needs fewer migrations.
    """
    band_bytes = config.dead_band_bytes
    band_percent = config.dead_band_percent
    wide_bytes = config.shrink_band_bytes
    wide_percent = config.shrink_band_percent
    demand_short = short_level == 2
    fits = short_level == 0
    kept_shrinks: list[int] = []
    kept_grows: list[int] = []
    total = held_total
    for i in plannable:
        want = ideal[i]
        cur = current[i]
        if want != cur and floors[i] <= cur <= tops[i]:
            band = cur * band_percent // 100
            if band < band_bytes:
                band = band_bytes
            if not fits:
                wide = cur * wide_percent // 100
                if wide < wide_bytes:
                    wide = wide_bytes
                if wide > band:
                    if band <= (want - cur if want > cur else cur - want) < wide:
                        widened.add(i)
                    band = wide
            if want > cur:
                if (cur >= levels[i] or demand_short) and want - cur < band:
                    chosen[i] = cur
                    kept_grows.append(i)
            else:
                if fits:
                    wide = want * wide_percent // 100
                    if wide < wide_bytes:
                        wide = wide_bytes
                    if wide > band:
                        if band <= cur - want < wide:
                            widened.add(i)
                        band = wide
                if cur - want < band:
                    chosen[i] = cur
                    kept_shrinks.append(i)
        total += chosen[i]
    if kept_shrinks and (total > pool or demand_short):
        kept_shrinks.sort(key=lambda i: (ideal[i] - current[i], i))
        for i in kept_shrinks:
            if total > pool or (demand_short and current[i] > levels[i]):
                total -= current[i] - ideal[i]
                chosen[i] = ideal[i]
                released.add(i)
                widened.discard(i)
    left = pool - total
    if kept_grows and left > 0 and not fits:
        # Free memory needs no shrink elsewhere: short, it all goes to paging VMs; tight, a buffer grow
        # it pays for is made when it clears the plain dead band.
        kept_grows.sort(key=lambda i: (current[i] - ideal[i], -vms[i].limits.priority, i))
        for i in kept_grows:
            give = left - left % units[i]
            if give > ideal[i] - current[i]:
                give = ideal[i] - current[i]
            if give > 0 and not demand_short:
                band = current[i] * band_percent // 100
                if give < band or give < band_bytes:
                    continue
            if give > 0:
                chosen[i] += give
                left -= give
                widened.discard(i)
    if not fits:
        return
    percent = config.grow_headroom_percent
    if percent <= 0:
        return
    growing = [
        i
        for i in plannable
        if chosen[i] > current[i] and current[i] >= levels[i] and chosen[i] == targets[i] < tops[i]
    ]
    if not growing or left <= 0:
        return
    growing.sort(key=lambda i: (-vms[i].limits.priority, i))
    for i in growing:
        unit = units[i]
        target = targets[i]
        wide = target * wide_percent // 100
        if wide < wide_bytes:
            wide = wide_bytes
        extra = wide * percent // 100
        if extra > tops[i] - target:
            extra = tops[i] - target
        if extra > left:
            extra = left
        extra -= extra % unit
        if extra > 0:
            chosen[i] += extra
            left -= extra


def _limit_changes(
    plannable: list[int],
    limit: int,
    pool: int,
    held_total: int,
    current: list[int],
    chosen: list[int],
    levels: list[int],
    vms: tuple[VmState, ...],
    deferred: set[int],
) -> None:
    """At most ``limit`` changes: the largest shrinks first, then the most urgent grows that fit."""
    moving = [i for i in plannable if chosen[i] != current[i]]
    if len(moving) <= limit:
        return
    shrinks = sorted((i for i in moving if chosen[i] < current[i]), key=lambda i: chosen[i] - current[i])
    grows = sorted(
        (i for i in moving if chosen[i] > current[i]),
        key=lambda i: (current[i] >= levels[i], -vms[i].limits.priority, current[i] - chosen[i]),
    )
    total = held_total + sum(current[i] for i in plannable)
    budget = limit
    keep: set[int] = set()
    for i in shrinks:
        if budget == 0:
            break
        keep.add(i)
        total += chosen[i] - current[i]
        budget -= 1
    for i in grows:
        if budget == 0:
            break
        step = chosen[i] - current[i]
        if total + step <= pool:
            keep.add(i)
            total += step
            budget -= 1
    for i in moving:
        if i not in keep:
            chosen[i] = current[i]
            deferred.add(i)


def _reason(
    i: int,
    cur: int,
    assigned: int,
    ideal: int,
    floor: int,
    top: int,
    level: int,
    target: int,
    raw: int,
    priority: int,
    over_subscribed: bool,
    released: bool,
    deferred: bool,
    widened: bool = False,
) -> str:
    """A short sentence saying why this VM gets what it gets."""
    capped = raw > top and assigned == top
    if deferred:
        return "deferred: change limit reached"
    if assigned > cur:
        if cur < floor:
            return "grow to floor"
        if cur < level:
            return "grow to meet demand" if assigned >= level else "grow toward demand: node short of memory"
        if capped:
            return "grow to restore buffer, capped at maximum"
        return "grow to restore buffer, with headroom" if assigned > target else "grow to restore buffer"
    if assigned < cur:
        if cur > top:
            return "shrink to maximum"
        if over_subscribed:
            return "shrink to floor: node over-subscribed"
        if released or assigned < target:
            return "shrink to make room"
        return "shrink: demand fell"
    if ideal != cur:
        if not widened:
            return "within dead band"
        if ideal < cur and ideal == target:
            return "above target, within shrink band"
        return "within shrink band: node shared out, a move costs two migrations"
    if over_subscribed:
        return "at floor: node over-subscribed"
    if assigned < level:
        if priority == 0 and assigned == floor:
            return "at floor: priority 0 under shortage"
        return "short of memory: node pool exhausted"
    if assigned < target:
        return "buffer short: node pool exhausted"
    if capped:
        return "capped at maximum"
    if assigned == floor and raw <= floor:
        return "at floor"
    return "on target"
