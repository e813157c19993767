"""How long one cluster plan takes at scale: 10,000 VMs on 1,000 nodes (and 30,000 on 3,000).

``plan_cluster`` plans the whole cluster at once (sizes, placement and budget), so unlike the per-node plan it
cannot be split by node. Inputs are built once (seeded: nodes about 90 % requested, a fifth of the VMs paging,
some idle above their target), then the plan runs several times; we report the median and the changes it
made. The last line is machine-readable: ``cluster_speed: vms=<n> nodes=<m> median_s=<float>``.
``--cpu``: every launcher also asks 100m of CPU and a pod slot, and every node has 64 cores and 110 pods
(``ClusterNode.others``), so each placement checks them too.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from dynamem.policy import BalanceConfig, GiB, MiB, VmLimits
from dynamem.policy.cluster import ClusterNode, ClusterState, ClusterVm, plan_cluster

RUNS = 5


def build(nodes: int, vms_per_node: int, seed: int = 7, cpu: bool = False) -> ClusterState:
    rng = random.Random(seed)
    vms = []
    node_rows = []
    for n in range(nodes):
        name = f"node-{n:05d}"
        requested = 0
        for v in range(vms_per_node):
            startup = rng.choice([1, 2, 4]) * GiB
            maximum = startup * rng.choice([2, 3, 4])
            assigned = rng.randrange(startup, maximum + 1) // (2 * MiB) * (2 * MiB)
            limits = VmLimits(startup, startup, maximum, rng.choice([10, 20, 30]), rng.choice([25, 50, 75]))
            paging = rng.random() < 0.2
            used = assigned * 95 // 100 if paging else rng.randrange(assigned // 5, assigned * 9 // 10)
            vms.append(
                ClusterVm(
                    name=f"vm-{n:05d}-{v:02d}",
                    node=name,
                    limits=limits,
                    assigned=assigned,
                    request=assigned + 200 * MiB,
                    boot_memory=startup,
                    used=used,
                    available=assigned * 97 // 100,
                    usable=assigned * 97 // 100 - used,
                    swap_bps=8.0 * MiB if paging else 0.0,
                    major_faults_ps=50.0 if paging else 0.0,
                    others=(("cpu", 100), ("pods", 1)) if cpu else (),
                )
            )
            requested += assigned + 200 * MiB
        others = (("cpu", 64000, 100 * vms_per_node), ("pods", 110, vms_per_node)) if cpu else ()
        node_rows.append(ClusterNode(name, requested * 100 // 90, requested, others=others))
    return ClusterState(nodes=tuple(node_rows), vms=tuple(vms))


def measure(nodes: int, vms_per_node: int, cpu: bool = False) -> float:
    state = build(nodes, vms_per_node, cpu=cpu)
    config = BalanceConfig()
    times = []
    changes = 0
    for _ in range(RUNS):
        began = time.perf_counter()
        plan = plan_cluster(state, config, 0.0)
        times.append(time.perf_counter() - began)
        changes = len(plan.changes)
    median = statistics.median(times)
    count = nodes * vms_per_node
    print(
        f"{count:7d} VMs on {nodes:6d} nodes: plan median {median:.3f} s (min {min(times):.3f}, max "
        f"{max(times):.3f}), {changes} changes (budget {config.max_parallel_migrations}), "
        f"{median / count * 1e6:.1f} us/VM"
    )
    return median


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/cluster_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="launchers ask CPU and pod slots too")
    cpu = parser.parse_args().cpu
    measure(1000, 10, cpu)
    median = measure(3000, 10, cpu)
    print(f"cluster_speed: vms=30000 nodes=3000 cpu={cpu} median_s={median:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
