"""The balancing rules, one table per rule; the arithmetic of each case is in its comment (sizes in GiB)."""

from __future__ import annotations

import pytest
from conftest import make_node, make_vm

from dynamem.policy import BalanceConfig, GiB, MemoryStatus, MiB, NodeState, VmState, plan_node, plan_oracle
from dynamem.policy.balance import water_fill

CONFIG = BalanceConfig()
# Without grow headroom: the tables of targets, levels and alignment read the ideal sizes directly.
EXACT = BalanceConfig(grow_headroom_percent=0)
HEADROOM = BalanceConfig(grow_headroom_percent=50)


def gib(plan_node_result: object) -> dict[str, float]:
    from dynamem.policy import NodePlan

    assert isinstance(plan_node_result, NodePlan)
    return {d.name: d.assigned / GiB for d in plan_node_result.decisions}


def test_seed_workday_step_by_step() -> None:
    # Step 0: demand 0.5 -> target 0.625 < floor 1 -> 1, 1, 1.
    step0 = plan_node(make_node(*(make_vm(n) for n in ("finance", "sales", "engineering"))), CONFIG, 0)
    assert gib(step0) == {"finance": 1, "sales": 1, "engineering": 1}
    # Step 1: 2.4 / 0.8 = 3; 1.6 / 0.8 = 2; sales stays at its floor: 3 + 1 + 2 = 6 of 8.
    step1 = plan_node(
        make_node(make_vm("finance", demand=2.4), make_vm("sales"), make_vm("engineering", demand=1.6)),
        CONFIG,
        0,
    )
    assert gib(step1) == {"finance": 3, "sales": 1, "engineering": 2}
    assert step1.assigned_total == 6 * GiB
    # Step 2: 1.6 / 0.8 = 2; 2.8 / 0.8 = 3.5; service starts at 1: 2 + 1 + 3.5 + 1 = 7.5 of 8.
    step2 = plan_node(
        make_node(
            make_vm("finance", demand=1.6, assigned=3),
            make_vm("sales"),
            make_vm("engineering", demand=2.8, assigned=2),
            make_vm("service"),
        ),
        CONFIG,
        900,
    )
    assert gib(step2) == {"finance": 2, "sales": 1, "engineering": 3.5, "service": 1}
    assert [d.name for d in step2.changes] == ["finance", "engineering"]  # shrink before grow


@pytest.mark.parametrize(
    ("vm", "expected"),
    [
        # floor = max(minimum 1, boot 1) = 1; demand 0.2 -> target 0.25 -> 1.
        pytest.param(make_vm(demand=0.2), 1, id="floor-minimum"),
        # minimum 0.5 but booted with 2 while running: KubeVirt cannot go below 2.
        pytest.param(make_vm(demand=0.2, minimum=0.5, startup=1, boot=2, assigned=2), 2, id="floor-boot"),
        # minimum 0.5 < startup 1, booted at 0.5? boot = startup = 1 here, so floor 1.
        pytest.param(make_vm(demand=0.2, minimum=0.5, assigned=1), 1, id="floor-boot-default"),
        # demand 1 with 20 %: 1 / 0.8 = 1.25.
        pytest.param(make_vm(demand=1), 1.25, id="buffer-20"),
        # demand 1 with 50 %: 1 / 0.5 = 2.
        pytest.param(make_vm(demand=1, buffer=50), 2, id="buffer-50"),
        # demand 3.6 / 0.8 = 4.5, capped at maximum 4.
        pytest.param(make_vm(demand=3.6), 4, id="capped-at-maximum"),
        # demand 5 > maximum 4: demand level and target both capped at 4.
        pytest.param(make_vm(demand=5), 4, id="demand-above-maximum"),
    ],
)
def test_floor_and_target(vm: VmState, expected: float) -> None:
    plan = plan_node(make_node(vm), EXACT, 0)
    assert gib(plan) == {"vm": expected}
    assert plan.decisions[0].target == round(expected * GiB)


