"""Plain data the balancing policy reads and writes: a node snapshot in, a plan out.

Everything here is a frozen, slotted dataclass of ints (bytes, percents) and strings, so the policy can be
driven identically by the operator (from kopf indices and Prometheus), by the simulator (from a scenario file)
and by the benchmarks (from generated arrays), and so a plan can be logged, compared and tested by value.
Quantities were parsed once at the edge (:mod:`dynamem.settings`); nothing here knows about Kubernetes.

A :class:`VmDecision` carries its reason as a short sentence: the same object feeds the simulator's table,
the custom resource's status and the Kubernetes Events, like the scheduler's ``InsufficientResource``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from dynamem.records import frozen_record

__all__ = [
    "BalanceConfig",
    "GiB",
    "MemoryStatus",
    "MiB",
    "NodePlan",
    "NodeState",
    "VmDecision",
    "VmLimits",
    "VmState",
    "format_bytes",
]

MiB = 1 << 20
GiB = 1 << 30


class MemoryStatus(StrEnum):
    """Hyper-V's status column: OK (target met), Low (demand met, buffer not), Warning (below demand)."""

    OK = "OK"
    LOW = "Low"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class VmLimits:
    """A VM's settings in bytes and percents (see :class:`dynamem.settings.VmSettings`)."""

    startup: int
    minimum: int
    maximum: int
    buffer: int
    priority: int


@frozen_record
class VmState:
    """One VM as observed now.

    ``assigned``: guest memory it has now. ``demand``: memory in use in the guest, None when unknown (the VM
    is then held where it is: never shrink blind). ``boot_memory``: guestAtBoot while running (KubeVirt cannot
    go below it). ``in_flight_to``: a change requested and not yet done (held, counted at the larger of the
    two). ``last_change_at``: epoch seconds of its last change, for cooldowns.
    """

    name: str
    limits: VmLimits
    assigned: int
    demand: int | None
    boot_memory: int | None = None
    hugepage: int = 2 * MiB
    in_flight_to: int | None = None
    last_change_at: float | None = None


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node's pool (bytes its VMs may share) and the VMs running on it."""

    name: str
    pool: int
    vms: tuple[VmState, ...]


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    """Knobs of one balancing round.

    ``dead_band_bytes``/``dead_band_percent``: a change smaller than max(bytes, percent of the current
    assignment) is not made (each change is a live migration), unless the VM is below its demand on a node
    with room or the memory is needed elsewhere. ``shrink_band_bytes``/``shrink_band_percent``: the wider band
    of the asymmetric hysteresis. When everything fits, a VM above its target shrinks only once its excess
    reaches max(bytes, percent of the target); on a tight or short node, where memory only moves from one VM
    to another (two migrations), shares that moved by less than max(bytes, percent of the current assignment)
    are kept. Kept memory is still reclaimed when a neighbour needs it for its demand, when the plan would not
    fit, and a short node's idle memory always goes to its paging VMs, so unmet demand never rises.
    ``grow_headroom_percent``: when everything fits and a VM grows because its demand crept into its buffer
    (it is not below its demand), it gets this percent of its shrink band above its target, from spare
    memory and never past its maximum, so a steady rise (leaks, ramps) needs fewer migrations; 0 disables.
    ``cooldown_s``: a VM changed less than this long ago is held.
    ``max_changes_per_node``: at most this many changes per node and round (shrinks first). ``alignment``:
    guest memory granularity (KubeVirt: 2Mi; 1Gi hugepages raise it per VM). ``step_s``: wall time this round
    stands for; peers that move a bounded amount per cycle (Proxmox) run ``step_s / their period`` cycles. The
    ``proxmox_*`` and ``xen_*`` knobs parametrise the peer baselines only.

    The cluster plan (:mod:`dynamem.policy.cluster`): ``max_parallel_migrations``/``max_outbound_migrations``:
    the migration budget (KubeVirt's ``parallelMigrationsPerCluster`` 5 and
    ``parallelOutboundMigrationsPerNode`` 2). A guest pages when its usable memory is under
    ``paging_headroom_percent`` of what it has and its swap traffic (in plus out) exceeds ``paging_swap_bps``
    or its major faults ``paging_faults_ps`` (KubeVirt's own alert: 5 %, 1 MiB/s, 5/s); its demand is then
    taken as its size x (100 + ``paging_growth_percent``) / 100; while the cluster has memory to spare
    (``cluster._spare``) that guessed grow is made ``paging_spare_percent`` larger (0 disables).
    ``shrink_window_s``: a VM shrinks only on the highest use seen over this window, and not for idleness
    within this long of its last change. ``idle_spare_ranges``: no VM is shrunk for idleness while the memory
    the cluster has to spare (``cluster._spare``) is more than this many times the largest grow any VM could
    still ask (its maximum less its target): that memory serves nobody, and its shrink is a migration (0:
    whenever there is any to spare; None disables).
    ``trend_horizon_s``: a use that rose over the window by more than the dead band is grown ahead of by this
    long of its rise (0 disables). ``buffer_worth_percent``: a grow for buffer alone must restore at least
    this percent of the bytes it migrates. ``retry_base_s``/``retry_after_s``: a VM whose migration failed
    is held ``retry_base_s`` after its first failure, doubling with each further one, at most
    ``retry_after_s``, less a jitter (``cluster.retry_delay``).
    ``descheduler_*``: the descheduler peer's thresholds (percent points around the mean utilisation) and
    cooldown.
    """

    dead_band_bytes: int = 128 * MiB
    dead_band_percent: int = 5
    shrink_band_bytes: int = 512 * MiB
    shrink_band_percent: int = 25
    grow_headroom_percent: int = 0
    cooldown_s: float = 0.0
    max_changes_per_node: int | None = None
    alignment: int = 2 * MiB
    step_s: float = 0.0
    proxmox_target_percent: int = 80
    proxmox_max_change: int = 100 * MiB
    proxmox_period_s: float = 10.0
    xen_reserve_bytes: int = 32 * MiB
    move_headroom_percent: int = 50
    max_parallel_migrations: int = 5
    max_outbound_migrations: int = 2
    paging_headroom_percent: int = 5
    paging_swap_bps: float = float(MiB)
    paging_faults_ps: float = 5.0
    paging_growth_percent: int = 50
    paging_spare_percent: int = 100
    trend_horizon_s: float = 3600.0
    shrink_window_s: float = 3600.0
    idle_spare_ranges: int | None = 1
    buffer_worth_percent: int = 25
    retry_after_s: float = 900.0
    retry_base_s: float = 20.0
    descheduler_low_percent: int = 0
    descheduler_high_percent: int = 10
    descheduler_cooldown_s: float = 900.0


