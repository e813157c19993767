"""Builders for policy tests: ``make_vm`` and ``make_node``, seed defaults (1Gi..4Gi, 20 %, medium)."""

from __future__ import annotations

import pytest

from dynamem.policy import GiB, MiB, NodeState, VmLimits, VmState


def make_vm(
    name: str = "vm",
    *,
    demand: float | int | None = 0.5,
    assigned: float | int = 1,
    startup: float | int = 1,
    minimum: float | int | None = None,
    maximum: float | int = 4,
    buffer: int = 20,
    priority: int = 50,
    boot: float | int | None = None,
    hugepage: int = 2 * MiB,
    in_flight_to: float | int | None = None,
    last_change_at: float | None = None,
) -> VmState:
    """A VM with sizes in GiB (floats allowed: 0.5 = 512Mi); boot defaults to startup."""

    def b(value: float | int) -> int:
        return round(value * GiB)

    limits = VmLimits(
        startup=b(startup),
        minimum=b(startup if minimum is None else minimum),
        maximum=b(maximum),
        buffer=buffer,
        priority=priority,
    )
    return VmState(
        name=name,
        limits=limits,
        assigned=b(assigned),
        demand=None if demand is None else b(demand),
        boot_memory=b(startup if boot is None else boot),
        hugepage=hugepage,
        in_flight_to=None if in_flight_to is None else b(in_flight_to),
        last_change_at=last_change_at,
    )


def make_node(*vms: VmState, pool: float | int = 8, name: str = "host") -> NodeState:
    return NodeState(name=name, pool=round(pool * GiB), vms=tuple(vms))


@pytest.fixture
def workday_path() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "workday.yaml")


@pytest.fixture
def workday_2nodes_path() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "workday-2nodes.yaml")
