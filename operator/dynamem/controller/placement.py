"""Carrying out a change that names its target node: the migration dynamem makes, and the race it may lose.

In KubeVirt v1.7.0 a change of a running VM's ``memory.guest`` is carried out by a live migration
(``shared/KUBEVIRT.md``, "A change is a move"). The VM controller copies the new guest size into the VMI's
spec and sets ``HotMemoryChange``; the workload-updater (``pkg/virt-controller/watch/workload-updater/
workload-updater.go``) makes a migration for such a VMI about 5 s later (its ``defaultThrottleInterval``),
without any node selector, unless a migration of that VMI exists; the migration-create admitter
(``pkg/virt-api/webhooks/validating-webhook/admitters/migration-create-admitter.go``) refuses a second one
while one is unfinished. The target pod is rendered from the VMI's spec at that moment
(``watch/migration/migration.go``, ``createTargetPod``), with the migration's ``spec.addedNodeSelector``.

So dynamem writes ``memory.guest``, and as soon as the VMI's spec shows the new size it creates its own
migration pinned to the node its plan chose (:class:`Placement`). Each round :func:`step_of` says what to do
next for a placement from what the view shows:

- ``CREATE``: the VMI's spec has the new size, no migration of it is unfinished, none made yet by dynamem;
- ``WAIT``: the spec does not show the size yet, or dynamem's migration is under way;
- ``DONE``: the guest has its new size (wherever it landed: the next plan reads its node from the VMI);
- ``LOST``: another migration (the workload-updater's) got there first: it goes where the scheduler puts it,
  and the plan accounts for where the VM lands from the VMI's node;
- ``GONE``: the VM, its VMI or its change went away (taken back, stopped, replaced).

A change not carried out by its deadline is taken back by the balancer's reverts (``overdue``) and the VM
held; its placement is then ``GONE``. Placements live in the operator's memory only: after a restart or a
change of leader, a change already written is carried out by the workload-updater, placed by the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from dynamem.controller.migrations import MigrationView
from dynamem.kube.objects import VmiView

__all__ = ["Placement", "Step", "step_of"]


@dataclass(frozen=True, slots=True)
class Placement:
    """A change dynamem wrote (or a plain move) and the node its plan chose for it.

    ``guest``: the size written (for a plain move, the size the VM has); ``migration``: the name of the
    migration dynamem created, once it has.
    """

    target: str
    guest: int
    reason: str
    asked_at: float
    source: str
    move_only: bool = False
    migration: str | None = None


class Step(StrEnum):
    CREATE = "create"
    WAIT = "wait"
    DONE = "done"
    LOST = "lost"
    GONE = "gone"


def step_of(placement: Placement, vmi: VmiView | None, migrations: Iterable[MigrationView]) -> Step:
    """What to do next for ``placement``, from the VMI and its migrations as the view shows them."""
    if vmi is None or not vmi.active:
        return Step.GONE
    mine = [m for m in migrations if m.vmi == vmi.key]
    ours = [m for m in mine if placement.migration is not None and m.key.name == placement.migration]
    others = [m for m in mine if m not in ours and not m.final]
    if placement.move_only:
        if placement.migration is not None:
            if (ours and ours[0].final) or vmi.node != placement.source:
                return Step.DONE
            return Step.WAIT
        return Step.LOST if others else Step.CREATE
    if vmi.current == placement.guest:
        return Step.DONE
    if vmi.spec_guest != placement.guest and placement.migration is None:
        # the spec does not show the change (yet, or any more: taken back or replaced)
        return Step.WAIT if vmi.spec_guest == vmi.current else Step.GONE
    if placement.migration is not None:
        if ours and ours[0].final:
            return Step.GONE  # ended without the change: the balancer's reverts take it back
        return Step.WAIT
    if others or vmi.migrating:
        return Step.LOST
    return Step.CREATE
