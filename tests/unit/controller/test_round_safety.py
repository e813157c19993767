"""A round never writes on a stale view, never takes another manager's field, never loops (issue 10, 3-6).

The world is the seed's workday of :mod:`test_balancer` (three VMs, 1Gi..4Gi, on an 8Gi host); each test
changes one thing the way the API server or KubeVirt would.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from dynamem.controller.balancer import OWN_MIGRATION_GRACE_S, Balancer
from dynamem.kube.api import now_rfc3339

from .builders_k8s import NS, FakeWriter, make_node_body, make_vm_body, make_vmi_body, make_vmm_body
from .test_balancer import NOW, OPTIONS, FakeDemand, World, applied, balancer_for, run, workday


def conditions(status: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined,index]


# --- item 3: writes on a stale view, fields of other managers ---------------------------------------------


def test_an_apply_carries_the_vms_resource_version_and_is_not_forced() -> None:
    world, demand = workday(finance=2.4)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    [write] = writer.applies
    assert (write.name, write.resource_version, write.force) == ("finance", "7", False)


def test_a_write_on_a_stale_view_is_dropped_and_decided_again() -> None:
    world, demand = workday(finance=2.4)
    writer = FakeWriter(stale_apply={"finance"})
    balancer = balancer_for(demand, writer)
    result = run(balancer, world)
    assert (result.memory_writes, result.stale, result.api_errors) == (0, 1, 0)
    assert [e for e in writer.events if e.action == "Balance"] == []
    assert dict(writer.statuses)["finance"]["hold"] is None  # not held: it is simply re-planned
    writer.stale_apply.clear()  # the watch brought the new VM
    writer.clear()
    run(balancer, world)
    assert applied(writer) == [("finance", "3Gi", None)]


def test_memory_guest_applied_by_another_manager_is_not_taken() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["metadata"]["managedFields"] = [
        {
            "manager": "argocd-controller",
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:domain": {"f:memory": {"f:guest": {}}}}}}},
        }
    ]
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []
    status = dict(writer.statuses)["finance"]
    assert conditions(status)["FieldOwnedByOtherManager"] == "True"
    assert "argocd-controller" in status["heldBecause"]
    assert [(e.name, e.type_, e.reason) for e in writer.events if e.name == "finance"] == [
        ("finance", "Normal", "LeftToOtherManager"),  # Ready: running, its memory left to the other manager
        ("finance", "Warning", "FieldOwnedByOtherManager"),
    ]
    world.store(writer.statuses)
    for _ in range(3):  # held, quietly: no write, no second Event
        writer.clear()
        run(balancer_for(demand, writer), world)
        world.store(writer.statuses)
        assert (writer.applies, writer.events) == ([], [])

    forced = FakeWriter()
    run(balancer_for(demand, forced, replace(OPTIONS, force_ownership=True)), world)
    assert [(a.name, a.guest, a.force) for a in forced.applies] == [("finance", "3Gi", True)]


def test_a_conflict_from_the_server_holds_the_vm_until_the_other_manager_lets_go() -> None:
    world, demand = workday(finance=2.4)
    writer = FakeWriter(conflict_apply={"finance": ("flux",)})
    balancer = balancer_for(demand, writer)
    world.vms["finance"]["metadata"]["managedFields"] = [
        {
            "manager": "flux",
            "operation": "Update",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:domain": {"f:memory": {"f:guest": {}}}}}}},
        }
    ]
    run(balancer, world)
    assert conditions(dict(writer.statuses)["finance"])["FieldOwnedByOtherManager"] == "True"
    writer.conflict_apply.clear()
    writer.clear()
    run(balancer, world)  # the VM still lists another manager: no new attempt
    assert applied(writer) == []
    del world.vms["finance"]["metadata"]["managedFields"]  # flux let go: a new version of the VM
    world.vms["finance"]["metadata"]["resourceVersion"] = "8"
    run(balancer, world)  # the round that sees it plans the VM at once: no round lost
    assert applied(writer) == [("finance", "3Gi", None)]
    assert conditions(dict(writer.statuses)["finance"])["FieldOwnedByOtherManager"] == "False"


def test_a_conflict_found_on_a_view_older_than_the_server_stands_until_the_vm_moves_on() -> None:
    """The view showed no other owner (a GitOps tool applied memory.guest after it), the server refused the
    apply: the VM is held and not retried on that same view; the watch then brings the tool's ownership, and
    once the tool lets go (a newer VM without it) the round that sees that writes."""
    world, demand = workday(finance=2.4)
    writer = FakeWriter(conflict_apply={"finance": ("gitops-tool",)})
    balancer = balancer_for(demand, writer)
    run(balancer, world)
    assert conditions(dict(writer.statuses)["finance"])["FieldOwnedByOtherManager"] == "True"
    writer.conflict_apply.clear()
    writer.clear()
    run(balancer, world)  # the same (old) version of the VM: no second attempt on it
    assert applied(writer) == []
    world.vms["finance"]["metadata"]["resourceVersion"] = "8"  # a newer VM, nobody else owns memory.guest
    run(balancer, world)
    assert applied(writer) == [("finance", "3Gi", None)]


def test_no_answer_backs_off_and_asks_for_a_fresh_list() -> None:
    world, demand = workday(finance=2.4)
    writer = FakeWriter(down_apply={"finance"})
    balancer = balancer_for(demand, writer)
    result = run(balancer, world)
    assert (result.memory_writes, result.api_errors) == (0, 1)
    writer.down_apply.clear()
    writer.clear()
    run(balancer, world)  # within the backoff: not retried at once
    assert applied(writer) == []


def test_a_write_still_throttled_after_the_retries_backs_off_and_is_no_refusal() -> None:
    """429 is the API server's load, not KubeVirt's answer: a short backoff, no hold until the VMI restarts,
    no MemoryChangeRefused."""
    world, demand = workday(finance=2.4)
    writer = FakeWriter(throttle_apply={"finance"})
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    result = run(balancer, world)
    assert (result.memory_writes, result.api_errors) == (0, 1)
    assert dict(writer.statuses)["finance"]["hold"] is None
    assert "MemoryChangeRefused" not in {e.reason for e in writer.events}
    world.store(writer.statuses)
    writer.throttle_apply.clear()
    writer.clear()
    clock[0] += 10
    run(balancer, world)  # backing off
    assert applied(writer) == []
    assert dict(writer.statuses)["finance"]["reason"].startswith("held: the API did not answer")
    world.store(writer.statuses)
    writer.clear()
    clock[0] += 60  # past the backoff: written
    run(balancer, world)
    assert applied(writer) == [("finance", "3Gi", None)]


# --- item 4: KubeVirt's preconditions, holds that survive, deadlines ---------------------------------------


def test_a_vmi_that_is_not_live_migratable_is_not_written() -> None:
    world, demand = workday(finance=2.4)
    world.vmis["finance"]["status"]["conditions"].append(
        {
            "type": "LiveMigratable",
            "status": "False",
            "reason": "DisksNotLiveMigratable",
            "message": "local disk",
        }
    )
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert "finance" not in [a.name for a in writer.applies]
    assert dict(writer.statuses)["finance"]["heldBecause"].startswith("not live-migratable (local disk)")


def test_a_vm_waiting_for_a_restart_is_not_written() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["status"]["conditions"].append({"type": "RestartRequired", "status": "True"})
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []


def test_memory_from_an_instancetype_is_never_written() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["instancetype"] = {"name": "u1.medium"}
    world.add("service", "2Gi", running=False)
    world.vms["service"]["spec"]["instancetype"] = {"name": "u1.small"}
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []  # neither the running grow nor the stopped reset


def test_a_change_not_done_by_its_deadline_is_taken_back_and_held() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 361)}
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    status = dict(writer.statuses)["finance"]
    assert status["hold"]["reason"] == "3Gi not carried out within 360s"
    assert status["hold"]["vmiUID"] == "uid-finance"


def test_a_change_within_its_deadline_is_left_in_flight() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 200)}
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []


def test_a_change_whose_migration_is_copying_is_not_taken_back_at_its_deadline() -> None:
    """A 16Gi guest grown to 32Gi may copy for longer than the deadline (KubeVirt allows 150 s a GiB):
    taken back mid-copy, the grow would land all the same and a second migration would undo it. Once the
    copy ended without the change, the deadline holds again."""
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 900)}
    state = {"startTimestamp": now_rfc3339(NOW - 600), "sourceNode": "host", "targetNode": "other"}
    world.vmis["finance"]["status"]["migrationState"] = state
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []
    assert not (dict(writer.statuses).get("finance") or {}).get("hold")

    # ended without it, as virt-handler's migration source writes a copy that failed (migration-source.go):
    # failed and endTimestamp, never completed
    state.update(endTimestamp=now_rfc3339(NOW - 5), failed=True, completed=False)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert dict(writer.statuses)["finance"]["hold"]["reason"] == "3Gi not carried out within 360s"


def test_a_hold_whose_status_write_failed_stays_in_force_until_one_is_written() -> None:
    """The change taken back at its deadline holds the VM, but its status write fails (a conflict, the API
    server busy): the hold must not be lost with the round, or the next round asks for the same 3Gi again."""
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 361)}
    writer = FakeWriter(fail_status={"finance"})
    balancer = balancer_for(demand, writer)
    run(balancer, world)
    assert applied(writer) == [("finance", "1Gi", None)]
    world.apply(writer.applies, hotplug_done=False)
    world.vmis["finance"]["status"]["conditions"] = []  # KubeVirt: nothing left to hotplug
    for _ in range(2):  # its status still failing, then written
        writer.applies.clear()
        run(balancer, world)
        assert applied(writer) == []  # held: not grown to 3Gi again
        writer.fail_status.clear()
    world.store(writer.statuses)
    assert world.status("finance")["hold"]["reason"] == "3Gi not carried out within 360s"
    writer.applies.clear()
    run(balancer, world)
    assert applied(writer) == []  # and from the status on


def test_a_change_whose_status_write_failed_is_not_taken_back_by_an_older_change_time() -> None:
    """node-local writes no placement annotation, so a change's time lives in its status alone: when that
    write fails, the deadline must count from the change, not from the last one a status recorded."""
    world, demand = workday(finance=2.4)
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 7200)}
    writer = FakeWriter(fail_status={"finance"})
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    run(balancer, world)
    grown = applied(writer)
    assert [name for name, _, _ in grown] == ["finance"]
    world.apply(writer.applies, hotplug_done=False)  # KubeVirt's migration of it under way
    clock[0] = NOW + 60
    writer.applies.clear()
    writer.fail_status.clear()
    run(balancer, world)
    assert applied(writer) == []  # not taken back: asked a minute ago
    world.store(writer.statuses)
    assert world.status("finance")["lastChangeTime"] == now_rfc3339(NOW)


def test_a_round_stopped_by_a_lapsed_lease_loses_no_hold_it_made() -> None:
    """The change is taken back at its deadline, then the Lease lapses before the round's status write
    (NotLeading): the round stops, the balancer is kept (one failed renewal is no new term), and once the
    Lease is renewed the hold must still be in force, and written."""
    from dynamem.controller.leadership import NotLeading

    class LapsingWriter(FakeWriter):
        lapsed = True

        async def patch_vmm_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
            if self.lapsed:
                raise NotLeading("the lease lapsed")
            await super().patch_vmm_status(namespace, name, status)

    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 361)}
    writer = LapsingWriter()
    balancer = balancer_for(demand, writer)
    with pytest.raises(NotLeading):
        run(balancer, world)
    assert applied(writer) == [("finance", "1Gi", None)]
    world.apply(writer.applies, hotplug_done=False)
    world.vmis["finance"]["status"]["conditions"] = []
    writer.applies.clear()
    writer.lapsed = False
    run(balancer, world)
    assert applied(writer) == []  # not grown to 3Gi again
    assert dict(writer.statuses)["finance"]["hold"]["reason"] == "3Gi not carried out within 360s"


def test_a_refused_reset_whose_status_write_failed_is_not_sent_again() -> None:
    world, demand = workday()
    world.add("service", "2Gi", running=False)
    writer = FakeWriter(fail_apply={"service"}, fail_status={"service"})
    balancer = balancer_for(demand, writer)
    run(balancer, world)  # the reset to startup refused by KubeVirt (422); its hold's status write fails
    assert [e.name for e in writer.events if e.reason == "MemoryChangeRefused"] == ["service"]
    for _ in range(2):
        writer.clear()
        run(balancer, world)
        assert not [e for e in writer.events if e.reason == "MemoryChangeRefused"]  # not sent again


def edited_by_hand(world: World, guest: str, written: float) -> None:
    """``kubectl edit`` of finance's memory.guest: the field is kubectl's (managedFields), not dynamem's."""
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = guest
    world.vms["finance"]["metadata"]["managedFields"] = [
        {"manager": "dynamem", "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
        {
            "manager": "kubectl-edit",
            "operation": "Update",
            "time": now_rfc3339(written),
            "fieldsV1": GUEST_FIELDS,
        },
    ]
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 3600)}


