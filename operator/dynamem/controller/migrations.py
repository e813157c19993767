"""What the operator reads of KubeVirt's VirtualMachineInstanceMigrations: which failed last.

In KubeVirt v1.7.0 every change of a running VM's ``memory.guest`` is carried out by a live migration
(``shared/KUBEVIRT.md``, ``docs/kubevirt-sim.md``). When the migration's target pod fits on no node, the
migration controller (``pkg/virt-controller/watch/migration/migration.go``, ``handlePendingPodTimeout``)
deletes it after the pending timeout and the migration ends ``Failed``, but the VMI is left as it was: on its
node, at its old size, with ``HotMemoryChange`` still True and no ``RestartRequired``. That is no refusal:
the workload-updater (``watch/workload-updater/workload-updater.go``, ``doesRequireMigration``) migrates such
a VMI again, spaced by ``handleMigrationBackoff`` (20 s, doubling). So the operator leaves the change in
flight (taken back only when it is not done by its deadline), and a VM whose latest migration failed, with
none going, is marked (``failed_migration_at``, when it failed) for the plan, which holds it a while before
it moves it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from dynamem.kube.api import MIGRATION_LABEL, parse_rfc3339
from dynamem.kube.objects import HOSTNAME_LABEL, Body, ObjectKey, VmiView, dig

MIGRATION = ("kubevirt.io", "v1", "virtualmachineinstancemigrations")
FINAL_PHASES = frozenset({"Succeeded", "Failed"})

__all__ = ["MIGRATION", "MigrationView", "migration_view", "with_failed_migrations"]


@dataclass(frozen=True, slots=True)
class MigrationView:
    """A VirtualMachineInstanceMigration: which VMI, its phase, when it was created (epoch seconds); whether
    dynamem made it (its ``dynamem.io/migration`` label) and the node its ``addedNodeSelector`` pins."""

    key: ObjectKey
    vmi: ObjectKey
    phase: str
    created: float | None
    dynamem: bool = False
    target: str | None = None
    added: tuple[tuple[str, str], ...] = ()  # its whole addedNodeSelector
    failed: float | None = None  # when it turned Failed (its status.phaseTransitionTimestamps), if it did

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES


def migration_view(body: Body) -> MigrationView:
    key = ObjectKey.of(body)
    return MigrationView(
        key=key,
        vmi=ObjectKey(key.namespace, str(dig(body, "spec", "vmiName") or "")),
        phase=str(dig(body, "status", "phase") or "Pending"),
        created=parse_rfc3339(dig(body, "metadata", "creationTimestamp")),
        dynamem=(dig(body, "metadata", "labels") or {}).get(MIGRATION_LABEL) == "true",
        target=(dig(body, "spec", "addedNodeSelector") or {}).get(HOSTNAME_LABEL) or None,
        added=tuple(
            sorted((str(k), str(v)) for k, v in (dig(body, "spec", "addedNodeSelector") or {}).items())
        ),
        failed=_failed_at(body),
    )


def _failed_at(body: Body) -> float | None:
    """When the migration turned ``Failed``: its ``Failed`` entry in ``status.phaseTransitionTimestamps``, as
    KubeVirt's own backoff reads it (v1.7.0 ``migration.go``, ``handleMigrationBackoff``, ``getFailedTS``)."""
    for stamp in dig(body, "status", "phaseTransitionTimestamps") or ():
        if isinstance(stamp, dict) and stamp.get("phase") == "Failed":
            return parse_rfc3339(stamp.get("phaseTransitionTimestamp"))
    return None


def with_failed_migrations(vmis: Iterable[VmiView], migrations: Iterable[MigrationView]) -> list[VmiView]:
    """The VMIs, each with ``failed_migration_at`` set when its latest migration failed and none is going,
    and ``failed_migrations`` the failed ones since its last success (the plan's backoff doubles with it)."""
    by_vmi: dict[ObjectKey, list[MigrationView]] = {}
    for migration in migrations:
        by_vmi.setdefault(migration.vmi, []).append(migration)
    found: list[VmiView] = []
    for vmi in vmis:
        if vmi.key not in by_vmi:  # most VMIs: no migration at all
            found.append(vmi)
            continue
        mine = sorted(by_vmi[vmi.key], key=lambda m: (m.created or 0.0, m.key.name))
        if mine and all(m.final for m in mine) and mine[-1].phase == "Failed":
            failures = 0
            for migration in reversed(mine):
                if migration.phase != "Failed":
                    break
                failures += 1
            # the backoff runs from the failure, not the creation: a target pod that stayed unschedulable
            # fails 300 s after its migration was made, and counted from then no backoff was left
            last = mine[-1]
            failed_at = last.failed if last.failed is not None else last.created
            vmi = replace(vmi, failed_migration_at=failed_at or 0.0, failed_migrations=failures)
        found.append(vmi)
    return found
