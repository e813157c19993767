"""dynamem.sim.bounds: what no policy beats. Small cases worked by hand, and, over random clusters, every
policy of the simulator on the right side of both bounds (a bound that some policy passes is wrong)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from random_clusters import clusters

from dynamem.policy import GiB
from dynamem.sim.bounds import least_migrated, least_unserved
from dynamem.sim.scenario import Scenario, parse_scenario
from dynamem.sim.simulate import simulate


def scenario(
    nodes: dict[str, str],
    vms: list[tuple[str, str, str]],
    demand: dict[str, list[str | None]],
    **extra: object,
) -> Scenario:
    """``vms``: (name, startup, maximum), all starting on the first node."""
    first = next(iter(nodes))
    data: dict[str, object] = {
        "step": "15m",
        "nodes": [{"name": n, "memory": m} for n, m in nodes.items()],
        "vms": [{"name": n, "node": first, "startup": s, "maximum": m} for n, s, m in vms],
        "demand": demand,
        **extra,
    }
    return parse_scenario(data, "test.yaml")


def test_demand_beyond_the_pooled_memory_is_unserved() -> None:
    s = scenario({"a": "4Gi", "b": "2Gi"}, [("x", "1Gi", "8Gi")], {"x": ["5Gi", "7Gi", None]})
    assert least_unserved(s) == pytest.approx(1.0)  # step 2: 7Gi wanted, 6Gi pooled; off: nothing


def test_demand_above_the_maximum_is_unserved_whatever_the_room() -> None:
    s = scenario({"a": "64Gi"}, [("x", "1Gi", "2Gi")], {"x": ["3Gi", "1Gi"]})
    assert least_unserved(s) == pytest.approx(1.0)


def test_a_running_vm_takes_its_boot_size_and_its_overhead() -> None:
    # Two VMs booted at 3Gi on 4Gi want 1Gi and 3Gi: running both needs 6Gi. Leaving part of the 1Gi VM off
    # (1Gi of demand lost per 3Gi freed) beats starving the other: 2/3 of its 1Gi, 2/3 GiB-steps.
    two = [("small", "3Gi", "4Gi"), ("big", "3Gi", "4Gi")]
    s = scenario({"a": "4Gi"}, two, {"small": ["1Gi"], "big": ["3Gi"]})
    assert least_unserved(s) == pytest.approx(2 / 3)
    # With 1Gi of overhead each, 8Gi is asked of 4Gi: the small VM off in full (1Gi lost, 4Gi freed).
    s = scenario({"a": "4Gi"}, two, {"small": ["1Gi"], "big": ["3Gi"]}, overhead="1Gi")
    assert least_unserved(s) == pytest.approx(1.0)
    # With 2Gi each (10Gi of 4Gi) neither fits at all, 4Gi lost; the relaxation, a bound, says less: the
    # small VM off (1Gi lost, 5Gi freed), then a fifth of the big one (3/5 lost, 1Gi freed).
    s = scenario({"a": "4Gi"}, two, {"small": ["1Gi"], "big": ["3Gi"]}, overhead="2Gi")
    assert least_unserved(s) == pytest.approx(1.6)


def test_least_migrated_copies_the_startup_size_of_each_vm_that_must_grow() -> None:
    vms = [("a", "1Gi", "8Gi"), ("b", "2Gi", "8Gi"), ("c", "4Gi", "8Gi")]
    demand: dict[str, list[str | None]] = {"a": ["3Gi", "3Gi"], "b": ["3Gi", None], "c": ["4Gi", "4Gi"]}
    s = scenario({"n1": "32Gi", "n2": "32Gi"}, vms, demand)
    # Never migrated: a misses 2+2, b 1, c nothing. Serving a costs 1Gi (4 GiB-steps relieved), b 2Gi.
    assert least_migrated(s, 5.0) == 0.0
    assert least_migrated(s, 1.0) == pytest.approx(1.0)
    assert least_migrated(s, 0.0) == pytest.approx(3.0)
    assert least_migrated(s, 0.5) == pytest.approx(2.0)  # half of b's relief, in the relaxation: 1Gi
    beyond = scenario({"n1": "32Gi", "n2": "32Gi"}, [("a", "1Gi", "2Gi")], {"a": ["3Gi"]})
    assert least_migrated(beyond, 0.5) is None  # 1Gi above its maximum is never served


@settings(max_examples=200, deadline=None)
@given(clusters(["dynamem", "node-local", "oracle", "static", "proxmox", "xen", "descheduler"]))
def test_no_policy_passes_either_bound(case: tuple[Scenario, str]) -> None:
    s, policy = case
    summary = simulate(s, policy).summary
    unserved = summary.unmet_demand + summary.unstarted_demand
    assert unserved >= least_unserved(s) - 1e-9
    least = least_migrated(s, unserved)
    assert least is not None  # what a policy did, some policy can do
    assert summary.migrated_bytes / GiB >= least - 1e-9