def test_a_refused_edit_by_hand_is_taken_back_without_a_hold() -> None:
    # Below what the guest booted with: KubeVirt answers RestartRequired and leaves the VMI as it was.
    world, demand = workday(finance=0.5)
    edited_by_hand(world, "512Mi", NOW - 5)
    world.vms["finance"]["status"]["conditions"].append({"type": "RestartRequired", "status": "True"})
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    status = dict(writer.statuses)["finance"]
    assert status["hold"] is None, "not dynamem's request: nothing to hold"
    [event] = [e for e in writer.events if e.reason == "MemoryChangeReverted"]
    assert "asked by kubectl-edit, not dynamem" in event.note


def test_a_refused_size_written_again_by_hand_is_taken_back_and_then_held() -> None:
    # A writer that keeps writing a size KubeVirt refuses (a controller's update, say) gets one revert
    # without a hold; the second, while the same VMI runs, holds the VM: no revert every round.
    world, demand = workday(finance=0.5)
    edited_by_hand(world, "512Mi", NOW - 5)
    world.vms["finance"]["status"]["conditions"].append({"type": "RestartRequired", "status": "True"})
    writer = FakeWriter()
    balancer = balancer_for(demand, writer)
    run(balancer, world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert dict(writer.statuses)["finance"]["hold"] is None
    writer.clear()  # a later round of the same operator: the hand's value is back
    run(balancer, world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert "asked by kubectl-edit, not dynamem" in dict(writer.statuses)["finance"]["hold"]["reason"]


def test_a_dry_run_reports_a_revert_once() -> None:
    world, demand = workday(finance=0.5)
    edited_by_hand(world, "512Mi", NOW - 5)
    world.vms["finance"]["status"]["conditions"].append({"type": "RestartRequired", "status": "True"})
    writer = FakeWriter()
    balancer = balancer_for(demand, writer, replace(OPTIONS, dry_run=True))
    for _ in range(3):
        run(balancer, world)
    notes = [e.note for e in writer.events if e.reason == "MemoryChangeReverted"]
    assert len(notes) == 1 and notes[0].startswith("dry run: memory.guest -> 1Gi"), notes


def test_a_hand_edit_without_a_time_counts_from_dynamems_last_change() -> None:
    world, demand = workday(finance=2.4)
    edited_by_hand(world, "3Gi", NOW - 100)
    del world.vms["finance"]["metadata"]["managedFields"][1]["time"]
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)  # dynamem's last change an hour ago: past the deadline
    assert applied(writer) == [("finance", "1Gi", None)]


def test_dynamems_own_refused_request_is_taken_back_and_held() -> None:
    world, demand = workday(finance=0.5)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "512Mi"
    world.vms["finance"]["metadata"]["managedFields"] = [
        {"manager": "dynamem", "operation": "Apply", "fieldsV1": GUEST_FIELDS}
    ]
    world.vms["finance"]["status"]["conditions"].append({"type": "RestartRequired", "status": "True"})
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert "restart is required" in dict(writer.statuses)["finance"]["hold"]["reason"]


def test_a_resize_by_hand_in_flight_gets_its_own_deadline() -> None:
    # dynamem last changed the VM an hour ago; the hand edit is 100 s old: KubeVirt is still carrying it out.
    world, demand = workday(finance=2.4)
    edited_by_hand(world, "3Gi", NOW - 100)
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []
    # not carried out 400 s after the edit: taken back, and still not held
    edited_by_hand(world, "3Gi", NOW - 400)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert dict(writer.statuses)["finance"]["hold"] is None


def failed_migration(vmi: str, created: float) -> dict[str, object]:
    """A migration KubeVirt v1.7.0 failed because its target pod stayed unschedulable
    (``migration.go``, ``handlePendingPodTimeout``): the VMI is left as it was, HotMemoryChange still True."""
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": f"{vmi}-dynamem-1", "namespace": NS, "creationTimestamp": now_rfc3339(created)},
        "spec": {"vmiName": vmi},
        "status": {"phase": "Failed"},
    }


