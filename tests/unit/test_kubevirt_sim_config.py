"""The KubeVirt stand-in follows the cluster's KubeVirt CR as virt-controller's ClusterConfig does: what the
CR does not set takes the stand-in's options, and a CR it cannot read leaves what it had."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

from dynamem.kube.kubevirt_config import WORKLOAD_UPDATE_STRATEGY, go_duration_seconds, kubevirt_settings
from dynamem.kubevirt_sim.controller import KubeVirtSimulator, SimulatorOptions
from dynamem.kubevirt_sim.launcher import Rendering
from dynamem.kubevirt_sim.migrations import MigrationOptions


def listing(configuration: dict[str, Any]) -> dict[str, Any]:
    return {"items": [{"spec": {"configuration": configuration}}]}


@pytest.fixture
def simulator() -> Iterator[KubeVirtSimulator]:
    options = SimulatorOptions(
        migration=MigrationOptions(per_cluster=3), rendering=Rendering(memory_overcommit=150)
    )
    api_client = client.ApiClient()  # never reached: the CR's reads are answered below
    yield KubeVirtSimulator(api_client, options)
    asyncio.run(api_client.close())


def answer(simulator: KubeVirtSimulator, *answers: dict[str, Any] | ApiException) -> None:
    queue = list(answers)

    async def list_cluster_custom_object(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        found = queue.pop(0)
        if isinstance(found, ApiException):
            raise found
        return found

    simulator.custom.list_cluster_custom_object = list_cluster_custom_object  # type: ignore[method-assign]


def test_the_crs_values_win_and_the_options_stand_where_it_sets_none(simulator: KubeVirtSimulator) -> None:
    answer(
        simulator,
        listing(
            {
                "developerConfiguration": {"cpuAllocationRatio": 4},
                "migrations": {"parallelMigrationsPerCluster": 1},
            }
        ),
        listing({"developerConfiguration": {"memoryOvercommit": 0}}),  # refused by KubeVirt: not taken
        ApiException(status=404),  # no KubeVirt CRD
    )
    asyncio.run(simulator.follow_kubevirt_cr())
    assert simulator.rendering == Rendering(memory_overcommit=150, cpu_allocation_ratio=4)
    assert (simulator.migrations.options.per_cluster, simulator.migrations.options.outbound_per_node) == (
        1,
        2,
    )
    asyncio.run(simulator.follow_kubevirt_cr())
    assert simulator.rendering == Rendering(memory_overcommit=150)
    assert simulator.migrations.options.per_cluster == 3
    asyncio.run(simulator.follow_kubevirt_cr())
    assert simulator.rendering == Rendering(memory_overcommit=150)


def test_a_cr_it_cannot_read_leaves_what_it_had_and_is_told_once(
    simulator: KubeVirtSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    answer(
        simulator,
        listing({"developerConfiguration": {"memoryOvercommit": 200}}),
        ApiException(status=403, reason="Forbidden"),
        ApiException(status=403, reason="Forbidden"),
    )
    with caplog.at_level(logging.WARNING, logger="dynamem.kubevirt_sim"):
        for _ in range(3):
            asyncio.run(simulator.follow_kubevirt_cr())
    assert simulator.rendering.memory_overcommit == 200
    assert [r.getMessage() for r in caplog.records] == ["the KubeVirt CR is unreadable (403 Forbidden)"]


@pytest.mark.parametrize(
    ("configuration", "memory", "expected"),
    [
        pytest.param({}, {"guest": "1Gi"}, "4Gi", id="guest-x-4"),
        pytest.param(
            {"liveUpdateConfiguration": {"maxHotplugRatio": 2}}, {"guest": "3Gi"}, "6Gi", id="ratio"
        ),
        pytest.param(
            {"liveUpdateConfiguration": {"maxGuest": "16Gi"}}, {"guest": "1Gi"}, "16Gi", id="cr-max"
        ),
        pytest.param({}, {"guest": "2Gi", "maxGuest": "3Gi"}, "3Gi", id="its-own"),
        pytest.param({"vmRolloutStrategy": "Stage"}, {"guest": "1Gi"}, None, id="stage"),
        pytest.param({}, {"guest": "1000M"}, None, id="not-2Mi-aligned"),
        pytest.param({}, {"guest": "512Mi"}, None, id="under-1Gi"),
        pytest.param({}, {}, None, id="no-guest"),
    ],
)
def test_a_new_vmi_gets_the_max_guest_kubevirt_defaults_it_to(
    simulator: KubeVirtSimulator, configuration: dict[str, Any], memory: dict[str, str], expected: str | None
) -> None:
    """``defaults.go`` ``setupMemoryHotplug``: the CR's maxGuest, else guest x maxHotplugRatio (4), none
    under Stage or when ValidateLiveUpdateMemory refuses it (then the VMI's memory cannot change live)."""
    answer(simulator, listing(configuration))
    asyncio.run(simulator.follow_kubevirt_cr())
    template: dict[str, Any] = {"domain": {"memory": dict(memory)}}
    simulator._default_max_guest(template)
    assert template["domain"]["memory"].get("maxGuest") == expected


def test_the_workload_updaters_eviction_batches_follow_the_cr() -> None:
    """workload-updater.go: spec.workloadUpdateStrategy.batchEvictionSize (0 too) and batchEvictionInterval,
    a metav1.Duration as Go writes it; neither set, KubeVirt's 10 a minute."""
    strategy = {"workloadUpdateMethods": ["Evict"], "batchEvictionSize": 3, "batchEvictionInterval": "1m30s"}
    settings = kubevirt_settings({WORKLOAD_UPDATE_STRATEGY: strategy})
    assert (settings.batch_eviction_size, settings.batch_eviction_interval_s) == (3, 90.0)
    none = kubevirt_settings(
        {WORKLOAD_UPDATE_STRATEGY: {"batchEvictionSize": 0, "batchEvictionInterval": "soon"}}
    )
    assert (none.batch_eviction_size, none.batch_eviction_interval_s) == (0, None)
    assert go_duration_seconds("1h0m0.5s") == 3600.5 and go_duration_seconds("250ms") == 0.25
