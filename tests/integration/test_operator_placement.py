"""Issue 9's done-when, end to end: the real API server, kube-scheduler and kwok, the KubeVirt v1.7.0 stand-in
(its workload-updater waits KubeVirt's 5 s), Prometheus and the operator process with its default policy, the
cluster plan.

Three busy VMs on one node and two idle nodes: the guests, fitted to real ones, show at most ~886Mi used of
1Gi and page, so only the paging signals say they are short. Every VM ends at its demand, each moved by a
VirtualMachineInstanceMigration that dynamem made itself, pinned with ``spec.addedNodeSelector`` to the node
its plan chose, and placed there by the real scheduler.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI

from .operator_harness import Stack, first_node_stack, wait_until

BUSY = ("finance", "sales", "engineering")
DEMAND_GIB = 1.2
HOSTNAME = "kubernetes.io/hostname"


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, list[str]]]:
    yield from first_node_stack(
        request,
        dict.fromkeys(("home", "idle-a", "idle-b"), "8Gi"),
        {vm: {"startup": "1Gi", "maximum": "4Gi"} for vm in BUSY},
        hotplug_delay=5.0,  # KubeVirt's throttle
    )


def node_of(stack: Stack, vm: str) -> str:
    return str(stack.vmi(vm)["status"]["nodeName"])


def scheduled_on(stack: Stack, pod: str) -> str | None:
    for event in k8s_client.CoreV1Api(stack.api).list_namespaced_event(stack.namespace).items:
        if event.involved_object.name == pod and event.reason == "Scheduled":
            return str(event.message)
    return None


def test_three_busy_vms_on_one_node_end_at_their_demand_moved_by_dynamems_own_migrations(
    stack: tuple[Stack, list[str]],
) -> None:
    world, (home, *idle) = stack
    for vm in BUSY:
        wait_until(f"{vm} running", lambda vm=vm: world.has(vm), timeout=60)
    world.set_demand(**dict.fromkeys(BUSY, DEMAND_GIB))
    world.start_operator()

    def settled() -> bool:
        world.check_kubevirt_invariants()
        at_demand = all(
            (world.has(vm) or 0) >= DEMAND_GIB * GI and world.guest(vm) == world.has(vm) for vm in BUSY
        )
        going = [
            m for m in world.migrations() if m.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
        return at_demand and not going

    try:
        wait_until("every VM at its demand, no migration going", settled, timeout=240, every=0.5)
    except AssertionError:
        logs = world.operator.logs()[-6000:] if world.operator else ""
        raise AssertionError(f"not settled: {[(vm, world.has(vm)) for vm in BUSY]}\n{logs}") from None

    done = [m for m in world.migrations() if m.get("status", {}).get("phase") == "Succeeded"]
    assert done, "no migration carried the changes out"
    for m in done:  # dynamem made each one, pinned to the node its plan chose
        assert m["metadata"]["labels"].get("dynamem.io/migration") == "true", m["metadata"]["name"]
        assert set(m["spec"]["addedNodeSelector"]) == {HOSTNAME}
        assert m["metadata"]["annotations"]["dynamem.io/reason"]
    for vm in BUSY:
        mine = sorted(
            (m for m in done if m["spec"]["vmiName"] == vm), key=lambda m: m["metadata"]["creationTimestamp"]
        )
        assert mine, f"{vm} was never moved"
        chosen = mine[-1]["spec"]["addedNodeSelector"][HOSTNAME]
        assert node_of(world, vm) == chosen  # it runs where dynamem's plan put it
        assert chosen != home or len(mine) > 1  # the first move left the busy node
        target_pod = wait_until(
            "the target pod's Scheduled event", lambda vm=vm: _target_pod(world, vm), timeout=10
        )
        message = wait_until("Scheduled", lambda pod=target_pod: scheduled_on(world, pod), timeout=10)
        assert chosen in message  # bound there by the real kube-scheduler
    assert {node_of(world, vm) for vm in BUSY} & set(idle)  # the idle nodes took the load
    for vm in BUSY:  # the reason of the move reached the status and the Events
        assert "to " in world.vmm(vm).get("status", {}).get("reason", "") or any(
            e["reason"] == "MigrationCreated" for e in world.events(vm)
        )
        assert any(e["reason"] == "MigrationCreated" and "to " in e["note"] for e in world.events(vm))
    assert not any(e["reason"] == "MigrationRaceLost" for vm in BUSY for e in world.events(vm))


def _target_pod(stack: Stack, vm: str) -> str | None:
    vmi = stack.custom.get_namespaced_custom_object(
        "kubevirt.io", "v1", stack.namespace, "virtualmachineinstances", vm
    )
    pod = vmi.get("status", {}).get("migrationState", {}).get("targetPod")
    return str(pod) if pod else None
