"""From observed bodies to the policy's input (:mod:`dynamem.controller.snapshot`): pools, phases, joins."""

from __future__ import annotations

import datetime as dt

import pytest

from dynamem.controller.demand import DemandReading
from dynamem.controller.placement import Placement, encode
from dynamem.controller.snapshot import Phase, PoolBreakdown, build_snapshot
from dynamem.kube.api import parse_rfc3339
from dynamem.kube.objects import GI, MI, ObjectKey, quantity_bytes
from dynamem.policy.cluster import StoppedVm, plan_cluster
from dynamem.policy.model import BalanceConfig, VmLimits

from .builders_k8s import (
    NS,
    make_node_body,
    make_pod_body,
    make_vm_body,
    make_vmi_body,
    make_vmm_body,
    observed,
)

NO_DEMAND = DemandReading()


def key(name: str) -> ObjectKey:
    return ObjectKey(NS, name)


def test_pool_subtracts_pods_overheads_unmanaged_and_reserve() -> None:
    seen = observed(
        vmms=[make_vmm_body("finance"), make_vmm_body("sales")],
        vms=[make_vm_body(n) for n in ("finance", "sales", "legacy")],
        vmis=[
            make_vmi_body("finance", overhead="200Mi"),
            make_vmi_body("sales"),  # no memoryOverhead reported: default_overhead applies
            make_vmi_body("legacy", guest="1Gi", current="1Gi", overhead="50Mi"),  # no VMM: unmanaged
            make_vmi_body("gone", phase="Succeeded", overhead="1Gi"),  # finished: counts for nothing
        ],
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("other", allocatable="4Gi")],
        pods=[
            make_pod_body("web", requests=["256Mi", "256Mi"]),
            make_pod_body("virt-launcher-finance", launcher=True, requests=["2Gi"]),  # via its VMI instead
            make_pod_body("job", requests=["1Gi"], phase="Succeeded"),  # finished
            make_pod_body("pending", node=None, requests=["1Gi"]),  # not on a node
            make_pod_body("db", node="other", requests=["1Gi"]),
        ],
    )
    snapshot = build_snapshot(seen, NO_DEMAND, reserve=256 * MI, default_overhead=100 * MI)
    host = snapshot.pools["host"]
    assert host == PoolBreakdown(
        node="host", allocatable=8 * GI, pods=512 * MI, overhead=350 * MI, unmanaged=GI, reserve=256 * MI
    )
    # 8192 - 512 pods - (200 + 100 + 50) overheads - 1024 legacy - 256 reserve = 6050 Mi
    assert host.pool == 6050 * MI
    # 4096 - 1024 db - 256 reserve = 2816 Mi
    assert snapshot.pools["other"].pool == 2816 * MI
    assert [(n.name, n.pool) for n in snapshot.nodes] == [("host", 6050 * MI), ("other", 2816 * MI)]
    assert [vm.name for vm in snapshot.nodes[0].vms] == [f"{NS}/finance", f"{NS}/sales"]
    assert snapshot.nodes[1].vms == ()


def test_pool_never_negative() -> None:
    # 1Gi allocatable - 2Gi of pods - 1Gi reserve: -2Gi, reported as 0
    seen = observed(nodes=[make_node_body(allocatable="1Gi")], pods=[make_pod_body("big", requests=["2Gi"])])
    snapshot = build_snapshot(seen, NO_DEMAND, reserve=GI)
    assert snapshot.pools["host"].pool == 0
    assert snapshot.nodes[0].pool == 0


def test_unmanaged_vm_counts_at_the_larger_of_spec_and_current() -> None:
    # legacy: spec asks 3Gi while the guest has 1Gi (hotplug under way): 3Gi are held
    seen = observed(
        vms=[make_vm_body("legacy", guest="3Gi")],
        vmis=[make_vmi_body("legacy", guest="3Gi", current="1Gi")],
        nodes=[make_node_body()],
    )
    assert build_snapshot(seen, NO_DEMAND).pools["host"].unmanaged == 3 * GI


