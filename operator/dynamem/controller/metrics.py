"""The operator's own Prometheus metrics: what it assigned, what it measured, how long a round took.

Per VM: assigned and demand bytes; per node: pool and assigned bytes; per round: duration and API writes;
memory.guest patches by direction. The per-VM and per-node series are those of the last round, made at scrape
time, so dashboards never show ghosts. Each operator instance owns its registry, so several can live in one
test process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dynamem.kube.objects import ObjectKey

if TYPE_CHECKING:
    from dynamem.controller.snapshot import Snapshot
    from dynamem.policy.model import NodePlan


@dataclass(frozen=True, slots=True)
class _Series:
    name: str
    help: str
    labels: tuple[str, ...]


VM_LABELS = ("namespace", "name", "node")
VM_ASSIGNED = _Series("dynamem_vm_assigned_bytes", "Memory dynamem assigned to the VM", VM_LABELS)
VM_DEMAND = _Series(
    "dynamem_vm_demand_bytes",
    "Memory the VM needs as dynamem estimates it: its peak use over the window, more while it pages or rises",
    VM_LABELS,
)
VM_PRESSURE = _Series("dynamem_vm_pressure_percent", "Demand as a percent of assigned memory", VM_LABELS)
VM_WARNING = _Series("dynamem_vm_warning", "1 while the VM has less memory than it uses", VM_LABELS)
NODE_POOL = _Series("dynamem_node_pool_bytes", "Memory the node's managed VMs may share", ("node",))
NODE_ASSIGNED = _Series("dynamem_node_assigned_bytes", "Memory assigned to the node's managed VMs", ("node",))
NODE_OVER = _Series(
    "dynamem_node_over_subscribed",
    "1 while the node is over-subscribed: its pods' memory requests exceed its memory (policy dynamem), "
    "or its VMs' floors exceed its pool (policy node-local)",
    ("node",),
)
ROUND_SERIES = (VM_ASSIGNED, VM_DEMAND, VM_PRESSURE, VM_WARNING, NODE_POOL, NODE_ASSIGNED, NODE_OVER)


class RoundSeries(Collector):
    """The per-VM and per-node gauges of the last round, made when Prometheus scrapes, not every round.

    A round at 10,000 VMs would otherwise set some 40,000 labelled gauge children (each behind a lock) whether
    or not anyone scrapes; here a round only hands over its plans, and a scrape turns them into samples.
    Only the last round's VMs and nodes are exported, so a VM that left has no series (no ghosts).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: Mapping[str, NodePlan] = {}
        self._keys: Mapping[str, ObjectKey] = {}

    def update(self, plans: Mapping[str, NodePlan], keys: Mapping[str, ObjectKey]) -> None:
        with self._lock:
            self._plans, self._keys = plans, keys

    def clear(self) -> None:
        self.update({}, {})

    def describe(self) -> Iterable[Metric]:
        """The names, so a scrape restricted to other metrics (``?name[]=...``) does not build these."""
        return [GaugeMetricFamily(s.name, s.help, labels=s.labels) for s in ROUND_SERIES]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            plans, keys = self._plans, self._keys
        families = {s: GaugeMetricFamily(s.name, s.help, labels=s.labels) for s in ROUND_SERIES}
        for name, plan in plans.items():
            node = [name]
            families[NODE_POOL].add_metric(node, plan.pool)
            families[NODE_ASSIGNED].add_metric(node, plan.assigned_total)
            families[NODE_OVER].add_metric(node, 1 if plan.over_subscribed else 0)
            for decision in plan.decisions:
                key = keys[decision.name]
                labels = [key.namespace, key.name, name]
                families[VM_ASSIGNED].add_metric(labels, decision.assigned)
                if decision.demand is not None:
                    families[VM_DEMAND].add_metric(labels, decision.demand)
                    families[VM_WARNING].add_metric(labels, 1 if decision.assigned < decision.demand else 0)
                if decision.pressure is not None:
                    families[VM_PRESSURE].add_metric(labels, decision.pressure)
        return list(families.values())


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.serving = False
        self.round_series = RoundSeries()
        self.registry.register(self.round_series)
        self.round_seconds = Histogram(
            "dynamem_balance_duration_seconds",
            "Time one balancing round took",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.patches = Counter(
            "dynamem_vm_memory_patches",
            "memory.guest changes requested",
            ("direction",),
            registry=self.registry,
        )
        self.rounds = Counter("dynamem_balance_rounds", "Balancing rounds run", registry=self.registry)
        self.writes = Counter(
            "dynamem_api_writes", "API writes made by balancing rounds", ("kind",), registry=self.registry
        )
        self.demand_age = Gauge(
            "dynamem_demand_reading_age_seconds",
            "Age of the demand reading the last round decided on (read ahead of the round)",
            registry=self.registry,
        )
        self.demand_read_seconds = Histogram(
            "dynamem_demand_read_duration_seconds",
            "Time one demand reading (all of its Prometheus queries, answers parsed) took",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20),
            registry=self.registry,
        )
        self.demand_waits = Counter(
            "dynamem_demand_round_waits",
            "Rounds that found no fresh demand reading and waited for one",
            registry=self.registry,
        )
        self.active = Gauge(
            "dynamem_balancer_active", "1 on the balancing replica, 0 on a standby", registry=self.registry
        )
        self.demand_failed = Gauge(
            "dynamem_demand_reading_failed",
            "1 while the last round had no demand reading (Prometheus unreachable or erring): memory is held",
            registry=self.registry,
        )
        self.demand_unknown = Gauge(
            "dynamem_vms_demand_unknown",
            "Running managed VMs the last round had no fresh guest memory samples of (held as they are)",
            registry=self.registry,
        )
        self.write_failures = Counter(
            "dynamem_api_write_failures",
            "memory.guest writes that failed (no answer, 429 or 5xx after retries): the VM backs off",
            registry=self.registry,
        )
        self.contests = Counter(
            "dynamem_field_contests",
            "Fights over memory.guest: another manager set a size of dynamem's to another value",
            registry=self.registry,
        )

    def standby(self) -> None:
        """A replica that does not balance exports no VM or node series: alerts follow the active one."""
        self.active.set(0)
        self.round_series.clear()
        self.demand_failed.set(0)  # the leader's to say: a standby's last word would keep alerts firing
        self.demand_unknown.set(0)

    def observe_round(
        self,
        snapshot: Snapshot,
        plans: Mapping[str, NodePlan],
        duration_s: float,
        memory_writes: int,
        status_writes: int,
        *,
        demand_failed: bool = False,
        write_failures: int = 0,
        contests: int = 0,
    ) -> None:
        """This round's counters; its per-VM and per-node series are made from its plans when scraped."""
        self.active.set(1)
        self.rounds.inc()
        self.demand_failed.set(1 if demand_failed else 0)
        self.demand_unknown.set(
            sum(
                1
                for item in snapshot.managed.values()
                if item.demand is None
                and item.settings is not None
                and item.vmi is not None
                and item.vmi.active
            )
        )
        self.write_failures.inc(write_failures)
        self.contests.inc(contests)
        self.writes.labels(kind="memory").inc(memory_writes)
        self.writes.labels(kind="status").inc(status_writes)
        self.round_seconds.observe(duration_s)
        self.round_series.update(plans, snapshot.vm_keys)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve /metrics (once: a retried startup does not bind the port twice)."""
        if not self.serving:
            start_http_server(port, addr=addr, registry=self.registry)
            self.serving = True
