"""Placements across a change of leader (:mod:`dynamem.controller.placement`, ``recovered``): the change in
flight is written with its placement (the VM's ``dynamem.io/placement`` annotation, in the same apply as
``memory.guest``), and a new leader, with nothing in its memory, takes it over from the API: it makes the
migration to the recorded node if none is made yet, follows dynamem's migration if one is, never writes the
change again or makes a second migration, and takes the change back at the recorded deadline."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

from dynamem.controller.balancer import Balancer
from dynamem.controller.placement import Placement, decode, encode
from dynamem.kube.api import now_rfc3339
from dynamem.kube.objects import GI, MI, ObjectKey, quantity_bytes

from .builders_k8s import NS, FakeWriter
from .test_balancer import NOW, World
from .test_balancer_cluster import CLUSTER, PagingGuests, three_busy_on_one_node

DEADLINE = CLUSTER.change_deadline_s


def round_at(balancer: Balancer, world: World) -> None:
    asyncio.run(balancer.run_round(world.observed()))


def leader(writer: FakeWriter, at: float = NOW) -> Balancer:
    return Balancer(writer, PagingGuests(), CLUSTER, clock=lambda: at)


def migration(
    vmi: str, node: str, *, name: str, dynamem: bool = True, phase: str = "Running"
) -> dict[str, Any]:
    labels = {"dynamem.io/migration": "true"} if dynamem else {}
    spec: dict[str, Any] = {"vmiName": vmi}
    if dynamem:
        spec["addedNodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstanceMigration",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": labels,
            "creationTimestamp": now_rfc3339(NOW + 1),
            "resourceVersion": "1",
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def written_by_the_old_leader() -> tuple[World, dict[str, str], dict[str, int]]:
    """The old leader's round: two grows written (two out of a node at once), each with its placement; the
    VMIs' specs show them. The old leader is then gone, its status writes never stored."""
    world, writer = three_busy_on_one_node(), FakeWriter()
    old = leader(writer)
    round_at(old, world)
    targets = {key.name: p.target for key, p in old.placements.items()}
    sizes = {a.name: quantity_bytes(a.guest) or 0 for a in writer.applies}
    assert len(targets) == 2 and set(targets) == set(sizes)
    world.apply(writer.applies, hotplug_done=False)
    return world, targets, sizes


def test_the_change_is_written_with_where_it_goes_and_when_it_was_asked() -> None:
    world, writer = three_busy_on_one_node(), FakeWriter()
    old = leader(writer)
    round_at(old, world)
    assert writer.applies
    for a in writer.applies:
        placement = decode(a.placement)
        assert placement is not None
        mine = old.placements[ObjectKey(NS, a.name)]
        assert (placement.target, placement.guest, placement.source) == (mine.target, mine.guest, "host")
        assert placement.asked_at == NOW and "paging" in placement.reason


def test_an_annotation_round_trips_and_garbage_is_no_placement() -> None:
    placement = Placement(target="b", guest=1536 * MI, reason="grow; to b", asked_at=NOW, source="host")
    assert decode(encode(placement)) == placement
    for junk in ("", "not json", '{"target": ""}', '{"target": "b", "guest": "lots", "askedAt": "x"}'):
        assert decode(junk) is None


def test_a_new_leader_makes_the_migration_to_the_node_the_old_one_chose() -> None:
    world, targets, _ = written_by_the_old_leader()
    writer = FakeWriter()
    new = leader(writer, at=NOW + 3)
    round_at(new, world)
    assert sorted((vmi, node) for _, vmi, node, _ in writer.migrations) == sorted(targets.items())
    assert writer.applies == []  # not planned again: the change in flight is the old leader's
    reasons = [e.reason for e in writer.events]
    assert reasons.count("MigrationCreated") == 2 and "MemoryIncreased" not in reasons


def test_a_new_leader_follows_dynamems_migration_already_made_and_makes_no_second() -> None:
    world, targets, _ = written_by_the_old_leader()
    world.migrations = [migration(vm, node, name=f"{vm}-dynamem-x") for vm, node in targets.items()]
    for vm in targets:
        world.vmis[vm]["status"]["migrationState"] = {"startTimestamp": now_rfc3339(NOW + 2)}
    writer = FakeWriter()
    new = leader(writer, at=NOW + 10)
    round_at(new, world)
    assert writer.migrations == [] and writer.applies == []
    assert {key.name: p.migration for key, p in new.placements.items()} == {
        vm: f"{vm}-dynamem-x" for vm in targets
    }
    assert {key.name: p.target for key, p in new.placements.items()} == targets