@pytest.mark.parametrize(
    ("vms", "pool", "expected"),
    [
        # Floors 1 + 1; demand levels 3 + 3 (=6) need 4 more, pool 6 leaves 4: both get demand, no buffer
        # (targets 3.75 each would need 1.5 more).
        pytest.param(
            [make_vm("a", demand=3), make_vm("b", demand=3)], 6, {"a": 3, "b": 3}, id="demand-before-buffer"
        ),
        # Demand levels 3 + 1.5 fit 5.5 with 1 to spare; buffers need 0.75 (a) and 1.5 (b): water-filled, 0.5
        # each. One fill straight to the targets (3.75 and 3) would give each floor 1.75 more: a 2.75, below
        # its demand.
        pytest.param(
            [make_vm("a", demand=3), make_vm("b", demand=1.5, buffer=50)],
            5.5,
            {"a": 3.5, "b": 2},
            id="demand-before-buffer-unequal",
        ),
        # Buffer level short: room after demand = 7 - 6 = 1, needs 0.75 + 0.75: equal priority, 0.5 each.
        pytest.param(
            [make_vm("a", demand=3), make_vm("b", demand=3)],
            7,
            {"a": 3.5, "b": 3.5},
            id="buffer-shared-equally",
        ),
        # Demand level short: floors 2, room 3, needs 2 + 2; weights 75:25 -> shares 2.25 -> capped 2, rest 1.
        pytest.param(
            [make_vm("a", demand=3, priority=75), make_vm("b", demand=3, priority=25)],
            5,
            {"a": 3, "b": 2},
            id="priority-water-filling",
        ),
        # Demand short: weights 50:50, room 1 -> 0.5 each on top of floors.
        pytest.param(
            [make_vm("a", demand=3), make_vm("b", demand=3)], 3, {"a": 1.5, "b": 1.5}, id="equal-weights"
        ),
        # Priority 0 keeps its floor while a weighted VM still lacks memory: room 1 all to b (need 2).
        pytest.param(
            [make_vm("a", demand=3, priority=0), make_vm("b", demand=3)],
            3,
            {"a": 1, "b": 2},
            id="priority-zero",
        ),
        # Spare stays unassigned: 1.25 + 1 = 2.25 of 8.
        pytest.param(
            [make_vm("a", demand=1), make_vm("b", demand=0.5)], 8, {"a": 1.25, "b": 1}, id="spare-unassigned"
        ),
    ],
)
def test_levels_and_shortage(vms: list[VmState], pool: float, expected: dict[str, float]) -> None:
    plan = plan_node(make_node(*vms, pool=pool), EXACT, 0)
    assert gib(plan) == expected
    assert plan.assigned_total <= pool * GiB


def test_over_subscribed_when_floors_exceed_pool() -> None:
    # Floors 2 + 2 + 2 = 6 > pool 5: every VM at its floor, the plan says so.
    vms = [make_vm(n, startup=2, demand=3, assigned=3) for n in "abc"]
    plan = plan_node(make_node(*vms, pool=5), CONFIG, 0)
    assert plan.over_subscribed
    assert gib(plan) == {"a": 2, "b": 2, "c": 2}
    assert "over-subscribed" in plan.reason and "exceed pool 5Gi by 1Gi" in plan.reason


@pytest.mark.parametrize(
    ("vm", "expected", "reason"),
    [
        # target 1.25, current 1.3: 51Mi below the 128Mi band -> stays.
        pytest.param(make_vm(demand=1, assigned=1.3), 1.3, "within dead band", id="small-shrink-kept"),
        # target 1.25, current 1.2 and demand 1 met: grow of 51Mi suppressed.
        pytest.param(make_vm(demand=1, assigned=1.2), 1.2, "within dead band", id="small-grow-kept"),
        # current 0.98 below demand 1: grow even though the change is small.
        pytest.param(
            make_vm(demand=1, assigned=0.98, minimum=0.5, boot=0.5), 1.25, "grow to meet demand", id="below"
        ),
        # target 1.25, current 2: 768Mi > max(128Mi, 5 % of 2Gi = 102Mi) -> shrink.
        pytest.param(make_vm(demand=1, assigned=2), 1.25, "shrink: demand fell", id="large-shrink"),
        # 5 % of 40Gi = 2Gi band: target 33.75 vs current 35 (1.25 below) -> kept.
        pytest.param(make_vm(demand=27, assigned=35, maximum=64), 35, "within dead band", id="percent-band"),
    ],
)
def test_dead_band(vm: VmState, expected: float, reason: str) -> None:
    decision = plan_node(make_node(vm, pool=64), CONFIG, 0).decisions[0]
    assert decision.assigned == round(expected * GiB)
    assert decision.reason == reason


