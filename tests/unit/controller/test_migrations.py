"""A failed VirtualMachineInstanceMigration marks its VMI's change as not carried out."""

from __future__ import annotations

from dynamem.controller.migrations import migration_view, with_failed_migrations
from dynamem.kube.objects import ObjectKey, VmiView


def vmi(name: str = "web") -> VmiView:
    return VmiView(ObjectKey("ns", name), "node-a", "Running", 2 << 30, 1 << 30, 1 << 30, 1 << 30, None)


def migration(name: str, phase: str | None, created: str, vmi_name: str = "web") -> dict[str, object]:
    status = {"phase": phase} if phase else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
        "spec": {"vmiName": vmi_name},
        "status": status,
    }


def test_the_latest_failed_migration_marks_the_vmi() -> None:
    found = with_failed_migrations(
        [vmi()],
        [
            migration_view(migration("old", "Succeeded", "2026-11-27T10:00:00Z")),
            migration_view(migration("new", "Failed", "2026-11-27T10:05:00Z")),
        ],
    )
    assert found[0].failed_migration_at == 1795773900.0
    assert found[0].failed_migrations == 1


def test_failures_since_the_last_success_are_counted() -> None:
    found = with_failed_migrations(
        [vmi()],
        [
            migration_view(migration("a", "Failed", "2026-11-27T09:00:00Z")),
            migration_view(migration("b", "Succeeded", "2026-11-27T10:00:00Z")),
            migration_view(migration("c", "Failed", "2026-11-27T10:05:00Z")),
            migration_view(migration("d", "Failed", "2026-11-27T10:06:00Z")),
        ],
    )
    assert (found[0].failed_migration_at, found[0].failed_migrations) == (1795773960.0, 2)


def test_a_migration_still_going_or_a_later_success_clears_it() -> None:
    failed = migration_view(migration("a", "Failed", "2026-11-27T10:00:00Z"))
    going = migration_view(migration("b", None, "2026-11-27T10:01:00Z"))
    done = migration_view(migration("c", "Succeeded", "2026-11-27T10:02:00Z"))
    assert with_failed_migrations([vmi()], [failed, going])[0].failed_migration_at is None
    assert with_failed_migrations([vmi()], [failed, done])[0].failed_migration_at is None


def test_other_vmis_are_untouched() -> None:
    failed = migration_view(migration("a", "Failed", "2026-11-27T10:00:00Z", vmi_name="db"))
    assert with_failed_migrations([vmi()], [failed])[0].failed_migration_at is None


def test_the_backoff_runs_from_the_failure_not_the_creation() -> None:
    """A target pod that stays unschedulable fails its migration 300 s after it was made; counted from the
    creation, the plan's backoff (seconds to minutes) had run out before the failure was even seen. The time
    is the migration's ``Failed`` phase transition, as KubeVirt's own backoff reads it (``getFailedTS``)."""
    body = migration("late", "Failed", "2026-11-27T10:00:00Z")
    body["status"] = {
        "phase": "Failed",
        "phaseTransitionTimestamps": [
            {"phase": "Pending", "phaseTransitionTimestamp": "2026-11-27T10:00:00Z"},
            {"phase": "Scheduling", "phaseTransitionTimestamp": "2026-11-27T10:00:01Z"},
            {"phase": "Failed", "phaseTransitionTimestamp": "2026-11-27T10:05:02Z"},
        ],
    }
    found = with_failed_migrations([vmi()], [migration_view(body)])
    assert found[0].failed_migration_at == 1795773600.0 + 302