def failed_grow(asked_ago: float) -> tuple[World, FakeWriter]:
    """finance asked 3Gi ``asked_ago`` seconds ago; its migration failed 20 s ago, the guest still has 1Gi
    and HotMemoryChange is still True. Returns the world after one round and what the round wrote."""
    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - asked_ago)}
    world.migrations.append(failed_migration("finance", NOW - 20))
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    return world, writer


def test_a_failed_migration_is_not_a_refusal_the_change_stays_in_flight_for_kubevirt_to_retry() -> None:
    # KubeVirt's workload-updater migrates a VMI whose HotMemoryChange is True again (workload-updater.go,
    # doesRequireMigration): the change is not taken back, the VM not held until its VMI restarts
    world, writer = failed_grow(asked_ago=30)
    assert applied(writer) == []
    status = dict(writer.statuses).get("finance") or world.status("finance")
    assert not status.get("hold")
    assert not [e for e in writer.events if e.reason == "MemoryChangeReverted"]


def test_a_change_whose_migrations_keep_failing_is_taken_back_at_its_deadline() -> None:
    _, writer = failed_grow(asked_ago=361)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert dict(writer.statuses)["finance"]["hold"]["reason"] == "3Gi not carried out within 360s"


def test_a_change_whose_own_migration_is_still_going_is_not_taken_back_until_it_ends() -> None:
    """dynamem's migration of finance is still Scheduled 400 s after the ask (its target pod pending for a
    reason other than unschedulable: KubeVirt's timeout is then 900 s). Taken back now, it would go on all
    the same (the workload-updater aborts only its own) and move the VM at its old size, held. Once KubeVirt
    has failed it, the change is taken back."""
    from dynamem.kube.api import MIGRATION_LABEL

    world, demand = workday(finance=2.4)
    world.vms["finance"]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    world.vmis["finance"] = make_vmi_body("finance", guest="3Gi", current="1Gi", hotplug="True")
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 400)}
    ours = failed_migration("finance", NOW - 398)
    ours["metadata"]["labels"] = {MIGRATION_LABEL: "true"}  # type: ignore[index]
    ours["status"] = {"phase": "Scheduled"}
    world.migrations.append(ours)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []
    assert not (dict(writer.statuses).get("finance") or {}).get("hold")

    ours["status"] = {"phase": "Failed"}
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert dict(writer.statuses)["finance"]["hold"]["reason"] == "3Gi not carried out within 360s"

    # one that KubeVirt keeps going (queued behind its limits, virt-controller down) is taken back at last
    ours["status"] = {"phase": "Pending"}
    world.vmms["finance"]["status"] = {"lastChangeTime": now_rfc3339(NOW - 360 - OWN_MIGRATION_GRACE_S - 1)}
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("finance", "1Gi", None)]
    assert dict(writer.statuses)["finance"]["hold"]["reason"] == "3Gi not carried out within 1260s"