def test_dead_band_gives_way_when_room_is_needed() -> None:
    # a: target 1.25, holds 1.3 (within band). b needs 6.75 -> 6 demand + buffer; pool 7.5:
    # ideal a 1.25 + b 6.25 (buffer shared: room after demand 7.5 - 7 = 0.5, a's 0.25 all met first).
    # b is below its demand (5.5 < 6) so it grows to 6.25; keeping a at 1.3 would need 7.55 > 7.5,
    # so a shrinks to make room although its change is inside the dead band.
    a = make_vm("a", demand=1, assigned=1.3)
    b = make_vm("b", demand=6, assigned=5.5, maximum=8)
    plan = plan_node(make_node(a, b, pool=7.5), CONFIG, 0)
    decisions = plan.by_name()
    assert decisions["a"].assigned == round(1.25 * GiB)
    assert decisions["a"].reason == "shrink to make room"
    assert plan.assigned_total <= round(7.5 * GiB)


def test_no_buffer_kept_while_a_neighbour_is_short() -> None:
    # pool 4: a holds 1.3 with demand 1 (buffer within band), b needs 3 of demand: floors 2, room 2,
    # demand needs 0 + 2 -> b gets 3 exactly, a must drop to its demand level 1.
    a = make_vm("a", demand=1, assigned=1.3)
    b = make_vm("b", demand=3.2, assigned=2.6)
    plan = plan_node(make_node(a, b, pool=4), CONFIG, 0)
    d = plan.by_name()
    assert d["b"].assigned < d["b"].demand  # type: ignore[operator]
    assert d["a"].assigned == GiB


def test_oracle_has_no_dead_band() -> None:
    plan = plan_oracle(make_node(make_vm(demand=1, assigned=1.3)), CONFIG, 0)
    assert plan.decisions[0].assigned == round(1.25 * GiB)


@pytest.mark.parametrize(
    ("vm", "assigned", "reason", "in_changes"),
    [
        # No metrics: hold at 2, never shrink blind.
        pytest.param(make_vm(demand=None, assigned=2), 2, "held: demand unknown", False, id="unknown-demand"),
        # ... but within its limits: a minimum raised above it, a maximum lowered below it
        pytest.param(
            make_vm(demand=None, assigned=1, startup=1.5, boot=1),
            1.5,
            "held: demand unknown; grown to its floor",
            True,
            id="unknown-demand-below-floor",
        ),
        pytest.param(
            make_vm(demand=None, assigned=3, maximum=2),
            2,
            "held: demand unknown; shrunk to its maximum",
            True,
            id="unknown-demand-above-maximum",
        ),
        # A grow to 3 is in flight: counted at 3, not re-issued.
        pytest.param(
            make_vm(demand=3, assigned=2, in_flight_to=3), 3, "held: change in flight", False, id="flight"
        ),
        # Changed 30 s ago with a 60 s cooldown: held.
        pytest.param(
            make_vm(demand=2.4, assigned=1, last_change_at=970),
            1,
            "held: cooldown (30s left)",
            False,
            id="cd",
        ),
        # Changed 90 s ago: cooldown over, grows to 3.
        pytest.param(
            make_vm(demand=2.4, assigned=1, last_change_at=910), 3, "grow to meet demand", True, id="cd-over"
        ),
    ],
)
def test_holds(vm: VmState, assigned: float, reason: str, in_changes: bool) -> None:
    plan = plan_node(make_node(vm), BalanceConfig(cooldown_s=60), 1000)
    assert plan.decisions[0].assigned == assigned * GiB
    assert plan.decisions[0].reason == reason
    assert bool(plan.changes) is in_changes


def test_held_vms_count_in_the_pool() -> None:
    # Unknown-demand VM holds 5 of 7; b wants 2.4 / 0.8 = 3 and gets the 2 left.
    vms = (make_vm("a", demand=None, assigned=5, maximum=6), make_vm("b", demand=2.4))
    plan = plan_node(make_node(*vms, pool=7), CONFIG, 0)
    assert gib(plan) == {"a": 5, "b": 2}