def test_a_new_leader_counts_a_change_without_its_migration_in_the_budget() -> None:
    """Two changes out of "host" written, no migration made: the third VM on "host" waits (2 out of a node),
    as it would under the old leader; without the placements it would be grown at once."""
    world, targets, _ = written_by_the_old_leader()
    writer = FakeWriter()
    round_at(leader(writer, at=NOW + 3), world)
    (third,) = set(world.vms) - set(targets)
    assert third not in {a.name for a in writer.applies}
    reasons = {name: status.get("reason", "") for name, status in writer.statuses}
    assert "deferred: 2 migrations already out of host" in reasons[third], reasons


def test_a_new_leader_takes_the_change_back_at_the_recorded_deadline_without_a_status() -> None:
    world, targets, _ = written_by_the_old_leader()
    assert all("lastChangeTime" not in world.status(vm) for vm in targets)  # the old leader's status lost
    writer = FakeWriter()
    round_at(leader(writer, at=NOW + DEADLINE + 1), world)
    taken_back = {a.name: a.guest for a in writer.applies}
    assert {vm: taken_back.get(vm) for vm in targets} == dict.fromkeys(targets, "1Gi")
    assert {e.name for e in writer.events if e.reason == "MemoryChangeReverted"} == set(targets)
    assert writer.migrations == []


def test_an_annotation_of_a_change_since_replaced_or_done_is_not_taken_over() -> None:
    world, targets, sizes = written_by_the_old_leader()
    first, second = sorted(targets)
    world.vmis[first]["status"]["memory"]["guestCurrent"] = world.guest(first)  # done already
    world.vms[second]["spec"]["template"]["spec"]["domain"]["memory"]["guest"] = "3Gi"  # someone else's
    world.vmis[second]["spec"]["domain"]["memory"]["guest"] = "3Gi"
    writer = FakeWriter()
    new = leader(writer, at=NOW + 3)
    round_at(new, world)
    assert ObjectKey(NS, first) not in new.placements and ObjectKey(NS, second) not in new.placements
    assert writer.migrations == []
    assert sizes[first] > GI


def test_a_taken_over_change_that_lost_the_race_is_said_once() -> None:
    world, targets, _ = written_by_the_old_leader()
    vm = sorted(targets)[0]
    world.migrations = [migration(vm, "", name=f"kubevirt-workload-update-{vm}", dynamem=False)]
    world.vmis[vm]["status"]["migrationState"] = {"startTimestamp": now_rfc3339(NOW + 2)}
    writer = FakeWriter()
    new = leader(writer, at=NOW + 6)
    round_at(new, world)
    round_at(new, world)
    lost = [e for e in writer.events if e.reason == "MigrationRaceLost"]
    assert [e.name for e in lost] == [vm]
    assert vm not in {m for _, m, _, _ in writer.migrations}


def test_a_new_leader_records_when_the_lost_leader_changed_the_vm_and_then_rests() -> None:
    """The old leader's status write never stored: the new leader's status says the change was made at the
    placement's ``askedAt`` (``lastChangeTime``), once; a round after it writes no status for it again."""
    world, targets, _ = written_by_the_old_leader()
    writer = FakeWriter()
    new = leader(writer, at=NOW + 3)
    round_at(new, world)
    written = {name: status for name, status in writer.statuses if name in targets}
    assert set(written) == set(targets)
    assert {name: s.get("lastChangeTime") for name, s in written.items()} == dict.fromkeys(
        targets, now_rfc3339(NOW)
    )
    world.store(writer.statuses)
    writer.statuses.clear()
    round_at(new, world)
    assert [name for name, _ in writer.statuses if name in targets] == []


def test_a_dry_run_leader_takes_over_nothing_and_changes_nothing() -> None:
    """A change in flight of a lost leader, seen by a replica in dry run: no migration, no status time."""
    world, targets, _ = written_by_the_old_leader()
    writer = FakeWriter()
    dry = Balancer(writer, PagingGuests(), replace(CLUSTER, dry_run=True), clock=lambda: NOW + 3)
    round_at(dry, world)
    assert writer.migrations == [] and dry.placements == {}
    assert all("lastChangeTime" not in status for name, status in writer.statuses if name in targets)


