"""The hyperv model: each node's pool shared in place, as Hyper-V's Dynamic Memory does on one host.

This is the simulator as it was before the kubevirt model, kept exactly (the seed's workday table comes out of
it to the byte), for comparison with the seed: ``dynamem simulate --model hyperv``.

Each step: VMs whose demand turns null stop; VMs whose demand appears try to start (a VM starts only if its
startup memory fits in what the balancer could free on its node, i.e. the pool minus the floors of the VMs
already running; under ``static`` nothing can be freed, so it must fit beside their current memory); then the
policy plans every node from the guests' true demand (Hyper-V's integration services report the memory the
guest has committed, so the host sees demand above the VM's size) and the plan is applied in place: shrinks
first, then each grow only if the node has room for it. A plan that asks for more than the node has counts as
an over-capacity step, and its refused grows are reported. The same policy function the operator calls plans
here.

Scores (lower is better), summed over steps and VMs:

- ``unmet_demand``: GiB-steps where a running VM had less than it used (the guest pages);
- ``buffer_shortfall``: GiB-steps below target (demand plus buffer, clamped to [floor, maximum]);
- ``changes``: running VMs whose assignment changed from the previous step (a VM that starts is compared with
  its startup memory, starting is not a change);
- ``over_capacity_steps``: steps where some node's plan assigned more than the node has.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from dynamem.policy import POLICIES, BalanceConfig, GiB, NodeState, VmLimits, VmState, format_bytes
from dynamem.policy.balance import pressure_of, status_of, vm_levels
from dynamem.sim.result import OFF, Model, NodeStep, SimResult, StepResult, Summary, VmStep
from dynamem.sim.scenario import Scenario, ScenarioVm

__all__ = ["simulate_hyperv"]


@dataclass(slots=True)
class _Running:
    assigned: int
    boot: int
    last_change_at: float | None = None


def simulate_hyperv(scenario: Scenario, policy: str, config: BalanceConfig) -> SimResult:
    """Play ``scenario`` through the named policy, in place on each node; deterministic."""
    plan_fn = POLICIES[policy]
    can_reclaim = policy != "static"
    by_node: dict[str, list[int]] = {n.name: [] for n in scenario.nodes}
    for index, vm in enumerate(scenario.vms):
        by_node[vm.node].append(index)
    limits = [vm.settings.limits() for vm in scenario.vms]
    running: dict[str, _Running] = {}
    unmet = Fraction(0)
    unstarted = Fraction(0)
    shortfall = Fraction(0)
    changes = 0
    over_steps = 0
    refused = 0
    refused_changes = 0
    steps: list[StepResult] = []

    for step in range(scenario.steps):
        now = step * scenario.step_seconds
        vm_out: dict[str, VmStep] = {}
        node_out: dict[str, NodeStep] = {}
        events: list[str] = []
        over = False
        for node in scenario.nodes:
            states: list[VmState] = []
            members = by_node[node.name]
            # Stops first: their memory is free for starts in the same step.
            for index in members:
                vm = scenario.vms[index]
                if scenario.demand[vm.name][step] is None and running.pop(vm.name, None) is not None:
                    events.append(f"{vm.name} stopped")
            committed = 0
            for index in members:
                vm = scenario.vms[index]
                state = running.get(vm.name)
                if state is not None:
                    committed += _floor(vm, limits[index], state, config) if can_reclaim else state.assigned
            for index in members:
                vm = scenario.vms[index]
                demand = scenario.demand[vm.name][step]
                if demand is None or vm.name in running:
                    continue
                al = max(config.alignment, vm.hugepage)
                startup = -(-limits[index].startup // al) * al
                if committed + startup <= node.memory:
                    running[vm.name] = _Running(assigned=startup, boot=startup)
                    committed += startup
                    events.append(f"{vm.name} started with {format_bytes(startup)}")
                else:
                    refused += 1
                    free = max(0, node.memory - committed)
                    events.append(
                        f"{vm.name} did not start on {node.name}: needs {format_bytes(startup)}, "
                        f"{format_bytes(free)} can be freed"
                    )
            for index in members:
                vm = scenario.vms[index]
                state = running.get(vm.name)
                if state is None:
                    continue
                states.append(
                    VmState(
                        name=vm.name,
                        limits=limits[index],
                        assigned=state.assigned,
                        demand=scenario.demand[vm.name][step],
                        boot_memory=state.boot,
                        hugepage=vm.hugepage,
                        last_change_at=state.last_change_at,
                    )
                )
            plan = plan_fn(NodeState(node.name, node.memory, tuple(states)), config, now)
            if plan.assigned_total > node.memory:
                over = True
            # KubeVirt applies a change by migrating to a pod of the new size: shrinks free memory first,
            # then a grow happens only if its pod fits on the node; otherwise it stays where it is.
            applied = {d.name: d.assigned for d in plan.decisions}
            used = sum(running[d.name].assigned for d in plan.decisions)
            refused_now: set[str] = set()
            for decision in plan.changes:
                if decision.change < 0:
                    used += decision.change
            for decision in plan.changes:
                if decision.change > 0:
                    if used + decision.change <= node.memory:
                        used += decision.change
                    else:
                        applied[decision.name] = decision.current
                        refused_now.add(decision.name)
                        refused_changes += 1
                        events.append(
                            f"{decision.name}: grow to {format_bytes(decision.assigned)} refused, "
                            f"{node.name} is full"
                        )
            node_out[node.name] = NodeStep(
                memory=node.memory,
                assigned=used,
                reason=plan.reason,
                requested=used,
                peak_requested=max(used, plan.assigned_total),
                used=sum(min(d.demand or 0, applied[d.name]) for d in plan.decisions),
            )
            for decision in plan.decisions:
                state = running[decision.name]
                assigned = applied[decision.name]
                changed = assigned != state.assigned
                if changed:
                    changes += 1
                    state.last_change_at = now
                state.assigned = assigned
                demand = decision.demand or 0
                if assigned < demand:
                    unmet += demand - assigned
                if assigned < decision.target:
                    shortfall += decision.target - assigned
                if decision.name in refused_now:
                    status = status_of(assigned, decision.demand, decision.target).value
                    reason = f"refused: no room on node for {format_bytes(decision.assigned)}"
                else:
                    status, reason = decision.status.value, decision.reason
                vm_out[decision.name] = VmStep(
                    node=node.name,
                    demand=decision.demand,
                    assigned=assigned,
                    pressure=pressure_of(assigned, decision.demand),
                    status=status,
                    target=decision.target,
                    reason=reason,
                    changed=changed,
                    observed=decision.demand,
                    seen=decision.demand,
                )
        for vm in scenario.vms:
            if vm.name not in vm_out:
                demand = scenario.demand[vm.name][step]
                unstarted += demand or 0
                vm_out[vm.name] = VmStep(
                    node=vm.node,
                    demand=demand,
                    assigned=0,
                    pressure=None,
                    status=OFF,
                    target=0,
                    reason="off" if demand is None else "did not start: no room on node",
                )
        over_steps += over
        steps.append(StepResult(step=step, vms=vm_out, nodes=node_out, events=tuple(events)))

    summary = Summary(
        unmet_demand=float(unmet / GiB),
        buffer_shortfall=float(shortfall / GiB),
        changes=changes,
        over_capacity_steps=over_steps,
        refused_starts=refused,
        refused_changes=refused_changes,
        unstarted_demand=float(unstarted / GiB),
    )
    return SimResult(
        policy=policy, scenario=scenario, steps=tuple(steps), summary=summary, model=Model.HYPERV
    )


def _floor(vm: ScenarioVm, limits: VmLimits, state: _Running, config: BalanceConfig) -> int:
    """The least a running VM can be shrunk to (what the balancer could free for a start)."""
    probe = VmState(
        name=vm.name,
        limits=limits,
        assigned=state.assigned,
        demand=None,
        boot_memory=state.boot,
        hugepage=vm.hugepage,
    )
    return vm_levels(probe, config)[1]
