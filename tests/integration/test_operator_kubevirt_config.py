"""The KubeVirt CR changed while the operator runs, end to end: the real API server, kube-scheduler and
kwok, the KubeVirt v1.7.0 stand-in, Prometheus and the operator process.

Three paging VMs on one node, two idle nodes to grow onto. By default dynamem would move two at once
(KubeVirt's ``parallelOutboundMigrationsPerNode`` 2). The cluster admin sets the KubeVirt CR's
``parallelMigrationsPerCluster`` to 1 after the operator started: dynamem reads the CR again with its next
periodic LIST (``controller/kubevirt_follower.py``) and from then on has one change in flight at a time,
with no restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dynamem.kube.objects import GI, quantity_bytes

from .operator_harness import Stack, first_node_stack, wait_until

VMS = ("web", "db", "app")


def current(world: Stack, name: str) -> int | None:
    return quantity_bytes(world.vmi(name)["status"]["memory"]["guestCurrent"])


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        {"home": "8Gi", "a": "8Gi", "b": "8Gi"},
        {name: {"startup": "1Gi", "maximum": "4Gi"} for name in VMS},
        bandwidth_gib=0.25,  # each migration copies for 4 s: long enough to overlap the next if let
    )


def test_a_lower_parallel_migration_limit_set_while_dynamem_runs_is_followed_from_the_next_list(
    stack: tuple[Stack, list[str]], request: pytest.FixtureRequest
) -> None:
    world, _nodes = stack
    wait_until("the VMs running", lambda: all(world.has(name) for name in VMS), timeout=60)
    operator = world.start_operator("--resync-period", "2")
    # it read the KubeVirt CR at start (there was none) and balances before the admin sets the limit
    wait_until("the operator balancing", lambda: operator.gauge("dynamem_balancer_active") == 1.0, timeout=30)
    kubevirt = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "KubeVirt",
        "metadata": {"name": "kubevirt"},
        "spec": {"configuration": {"migrations": {"parallelMigrationsPerCluster": 1}}},
    }
    world.custom.create_namespaced_custom_object("kubevirt.io", "v1", world.namespace, "kubevirts", kubevirt)
    request.addfinalizer(
        lambda: world.custom.delete_namespaced_custom_object(
            "kubevirt.io", "v1", world.namespace, "kubevirts", "kubevirt"
        )
    )
    wait_until(
        "the operator read the CR again",
        lambda: "KubeVirt CR: parallelMigrationsPerCluster 1" in operator.logs(),
        timeout=30,
    )

    world.set_demand(**dict.fromkeys(VMS, 1.2))  # one multiplicative step (1.5Gi) serves each
    most = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        # a change in flight: memory.guest asked for, not yet what the VMI says its guest has
        in_flight = [name for name in VMS if world.guest(name) != current(world, name)]
        most = max(most, len(in_flight))
        if all((world.has(name) or 0) > GI for name in VMS) and not in_flight:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"not every VM grown: {[(n, world.guest(n), world.has(n)) for n in VMS]}")
    assert most == 1
    done = [m for m in world.migrations() if m.get("status", {}).get("phase") == "Succeeded"]
    assert len(done) >= 3
    assert not [m for m in world.migrations() if m.get("status", {}).get("phase") == "Failed"]