def test_a_hold_goes_with_its_revert_so_a_new_leader_keeps_it_without_a_status() -> None:
    """The old leader takes its changes back at the deadline, the hold written in the same apply as the revert
    (the VM's ``dynamem.io/hold``), and is gone before any status records the hold. A new leader, with
    nothing in its memory, holds the VMs (not asking the same changes again: another deadline and another
    failed migration each), and its status records the holds."""
    world, targets, _ = written_by_the_old_leader()
    writer = FakeWriter()
    round_at(leader(writer, at=NOW + DEADLINE + 1), world)
    reverts = {a.name: a for a in writer.applies if a.name in targets}
    assert set(reverts) == set(targets)
    for name, revert in reverts.items():
        assert revert.hold is not None and json.loads(revert.hold)["vmiUID"] == f"uid-{name}", revert.hold
    world.apply(writer.applies)  # the reverts reach the cluster; their statuses never do
    for name in targets:  # a hold of an earlier VMI still in the status: the annotation's is in force
        world.vmms[name].setdefault("status", {})["hold"] = {
            "reason": "earlier",
            "vmiUID": "uid-0",
            "since": "",
        }
    writer = FakeWriter()
    round_at(leader(writer, at=NOW + DEADLINE + 30), world)
    assert not [a for a in writer.applies if a.name in targets]
    written = dict(writer.statuses)
    for name in targets:
        assert written[name]["hold"]["reason"].endswith("not carried out within 360s"), written[name]


def test_an_annotation_that_is_no_hold_holds_nothing_and_stops_nothing() -> None:
    """Anyone who may edit a VM may edit its ``dynamem.io/hold``: what is not such a hold is none, never an
    error that ends the round for every VM."""
    from dynamem.controller.snapshot import Hold

    for raw in (
        "not json",
        "[1]",
        '{"reason": "x", "vmiUID": "u", "vmGeneration": [1]}',
        '{"reason": "x", "vmGeneration": 1e400}',
        '{"reason": "x", "vmGeneration": "many"}',
        "[" * 100_000,
    ):
        assert Hold.from_annotation(raw) is None, raw
    world, targets, _ = written_by_the_old_leader()
    name = sorted(targets)[0]
    world.vms[name]["metadata"]["annotations"]["dynamem.io/hold"] = '{"reason": "x", "vmGeneration": [1]}'
    writer = FakeWriter()
    round_at(leader(writer, at=NOW + 3), world)  # the round goes on: every VM has its status
    assert {n for n, _ in writer.statuses} >= set(world.vms) - {name}


def test_a_migration_is_pinned_by_the_nodes_hostname_label_and_recognised_by_it() -> None:
    """A kubelet run with ``--hostname-override``: node ``c``'s ``kubernetes.io/hostname`` is ``c.example``.
    ``addedNodeSelector`` is matched against labels, so the pin names the label (pinned to ``c`` it matched no
    node, and the migration failed after 300 s), and a new leader knows dynamem's migration by it."""
    from .builders_k8s import make_node_body

    world = three_busy_on_one_node()
    world.nodes = [
        make_node_body("host", allocatable="8Gi"),
        make_node_body("b", allocatable="16Gi"),
        make_node_body(
            "c",
            allocatable="8Gi",
            labels={"kubevirt.io/schedulable": "true", "kubernetes.io/hostname": "c.example"},
        ),
    ]
    writer = FakeWriter()
    old = leader(writer)
    round_at(old, world)
    targets = {key.name: p.target for key, p in old.placements.items()}
    assert set(targets.values()) == {"c"}  # the plan names nodes by name
    world.apply(writer.applies, hotplug_done=False)
    writer.clear()
    round_at(old, world)
    assert sorted((vmi, node) for _, vmi, node, _ in writer.migrations) == sorted(
        (vm, "c.example") for vm in targets
    )
    # a new leader finds those migrations (their addedNodeSelector names the label) and makes none again
    world.migrations = [
        {**migration(vm, "c.example", name=f"{vm}-dynamem-1"), "status": {"phase": "Scheduling"}}
        for vm in targets
    ]
    writer = FakeWriter()
    new = leader(writer, at=NOW + 3)
    round_at(new, world)
    assert writer.migrations == []
    assert {key.name: p.migration for key, p in new.placements.items() if key.name in targets} == {
        vm: f"{vm}-dynamem-1" for vm in targets
    }
