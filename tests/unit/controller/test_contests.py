"""Fights over memory.guest (:mod:`dynamem.controller.contests`): which later views of a VM are another
manager setting a size of dynamem's back, and how long the VM is then left to it."""

from __future__ import annotations

from typing import Any

from dynamem.controller.contests import CONTEST_HOLD_S, Contests, Written, fought_back
from dynamem.kube.objects import GI, ObjectKey, vm_view

from .builders_k8s import NS, make_vm_body

GUEST_FIELDS = {"f:spec": {"f:template": {"f:spec": {"f:domain": {"f:memory": {"f:guest": {}}}}}}}
KEY = ObjectKey(NS, "finance")
OURS = Written(3 * GI, version="7", at="2026-11-30T10:00:00Z", uid="uid-1")


def set_back(
    *, version: str = "8", at: str = "2026-11-30T10:00:05Z", uid: str = "uid-1", **vm: Any
) -> dict[str, Any]:
    """finance as the tool left it: 1Gi, memory.guest owned by argocd-controller alone."""
    body = make_vm_body("finance", **vm)
    body["metadata"].update(uid=uid, resourceVersion=version)
    body["metadata"]["managedFields"] = [
        {"manager": "argocd-controller", "operation": "Apply", "time": at, "fieldsV1": GUEST_FIELDS}
    ]
    return body


def test_another_manager_setting_dynamems_size_back_afterwards_is_a_fight() -> None:
    assert fought_back(vm_view(set_back()), OURS) == ("argocd-controller",)


def test_views_that_are_no_fight() -> None:
    assert fought_back(vm_view(set_back(version="7")), OURS) == ()  # the view dynamem decided on
    assert fought_back(vm_view(set_back(guest="3Gi")), OURS) == ()  # dynamem's size
    assert fought_back(vm_view(set_back(at="2026-11-30T09:59:59Z")), OURS) == ()  # written before dynamem's
    assert fought_back(vm_view(set_back(uid="uid-2")), OURS) == ()  # deleted and made again


def test_a_vm_deleted_and_made_again_or_stopped_is_forgotten_not_fought() -> None:
    """A restore or a Replace sync makes a new VM with its manifest's size; a stopped VM edited later moves
    no guest: neither is a fight, and what dynamem wrote to the old one is forgotten."""
    for body in (set_back(uid="uid-2"), set_back(run_strategy="Halted")):
        contests = Contests()
        contests.wrote(KEY, OURS)
        assert contests.find({KEY: vm_view(body)}, 0.0) == []
        assert contests.keys() == set()


def test_each_fight_doubles_the_hold_until_a_quiet_spell_starts_the_count_again() -> None:
    contests = Contests()
    now = 0.0
    holds = []
    for gap in (0.0, 1.5 * CONTEST_HOLD_S, 2.5 * CONTEST_HOLD_S, 10 * CONTEST_HOLD_S):
        now += gap
        contests.wrote(KEY, OURS)
        ((_, contest),) = contests.find({KEY: vm_view(set_back())}, now)
        holds.append((contest.fights, contest.until - now))
    # 1 h, then 2 h, then 4 h (each fight within twice the hold before it); ten hours of peace: 1 h again
    assert holds == [
        (1, CONTEST_HOLD_S),
        (2, 2 * CONTEST_HOLD_S),
        (3, 4 * CONTEST_HOLD_S),
        (1, CONTEST_HOLD_S),
    ]