def test_a_refused_stopped_reset_is_held_until_the_vm_changes() -> None:
    world, demand = workday()
    world.add("service", "2Gi", running=False)
    writer = FakeWriter(fail_apply={"service"})
    run(balancer_for(demand, writer), world)
    world.store(writer.statuses)
    assert world.status("service")["hold"]["vmGeneration"] == 1
    writer.fail_apply.clear()
    for _ in range(2):  # not retried every round
        writer.clear()
        run(balancer_for(demand, writer), world)
        assert applied(writer) == []
    world.vms["service"]["metadata"]["generation"] = 2  # someone edited the VM
    writer.clear()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == [("service", "1Gi", "4Gi")]


# --- item 5: runStrategy --------------------------------------------------------------------------------


def test_manual_once_and_rerun_on_failure_without_a_vmi_are_not_stopped() -> None:
    world, demand = workday()
    for strategy in ("Manual", "Once", "RerunOnFailure"):
        name = strategy.lower()
        world.vmms[name] = make_vmm_body(name)
        world.vms[name] = make_vm_body(name, guest="3Gi", max_guest="8Gi", run_strategy=strategy)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert applied(writer) == []  # memory.guest and maxGuest left as they are
    statuses = dict(writer.statuses)
    assert {statuses[n.lower()]["conditions"][0]["reason"] for n in ("Manual", "Once", "RerunOnFailure")} == {
        "NotRunning"
    }


