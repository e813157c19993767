"""A VM that is defined but stopped keeps the hole it needs to start, end to end: the real API server,
kube-scheduler and kwok, the KubeVirt v1.7.0 stand-in, Prometheus and the operator process.

``home`` (3Gi) is full: ``busy`` (1Gi, paging for 1.8Gi) and ``filler`` (2Gi). ``spare`` (3Gi) is empty, and
``later`` (2Gi, runStrategy Halted) would start there. Growing busy onto spare (x1.875: 1.875Gi) would leave
spare 1.125Gi and home 1Gi: no node could take later's 2Gi launcher, and with every hole smaller than its VMs
the cluster could change nothing more (a shrink is a migration too). The operator knows later by its
VirtualMachineMemory, so busy is kept, and later starts when its owner starts it.

With two VMs off (``early`` and ``late``, 2Gi each) and spare at 4Gi, each keeps a hole of its own while it
has been off for less than ``--parked-after``, as KubeVirt's Ready condition tells: busy is kept. Parked
(an operator with ``--parked-after 1``), they share one hole, and busy grows onto spare.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from dynamem.kube.objects import GI, conditions
from dynamem.sim.scenario import Scenario, parse_scenario
from dynamem.testing.controlplane import ControlPlane
from dynamem.testing.prometheus import Prometheus

from .operator_harness import Stack, wait_until


def stopped_vm_scenario(home: str, spare: str, spare_memory: str, off: tuple[str, ...]) -> Scenario:
    """busy and filler fill ``home`` (3Gi); each VM named in ``off`` (2Gi) is defined but off."""
    return parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": home, "memory": "3Gi"}, {"name": spare, "memory": spare_memory}],
            "vms": [
                {"name": "busy", "node": home, "startup": "1Gi", "maximum": "4Gi"},
                {"name": "filler", "node": home, "startup": "2Gi", "maximum": "2Gi"},
                *({"name": name, "node": spare, "startup": "2Gi", "maximum": "2Gi"} for name in off),
            ],
            "demand": {"busy": ["512Mi"], "filler": ["512Mi"], **{name: [None] for name in off}},
        }
    )


StackWith = Callable[[str, tuple[str, ...]], tuple[Stack, str]]


@pytest.fixture
def stack_with(
    control_plane: ControlPlane, prometheus: Prometheus, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[StackWith]:
    """Makes the scenario's stack (spare's memory, the VMs off) with busy and filler running; returns it
    and spare's name."""
    made: list[Stack] = []

    def make(spare_memory: str, off: tuple[str, ...]) -> tuple[Stack, str]:
        spare = unique_name("spare")
        scenario = stopped_vm_scenario(unique_name("home"), spare, spare_memory, off)
        made.append(world := Stack(control_plane, prometheus, namespace, scenario))
        for vm in ("busy", "filler"):
            wait_until(f"{vm} running", lambda vm=vm: world.has(vm), timeout=60)
        return world, spare

    try:
        yield make
    finally:
        for world in made:
            world.close()


def test_a_stopped_vm_keeps_its_hole_and_starts_when_its_owner_starts_it(stack_with: StackWith) -> None:
    world, spare = stack_with("3Gi", ("later",))
    assert world.vm("later")["spec"]["runStrategy"] == "Halted"
    world.set_demand(busy=1.8)
    world.start_operator()

    seen: list[str] = []

    def kept() -> str | None:
        reason = str(world.vmm("busy").get("status", {}).get("reason", ""))
        seen.append(reason)
        return reason if "the hole a stopped VM needs to start" in reason else None

    try:
        reason = wait_until("busy kept for the stopped VM's hole", kept, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; busy's last reasons: {seen[-3:]}") from exc
    assert reason.startswith("kept; not grown: it would take")
    rounds = world.rounds()
    wait_until("a few more rounds", lambda: world.rounds() >= rounds + 5, timeout=60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # still kept: no migration takes spare's hole
        world.check_kubevirt_invariants()
        assert world.has("busy") == GI and not world.migrations()
        time.sleep(0.5)

    world.custom.patch_namespaced_custom_object(
        "kubevirt.io", "v1", world.namespace, "virtualmachines", "later", {"spec": {"runStrategy": "Always"}}
    )
    world.set_demand(later=1.0)
    wait_until("later running", lambda: world.has("later"), timeout=60)
    assert world.vmi("later")["status"]["nodeName"] == spare
    world.check_kubevirt_invariants()


def test_vms_off_keep_a_hole_each_until_they_are_parked(stack_with: StackWith) -> None:
    world, spare = stack_with("4Gi", ("early", "late"))

    def off(vm: str) -> str | None:  # the stand-in's Ready condition, as KubeVirt's VM controller writes it
        ready = conditions(world.vm(vm)).get("Ready") or {}
        return str(ready.get("lastTransitionTime")) if ready.get("reason") == "VMINotExists" else None

    for vm in ("early", "late"):
        wait_until(f"{vm}'s Ready condition: VMINotExists", lambda vm=vm: off(vm), timeout=30)
    world.set_demand(busy=1.8)
    first = world.start_operator()

    def reason() -> str:
        return str(world.vmm("busy").get("status", {}).get("reason", ""))

    wait_until("busy kept for two holes", lambda: "a stopped VM needs to start (2Gi" in reason(), timeout=180)
    rounds = world.rounds()
    wait_until("a few more rounds", lambda: world.rounds() >= rounds + 3, timeout=60)
    assert world.has("busy") == GI and not world.migrations(), reason()
    first.stop()

    world.start_operator("--parked-after", "1")
    world.grown_by_dynamem_to("busy", spare)
    world.check_kubevirt_invariants()