@frozen_record
class VmDecision:
    """What the plan does with one VM, and why.

    ``current``: its assignment now; ``assigned``: its assignment after the plan. ``floor``: the least it may
    have (max of minimum and boot memory, aligned up). ``target``: demand plus buffer, clamped to
    [floor, maximum]. ``pressure``: round(100 x demand / assigned), None when demand is unknown.
    ``in_flight``: a change is already under way; the decision only accounts for it (not in ``changes``).
    ``target_node``: where the change should run the VM. On KubeVirt every change of a running VM's memory is
    a live migration to another node, so a policy may name that node (carried out as the migration's
    ``addedNodeSelector``); None leaves the choice to the kube-scheduler. Today's policies name none.
    """

    name: str
    current: int
    assigned: int
    floor: int
    demand: int | None
    target: int
    pressure: int | None
    status: MemoryStatus
    reason: str
    in_flight: bool = False
    target_node: str | None = None

    @property
    def change(self) -> int:
        return self.assigned - self.current


@dataclass(frozen=True, slots=True)
class NodePlan:
    """The plan for one node: a decision per VM, in the order of the node's VMs."""

    node: str
    pool: int
    decisions: tuple[VmDecision, ...]
    over_subscribed: bool
    reason: str

    @property
    def assigned_total(self) -> int:
        return sum(d.assigned for d in self.decisions)

    @property
    def changes(self) -> tuple[VmDecision, ...]:
        """Decisions that change a VM: shrinks first (largest first), then grows (largest first)."""
        moving = [d for d in self.decisions if d.assigned != d.current and not d.in_flight]
        shrinks = sorted((d for d in moving if d.change < 0), key=lambda d: (d.change, d.name))
        grows = sorted((d for d in moving if d.change > 0), key=lambda d: (-d.change, d.name))
        return (*shrinks, *grows)

    def by_name(self) -> dict[str, VmDecision]:
        return {d.name: d for d in self.decisions}


def format_bytes(value: int) -> str:
    """Bytes as the shortest exact binary quantity (``3758096384`` -> ``3.5Gi``), else plain bytes."""
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value and abs(value) >= size:
            whole, rest = divmod(abs(value), size)
            sign = "-" if value < 0 else ""
            if rest == 0:
                return f"{sign}{whole}{unit}"
            exact = Decimal(abs(value)) / Decimal(size)
            if len(exact.normalize().as_tuple().digits) <= 6:
                return f"{sign}{exact.normalize():f}{unit}"
    return str(value)