def test_a_starting_vm_keeps_its_max_guest() -> None:
    # Halted was just changed to Always: the VMI exists but is not on a node yet.
    world, demand = workday()
    world.vmms["boot"] = make_vmm_body("boot")
    world.vms["boot"] = make_vm_body("boot", guest="3Gi", max_guest="8Gi", run_strategy="Always")
    world.vmis["boot"] = make_vmi_body("boot", node=None, phase="Scheduling", current=None)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert "boot" not in [a.name for a in writer.applies]


def test_a_halted_vm_whose_vmi_still_shuts_down_is_not_reset_yet() -> None:
    world, demand = workday()
    world.vmms["down"] = make_vmm_body("down")
    world.vms["down"] = make_vm_body("down", guest="3Gi", max_guest="8Gi", run_strategy="Halted")
    world.vmis["down"] = make_vmi_body("down", node=None, phase="Scheduling", current=None)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert "down" not in [a.name for a in writer.applies]


# --- item 6: status writes ------------------------------------------------------------------------------


def test_demand_wobbling_by_one_percent_writes_no_status() -> None:
    # finance and engineering sit right at their targets (2.4 / 0.8 = 3Gi, 1.6 / 0.8 = 2Gi): each wobble
    # crosses the line between OK and Low
    world, demand = workday(finance=2.4, engineering=1.6)
    writer = FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    for _ in range(3):  # settle
        writer.clear()
        run(balancer, world)
        world.apply(writer.applies)
        world.store(writer.statuses)
    rng = random.Random(7)
    writes = 0
    for minute in range(1, 11):  # ten minutes of scrapes every 10 s, each demand +-1 %
        for _ in range(6):
            clock[0] = NOW + minute * 60 + rng.random()
            demand.gib = {
                n: base * (1 + rng.uniform(-0.01, 0.01))
                for n, base in (("finance", 2.4), ("sales", 0.5), ("engineering", 1.6))
            }
            writer.clear()
            result = run(balancer, world)
            world.store(writer.statuses)
            writes += result.status_writes + result.memory_writes
    assert writes == 0


