"""The policies on the kubevirt model, all of the same shape: a cluster state in, a cluster plan out.

- ``dynamem``: the cluster plan (:func:`dynamem.policy.cluster.plan_cluster`).
- ``node-local``: today's per-node plan (``plan_node``) on each node, from the guests' observed use; it names
  no target, so the kube-scheduler places every migration. ``static``, ``proxmox`` and ``xen``: the per-node
  peers of :mod:`dynamem.policy.peers`, run the same way.
- ``descheduler``: static sizes plus relief by moving, as OpenShift's descheduler profile
  KubeVirtRelieveAndMigrate does with LowNodeUtilization (``/work/shared/PEERS.md``): a node whose utilisation
  (the guests' used memory / its memory) is more than ``descheduler_high_percent`` points above the cluster
  mean has VMs evicted (each eviction a live migration, placed as the scheduler would) while some node is
  under the mean less ``descheduler_low_percent``; at most the migration budget per run and per node, lowest
  priority first, a moved VM cools down ``descheduler_cooldown_s``. It never resizes.
- ``oracle``: the cluster plan given the TRUE demand, with no dead band, no worth test and no budget; the
  simulator also makes its migrations free and instant: the lower bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from dynamem.policy.balance import plan_node
from dynamem.policy.cluster import ClusterPlan, ClusterState, ClusterVm, plan_cluster
from dynamem.policy.model import BalanceConfig, NodeState, VmDecision, VmState
from dynamem.policy.peers import Policy, _decide, plan_proxmox, plan_static, plan_xen

__all__ = [
    "CLUSTER_POLICIES",
    "ORACLE",
    "ClusterPolicy",
    "node_local",
    "plan_cluster_oracle",
    "plan_descheduler",
]

ClusterPolicy = Callable[[ClusterState, BalanceConfig, float], ClusterPlan]

ORACLE = "oracle"
"""The one policy the simulator gives the true demand and free, instant migrations."""

_UNBOUNDED = 1 << 30


def node_local(plan_fn: Policy) -> ClusterPolicy:
    """A per-node policy run on every node of the cluster, as today's operator does.

    Each node's pool is its memory less the launcher overhead of its VMs and the requests of migration target
    pods on it. A VM with a change in flight is passed as ``in_flight_to`` (held); the per-node policy counts
    it at the larger of its two sizes, so its node's pool is raised by the difference (the source holds only
    the old request).
    """

    def plan(state: ClusterState, config: BalanceConfig, now: float) -> ClusterPlan:
        members: dict[str, list[ClusterVm]] = {n.name: [] for n in state.nodes}
        for vm in state.vms:
            members[vm.node].append(vm)
        decisions: dict[str, VmDecision] = {}
        reasons = []
        for node in state.nodes:
            vms = members[node.name]
            incoming = node.requested - sum(vm.request for vm in vms)
            pool = node.memory - sum(vm.overhead for vm in vms) - incoming
            states = []
            for vm in vms:
                if vm.in_flight_to is not None and vm.in_flight_to > vm.assigned:
                    pool += vm.in_flight_to - vm.assigned
                states.append(
                    VmState(
                        name=vm.name,
                        limits=vm.limits,
                        assigned=vm.assigned,
                        demand=vm.used if vm.demand is None else vm.demand,
                        boot_memory=vm.boot_memory,
                        hugepage=vm.hugepage,
                        in_flight_to=vm.in_flight_to,
                        last_change_at=vm.last_change_at,
                    )
                )
            node_plan = plan_fn(NodeState(node.name, max(0, pool), tuple(states)), config, now)
            reasons.append(f"{node.name}: {node_plan.reason}")
            decisions.update(node_plan.by_name())
        return ClusterPlan(tuple(decisions[vm.name] for vm in state.vms), "; ".join(reasons))

    return plan


def plan_cluster_oracle(state: ClusterState, config: BalanceConfig, now: float) -> ClusterPlan:
    """The cluster plan with no churn control: every VM at its ideal size, wherever it fits."""
    free = replace(
        config,
        dead_band_bytes=0,
        dead_band_percent=0,
        shrink_band_bytes=0,
        shrink_band_percent=0,
        grow_headroom_percent=0,
        buffer_worth_percent=0,
        cooldown_s=0.0,
        retry_after_s=0.0,
        shrink_window_s=0.0,
        idle_spare_ranges=None,
        max_parallel_migrations=_UNBOUNDED,
        max_outbound_migrations=_UNBOUNDED,
    )
    return plan_cluster(state, free, now)


def plan_descheduler(state: ClusterState, config: BalanceConfig, now: float) -> ClusterPlan:
    """Static sizes; VMs evicted (migrated) off nodes used above the mean, LowNodeUtilization-style."""
    memory = {n.name: n.memory for n in state.nodes}
    free = {n.name: n.memory - n.requested for n in state.nodes}
    used = dict.fromkeys(memory, 0)
    for vm in state.vms:
        used[vm.node] += vm.used or 0
    moves: dict[str, str] = {}
    reason = "descheduler: balanced"
    if len(memory) > 1:
        util = {n: used[n] * 100 / memory[n] for n in memory}
        mean = sum(util.values()) / len(util)
        high = mean + config.descheduler_high_percent
        low = mean - config.descheduler_low_percent
        over = sorted((n for n in util if util[n] > high), key=lambda n: (-util[n], n))
        under = [n for n in util if util[n] < low]
        budget = config.max_parallel_migrations - len(state.in_flight)
        outbound: dict[str, int] = {}
        for m in state.in_flight:
            outbound[m.source] = outbound.get(m.source, 0) + 1
        if over and under:
            reason = f"descheduler: {', '.join(over)} above {high:.0f} % (mean {mean:.0f} %)"
        for node in over if under else []:
            candidates = sorted(
                (
                    vm
                    for vm in state.vms
                    if vm.node == node
                    and vm.in_flight_to is None
                    and (
                        vm.last_change_at is None or now - vm.last_change_at >= config.descheduler_cooldown_s
                    )
                ),
                key=lambda vm: (vm.limits.priority, -(vm.used or 0), vm.name),
            )
            for vm in candidates:
                if (
                    budget <= 0
                    or util[node] <= high
                    or outbound.get(node, 0) >= config.max_outbound_migrations
                ):
                    break
                target = _least_allocated(vm.request, node, free, memory)
                if target is None:
                    continue
                moves[vm.name] = target
                free[target] -= vm.request
                budget -= 1
                outbound[node] = outbound.get(node, 0) + 1
                util[node] -= (vm.used or 0) * 100 / memory[node]
    decisions = []
    for vm in state.vms:
        probe = VmState(
            vm.name, vm.limits, vm.assigned, vm.used, vm.boot_memory, vm.hugepage, vm.in_flight_to
        )
        target = moves.get(vm.name)
        why = (
            f"descheduler: evicted from {vm.node} (above mean use), to {target}" if target else "static size"
        )
        decisions.append(replace(_decide(probe, config, vm.assigned, why), target_node=target))
    return ClusterPlan(tuple(decisions), reason, tuple(moves))


def _least_allocated(request: int, source: str, free: dict[str, int], memory: dict[str, int]) -> str | None:
    best: tuple[int, str] | None = None
    for name in sorted(free):
        if name != source and free[name] >= request:
            score = (free[name] - request) * 100 // memory[name]
            if best is None or score > best[0]:
                best = (score, name)
    return None if best is None else best[1]


CLUSTER_POLICIES: Mapping[str, ClusterPolicy] = MappingProxyType(
    {
        "dynamem": plan_cluster,
        "node-local": node_local(plan_node),
        "static": node_local(plan_static),
        "proxmox": node_local(plan_proxmox),
        "xen": node_local(plan_xen),
        "descheduler": plan_descheduler,
        ORACLE: plan_cluster_oracle,
    }
)
