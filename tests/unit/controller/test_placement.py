"""What to do next for a change that names its node (:mod:`dynamem.controller.placement`)."""

from __future__ import annotations

from dynamem.controller.migrations import MigrationView
from dynamem.controller.placement import Placement, Step, step_of
from dynamem.kube.objects import GI, ObjectKey, vmi_view

from .builders_k8s import NS, make_vmi_body

GROW = Placement(target="b", guest=2 * GI, reason="grow to meet demand; to b", asked_at=0.0, source="host")


def vmi(guest: str = "1Gi", current: str = "1Gi", node: str = "host", phase: str = "Running"):  # type: ignore[no-untyped-def]
    return vmi_view(make_vmi_body("web", guest=guest, current=current, node=node, phase=phase))


def migration(name: str, phase: str = "Pending") -> MigrationView:
    return MigrationView(ObjectKey(NS, name), ObjectKey(NS, "web"), phase, 0.0)


def test_waits_until_the_vmis_spec_shows_the_new_size_then_creates() -> None:
    assert step_of(GROW, vmi(guest="1Gi"), []) is Step.WAIT
    assert step_of(GROW, vmi(guest="2Gi"), []) is Step.CREATE
    assert step_of(GROW, vmi(guest="2Gi"), [migration("old", "Succeeded")]) is Step.CREATE


def test_a_migration_made_by_another_first_is_a_lost_race() -> None:
    updater = migration("kubevirt-workload-update-abc", "Scheduling")
    assert step_of(GROW, vmi(guest="2Gi"), [updater]) is Step.LOST


def test_ours_under_way_waits_and_the_guest_at_its_size_is_done_wherever_it_landed() -> None:
    ours = Placement(**{**{f: getattr(GROW, f) for f in GROW.__slots__}, "migration": "web-dynamem-x"})  # type: ignore[arg-type]
    assert step_of(ours, vmi(guest="2Gi"), [migration("web-dynamem-x", "Running")]) is Step.WAIT
    assert step_of(ours, vmi(guest="2Gi"), []) is Step.WAIT  # not in the view yet
    assert step_of(ours, vmi(guest="2Gi", current="2Gi", node="c"), []) is Step.DONE
    # ours failed: the change is the reverts' to take back
    assert step_of(ours, vmi(guest="2Gi"), [migration("web-dynamem-x", "Failed")]) is Step.GONE


def test_a_change_taken_back_or_a_vm_gone_ends_the_placement() -> None:
    assert step_of(GROW, None, []) is Step.GONE
    assert step_of(GROW, vmi(guest="3Gi"), []) is Step.GONE  # replaced by another size
    assert step_of(GROW, vmi(guest="2Gi", phase="Succeeded"), []) is Step.GONE


def test_a_plain_move_creates_at_once_and_is_done_once_the_vm_left() -> None:
    move = Placement(
        target="b", guest=GI, reason="moved to make room", asked_at=0.0, source="host", move_only=True
    )
    assert step_of(move, vmi(), []) is Step.CREATE
    made = Placement(**{**{f: getattr(move, f) for f in move.__slots__}, "migration": "m"})  # type: ignore[arg-type]
    assert step_of(made, vmi(), [migration("m", "Running")]) is Step.WAIT
    assert step_of(made, vmi(node="b"), []) is Step.DONE
