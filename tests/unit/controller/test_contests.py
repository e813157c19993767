"""Fights over memory.guest (:mod:`dynamem.controller.contests`): which later views of a VM are another
manager setting a size of dynamem's back, and how long the VM is then left to it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dynamem.controller.contests import CONTEST_HOLD_S, Contest, Contests, Written, fought_back
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


T0 = 1_796_119_200.0  # 2026-12-01T10:00:00Z: whole seconds, as a status keeps them
KEPT = Contest(("argocd-controller",), GI, 3 * GI, T0 + 2 * CONTEST_HOLD_S, 2, T0, "uid-1")


def test_a_contest_survives_its_status_and_a_broken_one_is_none() -> None:
    assert KEPT.to_status() == {
        "managers": ["argocd-controller"],
        "theirs": "1Gi",
        "ours": "3Gi",
        "fights": 2,
        "since": "2026-12-01T10:00:00Z",
        "until": "2026-12-01T12:00:00Z",
        "vmUID": "uid-1",
    }
    assert Contest.from_status(KEPT.to_status()) == KEPT
    for broken in ({**KEPT.to_status(), "fights": 0}, {**KEPT.to_status(), "until": "soon"}, {}, None, "x"):
        assert Contest.from_status(broken) is None, broken


def test_a_new_leader_takes_up_a_hold_its_count_and_nothing_stale() -> None:
    """A rolling update makes another replica the leader: the hold and the count its statuses keep go on,
    so the next fight is the third (4 h), not a first one after one more turn of two migrations."""
    running = {KEY: vm_view(set_back())}
    contests = Contests()
    contests.restore({KEY: KEPT}, running, T0 + 60)
    assert contests.held == {KEY: KEPT}
    contests.wrote(KEY, OURS)  # once the hold ran out, dynamem took the field; the tool set it back again
    ((_, third),) = contests.find(running, T0 + 2 * CONTEST_HOLD_S + 60)
    assert (third.fights, third.until - third.since) == (3, 4 * CONTEST_HOLD_S)

    ran_out = Contests()  # a hold that ran out while nobody led: no hold, but the count goes on
    ran_out.restore({KEY: KEPT}, running, T0 + 3 * CONTEST_HOLD_S)
    assert ran_out.held == {} and ran_out.fights == {KEY: (2, T0)}
    quiet = Contests()  # twice the hold of quiet: forgotten
    quiet.restore({KEY: KEPT}, running, T0 + 5 * CONTEST_HOLD_S)
    assert quiet.keys() == set()
    for vm in (set_back(uid="uid-2"), set_back(run_strategy="Halted")):  # another VM, or stopped for good
        other = Contests()
        other.restore({KEY: KEPT}, {KEY: vm_view(vm)}, T0 + 60)
        assert other.keys() == set()
    mine = Contests(held={KEY: replace(KEPT, fights=5)})  # what this leader saw itself wins
    mine.restore({KEY: KEPT}, running, T0 + 60)
    assert mine.held[KEY].fights == 5


def test_a_kept_hold_is_never_longer_than_its_fights_hold() -> None:
    """A status edited by hand, or written by a replica whose clock ran far ahead, holds no VM for a year."""
    contests = Contests()
    year = replace(KEPT, until=KEPT.since + 365 * 86400)
    contests.restore({KEY: year}, {KEY: vm_view(set_back())}, T0 + 60)
    assert contests.held[KEY].until == KEPT.since + 2 * CONTEST_HOLD_S