def test_invalid_vmm_counts_its_vm_as_unmanaged() -> None:
    # startup 5Gi > maximum 4Gi: invalid; its running 2Gi VM still occupies the node
    seen = observed(
        vmms=[make_vmm_body("bad", startup="5Gi")],
        vms=[make_vm_body("bad", guest="2Gi")],
        vmis=[make_vmi_body("bad", guest="2Gi", current="2Gi")],
        nodes=[make_node_body()],
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.managed[key("bad")].phase is Phase.INVALID
    assert "startup" in (snapshot.managed[key("bad")].error or "")
    assert snapshot.pools["host"].unmanaged == 2 * GI
    assert snapshot.nodes[0].vms == ()


@pytest.mark.parametrize(
    ("vm", "vmi", "vmm", "phase"),
    [
        pytest.param(make_vm_body("x"), make_vmi_body("x"), make_vmm_body("x"), Phase.RUNNING, id="running"),
        pytest.param(
            make_vm_body("x", run_strategy="Halted"), None, make_vmm_body("x"), Phase.STOPPED, id="stop"
        ),
        # a stopped VM's finished VMI is not running
        pytest.param(
            make_vm_body("x", run_strategy="Halted"),
            make_vmi_body("x", phase="Succeeded"),
            make_vmm_body("x"),
            Phase.STOPPED,
            id="stopped-with-finished-vmi",
        ),
        pytest.param(make_vm_body("x"), None, make_vmm_body("x"), Phase.STARTING, id="starting-no-vmi"),
        pytest.param(
            make_vm_body("x"),
            make_vmi_body("x", node=None, phase="Pending"),
            make_vmm_body("x"),
            Phase.STARTING,
            id="starting-pending-vmi",
        ),
        pytest.param(None, None, make_vmm_body("x"), Phase.MISSING, id="missing"),
        pytest.param(
            make_vm_body("x"), make_vmi_body("x"), make_vmm_body("x", buffer=120), Phase.INVALID, id="invalid"
        ),
        # invalid settings win over a missing VM
        pytest.param(None, None, make_vmm_body("x", maximum="lots"), Phase.INVALID, id="invalid-and-missing"),
        pytest.param(
            make_vm_body("x"),
            make_vmi_body("x", node="elsewhere"),
            make_vmm_body("x"),
            Phase.UNPLACED,
            id="node-unknown",
        ),
    ],
)
def test_phases(
    vm: dict[str, object] | None, vmi: dict[str, object] | None, vmm: dict[str, object], phase: Phase
) -> None:
    seen = observed(
        vmms=[vmm], vms=[vm] if vm else [], vmis=[vmi] if vmi else [], nodes=[make_node_body("host")]
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.managed[key("x")].phase is phase
    running = [vm.name for node in snapshot.nodes for vm in node.vms]
    assert running == ([f"{NS}/x"] if phase is Phase.RUNNING else [])


def test_running_vm_state() -> None:
    seen = observed(
        vmms=[
            make_vmm_body(
                "finance",
                startup="1Gi",
                minimum="512Mi",
                maximum="4Gi",
                buffer=30,
                priority="high",
                status={"lastChangeTime": "2026-03-02T12:00:00Z"},
            )
        ],
        vms=[make_vm_body("finance", guest="2Gi", page_size="1Gi")],
        vmis=[make_vmi_body("finance", guest="2Gi", at_boot="1Gi", current="2Gi")],
        nodes=[make_node_body()],
    )
    demand = DemandReading(by_vm={key("finance"): 1536 * MI, ObjectKey("elsewhere", "finance"): 9 * GI})
    snapshot = build_snapshot(seen, demand)
    [state] = snapshot.nodes[0].vms
    assert state.name == f"{NS}/finance"
    assert state.limits == VmLimits(startup=GI, minimum=512 * MI, maximum=4 * GI, buffer=30, priority=75)
    assert (state.assigned, state.boot_memory, state.hugepage) == (2 * GI, GI, GI)
    assert state.demand == 1536 * MI  # joined by namespace and name: not the other namespace's 9Gi
    assert state.in_flight_to is None
    assert state.last_change_at == dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()
    assert snapshot.managed[key("finance")].demand == 1536 * MI
    assert snapshot.vm_keys == {f"{NS}/finance": key("finance")}
    assert snapshot.demand_error is None


@pytest.mark.parametrize(
    ("vm_guest", "vmi_current", "hotplug", "assigned", "in_flight_to"),
    [
        pytest.param("3Gi", "1Gi", None, GI, 3 * GI, id="grow-requested"),
        pytest.param("1Gi", "3Gi", None, 3 * GI, GI, id="shrink-requested"),
        pytest.param("2Gi", "2Gi", None, 2 * GI, None, id="settled"),
        # same sizes but KubeVirt still reports HotMemoryChange=True: still in flight
        pytest.param("2Gi", "2Gi", "True", 2 * GI, 2 * GI, id="hotplug-condition"),
        # HotMemoryChange=False (failed) is not in progress
        pytest.param("2Gi", "2Gi", "False", 2 * GI, None, id="hotplug-failed"),
        # VM without memory.guest: what the VMI has is what is asked
        pytest.param(None, "2Gi", None, 2 * GI, None, id="no-spec-guest"),
    ],
)
def test_in_flight(
    vm_guest: str | None, vmi_current: str, hotplug: str | None, assigned: int, in_flight_to: int | None
) -> None:
    seen = observed(
        vmms=[make_vmm_body("x")],
        vms=[make_vm_body("x", guest=vm_guest)],
        vmis=[make_vmi_body("x", guest=vm_guest, current=vmi_current, hotplug=hotplug)],
        nodes=[make_node_body()],
    )
    [state] = build_snapshot(seen, NO_DEMAND).nodes[0].vms
    assert (state.assigned, state.in_flight_to) == (assigned, in_flight_to)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({}, None, id="never-changed"),
        pytest.param({"lastChangeTime": "not a time"}, None, id="malformed"),
        pytest.param(
            {"lastChangeTime": "2026-03-02T11:59:30+00:00"},
            dt.datetime(2026, 3, 2, 11, 59, 30, tzinfo=dt.UTC).timestamp(),
            id="offset-form",
        ),
    ],
)
def test_last_change_at(status: dict[str, str], expected: float | None) -> None:
    seen = observed(
        vmms=[make_vmm_body("x", status=status)],
        vms=[make_vm_body("x")],
        vmis=[make_vmi_body("x")],
        nodes=[make_node_body()],
    )
    [state] = build_snapshot(seen, NO_DEMAND).nodes[0].vms
    assert state.last_change_at == expected