def test_change_limit_keeps_shrinks_first_and_fits() -> None:
    # Ideal: a 3 -> 1.25 (shrink), b 1 -> 3, c 1 -> 3 (grows of the same size). Limit 2: the shrink and one
    # grow, c's for its priority though b comes first by name.
    vms = [
        make_vm("a", demand=1, assigned=3),
        make_vm("b", demand=2.4),
        make_vm("c", demand=2.4, priority=75),
    ]
    plan = plan_node(make_node(*vms, pool=8), BalanceConfig(max_changes_per_node=2), 0)
    d = plan.by_name()
    assert [x.name for x in plan.changes] == ["a", "c"]  # c first: higher priority
    assert d["c"].assigned == 3 * GiB
    assert d["b"].reason == "deferred: change limit reached" and d["b"].assigned == GiB
    assert plan.assigned_total <= 8 * GiB


@pytest.mark.parametrize(
    ("vm", "expected"),
    [
        # 1Gi hugepages: target 1.3 / 0.8 = 1.625 -> aligned down to 1Gi steps; demand level 1.3 -> up to 2.
        pytest.param(make_vm(demand=1.3, hugepage=GiB), 2 * GiB, id="hugepage-1Gi"),
        # 2Mi alignment: demand 1000Mi+1 byte -> level rounds up to 1002Mi; target 1250Mi+ -> 1250Mi.
        pytest.param(make_vm(demand=(1000 * MiB + 1) / GiB, minimum=0.5, boot=0.5), 1250 * MiB, id="2Mi"),
    ],
)
def test_alignment(vm: VmState, expected: int) -> None:
    assert plan_node(make_node(vm), EXACT, 0).decisions[0].assigned == expected


@pytest.mark.parametrize(
    ("vm", "status", "pressure"),
    [
        # 0.5 used of 1: OK, pressure 50.
        pytest.param(make_vm(demand=0.5), MemoryStatus.OK, 50, id="ok"),
        # pool 1.2 short of target 1.25 for demand 1: Low, pressure round(100 / 1.2) = 83.
        pytest.param(make_vm(demand=1), MemoryStatus.LOW, 83, id="low"),
        # demand 5 > maximum 4: Warning, pressure 125.
        pytest.param(make_vm(demand=5), MemoryStatus.WARNING, 125, id="warning"),
    ],
)
def test_status_and_pressure(vm: VmState, status: MemoryStatus, pressure: int) -> None:
    pool = 1.2 if status is MemoryStatus.LOW else 8
    decision = plan_node(make_node(vm, pool=pool), CONFIG, 0).decisions[0]
    assert (decision.status, decision.pressure) == (status, pressure)


@pytest.mark.parametrize(
    ("needs", "weights", "available", "expected"),
    [
        # Enough for all.
        pytest.param([4, 4], [1, 1], 10, [4, 4], id="fits"),
        # 6 by 1:2 -> 2 and 4.
        pytest.param([10, 10], [1, 2], 6, [2, 4], id="proportional"),
        # Small need saturates, the rest flows on: a 1 (of fair 3), b gets 5.
        pytest.param([1, 10], [1, 1], 6, [1, 5], id="saturate-then-share"),
        # Weight 0 gets only leftovers once weighted needs are met: 3 to a, 2 to b.
        pytest.param([3, 10], [1, 0], 5, [3, 2], id="zero-weight-last"),
    ],
)
def test_water_fill(needs: list[int], weights: list[int], available: int, expected: list[int]) -> None:
    assert water_fill(needs, weights, [1] * len(needs), available) == expected


def test_water_fill_units() -> None:
    # 5 shared 1:1 in units of 2: 2.5 each -> 2 each, 1 left over (less than a unit).
    assert water_fill([10, 10], [1, 1], [2, 2], 5) == [2, 2]


def test_plan_is_pure_and_deterministic() -> None:
    node: NodeState = make_node(make_vm("a", demand=3), make_vm("b", demand=3, priority=75), pool=5)
    assert plan_node(node, CONFIG, 0) == plan_node(node, CONFIG, 0)


