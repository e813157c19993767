"""Carrying out a change that names its target node: the migration dynamem makes, and the race it may lose.

In KubeVirt v1.7.0 a change of a running VM's ``memory.guest`` is carried out by a live migration
(``shared/KUBEVIRT.md``, "A change is a move"). The VM controller copies the new guest size into the VMI's
spec and sets ``HotMemoryChange``; the workload-updater (``pkg/virt-controller/watch/workload-updater/
workload-updater.go``) makes a migration for such a VMI within 5 s (each VMI or migration event queues its
next pass ``defaultThrottleInterval`` ahead, the earliest kept), without any node selector, unless a
migration of that VMI exists; the migration-create admitter
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
held; its placement is then ``GONE``.

A placement outlives the leader that made it. It is written as the VM's ``dynamem.io/placement`` annotation
in the same server-side apply as the new ``memory.guest`` (:func:`encode`), so the cluster never holds a
change of dynamem's without where it goes and when it was asked; the migration dynamem then makes names its
target in ``spec.addedNodeSelector`` and carries the ``dynamem.io/migration`` label. A new leader (or a
restarted operator) finds each change still in flight with :func:`recovered`: the VM's spec still asks the
annotation's size, the guest does not have it yet, and its deadline has not passed. It takes the placement
over as its own: it makes the migration if none is made yet (to the recorded node, before the
workload-updater does), or follows dynamem's migration already made (never a second one), counts it in the
plan's budget, and takes the change back at the recorded deadline. An apply without the annotation (a
change with no target, a revert) removes it: server-side apply drops a field its manager stops applying.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dynamem.controller.migrations import MigrationView
from dynamem.kube.api import now_rfc3339, parse_rfc3339
from dynamem.kube.objects import VmiView, VmView, quantity_bytes, to_quantity

__all__ = ["Placement", "Step", "decode", "encode", "recovered", "step_of"]

# A migration of dynamem's made this long before the placement's askedAt (the API server's clock and the
# operator's differ a little) is still taken for the placement's own.
_CLOCK_SKEW_S = 30.0


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


class _Annotation(BaseModel):
    """The ``dynamem.io/placement`` annotation's JSON."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    target: str = Field(min_length=1)
    guest: str
    source: str = ""
    asked_at: str = Field(alias="askedAt")
    reason: str = ""


def encode(placement: Placement) -> str:
    """The annotation written with the change: target, size, source node, when it was asked, and why."""
    note = _Annotation(
        target=placement.target,
        guest=to_quantity(placement.guest),
        source=placement.source,
        asked_at=now_rfc3339(placement.asked_at),
        reason=placement.reason[:512],
    )
    return json.dumps(note.model_dump(by_alias=True), separators=(",", ":"), sort_keys=True)


@functools.lru_cache(maxsize=32768)
def decode(text: str | None) -> Placement | None:
    """The placement an annotation records, or None when absent or not one dynamem wrote.

    Read for every running VM every round (:meth:`dynamem.controller.snapshot.Managed.asked_at`) while the
    annotations rarely change: each text is parsed once (5 us a parse here; a Placement is frozen)."""
    if not text:
        return None
    try:
        note = _Annotation.model_validate_json(text)
    except ValidationError:
        return None
    guest, asked_at = quantity_bytes(note.guest), parse_rfc3339(note.asked_at)
    if guest is None or asked_at is None:
        return None
    return Placement(
        target=note.target, guest=guest, reason=note.reason, asked_at=asked_at, source=note.source
    )


def recovered(
    vm: VmView,
    vmi: VmiView | None,
    migrations: Iterable[MigrationView],
    now: float,
    deadline_s: float,
    hostnames: Mapping[str, str] | None = None,
) -> Placement | None:
    """The change of ``vm`` still in flight that its annotation records, with dynamem's migration of it if
    made; None when there is none: no annotation, the spec asks another size (changed since, or taken back),
    the guest has the size already, no VMI runs, or the deadline has passed (the reverts take it back).
    ``hostnames``: node name to hostname label where they differ (a migration is pinned by the label)."""
    placement = decode(vm.placement)
    if placement is None or vmi is None or not vmi.active:
        return None
    if vm.guest != placement.guest or vmi.current == placement.guest:
        return None
    if now - placement.asked_at > deadline_s:
        return None
    ours = [
        m
        for m in migrations
        if m.vmi == vmi.key
        and m.dynamem
        and m.target == (hostnames or {}).get(placement.target, placement.target)
        and (m.created is None or m.created >= placement.asked_at - _CLOCK_SKEW_S)
    ]
    if ours:
        latest = max(ours, key=lambda m: (not m.final, m.created or 0.0, m.key.name))
        placement = replace(placement, migration=latest.key.name)
    return placement


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