def test_a_meaningful_demand_move_refreshes_the_status_at_most_once_a_minute() -> None:
    world, demand = workday(finance=2.4)
    writer = FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, demand, OPTIONS, clock=lambda: clock[0])
    for _ in range(3):
        writer.clear()
        run(balancer, world)
        world.apply(writer.applies)
        world.store(writer.statuses)
    demand.gib["finance"] = 2.2  # -8 %: news, though the decision (3Gi) stays
    clock[0] += 61
    writer.clear()
    assert run(balancer, world).status_writes == 1
    world.store(writer.statuses)
    assert world.status("finance")["demand"] == "2253Mi"
    demand.gib["finance"] = 2.0
    clock[0] += 10
    assert run(balancer, world).status_writes == 0  # within the minute


def test_status_writes_are_capped_per_second() -> None:
    world = World(nodes=[make_node_body("host", allocatable="512Gi")])
    for i in range(100):
        world.add(f"vm{i:03d}")
    demand = FakeDemand({f"vm{i:03d}": 0.5 for i in range(100)})
    writer = FakeWriter()
    clock = [NOW]
    balancer = Balancer(writer, demand, replace(OPTIONS, status_writes_per_s=4), clock=lambda: clock[0])
    first = run(balancer, world)
    assert first.status_writes == 20  # a burst of 5 s at 4/s
    world.store(writer.statuses)
    writer.clear()
    clock[0] += 2.5
    assert run(balancer, world).status_writes == 10  # 2.5 s at 4/s