AT_12 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("status", "placed", "expected"),
    [
        # the leader wrote memory.guest with its placement and was lost before its status write: a new leader
        # knows the VM changed at 12:00 and does not read the old size's capped use as a low use to shrink on
        pytest.param({}, "3Gi", AT_12, id="lost-before-status"),
        pytest.param({"lastChangeTime": "2026-03-02T11:00:00Z"}, "3Gi", AT_12, id="the-later"),
        pytest.param({"lastChangeTime": "2026-03-02T13:00:00Z"}, "3Gi", AT_12 + 3600, id="status-later"),
        pytest.param({}, "2Gi", None, id="an-older-ask"),  # not the size memory.guest asks for now
    ],
)
def test_last_change_at_is_also_read_from_the_placement_written_with_the_change(
    status: dict[str, str], placed: str, expected: float | None
) -> None:
    vm = make_vm_body("x", guest="3Gi")
    guest = quantity_bytes(placed) or 0
    note = Placement(target="n2", guest=guest, reason="grow", asked_at=AT_12, source="n1")
    vm["metadata"]["annotations"] = {"dynamem.io/placement": encode(note)}
    seen = observed(
        vmms=[make_vmm_body("x", status=status)],
        vms=[vm],
        vmis=[make_vmi_body("x", guest="3Gi", current="1Gi")],
        nodes=[make_node_body()],
    )
    [state] = build_snapshot(seen, NO_DEMAND).nodes[0].vms
    assert state.last_change_at == expected


def test_demand_error_is_carried_and_demand_unknown() -> None:
    seen = observed(
        vmms=[make_vmm_body("x")],
        vms=[make_vm_body("x")],
        vmis=[make_vmi_body("x")],
        nodes=[make_node_body()],
    )
    snapshot = build_snapshot(seen, DemandReading(error="Prometheus at http://p unreachable"))
    assert snapshot.demand_error == "Prometheus at http://p unreachable"
    assert snapshot.nodes[0].vms[0].demand is None