@pytest.mark.parametrize(
    ("vm", "expected", "reason"),
    [
        # target 1.25, holds 1.5: excess 256Mi >= dead band 128Mi but < shrink band max(512Mi, 25 % of 1.25
        # = 320Mi) = 512Mi -> kept.
        pytest.param(
            make_vm(demand=1, assigned=1.5), 1.5, "above target, within shrink band", id="excess-kept"
        ),
        # target 1.25, holds 1.875: excess 640Mi >= 512Mi -> shrinks to the target.
        pytest.param(make_vm(demand=1, assigned=1.875), 1.25, "shrink: demand fell", id="excess-released"),
        # target 3.2 / 0.8 = 4, band max(512Mi, 25 % of 4 = 1Gi) = 1Gi; holds 4.75: excess 0.75 -> kept.
        pytest.param(
            make_vm(demand=3.2, assigned=4.75, maximum=8),
            4.75,
            "above target, within shrink band",
            id="percent-kept",
        ),
        # Same, holds 5.25: excess 1.25 >= 1 -> shrinks to 4.
        pytest.param(
            make_vm(demand=3.2, assigned=5.25, maximum=8), 4, "shrink: demand fell", id="percent-released"
        ),
        # Above maximum 4 (settings lowered): shrinks whatever the band.
        pytest.param(make_vm(demand=3.2, assigned=4.25), 4, "shrink to maximum", id="above-maximum"),
    ],
)
def test_shrink_band(vm: VmState, expected: float, reason: str) -> None:
    decision = plan_node(make_node(vm, pool=64), CONFIG, 0).decisions[0]
    assert decision.assigned == round(expected * GiB)
    assert decision.reason == reason


def test_shrink_band_gives_way_when_room_is_needed() -> None:
    # a holds 1.5 for target 1.25 (kept alone); b demand 2.4 holds 1 -> wants 3. Pool 4.5: 1.5 + 3 = 4.5 fits,
    # so a keeps its excess; pool 4.25: 4.5 > 4.25, a's excess is needed and a shrinks to 1.25.
    a = make_vm("a", demand=1, assigned=1.5)
    b = make_vm("b", demand=2.4)
    assert gib(plan_node(make_node(a, b, pool=4.5), CONFIG, 0)) == {"a": 1.5, "b": 3}
    plan = plan_node(make_node(a, b, pool=4.25), CONFIG, 0)
    assert gib(plan) == {"a": 1.25, "b": 3}
    assert plan.by_name()["a"].reason == "shrink to make room"


@pytest.mark.parametrize(
    ("vm", "pool", "expected", "reason"),
    [
        # demand 1.2 crept into the buffer of 1.25: target 1.5, headroom 50 % of the shrink band
        # max(512Mi, 25 % of 1.5 = 384Mi) = 256Mi -> 1.75.
        pytest.param(
            make_vm(demand=1.2, assigned=1.25), 64, 1.75, "grow to restore buffer, with headroom", id="creep"
        ),
        # Below its demand (a jump, the seed's Finance): exactly the target 2.4 / 0.8 = 3, no headroom.
        pytest.param(make_vm(demand=2.4), 64, 3, "grow to meet demand", id="jump-exact"),
        # demand 3 in 3.2: target 3.75, headroom 50 % of max(512Mi, 960Mi) = 480Mi, capped at maximum 4.
        pytest.param(
            make_vm(demand=3, assigned=3.2), 64, 4, "grow to restore buffer, with headroom", id="max-capped"
        ),
        # Pool 1.625: target 1.5 leaves 128Mi spare; the headroom takes only that.
        pytest.param(
            make_vm(demand=1.2, assigned=1.25),
            1.625,
            1.625,
            "grow to restore buffer, with headroom",
            id="spare-capped",
        ),
        # Pool 1.5: no spare, exactly the target.
        pytest.param(make_vm(demand=1.2, assigned=1.25), 1.5, 1.5, "grow to restore buffer", id="no-spare"),
    ],
)
def test_grow_headroom(vm: VmState, pool: float, expected: float, reason: str) -> None:
    decision = plan_node(make_node(vm, pool=pool), HEADROOM, 0).decisions[0]
    assert decision.assigned == round(expected * GiB)
    assert decision.reason == reason


