"""The step loop: a scenario played through a policy, under one of two models of how memory changes.

- ``kubevirt`` (the default, :mod:`dynamem.sim.kubevirt`): KubeVirt as it is. Every change of a running VM's
  memory is a live migration to another node, placed by the kube-scheduler (or on the node the policy names),
  throttled and timed as KubeVirt does; the policy sees only what the guest shows
  (:mod:`dynamem.sim.guest`). Policies: :data:`dynamem.policy.cluster_peers.CLUSTER_POLICIES` (``dynamem``
  is the cluster plan, ``node-local`` today's per-node plan).
- ``hyperv`` (:mod:`dynamem.sim.hyperv`): Hyper-V's Dynamic Memory, the seed's world. Each node's pool is
  shared in place and the policy sees the true demand; kept exactly as the simulator was before, so the seed's
  workday table comes out to the byte. Policies: the per-node ones (:data:`dynamem.policy.POLICIES`;
  ``node-local`` is ``dynamem``'s per-node plan there).

Scores (lower is better), summed over steps and VMs, always on the TRUE demand:

- ``unmet_demand``: GiB-steps where a running VM had less than its true demand (the guest pages);
- ``buffer_shortfall``: GiB-steps below target (true demand plus buffer, clamped to [floor, maximum]);
- ``changes``: memory changes carried out (kubevirt: completed migrations);
- ``over_capacity_steps``: steps where some node's requests (kubevirt) or plan (hyperv) exceeded its memory;
- kubevirt also counts ``migrations``, ``migrated_bytes`` and ``failed_changes``.

The target is computed the same way for every policy (:func:`dynamem.policy.balance.vm_levels`), so the
scores compare like with like.
"""

from __future__ import annotations

from dynamem.policy import POLICIES, BalanceConfig
from dynamem.policy.cluster_peers import CLUSTER_POLICIES
from dynamem.sim.guest import DEFAULT_GUEST, GuestModel
from dynamem.sim.hyperv import simulate_hyperv
from dynamem.sim.kubevirt import simulate_kubevirt
from dynamem.sim.result import (
    MigrationState,
    MigrationStep,
    Model,
    NodeStep,
    SimResult,
    StepResult,
    Summary,
    VmStep,
)
from dynamem.sim.scenario import Scenario, check_interval

__all__ = [
    "MODELS",
    "MigrationState",
    "MigrationStep",
    "Model",
    "NodeStep",
    "SimResult",
    "StepResult",
    "Summary",
    "VmStep",
    "simulate",
]

MODELS = tuple(m.value for m in Model)


def simulate(
    scenario: Scenario,
    policy: str = "dynamem",
    config: BalanceConfig | None = None,
    *,
    model: Model | str = Model.KUBEVIRT,
    guest: GuestModel = DEFAULT_GUEST,
    interval_s: float | None = None,
) -> SimResult:
    """Play ``scenario`` through the named policy under ``model``; deterministic.

    ``interval_s`` (kubevirt model): the policy decides every that many seconds within each step, as the
    operator's ``--interval`` (default: the scenario's ``interval``, else once per step); each round's
    ``config.step_s`` is then the interval. The hyperv model decides once per step, as the seed's tables do
    (it ignores a scenario's ``interval`` and refuses ``interval_s``).
    """
    if Model(model) is Model.HYPERV:
        if interval_s is not None:
            raise ValueError(f"interval_s {interval_s:g}: the hyperv model decides once per step")
        node_policy = "dynamem" if policy == "node-local" else policy
        if node_policy not in POLICIES:
            raise ValueError(f"{policy!r}: not available under --model hyperv ({', '.join(POLICIES)})")
        return simulate_hyperv(scenario, node_policy, config or BalanceConfig(step_s=scenario.step_seconds))
    if policy not in CLUSTER_POLICIES:
        raise ValueError(f"{policy!r}: unknown (expected one of {', '.join(CLUSTER_POLICIES)})")
    if interval_s is not None:
        check_interval(interval_s, scenario.step_seconds, scenario.source, "interval_s")
    interval = interval_s or scenario.interval_seconds or scenario.step_seconds
    if config is None:
        config = BalanceConfig(step_s=interval)
    return simulate_kubevirt(scenario, policy, config, guest, interval_s=interval)