GUEST_FIELDS = {"f:spec": {"f:template": {"f:spec": {"f:domain": {"f:memory": {"f:guest": {}}}}}}}


def test_memory_guest_written_once_by_its_creator_is_taken_over() -> None:
    # `kubectl create` owns memory.guest (operation Update): server-side apply would report a conflict,
    # yet the creator never re-asserts it; dynamem takes it (still on the resourceVersion it decided on).
    world, demand = workday(finance=2.4)
    world.vms["finance"]["metadata"]["managedFields"] = [
        {"manager": "kubectl-create", "operation": "Update", "fieldsV1": GUEST_FIELDS}
    ]
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert [(a.name, a.force, a.resource_version) for a in writer.applies] == [("finance", True, "7")]


def test_kubectl_client_side_apply_counts_as_a_declarative_owner() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["metadata"]["managedFields"] = [
        {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": GUEST_FIELDS}
    ]
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert writer.applies == []


def test_a_stopped_reset_takes_memory_guest_from_dynamems_running_manager() -> None:
    # While it ran, dynamem applied memory.guest as "dynamem"; stopped, it applies as "dynamem-stopped":
    # to the API server that is another manager, so the reset must take the field over.
    world, demand = workday()
    world.add("service", "2Gi", running=False)
    world.vms["service"]["metadata"]["managedFields"] = [
        {"manager": "dynamem", "operation": "Apply", "fieldsV1": GUEST_FIELDS}
    ]
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert [(a.name, a.guest, a.max_guest, a.force) for a in writer.applies] == [
        ("service", "1Gi", "4Gi", True)
    ]


def test_a_tool_that_sets_memory_guest_back_is_left_to_it_for_an_hour_then_two() -> None:
    """--force-ownership takes memory.guest from a GitOps tool; the tool applies its value again (self-heal
    without ignoreDifferences): each turn would be two live migrations, so dynamem leaves the VM to the tool,
    says so, and tries once more an hour later (two hours after a second fight)."""
    world, demand = workday(finance=2.4)
    vm = world.vms["finance"]["metadata"]
    vm["managedFields"] = [{"manager": "argocd-controller", "operation": "Apply", "fieldsV1": GUEST_FIELDS}]
    clock = [NOW]
    writer = FakeWriter()
    balancer = Balancer(writer, demand, replace(OPTIONS, force_ownership=True), clock=lambda: clock[0])

    def round_at(minutes: float) -> list[tuple[str, str, bool]]:
        clock[0] = NOW + minutes * 60
        writer.clear()
        run(balancer, world)
        world.store(writer.statuses)
        return [(a.name, a.guest, a.force) for a in writer.applies]

    assert round_at(0) == [("finance", "3Gi", True)]
    assert round_at(0.2) == [("finance", "3Gi", True)]  # the view dynamem decided on: no answer yet
    vm["resourceVersion"] = "8"  # the tool applied its 1Gi again (the world kept it: nothing was applied)
    assert round_at(0.5) == []
    assert [(e.type_, e.reason) for e in writer.events if e.name == "finance"] == [
        ("Warning", "MemoryFieldContested")
    ]
    status = dict(writer.statuses)["finance"]
    [owned] = [c for c in status["conditions"] if c["type"] == "FieldOwnedByOtherManager"]
    assert (owned["status"], owned["reason"]) == ("True", "Contested")
    assert owned["message"].startswith(
        "argocd-controller set memory.guest to 1Gi after dynamem set 3Gi (fight 1"
    )
    assert status["heldBecause"] == owned["message"]
    assert balancer.metrics.registry.get_sample_value("dynamem_field_contests_total") == 1
    assert round_at(59) == []
    assert round_at(61) == [("finance", "3Gi", True)]  # an hour on: dynamem takes the field once more
    vm["resourceVersion"] = "9"  # and the tool sets it back again
    assert round_at(61.5) == []
    assert "(fight 2" in dict(writer.statuses)["finance"]["heldBecause"]
    assert round_at(61.5 + 119) == []
    assert round_at(61.5 + 121) == [("finance", "3Gi", True)]


def test_a_new_leader_honours_a_hold_after_a_fight_from_the_status() -> None:
    """A rolling update hands the Lease to the other replica: it reads the hold and its count from
    status.contest, so it neither takes the field at once (two more migrations) nor starts the count again."""
    world, demand = workday(finance=2.4)
    vm = world.vms["finance"]["metadata"]
    vm["managedFields"] = [{"manager": "argocd-controller", "operation": "Apply", "fieldsV1": GUEST_FIELDS}]
    clock = [NOW]
    writer = FakeWriter()
    options = replace(OPTIONS, force_ownership=True)

    def round_at(balancer: Balancer, minutes: float) -> list[tuple[str, str, bool]]:
        clock[0] = NOW + minutes * 60
        writer.clear()
        run(balancer, world)
        world.store(writer.statuses)
        return [(a.name, a.guest, a.force) for a in writer.applies]

    first = Balancer(writer, demand, options, clock=lambda: clock[0])
    assert round_at(first, 0) == [("finance", "3Gi", True)]
    vm["resourceVersion"] = "8"  # the tool applied its 1Gi again
    assert round_at(first, 0.5) == []
    kept = world.vmms["finance"]["status"]["contest"]
    assert (kept["managers"], kept["theirs"], kept["ours"], kept["fights"]) == (
        ["argocd-controller"],
        "1Gi",
        "3Gi",
        1,
    )

    second = Balancer(writer, demand, options, clock=lambda: clock[0])  # the new leader
    assert round_at(second, 1) == []
    assert "(fight 1" in world.vmms["finance"]["status"]["heldBecause"]
    assert round_at(second, 61) == [("finance", "3Gi", True)]  # the hour is over: the field once more
    assert world.vmms["finance"]["status"].get("contest") is None
    vm["resourceVersion"] = "9"  # and the tool sets it back again: the second fight, two hours
    assert round_at(second, 61.5) == []
    assert world.vmms["finance"]["status"]["contest"]["fights"] == 2


def test_a_vm_left_to_its_manager_after_a_fight_is_forgotten_with_it() -> None:
    world, demand = workday(finance=2.4)
    world.vms["finance"]["metadata"]["managedFields"] = [
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": GUEST_FIELDS}
    ]
    writer = FakeWriter()
    balancer = balancer_for(demand, writer)
    run(balancer, world)
    assert applied(writer) == [("finance", "3Gi", None)]  # a one-off writer: taken over, no flag needed
    world.vms["finance"]["metadata"]["resourceVersion"] = "8"  # someone edits memory.guest again
    run(balancer, world)
    assert applied(writer) == [("finance", "3Gi", None)]  # only the first round's: left to the editor now
    assert [(key.name, c.managers) for key, c in balancer.contests.held.items()] == [
        ("finance", ("kubectl-edit",))
    ]
    del world.vmms["finance"]
    run(balancer, world)
    assert balancer.contests.keys() == set()


@pytest.mark.parametrize(
    ("change", "held_because"),
    [
        pytest.param(
            {"migratable": None},
            "KubeVirt has not said yet whether it can live-migrate (no LiveMigratable condition)",
            id="no-LiveMigratable-yet",
        ),
        pytest.param(
            {"max_guest": None},
            "no maxGuest on its VMI: KubeVirt set up no memory hotplug at its start (vmRolloutStrategy "
            "Stage, or a size it cannot hotplug), so a change needs a restart",
            id="no-maxGuest",
        ),
    ],
)
def test_no_change_for_a_vmi_kubevirt_would_answer_with_restart_required(
    change: dict[str, Any], held_because: str
) -> None:
    """KubeVirt v1.7.0 ``vm.go`` ``handleMemoryHotplugRequest``: "Memory-hotplug is only available for
    migratable VMs" (``IsMigratable`` wants LiveMigratable True) and "not available for this VM configuration"
    (no maxGuest): a change would leave the VM RestartRequired until it restarts."""
    world, demand = workday(finance=2.4)
    world.vmis["finance"] = make_vmi_body("finance", **change)
    writer = FakeWriter()
    run(balancer_for(demand, writer), world)
    assert "finance" not in {a.name for a in writer.applies}
    assert dict(writer.statuses)["finance"]["heldBecause"] == held_because
