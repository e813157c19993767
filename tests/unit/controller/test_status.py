"""VirtualMachineMemory status (:mod:`dynamem.controller.status`): its content, written only on change."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest

from dynamem.controller.demand import DemandReading
from dynamem.controller.snapshot import Managed, Phase, build_snapshot
from dynamem.controller.status import StatusBook, desired_status, human_bytes
from dynamem.kube.objects import GI, MI, ObjectKey
from dynamem.policy.model import MemoryStatus, NodePlan, VmDecision

from .builders_k8s import (
    NS,
    Event,
    FakeWriter,
    make_node_body,
    make_vm_body,
    make_vmi_body,
    make_vmm_body,
    observed,
)

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()
STAMP = "2026-03-02T12:00:00Z"
EARLIER = "2026-03-01T08:00:00Z"
NAME = f"{NS}/x"


def managed(
    *,
    vm: dict[str, Any] | None = None,
    vmi: dict[str, Any] | None = None,
    vmm: dict[str, Any] | None = None,
    demand: int | None = None,
) -> Managed:
    """The joined item of VM ``x``, through build_snapshot (default: a running 1Gi VM)."""
    seen = observed(
        vmms=[vmm or make_vmm_body("x")],
        vms=[vm] if vm is not None else [],
        vmis=[vmi] if vmi is not None else [],
        nodes=[make_node_body()],
    )
    by_vm = {ObjectKey(NS, "x"): demand} if demand is not None else {}
    return build_snapshot(seen, DemandReading(by_vm=by_vm)).managed[ObjectKey(NS, "x")]


def running(demand: int | None = None, **vm: Any) -> Managed:
    return managed(vm=make_vm_body("x", **vm), vmi=make_vmi_body("x"), demand=demand)


def decision(
    *, current: int = GI, assigned: int = 3 * GI, demand: int | None = 2576980378, in_flight: bool = False
) -> VmDecision:
    # demand 2.4Gi with the 20 % buffer: target 2.4 / 0.8 = 3Gi; pressure round(100 x 2.4 / 3) = 80
    return VmDecision(
        name=NAME,
        current=current,
        assigned=assigned,
        floor=GI,
        demand=demand,
        target=3 * GI,
        pressure=80 if demand is not None else None,
        status=MemoryStatus.OK,
        reason="grow to meet demand",
        in_flight=in_flight,
    )


def plan_of(d: VmDecision, *, over: bool = False) -> NodePlan:
    reason = "over-subscribed: floors 9Gi exceed pool 8Gi by 1Gi; move VMs away" if over else "fits"
    return NodePlan("host", 8 * GI, (d,), over, reason)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_running_with_decision() -> None:
    d = decision()
    status = desired_status(running(demand=2576980378), d, plan_of(d), now=NOW, changed_at=None)
    conds = status.pop("conditions")
    assert status == {
        "node": "host",
        "assigned": "3Gi",
        "target": "3Gi",
        "demand": "2458Mi",  # 2576980378 / 1048576 = 2457.6 -> 2458Mi
        "pressure": 80,
        "memoryStatus": "OK",
        "reason": "grow to meet demand",
        "observedGeneration": 1,
        "hold": None,
        "contest": None,
        "heldBecause": None,
    }
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == [
        ("Ready", "True", "Balanced"),
        ("DemandKnown", "True", "Measured"),
        ("RestartRequired", "False", "NotRequired"),
        ("NodeOverSubscribed", "False", "Fits"),
        ("FieldOwnedByOtherManager", "False", "Owned"),
    ]
    assert all("lastTransitionTime" not in c for c in conds)  # the book stamps them


def test_changed_at_sets_last_change_time() -> None:
    d = decision()
    status = desired_status(running(demand=GI), d, plan_of(d), now=NOW, changed_at=NOW)
    assert status["lastChangeTime"] == STAMP


def test_in_flight_shrink_reports_the_requested_size() -> None:
    # the VM asked for 1Gi, the guest still has 3Gi: the policy holds 3Gi, the status shows the request
    item = managed(
        vm=make_vm_body("x", guest="1Gi"), vmi=make_vmi_body("x", guest="1Gi", current="3Gi"), demand=GI // 2
    )
    d = decision(current=3 * GI, assigned=3 * GI, in_flight=True)
    assert desired_status(item, d, plan_of(d), now=NOW, changed_at=None)["assigned"] == "1Gi"


def test_unknown_demand() -> None:
    d = decision(assigned=GI, demand=None)
    status = desired_status(running(), d, plan_of(d), now=NOW, changed_at=None)
    assert (status["demand"], status["pressure"], status["memoryStatus"]) == (None, None, "Unknown")
    assert conditions(status)["DemandKnown"] == ("False", "NoMetrics")


def test_running_without_decision_is_not_ready() -> None:
    status = desired_status(running(demand=GI), None, None, now=NOW, changed_at=None)
    assert conditions(status)["Ready"] == ("False", "NotBalanced")
    assert status["demand"] == "1Gi"
    assert (status["assigned"], status["memoryStatus"]) == (None, "Unknown")


@pytest.mark.parametrize(
    ("item", "phase", "ready", "memory_status", "assigned"),
    [
        pytest.param(
            managed(
                vm=make_vm_body("x", run_strategy="Halted", guest="3Gi"),
                vmm=make_vmm_body("x", startup="2Gi"),
            ),
            Phase.STOPPED,
            ("True", "Stopped"),
            "Stopped",
            "2Gi",  # startup, not the VM's current 3Gi
            id="stopped",
        ),
        pytest.param(
            managed(vm=make_vm_body("x")), Phase.STARTING, ("False", "Starting"), "Unknown", None, id="start"
        ),
        pytest.param(
            managed(), Phase.MISSING, ("False", "VirtualMachineMissing"), "Unknown", None, id="missing"
        ),
        pytest.param(
            managed(vm=make_vm_body("x"), vmi=make_vmi_body("x", node="elsewhere")),
            Phase.UNPLACED,
            ("False", "NodeUnknown"),
            "Unknown",
            None,
            id="node-unknown",
        ),
        pytest.param(
            managed(vmm=make_vmm_body("x", buffer=120)),
            Phase.INVALID,
            ("False", "InvalidSettings"),
            "Unknown",
            None,
            id="invalid",
        ),
    ],
)
def test_phases(
    item: Managed, phase: Phase, ready: tuple[str, str], memory_status: str, assigned: str | None
) -> None:
    assert item.phase is phase
    status = desired_status(item, None, None, now=NOW, changed_at=None)
    assert conditions(status)["Ready"] == ready
    assert conditions(status)["DemandKnown"] == ("Unknown", "NotRunning")
    assert (status["memoryStatus"], status["assigned"]) == (memory_status, assigned)
    # the node is shown when a VMI has one, even a node dynamem does not see
    assert status["node"] == ("elsewhere" if phase is Phase.UNPLACED else None)


def test_invalid_message_is_the_settings_error() -> None:
    status = desired_status(managed(vmm=make_vmm_body("x", buffer=120)), None, None, now=NOW, changed_at=None)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"] == f"vm '{NAME}': field 'buffer': 120 is out of range 5..95"
    assert status["reason"] == ready["message"]


def test_restart_required_and_over_subscribed() -> None:
    d = decision(assigned=GI)
    status = desired_status(
        running(demand=GI, restart_required=True), d, plan_of(d, over=True), now=NOW, changed_at=None
    )
    conds = {c["type"]: c for c in status["conditions"]}
    assert (conds["RestartRequired"]["status"], conds["RestartRequired"]["reason"]) == ("True", "KubeVirt")
    assert (conds["NodeOverSubscribed"]["status"], conds["NodeOverSubscribed"]["reason"]) == (
        "True",
        "FloorsExceedPool",
    )
    assert conds["NodeOverSubscribed"]["message"] == plan_of(d, over=True).reason


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(3 * GI, "3Gi", id="aligned-gi"),
        pytest.param(1536 * MI, "1536Mi", id="aligned-mi"),
        pytest.param(MI + 1, "1Mi", id="rounded-down"),  # 1.000001 Mi
        pytest.param(3 * MI // 2, "2Mi", id="half-rounds-to-even"),  # 1.5 Mi: round() to even -> 2
        pytest.param(0, "0", id="zero"),
    ],
)
def test_human_bytes(value: int, shown: str) -> None:
    assert human_bytes(value) == shown


# --- the book -------------------------------------------------------------------------------------------


def write(book: StatusBook, writer: FakeWriter, item: Managed, status: dict[str, Any]) -> bool:
    return asyncio.run(book.write(writer, item, copy.deepcopy(status), now=NOW))


def fed_back(item: Managed, status: dict[str, Any], resource_version: str) -> Managed:
    """The same item once the watch delivered the written status."""
    vmm = make_vmm_body("x", status=status, resource_version=resource_version)
    return managed(vm=make_vm_body("x"), vmi=make_vmi_body("x"), vmm=vmm, demand=item.demand)


def settled() -> tuple[Managed, dict[str, Any]]:
    item = running(demand=GI)
    d = decision(current=GI, assigned=GI)
    return item, desired_status(item, d, plan_of(d), now=NOW, changed_at=None)


def test_first_write_stamps_conditions_and_posts_ready() -> None:
    item, status = settled()
    writer, book = FakeWriter(), StatusBook()
    assert write(book, writer, item, status) is True
    [(name, written)] = writer.statuses
    assert name == "x"
    assert {c["type"]: c["lastTransitionTime"] for c in written["conditions"]} == {
        "Ready": STAMP,
        "DemandKnown": STAMP,
        "RestartRequired": STAMP,
        "NodeOverSubscribed": STAMP,
        "FieldOwnedByOtherManager": STAMP,
    }
    # only Ready (and NodeOverSubscribed=True) post events; Ready=True is Normal
    assert writer.events == [Event("x", "Normal", "Balanced", "memory is balanced on its node", "Observe")]


def test_no_write_when_observed_equals_desired() -> None:
    item, status = settled()
    writer, book = FakeWriter(), StatusBook()
    write(book, writer, item, status)
    [(_, written)] = writer.statuses
    writer.clear()
    again = fed_back(item, written, resource_version="2")
    assert book.needs_write(again, copy.deepcopy(status)) is False
    assert write(book, writer, again, status) is False
    assert (writer.statuses, writer.events) == ([], [])


def test_no_second_write_while_the_index_lags() -> None:
    item, status = settled()
    writer, book = FakeWriter(), StatusBook()
    assert write(book, writer, item, status) is True
    # next round: the watch has not delivered our write yet (same resourceVersion, empty status)
    assert write(book, writer, item, status) is False
    assert len(writer.statuses) == 1
    assert len(writer.events) == 1


def test_write_again_when_the_object_changed_under_us() -> None:
    # same stale status but a new resourceVersion: someone else wrote it, so ours may be gone
    item, status = settled()
    writer, book = FakeWriter(), StatusBook()
    write(book, writer, item, status)
    moved = fed_back(item, {}, resource_version="7")
    assert write(book, writer, moved, status) is True
    assert len(writer.statuses) == 2


def test_last_transition_time_kept_when_status_unchanged() -> None:
    item, status = settled()
    before = copy.deepcopy(status)
    for c in before["conditions"]:
        c["lastTransitionTime"] = EARLIER
    before["conditions"][1].update(status="False", reason="NoMetrics")  # DemandKnown was False
    before["lastChangeTime"] = EARLIER
    writer, book = FakeWriter(), StatusBook()
    assert write(book, writer, fed_back(item, before, "5"), status) is True
    [(_, written)] = writer.statuses
    assert {c["type"]: c["lastTransitionTime"] for c in written["conditions"]} == {
        "Ready": EARLIER,
        "DemandKnown": STAMP,  # False -> True now
        "RestartRequired": EARLIER,
        "NodeOverSubscribed": EARLIER,
        "FieldOwnedByOtherManager": EARLIER,
    }
    assert written["lastChangeTime"] == EARLIER  # carried over: no change this round
    assert writer.events == []  # Ready stayed True; DemandKnown posts none


def test_new_last_change_time_forces_a_write() -> None:
    item, status = settled()
    writer, book = FakeWriter(), StatusBook()
    write(book, writer, item, status)
    [(_, written)] = writer.statuses
    seen = fed_back(item, written, "2")
    changed = {**copy.deepcopy(status), "lastChangeTime": STAMP}
    assert book.needs_write(seen, changed) is True


@pytest.mark.parametrize(
    ("before", "after", "events"),
    [
        # Ready True -> False: a Warning with the new reason
        pytest.param(
            {"Ready": "True"}, {"Ready": ("False", "Starting")}, [("Warning", "Starting")], id="ready-lost"
        ),
        pytest.param(
            {"Ready": "False"}, {"Ready": ("True", "Balanced")}, [("Normal", "Balanced")], id="ready"
        ),
        pytest.param(
            {"Ready": "True", "NodeOverSubscribed": "False"},
            {"NodeOverSubscribed": ("True", "FloorsExceedPool")},
            [("Warning", "FloorsExceedPool")],
            id="over-subscribed",
        ),
        pytest.param(
            {"Ready": "True", "RestartRequired": "False", "DemandKnown": "True"},
            {"RestartRequired": ("True", "KubeVirt"), "DemandKnown": ("False", "NoMetrics")},
            [],
            id="other-conditions-silent",
        ),
    ],
)
def test_transition_events(
    before: dict[str, str], after: dict[str, tuple[str, str]], events: list[tuple[str, str]]
) -> None:
    item, status = settled()
    observed_status = copy.deepcopy(status)
    for c in observed_status["conditions"]:
        c["status"] = before.get(c["type"], c["status"])
        c["lastTransitionTime"] = EARLIER
    for c in status["conditions"]:
        if c["type"] in after:
            c["status"], c["reason"] = after[c["type"]]
    writer = FakeWriter()
    assert write(StatusBook(), writer, fed_back(item, observed_status, "3"), status) is True
    assert [(e.type_, e.reason) for e in writer.events] == events


def test_failed_write_is_retried_next_round() -> None:
    item, status = settled()
    writer, book = FakeWriter(fail_status={"x"}), StatusBook()
    assert write(book, writer, item, status) is False
    assert book.written == {}
    assert writer.events == []
    writer.fail_status.clear()
    assert write(book, writer, item, status) is True
