"""The operator's own Prometheus metrics: what it assigned, what it measured, how long a round took.

Per VM: assigned and demand bytes; per node: pool and assigned bytes; per round: duration and API writes;
memory.guest patches by direction. The series of a VM that left are dropped each round, so dashboards never
show ghosts. Each operator instance owns its registry, so several can live in one test process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from dynamem.controller.snapshot import Snapshot
    from dynamem.policy.model import NodePlan


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.serving = False
        vm_labels = ("namespace", "name", "node")
        self.vm_assigned = Gauge(
            "dynamem_vm_assigned_bytes",
            "Memory dynamem assigned to the VM",
            vm_labels,
            registry=self.registry,
        )
        self.vm_demand = Gauge(
            "dynamem_vm_demand_bytes",
            "Memory in use in the guest, as measured",
            vm_labels,
            registry=self.registry,
        )
        self.vm_pressure = Gauge(
            "dynamem_vm_pressure_percent",
            "Demand as a percent of assigned memory",
            vm_labels,
            registry=self.registry,
        )
        self.vm_warning = Gauge(
            "dynamem_vm_warning",
            "1 while the VM has less memory than it uses",
            vm_labels,
            registry=self.registry,
        )
        self.node_pool = Gauge(
            "dynamem_node_pool_bytes",
            "Memory the node's managed VMs may share",
            ("node",),
            registry=self.registry,
        )
        self.node_assigned = Gauge(
            "dynamem_node_assigned_bytes",
            "Memory assigned to the node's managed VMs",
            ("node",),
            registry=self.registry,
        )
        self.node_over = Gauge(
            "dynamem_node_over_subscribed",
            "1 while the floors of the node's VMs exceed its pool",
            ("node",),
            registry=self.registry,
        )
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
        self._children: dict[tuple[int, tuple[str, ...]], Gauge] = {}
        self._vm_series: set[tuple[str, str, str]] = set()
        self._node_series: set[str] = set()
        self.active = Gauge(
            "dynamem_balancer_active", "1 on the balancing replica, 0 on a standby", registry=self.registry
        )

    def standby(self) -> None:
        """A replica that does not balance exports no VM or node series: alerts follow the active one."""
        self.active.set(0)
        for gauge in (self.vm_assigned, self.vm_demand, self.vm_pressure, self.vm_warning):
            gauge.clear()
        for gauge in (self.node_pool, self.node_assigned, self.node_over):
            gauge.clear()
        self._children.clear()
        self._vm_series, self._node_series = set(), set()

    def observe_round(
        self,
        snapshot: Snapshot,
        plans: Mapping[str, NodePlan],
        duration_s: float,
        memory_writes: int,
        status_writes: int,
    ) -> None:
        """Set this round's series; drop only those of VMs and nodes that are gone (a child of a labelled
        metric is costly to make, so the ones still in use are kept and updated, not rebuilt)."""
        self.active.set(1)
        self.rounds.inc()
        self.writes.labels(kind="memory").inc(memory_writes)
        self.writes.labels(kind="status").inc(status_writes)
        self.round_seconds.observe(duration_s)
        seen_vms: set[tuple[str, str, str]] = set()
        seen_nodes: set[str] = set()
        for name, plan in plans.items():
            seen_nodes.add(name)
            self._set(self.node_pool, (name,), plan.pool)
            self._set(self.node_assigned, (name,), plan.assigned_total)
            self._set(self.node_over, (name,), 1 if plan.over_subscribed else 0)
            for decision in plan.decisions:
                key = snapshot.vm_keys[decision.name]
                labels = (key.namespace, key.name, name)
                seen_vms.add(labels)
                self._set(self.vm_assigned, labels, decision.assigned)
                if decision.demand is not None:
                    self._set(self.vm_demand, labels, decision.demand)
                    self._set(self.vm_warning, labels, 1 if decision.assigned < decision.demand else 0)
                else:
                    self._drop((self.vm_demand, self.vm_warning), labels)
                if decision.pressure is not None:
                    self._set(self.vm_pressure, labels, decision.pressure)
                else:
                    self._drop((self.vm_pressure,), labels)
        vm_gauges = (self.vm_assigned, self.vm_demand, self.vm_pressure, self.vm_warning)
        for labels in self._vm_series - seen_vms:
            self._drop(vm_gauges, labels)
        for node in self._node_series - seen_nodes:
            self._drop((self.node_pool, self.node_assigned, self.node_over), (node,))
        self._vm_series, self._node_series = seen_vms, seen_nodes

    def _set(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        child = self._children.get((id(gauge), labels))
        if child is None:
            child = self._children[(id(gauge), labels)] = gauge.labels(*labels)
        child.set(value)

    def _drop(self, gauges: tuple[Gauge, ...], labels: tuple[str, ...]) -> None:
        for gauge in gauges:
            if self._children.pop((id(gauge), labels), None) is not None:
                gauge.remove(*labels)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve /metrics (once: a retried startup does not bind the port twice)."""
        if not self.serving:
            start_http_server(port, addr=addr, registry=self.registry)
            self.serving = True
