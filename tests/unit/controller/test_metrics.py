"""The operator's metrics (:mod:`dynamem.controller.metrics`): per-VM and per-node series, the last round's.

A round hands its plans to the collector; the series are made when /metrics is read, so a VM that left has no
series after the next round, and a standby replica exports none.
"""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from dynamem.controller.balancer import Balancer
from dynamem.controller.metrics import OperatorMetrics
from dynamem.kube.objects import GI

from .builders_k8s import NS, FakeWriter, make_node_body, make_vm_body, make_vmi_body, make_vmm_body, observed
from .test_balancer import OPTIONS, FakeDemand


def scrape(metrics: OperatorMetrics, *names: str) -> dict[str, float]:
    registry = metrics.registry.restricted_registry(names) if names else metrics.registry
    samples = {}
    for line in generate_latest(registry).decode().splitlines():  # type: ignore[arg-type]
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


def round_of(metrics: OperatorMetrics, names: list[str], gib: float = 0.7) -> None:
    bodies = observed(
        vmms=[make_vmm_body(n) for n in names],
        vms=[make_vm_body(n) for n in names],
        vmis=[make_vmi_body(n) for n in names],
        nodes=[make_node_body("host", allocatable="8Gi")],
    )
    balancer = Balancer(FakeWriter(), FakeDemand({n: gib for n in names}), OPTIONS, metrics=metrics)
    asyncio.run(balancer.run_round(bodies))


def test_a_round_exports_each_vm_and_node_with_the_values_it_planned() -> None:
    metrics = OperatorMetrics()
    round_of(metrics, ["finance", "sales"])
    samples = scrape(metrics)
    for name in ("finance", "sales"):
        labels = f'name="{name}",namespace="{NS}",node="host"'
        assert samples[f"dynamem_vm_demand_bytes{{{labels}}}"] == round(0.7 * GI)
        assert samples[f"dynamem_vm_assigned_bytes{{{labels}}}"] >= GI
        assert f"dynamem_vm_pressure_percent{{{labels}}}" in samples
        assert samples[f"dynamem_vm_warning{{{labels}}}"] == 0
    assert samples['dynamem_node_pool_bytes{node="host"}'] > 0
    assert samples['dynamem_node_over_subscribed{node="host"}'] == 0
    assert samples["dynamem_balance_rounds_total"] == 1


def test_a_vm_gone_from_the_next_round_has_no_series() -> None:
    metrics = OperatorMetrics()
    round_of(metrics, ["finance", "sales"])
    round_of(metrics, ["finance"])
    vm_series = [s for s in scrape(metrics) if s.startswith("dynamem_vm_assigned_bytes")]
    assert vm_series == [f'dynamem_vm_assigned_bytes{{name="finance",namespace="{NS}",node="host"}}']


def test_a_standby_exports_no_vm_or_node_series() -> None:
    metrics = OperatorMetrics()
    round_of(metrics, ["finance"])
    metrics.standby()
    samples = scrape(metrics)
    assert not [s for s in samples if s.startswith(("dynamem_vm_", "dynamem_node_"))]
    assert samples["dynamem_balancer_active"] == 0


def test_a_scrape_restricted_to_round_counters_leaves_the_vm_series_out() -> None:
    metrics = OperatorMetrics()
    round_of(metrics, ["finance"])
    samples = scrape(metrics, "dynamem_balance_rounds_total", "dynamem_api_writes_total")
    assert samples["dynamem_balance_rounds_total"] == 1
    assert samples['dynamem_api_writes_total{kind="status"}'] == 1
    assert not [s for s in samples if s.startswith(("dynamem_vm_", "dynamem_node_"))]


def test_what_an_alert_needs_when_demand_or_writes_fail_is_exported() -> None:
    """A Prometheus that does not answer, a VM without samples, a write that fails: memory is held in each
    case, and each shows in a series an alert can watch (the per-VM series of such a VM are left out)."""
    metrics = OperatorMetrics()
    names = ["finance", "sales"]
    bodies = observed(
        vmms=[make_vmm_body(n) for n in names],
        vms=[make_vm_body(n) for n in names],
        vmis=[make_vmi_body(n) for n in names],
        nodes=[make_node_body("host", allocatable="8Gi")],
    )
    writer = FakeWriter(down_apply={"finance"})
    demand = FakeDemand({"finance": 2.4})  # no samples of sales
    asyncio.run(Balancer(writer, demand, OPTIONS, metrics=metrics).run_round(bodies))
    samples = scrape(metrics)
    assert samples["dynamem_demand_reading_failed"] == 0
    assert samples["dynamem_vms_demand_unknown"] == 1
    assert samples["dynamem_api_write_failures_total"] == 1
    demand.error = "Prometheus: connection refused"
    asyncio.run(Balancer(FakeWriter(), demand, OPTIONS, metrics=metrics).run_round(bodies))
    samples = scrape(metrics)
    assert samples["dynamem_demand_reading_failed"] == 1
    assert samples["dynamem_vms_demand_unknown"] == 2
    metrics.standby()  # the Lease lost mid-outage: the new leader says what it reads, not this replica
    samples = scrape(metrics)
    assert samples["dynamem_demand_reading_failed"] == 0 and samples["dynamem_vms_demand_unknown"] == 0


def test_a_vm_whose_settings_are_invalid_is_not_counted_as_without_samples() -> None:
    metrics = OperatorMetrics()
    bodies = observed(
        vmms=[make_vmm_body("finance", startup=2048)],  # refused (a unit left out): INVALID, not balanced
        vms=[make_vm_body("finance")],
        vmis=[make_vmi_body("finance")],
        nodes=[make_node_body("host", allocatable="8Gi")],
    )
    asyncio.run(Balancer(FakeWriter(), FakeDemand({}), OPTIONS, metrics=metrics).run_round(bodies))
    assert scrape(metrics)["dynamem_vms_demand_unknown"] == 0
