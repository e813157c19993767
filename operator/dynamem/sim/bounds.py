"""What no policy can beat on a scenario, on the kubevirt model: bounds that need no simulation.

The benchmarks' goals compare policies with each other and with the oracle (dynamem's plan given the true
demand). Whether a goal can be met at all is a property of the scenario: these bounds hold for ANY policy,
even one that knows every future demand and migrates for free, so when a goal asks for less than a bound
allows, no policy meets it, and the benchmark can print so instead of saying it in prose.

- :func:`least_unserved`: unserved demand (GiB-steps of true demand; unmet by running VMs plus the demand of
  VMs not running) no policy gets under. Each step, the VMs that run take at least their boot size (KubeVirt
  cannot shrink a VM below what it booted with), at most their maximum, plus the launcher overhead, out of
  the memory of every node pooled (as if any VM could have any byte of any node, no migration ever holding a
  source and a target at once); demand above a VM's maximum is never served. Which VMs run is free too: a VM
  left off costs its demand and frees its whole share. The step's least is the linear relaxation of that
  choice (VMs left off in order of demand per byte freed, the last one in part), below the exact least.
- :func:`least_migrated`: GiB migrated no policy gets under while keeping its unserved demand at or under a
  given amount. On the kubevirt model a VM's size changes only by a live migration, and a VM (re)starts at
  its startup size, so a VM never migrated runs at its startup size all day and leaves all its demand above
  that unmet; one that is migrated copies at least its startup size the first time. The least is the linear
  relaxation of choosing which VMs to migrate once (most unserved demand relieved per byte first).

Pure and deterministic: a :class:`~dynamem.sim.scenario.Scenario` in, numbers out.
"""

from __future__ import annotations

from dynamem.policy import GiB
from dynamem.sim.scenario import Scenario

__all__ = ["least_migrated", "least_unserved"]


def least_unserved(scenario: Scenario) -> float:
    """GiB-steps of true demand no policy can serve on ``scenario`` (see the module's docstring)."""
    capacity = sum(node.memory for node in scenario.nodes)
    total = 0.0
    for step in range(scenario.steps):
        running: list[tuple[int, int, int]] = []  # (demand, share it takes running, demand it cannot have)
        for vm in scenario.vms:
            demand = scenario.demand[vm.name][step]
            if demand is None:
                continue
            settings = vm.settings
            share = min(max(demand, settings.startup), settings.maximum) + scenario.overhead
            running.append((demand, share, max(0, demand - settings.maximum)))
        excess = sum(share for _, share, _ in running) - capacity
        # Leave off, in part, the VMs that cost the least demand per byte they free, while that is under 1
        # (one byte of demand lost per byte freed is what the excess costs anyway).
        lost, left = _cover(excess, [(demand - beyond, share) for demand, share, beyond in running], 1.0)
        total += sum(beyond for _, _, beyond in running) + lost + left
    return total / GiB


def least_migrated(scenario: Scenario, unserved: float) -> float | None:
    """The least GiB any policy migrates on ``scenario`` to leave at most ``unserved`` GiB-steps of demand
    unserved; None when no policy can, even migrating every VM (see the module's docstring)."""
    forced = 0
    relief: list[tuple[int, int]] = []  # (startup size its first migration copies, unmet it can relieve)
    for vm in scenario.vms:
        settings = vm.settings
        series = [d for d in scenario.demand[vm.name] if d is not None]
        beyond = sum(max(0, d - settings.maximum) for d in series)
        above = sum(max(0, d - settings.startup) for d in series)
        forced += beyond
        if above > beyond:
            relief.append((settings.startup, above - beyond))
    need = forced + sum(r for _, r in relief) - unserved * GiB
    copied, left = _cover(need, [(size, relieved) for size, relieved in relief])
    return None if left > 0 else copied / GiB


def _cover(need: float, items: list[tuple[int, int]], dearest: float = float("inf")) -> tuple[float, float]:
    """The linear relaxation of a covering choice: items (cost, gain), cheapest per unit of gain first, the
    last one in part, until their gains reach ``need``, none costing ``dearest`` or more per unit. Returns
    (their cost, the need left uncovered)."""
    cost = 0.0
    for price, gain in sorted(items, key=lambda item: (item[0] / item[1], item[0])):
        if need <= 0 or price >= dearest * gain:
            break
        if need <= gain:
            return cost + price * need / gain, 0.0
        cost += price
        need -= gain
    return cost, max(0.0, need)