def test_grow_headroom_goes_to_priority_first() -> None:
    # Both creep (demand 1.2 in 1.25 -> target 1.5, headroom 256Mi); pool 3.25 leaves 256Mi spare after both
    # targets: all of it to the high-priority VM.
    low = make_vm("low", demand=1.2, assigned=1.25, priority=25)
    high = make_vm("high", demand=1.2, assigned=1.25, priority=75)
    assert gib(plan_node(make_node(low, high, pool=3.25), HEADROOM, 0)) == {"low": 1.5, "high": 1.75}


def test_grow_headroom_is_off_by_default() -> None:
    # One set of defaults (operator and simulators): no headroom, exactly the target 1.5.
    assert BalanceConfig().grow_headroom_percent == 0
    assert gib(plan_node(make_node(make_vm(demand=1.2, assigned=1.25), pool=64), CONFIG, 0)) == {"vm": 1.5}


SHARED = "within shrink band: node shared out, a move costs two migrations"


@pytest.mark.parametrize(
    ("vms", "pool", "expected", "reasons"),
    [
        # Short: floors 2, room 3 for needs 2 + 2 -> ideal 2.5 each. a holds 2.75, b 2.25: moving 256Mi
        # (past the dead band, inside the 512Mi shrink band) between two paging VMs costs two migrations and
        # does not lower the paging (1 GiB unmet either way) -> kept.
        pytest.param(
            [make_vm("a", demand=3, assigned=2.75), make_vm("b", demand=3, assigned=2.25)],
            5,
            {"a": 2.75, "b": 2.25},
            [SHARED, SHARED],
            id="short-kept",
        ),
        # Short, a holds 2.375 and b its share 2.5: 128Mi idle in the pool -> it goes to a (paging).
        pytest.param(
            [make_vm("a", demand=3, assigned=2.375), make_vm("b", demand=3, assigned=2.5)],
            5,
            {"a": 2.5, "b": 2.5},
            ["grow toward demand: node short of memory", "short of memory: node pool exhausted"],
            id="short-idle-filled",
        ),
        # Tight: demand 3 + 3 met, buffers share 7 - 6 = 1 -> ideal 3.5 each; a 3.75, b 3.25 (256Mi off, no
        # free memory): kept.
        pytest.param(
            [make_vm("a", demand=3, assigned=3.75), make_vm("b", demand=3, assigned=3.25)],
            7,
            {"a": 3.75, "b": 3.25},
            [SHARED, SHARED],
            id="tight-kept",
        ),
        # Tight, b at 3.25 and 256Mi free: the grow needs no shrink elsewhere and clears the dead band
        # max(128Mi, 5 % of 3.25 = 166Mi) -> b grows to 3.5.
        pytest.param(
            [make_vm("a", demand=3, assigned=3.5), make_vm("b", demand=3, assigned=3.25)],
            7,
            {"a": 3.5, "b": 3.5},
            ["buffer short: node pool exhausted", "grow to restore buffer"],
            id="tight-free-grow",
        ),
        # Tight, a's demand 3.375 is above its 3.25: levels 3.375 + 3, buffers share 0.625 -> 0.3125 each:
        # a 3.6875 (must grow: below demand), b 3.3125; b's 448Mi shrink is inside its band but the plan
        # would need 3.6875 + 3.75 = 7.4375 > 7, so b gives way.
        pytest.param(
            [make_vm("a", demand=3.375, assigned=3.25), make_vm("b", demand=3, assigned=3.75)],
            7,
            {"a": 3.6875, "b": 3.3125},
            ["grow to meet demand", "shrink to make room"],
            id="tight-below-demand-grows",
        ),
    ],
)
def test_shared_out_node_band(
    vms: list[VmState], pool: float, expected: dict[str, float], reasons: list[str]
) -> None:
    plan = plan_node(make_node(*vms, pool=pool), CONFIG, 0)
    assert gib(plan) == expected
    assert [d.reason for d in plan.decisions] == reasons
    assert plan.assigned_total <= pool * GiB
    # The oracle moves the memory, and pages exactly as much.
    oracle = plan_oracle(make_node(*vms, pool=pool), CONFIG, 0)
    unmet = sum(max(0, (d.demand or 0) - d.assigned) for d in plan.decisions)
    assert unmet == sum(max(0, (d.demand or 0) - d.assigned) for d in oracle.decisions)
