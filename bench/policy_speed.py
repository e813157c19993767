"""How long one balancing round takes at cluster scale: 10,000 VMs on 1,000 nodes and 100,000 on 10,000.

The operator plans every node every round, so the policy must stay far below the round interval even for a
large cluster. Inputs are built once (seeded; a realistic mix of loose, tight and short nodes, varied
settings), then ``plan_node`` runs over all nodes several times; we report the median. For scale, the same
inputs' bare read cost (touching every VM's fields once, the least any policy must do) and the ratio.
The last line is machine-readable: ``policy_speed: vms=100000 nodes=10000 median_s=<float>``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from dynamem.policy import BalanceConfig, GiB, MiB, NodeState, VmLimits, VmState, plan_node

RUNS = 7


def build(nodes: int, vms_per_node: int, seed: int = 7) -> list[NodeState]:
    rng = random.Random(seed)
    out = []
    for n in range(nodes):
        members = []
        total_demand = 0
        for v in range(vms_per_node):
            startup = rng.choice([1, 2, 4]) * GiB
            maximum = startup * rng.choice([2, 3, 4])
            limits = VmLimits(
                startup=startup,
                minimum=startup // 2 if rng.random() < 0.3 else startup,
                maximum=maximum,
                buffer=rng.choice([10, 20, 30]),
                priority=rng.choice([25, 50, 75]),
            )
            demand = rng.randrange(startup // 4, maximum)
            assigned = rng.randrange(startup, maximum + 1) // (2 * MiB) * (2 * MiB)
            total_demand += demand
            members.append(
                VmState(
                    f"vm-{n}-{v}",
                    limits,
                    assigned,
                    None if rng.random() < 0.01 else demand,
                    boot_memory=startup,
                )
            )
        # A third of the nodes loose, a third tight (buffers shared), a third short (demand shared).
        factor = (1.6, 1.15, 0.9)[n % 3]
        out.append(NodeState(f"node-{n}", int(total_demand * factor), tuple(members)))
    return out


def read_cost(nodes: list[NodeState]) -> float:
    start = time.perf_counter()
    total = 0
    for node in nodes:
        for vm in node.vms:
            total += vm.assigned + (vm.demand or 0) + vm.limits.maximum + vm.limits.minimum
    return time.perf_counter() - start


def plan_cost(nodes: list[NodeState], config: BalanceConfig) -> float:
    start = time.perf_counter()
    for node in nodes:
        plan_node(node, config, 0.0)
    return time.perf_counter() - start


def main() -> int:
    argparse.ArgumentParser(prog="bench/policy_speed.py", description=__doc__.splitlines()[0]).parse_args()
    config = BalanceConfig()
    last = ""
    for vms, node_count in ((10_000, 1_000), (100_000, 10_000)):
        nodes = build(node_count, vms // node_count)
        plan_runs = [plan_cost(nodes, config) for _ in range(RUNS)]
        read_runs = [read_cost(nodes) for _ in range(RUNS)]
        plan_median = statistics.median(plan_runs)
        read_median = statistics.median(read_runs)
        print(
            f"{vms:>7} VMs on {node_count:>6} nodes: plan median {plan_median:.3f} s "
            f"(min {min(plan_runs):.3f}, max {max(plan_runs):.3f}), bare read {read_median:.4f} s, "
            f"ratio {plan_median / read_median:.0f}x, {plan_median / vms * 1e6:.2f} us/VM"
        )
        last = f"policy_speed: vms={vms} nodes={node_count} median_s={plan_median:.4f}"
    print(last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
