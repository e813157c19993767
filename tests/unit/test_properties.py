"""Invariants of the balancer under random nodes (hypothesis): what must hold whatever the numbers."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamem.policy import BalanceConfig, MiB, NodeState, VmLimits, VmState, plan_node, plan_oracle
from dynamem.policy.balance import vm_levels
from dynamem.policy.cluster import StoppedVm, _starts_fitting

ALIGN = 2 * MiB
CONFIG = BalanceConfig()


@st.composite
def vms(draw: st.DrawFn, name: str) -> VmState:
    units = st.integers  # sizes in 2Mi units
    startup = draw(units(256, 4096))
    minimum = draw(units(128, startup))
    maximum = draw(units(startup, 8192))
    # booted with less than today's startup (an edit since), and running anywhere from there to past today's
    # maximum (lowered since): the grow-to-floor and shrink-to-maximum paths; demand unknown at times (held)
    boot = draw(units(128, startup))
    assigned = draw(units(boot, maximum + maximum // 2))
    demand = draw(st.none() | st.integers(0, 20 << 30))
    limits = VmLimits(
        startup=startup * ALIGN,
        minimum=minimum * ALIGN,
        maximum=maximum * ALIGN,
        buffer=draw(st.integers(5, 95)),
        priority=draw(st.integers(0, 100)),
    )
    return VmState(name, limits, assigned * ALIGN, demand, boot_memory=boot * ALIGN)


@st.composite
def nodes(draw: st.DrawFn) -> NodeState:
    count = draw(st.integers(1, 8))
    members = tuple(draw(vms(f"vm{i}")) for i in range(count))
    pool = draw(st.integers(1 << 30, 96 << 30))
    return NodeState("node", pool, members)


POLICIES = [plan_node, plan_oracle]


@settings(max_examples=400, deadline=None)
@given(nodes())
def test_sum_bounds_and_alignment(node: NodeState) -> None:
    for plan_fn in POLICIES:
        plan = plan_fn(node, CONFIG, 0.0)
        # a VM of unknown demand is held at what it has (brought within its floor and maximum), which counts
        # as its floor
        floors = sum(held(vm) if vm.demand is None else vm_levels(vm, CONFIG)[1] for vm in node.vms)
        assert plan.over_subscribed == (floors > node.pool)
        if not plan.over_subscribed:
            assert plan.assigned_total <= node.pool
        for vm, decision in zip(node.vms, plan.decisions, strict=True):
            _, floor, top, _, _, _ = vm_levels(vm, CONFIG)
            if vm.demand is None:
                assert decision.assigned == held(vm)
                continue
            assert floor <= decision.assigned <= top
            assert decision.assigned % ALIGN == 0


def held(vm: VmState) -> int:
    _, floor, top, _, _, _ = vm_levels(vm, CONFIG)
    return min(max(vm.assigned, floor), top)


@settings(max_examples=400, deadline=None)
@given(nodes())
def test_no_buffer_while_a_neighbour_is_below_demand(node: NodeState) -> None:
    for plan_fn in POLICIES:
        plan = plan_fn(node, CONFIG, 0.0)
        # a VM of unknown demand is held at what it has: neither short nor keeping a buffer
        known = [
            (d, vm_levels(vm, CONFIG)[3])
            for vm, d in zip(node.vms, plan.decisions, strict=True)
            if vm.demand is not None
        ]
        if any(d.assigned < level for d, level in known):
            for d, level in known:
                assert d.assigned <= level, f"{d.name} keeps buffer while a neighbour is short"


@settings(max_examples=400, deadline=None)
@given(nodes(), vms("twin"), st.integers(0, 100), st.integers(0, 100))
def test_more_priority_never_less_memory(node: NodeState, twin: VmState, p1: int, p2: int) -> None:
    high, low = max(p1, p2), min(p1, p2)
    a = replace(twin, name="a", limits=replace(twin.limits, priority=high))
    b = replace(twin, name="b", limits=replace(twin.limits, priority=low))
    both = replace(node, vms=(*node.vms, b, a))
    unit = max(CONFIG.alignment, twin.hugepage)
    for plan_fn in POLICIES:
        decisions = plan_fn(both, CONFIG, 0.0).by_name()
        if high > low:
            assert decisions["a"].assigned >= decisions["b"].assigned
        else:  # equal twins: the water-fill's last unit goes to one of them (CI found p1 = p2 = 0 off by 2Mi)
            larger, smaller = sorted((decisions["a"], decisions["b"]), key=lambda d: -d.assigned)
            if larger.assigned - smaller.assigned > unit:
                # or an over-subscribed node frees what it must by shrinking one of them to its target while
                # the other keeps its size (within its shrink band): neither is cut below its target (found
                # by hypothesis: a 1Gi pool 4Mi over, one twin shrunk from 386Mi to its 256Mi target)
                assert larger.assigned == larger.current and smaller.assigned >= smaller.target, (
                    larger,
                    smaller,
                )


@settings(max_examples=200, deadline=None)
@given(nodes())
def test_plan_keeps_vm_order_and_is_deterministic(node: NodeState) -> None:
    plan = plan_node(node, CONFIG, 0.0)
    assert [d.name for d in plan.decisions] == [vm.name for vm in node.vms]
    assert plan == plan_node(node, CONFIG, 0.0)
    changes = plan.changes
    shrinks = [d for d in changes if d.change < 0]
    assert list(changes[: len(shrinks)]) == shrinks  # shrinks first


def _starts_fitting_by_scan(
    starts: list[StoppedVm], free: dict[str, int], slots: dict[str, int], cores: dict[str, int]
) -> set[int]:
    """What the bisection in ``_starts_fitting`` must give: each start, in order, into the node with the least
    memory free it fits (ties by name) with a pod slot and its CPU where those are counted, scanning every
    node."""
    left, pods, cpu, placed = dict(free), dict(slots), dict(cores), set()
    for i, vm in enumerate(starts):
        asks = dict(vm.others)
        fits = [
            n
            for n, f in left.items()
            if f >= vm.request
            and (vm.allowed_nodes is None or n in vm.allowed_nodes)
            and (not pods or pods[n] >= 1)
            and (not cpu or cpu[n] >= asks.get("cpu", 0))
        ]
        if fits:
            node = min(fits, key=lambda n: (left[n], n))
            left[node] -= vm.request
            if pods:
                pods[node] -= 1
            if cpu:
                cpu[node] -= asks.get("cpu", 0)
            placed.add(i)
    return placed


NODE_NAMES = [f"n{i}" for i in range(6)]


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(NODE_NAMES), st.integers(0, 8), min_size=1),
    st.lists(
        st.tuples(
            st.integers(1, 6), st.none() | st.frozensets(st.sampled_from(NODE_NAMES)), st.integers(0, 3)
        ),
        max_size=8,
    ),
    st.booleans(),
    st.integers(0, 2),
    st.none() | st.integers(0, 4),
)
def test_starts_are_packed_as_a_scan_of_every_node_would(
    free: dict[str, int],
    starts: list[tuple[int, frozenset[str] | None, int]],
    counted: bool,
    slot: int,
    cores: int | None,
) -> None:
    room = {n: f * 512 * MiB for n, f in free.items()}
    slots = {n: slot for n in room} if counted else {}
    cpu = {n: cores * 1000 for n in room} if cores is not None else {}
    others = {name: left for name, left in (("pods", slots), ("cpu", cpu)) if left}
    vms = [StoppedVm(size * 512 * MiB, allowed, (("cpu", m * 500),)) for size, allowed, m in starts]
    assert _starts_fitting(vms, room, others) == _starts_fitting_by_scan(vms, room, slots, cpu)
