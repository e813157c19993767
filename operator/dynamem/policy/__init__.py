"""The pure balancing core: plain data in, an allocation plan out. No I/O, no Kubernetes.

``plan_node(node, config, now)`` is dynamem's policy; ``POLICIES`` maps every policy name the simulator and
the benchmarks know (dynamem, static, proxmox, xen, oracle) to a function of the same shape. The operator,
the simulator and the benchmarks import from here only; the public names are pinned by a test.
"""

from dynamem.policy.balance import plan_node, plan_oracle, water_fill
from dynamem.policy.model import (
    BalanceConfig,
    GiB,
    MemoryStatus,
    MiB,
    NodePlan,
    NodeState,
    VmDecision,
    VmLimits,
    VmState,
    format_bytes,
)
from dynamem.policy.peers import POLICIES, Policy, plan_proxmox, plan_static, plan_xen

__all__ = [
    "POLICIES",
    "BalanceConfig",
    "GiB",
    "MemoryStatus",
    "MiB",
    "NodePlan",
    "NodeState",
    "Policy",
    "VmDecision",
    "VmLimits",
    "VmState",
    "format_bytes",
    "plan_node",
    "plan_oracle",
    "plan_proxmox",
    "plan_static",
    "plan_xen",
    "water_fill",
]