def test_vmi_without_any_memory_is_not_balanced_but_counted() -> None:
    # no guestCurrent and no spec guest on the VMI: the VM's spec 2Gi is held as unmanaged
    seen = observed(
        vmms=[make_vmm_body("x")],
        vms=[make_vm_body("x", guest="2Gi")],
        vmis=[make_vmi_body("x", guest=None, current=None)],
        nodes=[make_node_body()],
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.managed[key("x")].phase is Phase.RUNNING
    assert snapshot.nodes[0].vms == ()
    assert snapshot.pools["host"].unmanaged == 2 * GI


def test_the_target_pod_of_a_live_migration_counts_on_its_node() -> None:
    # finance runs on host; KubeVirt migrates it (a memory change) to a new launcher pod on other, whose
    # 3Gi of requests take room there until the VMI moves. On host the launcher is counted via the VMI.
    seen = observed(
        vmms=[make_vmm_body("finance")],
        vms=[make_vm_body("finance")],
        vmis=[make_vmi_body("finance")],
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("other", allocatable="8Gi")],
        pods=[
            make_pod_body("virt-launcher-finance-a", launcher=True, requests=["1Gi"], domain="finance"),
            make_pod_body(
                "virt-launcher-finance-b", node="other", launcher=True, requests=["3Gi"], domain="finance"
            ),
        ],
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.pools["host"].pods == 0
    assert snapshot.pools["other"].pods == 3 * GI


def test_a_launcher_pod_waiting_to_start_is_given_to_the_plan_and_a_migration_target_is_not() -> None:
    # payroll's VMI has no node yet and its 3Gi launcher pod is unbound (unschedulable): the plan keeps a hole
    # for it. finance runs on host; the unbound 2Gi launcher pod of its live migration is no start.
    seen = observed(
        vmms=[make_vmm_body("finance")],
        vms=[make_vm_body("finance")],
        vmis=[make_vmi_body("finance"), make_vmi_body("payroll", node=None, phase="Scheduling")],
        nodes=[make_node_body("host", allocatable="8Gi")],
        pods=[
            make_pod_body("virt-launcher-finance-a", launcher=True, requests=["1Gi"], domain="finance"),
            make_pod_body(
                "virt-launcher-finance-b", node=None, launcher=True, requests=["2Gi"], domain="finance"
            ),
            make_pod_body(
                "virt-launcher-payroll-a", node=None, launcher=True, requests=["3Gi"], domain="payroll"
            ),
        ],
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.cluster is not None
    # with the nodes its VMI may go to and what else its launcher asks
    assert snapshot.cluster.pending == (StoppedVm(3 * GI, frozenset({"host"}), (("cpu", 100),)),)


def test_a_launcher_waiting_for_what_no_memory_frees_gets_no_hole() -> None:
    """A launcher Pending for a GPU no node has, or whose VMI no node may take, waits for something no
    memory frees: no hole is kept and no VM is moved for it (the plan once moved one, and kept a hole on a
    node it could not use)."""
    gpu = make_pod_body("virt-launcher-big", node=None, launcher=True, requests=["3Gi"], domain="big")
    gpu["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "1"
    picky = make_vmi_body("picky", node=None, phase="Scheduling")
    picky["spec"]["nodeSelector"] = {"pool": "gpu"}
    seen = observed(
        vmms=[make_vmm_body(n, startup="2Gi", maximum="2Gi") for n in ("c", "d")],
        vms=[make_vm_body(n, guest="2Gi") for n in ("c", "d")],
        vmis=[
            make_vmi_body("c", node="n2", guest="2Gi", current="2Gi", at_boot="2Gi"),
            make_vmi_body("d", node="n1", guest="2Gi", current="2Gi", at_boot="2Gi"),
            make_vmi_body("big", node=None, phase="Scheduling", guest="3Gi", current="3Gi"),
            picky,
        ],
        nodes=[make_node_body(n, allocatable="4Gi") for n in ("n1", "n2")],
        pods=[
            make_pod_body("l-c", node="n2", launcher=True, requests=["2Gi"], domain="c"),
            make_pod_body("l-d", node="n1", launcher=True, requests=["2Gi"], domain="d"),
            gpu,
            make_pod_body("virt-launcher-picky", node=None, launcher=True, requests=["3Gi"], domain="picky"),
        ],
    )
    cluster = build_snapshot(
        seen, DemandReading(by_vm={ObjectKey(NS, "c"): GI, ObjectKey(NS, "d"): GI})
    ).cluster
    assert cluster is not None and cluster.pending == ()
    assert plan_cluster(cluster, BalanceConfig(), 0.0).changes == ()


def test_the_vms_defined_but_not_running_are_given_to_the_plan_as_the_starts_they_would_ask() -> None:
    # payroll is Halted (memory.guest 2Gi) and audit Manual without a VMI: each may be started, and its
    # launcher would ask its guest memory plus the overhead (256Mi here). payroll has been off for two days
    # (KubeVirt's Ready condition): parked, past the default day; audit for an hour. finance runs; a
    # stopped VM whose guest is backed by hugepages asks for hugepages, not memory; a stopped VM without a
    # VirtualMachineMemory is not dynamem's.
    seen = observed(
        vmms=[make_vmm_body(n) for n in ("finance", "payroll", "audit", "paged")],
        vms=[
            make_vm_body("finance"),
            make_vm_body("payroll", guest="2Gi", run_strategy="Halted", off_since="2026-11-27T08:00:00Z"),
            make_vm_body("audit", guest="3Gi", run_strategy="Manual", off_since="2026-11-29T07:00:00Z"),
            make_vm_body("paged", guest="2Gi", run_strategy="Halted", page_size="2Mi"),
            make_vm_body("other", guest="6Gi", run_strategy="Halted"),
        ],
        vmis=[make_vmi_body("finance")],
        nodes=[make_node_body("host", allocatable="8Gi")],
        pods=[make_pod_body("virt-launcher-finance-a", launcher=True, requests=["1Gi"], domain="finance")],
    )
    now = parse_rfc3339("2026-11-29T08:00:00Z")
    snapshot = build_snapshot(seen, NO_DEMAND, default_overhead=256 * 2**20, now=now)
    assert snapshot.cluster is not None
    assert sorted((vm.request, vm.parked) for vm in snapshot.cluster.stopped) == [
        (2 * GI + 256 * 2**20, True),
        (3 * GI + 256 * 2**20, False),
    ]
    # with --parked-after at three days, neither is parked; at half an hour, both
    for after, parked in ((3 * 86400.0, [False, False]), (1800.0, [True, True])):
        again = build_snapshot(seen, NO_DEMAND, now=now, parked_after_s=after).cluster
        assert again is not None and [vm.parked for vm in again.stopped] == parked


def test_a_stopped_vm_asks_its_memory_request_and_the_overhead_running_launchers_report() -> None:
    # payroll (Halted) sets resources.requests.memory 3Gi above its 2Gi guest: its launcher asks 3Gi. The
    # running VMI reports a 300Mi overhead; the default (0) is no better guess than that.
    seen = observed(
        vmms=[make_vmm_body("finance"), make_vmm_body("payroll")],
        vms=[
            make_vm_body("finance"),
            make_vm_body("payroll", guest="2Gi", request="3Gi", run_strategy="Halted"),
        ],
        vmis=[make_vmi_body("finance", overhead="300Mi")],
        nodes=[make_node_body("host", allocatable="8Gi")],
        pods=[make_pod_body("virt-launcher-finance-a", launcher=True, requests=["1Gi"], domain="finance")],
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.cluster is not None
    assert [vm.request for vm in snapshot.cluster.stopped] == [3 * GI + 300 * 2**20]
    # beside memory, what its first launcher will ask: a vCPU over the CR's cpuAllocationRatio (10 unless the
    # CR says), 50M of ephemeral storage, KVM and the pod network's tun
    (payroll,) = snapshot.cluster.stopped
    kvm, tun = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"
    assert payroll.others == (("cpu", 100), (kvm, 1), (tun, 1), ("ephemeral-storage", 50_000_000))
    (quarter,) = build_snapshot(seen, NO_DEMAND, cpu_allocation_ratio=4).cluster.stopped
    assert dict(quarter.others)["cpu"] == 250


def test_a_stopped_vm_with_a_node_selector_may_start_only_on_the_nodes_it_selects() -> None:
    seen = observed(
        vmms=[make_vmm_body("payroll")],
        vms=[make_vm_body("payroll", guest="2Gi", run_strategy="Halted", node_selector={"pool": "a"})],
        vmis=[],
        nodes=[
            make_node_body("in-a", allocatable="8Gi", labels={"pool": "a"}),
            make_node_body("in-b", allocatable="8Gi", labels={"pool": "b"}),
        ],
        pods=[],
    )
    snapshot = build_snapshot(seen, NO_DEMAND)
    assert snapshot.cluster is not None
    (payroll,) = snapshot.cluster.stopped
    assert payroll.allowed_nodes == frozenset({"in-a"})
