"""Peer baselines behave as PEERS.md describes, and the public surface of dynamem.policy is pinned."""

from __future__ import annotations

import pytest
from conftest import make_node, make_vm

import dynamem.policy
from dynamem.policy import POLICIES, BalanceConfig, GiB, MiB, plan_proxmox, plan_static, plan_xen

CONFIG = BalanceConfig()


def test_public_names_are_pinned() -> None:
    assert sorted(dynamem.policy.__all__) == sorted(
        [
            "POLICIES", "BalanceConfig", "GiB", "MemoryStatus", "MiB", "NodePlan", "NodeState", "Policy",
            "VmDecision", "VmLimits", "VmState", "format_bytes", "plan_node", "plan_oracle", "plan_proxmox",
            "plan_static", "plan_xen", "water_fill",
        ]
    )  # fmt: skip
    assert set(POLICIES) == {"dynamem", "static", "proxmox", "xen", "oracle"}


def test_static_never_changes() -> None:
    plan = plan_static(make_node(make_vm("a", demand=3.9), make_vm("b", demand=0.1, assigned=2)), CONFIG, 0)
    assert [d.assigned for d in plan.decisions] == [GiB, 2 * GiB]
    assert not plan.changes


@pytest.mark.parametrize(
    ("vms", "pool", "expected"),
    [
        # Ranges 1..4 and 1..4; room 8Gi - 32Mi reserve - 2Gi floors = 6112Mi of span 6144Mi: 3056Mi each,
        # whatever the demand (3.5 vs 0.1): 1024 + 3056 = 4080Mi.
        pytest.param(
            [make_vm("a", demand=3.5), make_vm("b", demand=0.1)],
            8,
            [4080 * MiB, 4080 * MiB],
            id="same-fraction",
        ),
        # Room covers every range: everyone at its maximum.
        pytest.param([make_vm("a"), make_vm("b")], 16, [4 * GiB, 4 * GiB], id="all-at-max"),
        # Ranges 1..2 and 1..4 (span 1 + 3 = 4), room 4 - 32Mi - 2 = 2016Mi: a +504Mi, b +1512Mi.
        pytest.param(
            [make_vm("a", maximum=2), make_vm("b")], 4, [1528 * MiB, 2536 * MiB], id="proportional-to-range"
        ),
    ],
)
def test_xen_gives_one_fraction_of_each_range(vms: list[object], pool: float, expected: list[int]) -> None:
    plan = plan_xen(make_node(*vms, pool=pool), CONFIG, 0)  # type: ignore[arg-type]
    assert [d.assigned for d in plan.decisions] == expected
    assert plan.assigned_total <= pool * GiB


def test_proxmox_grows_to_maximum_while_host_use_is_below_target() -> None:
    # Host used = 0.5 + 0.5 of 8 (80 % target = 6.4): goal positive, balloons grow 100Mi per cycle up to max.
    node = make_node(make_vm("a"), make_vm("b"))
    one_cycle = plan_proxmox(node, BalanceConfig(step_s=10), 0)
    assert [d.assigned for d in one_cycle.decisions] == [GiB + 100 * MiB, GiB + 100 * MiB]
    long_step = plan_proxmox(node, BalanceConfig(step_s=900), 0)  # 90 cycles
    assert [d.assigned for d in long_step.decisions] == [4 * GiB, 4 * GiB]


def test_proxmox_shrinks_roomy_vms_first_when_host_use_is_above_target() -> None:
    # Used = 3.5 + 3.5 = 7 > 6.4: goal -0.6Gi. a has no free memory (pressured), b has 0.5 free > 0.25 x 1:
    # b shrinks first, at most 100Mi per cycle (to 3.9). The 0.5 left falls back to all VMs: alloc
    # (2.5 + 2.9 - 0.5) / 2 = 2.45 each, so a goes 3.5 -> 3.45 (aligned down: 3532Mi), b stays at 3.9.
    node = make_node(make_vm("a", demand=3.5, assigned=3.5), make_vm("b", demand=3.5, assigned=4))
    plan = plan_proxmox(node, BalanceConfig(step_s=10), 0)
    d = plan.by_name()
    assert d["b"].assigned == 4 * GiB - 100 * MiB
    assert d["a"].assigned == 3532 * MiB


def test_proxmox_priority_zero_opts_out() -> None:
    plan = plan_proxmox(make_node(make_vm("a", priority=0)), BalanceConfig(step_s=900), 0)
    assert plan.decisions[0].assigned == GiB
