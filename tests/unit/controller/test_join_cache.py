"""The join cache (:class:`dynamem.controller.snapshot.JoinCache`): a VM's join is kept while its views are.

A balancer keeps one across rounds so a round at rest does not join 10,000 VMs again. What it gives must be
what a fresh join gives: remade when the VirtualMachineMemory, VM or VMI changes (a new resourceVersion, so a
new view), with this round's demand, and dropped when the VirtualMachineMemory is gone.
"""

from __future__ import annotations

from dynamem.controller.demand import DemandReading
from dynamem.controller.snapshot import JoinCache, Observed, Phase, build_snapshot, vmm_view
from dynamem.kube.objects import GI, MI, ObjectKey, node_view, vm_view, vmi_view

from .builders_k8s import NS, make_node_body, make_vm_body, make_vmi_body, make_vmm_body

X = ObjectKey(NS, "x")
HOST = node_view(make_node_body("host", allocatable="8Gi"))


def seen(vmm: object, vm: object, vmi: object) -> Observed:
    return Observed(vmms=[vmm], vms=[vm], vmis=[vmi], nodes=[HOST], pods=[])  # type: ignore[list-item]


def demand(mib: int) -> DemandReading:
    return DemandReading(by_vm={X: mib * MI})


def test_an_unchanged_vm_keeps_its_join_and_gets_this_rounds_demand() -> None:
    cache = JoinCache()
    views = seen(vmm_view(make_vmm_body("x")), vm_view(make_vm_body("x")), vmi_view(make_vmi_body("x")))
    first = build_snapshot(views, demand(600), cache=cache)
    kept = cache.joins[X][4]
    second = build_snapshot(views, demand(700), cache=cache)
    assert cache.joins[X][4] is kept  # not joined again
    assert (first.managed[X].demand, second.managed[X].demand) == (600 * MI, 700 * MI)
    (state,) = second.nodes[0].vms
    assert state.demand == 700 * MI
    assert second == build_snapshot(views, demand(700))  # the same as a join made afresh


def test_a_new_resource_version_of_any_of_the_three_views_is_joined_again() -> None:
    cache = JoinCache()
    vmm, vm, vmi = vmm_view(make_vmm_body("x")), vm_view(make_vm_body("x")), vmi_view(make_vmi_body("x"))
    build_snapshot(seen(vmm, vm, vmi), demand(600), cache=cache)

    wider = vmm_view(make_vmm_body("x", maximum="2Gi", resource_version="2", generation=2))
    snapshot = build_snapshot(seen(wider, vm, vmi), demand(600), cache=cache)
    item = snapshot.managed[X]
    assert item.vmm is wider and item.settings is not None and item.settings.maximum == 2 * GI
    assert snapshot.nodes[0].vms[0].limits.maximum == 2 * GI

    restart = vm_view(make_vm_body("x", restart_required=True))
    item = build_snapshot(seen(wider, restart, vmi), demand(600), cache=cache).managed[X]
    assert item.vm is restart and item.blocked is not None and "RestartRequired" in item.blocked

    grown = vmi_view(make_vmi_body("x", guest="2Gi", current="2Gi"))
    snapshot = build_snapshot(seen(wider, vm, grown), demand(600), cache=cache)
    assert snapshot.managed[X].vmi is grown and snapshot.nodes[0].vms[0].assigned == 2 * GI

    stopped = vmi_view(make_vmi_body("x", phase="Succeeded"))
    assert build_snapshot(seen(wider, vm, stopped), demand(600), cache=cache).managed[X].phase is not (
        Phase.RUNNING
    )


def test_the_entry_of_a_deleted_virtual_machine_memory_is_dropped() -> None:
    cache = JoinCache()
    views = seen(vmm_view(make_vmm_body("x")), vm_view(make_vm_body("x")), vmi_view(make_vmi_body("x")))
    build_snapshot(views, demand(600), cache=cache)
    assert X in cache.joins and X in cache.states
    gone = Observed(vmms=[], vms=views.vms, vmis=views.vmis, nodes=[HOST], pods=[])
    snapshot = build_snapshot(gone, demand(600), cache=cache)
    assert X not in snapshot.managed
    assert (cache.joins, cache.states) == ({}, {})


def test_a_vm_held_this_round_gets_its_policy_input_made_again() -> None:
    cache = JoinCache()
    views = seen(vmm_view(make_vmm_body("x")), vm_view(make_vm_body("x")), vmi_view(make_vmi_body("x")))
    free = build_snapshot(views, demand(600), cache=cache).nodes[0].vms[0]
    held = build_snapshot(views, demand(600), held={X: "backing off"}, cache=cache).nodes[0].vms[0]
    assert (free.in_flight_to, held.in_flight_to) == (None, GI)
    assert build_snapshot(views, demand(600), cache=cache).nodes[0].vms[0].in_flight_to is None
