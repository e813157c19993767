"""The cluster plan's input from the operator's view (:mod:`dynamem.controller.cluster_state`): room as the
kube-scheduler counts it, what each guest shows, migrations in flight."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace
from typing import Any

from dynamem.controller.cluster_state import (
    SETTLED_AFTER_S,
    current_launchers,
    launcher_overheads,
    served_use,
    with_promised_targets,
)
from dynamem.controller.migrations import migration_view
from dynamem.controller.ports import DemandReading, GuestSignals
from dynamem.controller.snapshot import build_snapshot
from dynamem.kube.kubevirt_config import launcher_node_selectors_of, parallel_migrations_of
from dynamem.kube.objects import GI, MI, ObjectKey, pod_view, vmi_view
from dynamem.policy.balance import vm_levels
from dynamem.policy.cluster import ClusterNode, InFlight, plan_cluster
from dynamem.policy.model import BalanceConfig, VmLimits, VmState

from .builders_k8s import (
    NS,
    make_node_body,
    make_pod_body,
    make_vm_body,
    make_vmi_body,
    make_vmm_body,
    observed,
)


def test_under_memory_overcommit_a_launcher_asks_its_guest_over_the_ratio_and_the_plan_counts_so() -> None:
    """The KubeVirt CR's memoryOvercommit 200: a VMI without a memory request of its own asks half its guest
    plus its overhead (renderresources.go, WithMemoryRequests), now and at its next size; one with a request
    asks that, moved by each change; a VMI without a launcher in view and a stopped VM's start are counted at
    half their guest too."""
    own = make_vmi_body("fixed", guest="2Gi", current="2Gi", at_boot="2Gi")
    own["spec"]["domain"]["resources"] = {"requests": {"memory": "2Gi"}}
    capped = make_vm_body("capped", guest="2Gi", run_strategy="Halted")  # a limit and no request: asks that
    capped["spec"]["template"]["spec"]["domain"]["resources"] = {"limits": {"memory": "3Gi"}}
    seen = observed(
        vmms=[make_vmm_body(n) for n in ("web", "fixed", "away", "off", "capped")],
        vms=[
            make_vm_body("web", guest="2Gi"),
            make_vm_body("fixed", guest="2Gi", request="2Gi"),
            make_vm_body("away", guest="4Gi"),
            make_vm_body("off", guest="2Gi", run_strategy="Halted"),
            capped,
        ],
        vmis=[
            make_vmi_body("web", guest="2Gi", current="2Gi", at_boot="2Gi"),
            own,
            make_vmi_body("away", node="other", guest="4Gi", current="4Gi", at_boot="4Gi", overhead="100Mi"),
        ],
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("other", allocatable="8Gi")],
        pods=[
            make_pod_body("l-web", launcher=True, requests=["1408Mi"], domain="web"),
            make_pod_body("l-fixed", launcher=True, requests=["2148Mi"], domain="fixed"),
        ],
    )
    cluster = build_snapshot(seen, DemandReading(), memory_overcommit=200).cluster
    vms = {vm.name.split("/")[1]: vm for vm in cluster.vms}
    web, fixed = vms["web"], vms["fixed"]
    assert (web.overcommit, web.request, web.overhead) == (200, 1408 * MI, 384 * MI)
    assert web.guest_request(4 * GI) + web.overhead == 2 * GI + 384 * MI  # what its target at 4Gi asks
    assert (fixed.overcommit, fixed.request, fixed.overhead) == (100, 2148 * MI, 100 * MI)
    other = next(n for n in cluster.nodes if n.name == "other")
    assert other.requested == 2 * GI + 100 * MI  # away: no launcher in view, half its guest and its overhead
    assert sorted(vm.request for vm in cluster.stopped) == [
        GI + 384 * MI,  # off: half its guest, and the largest launcher overhead
        3 * GI + 384 * MI,  # capped: its limit, whole
    ]
    # a change in flight whose target pod is not bound yet counts on its target at what that pod will ask
    promised = with_promised_targets(cluster, [(web.name, "other", 4 * GI)])
    assert (
        next(n for n in promised.nodes if n.name == "other").requested == other.requested + 2 * GI + 384 * MI
    )
    # at KubeVirt's default of 100 the same launcher asks less than its guest: no overhead is read from it
    plain = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    assert (plain["web"].overcommit, plain["web"].overhead) == (100, 0)


def test_room_is_allocatable_less_every_unfinished_pod_request_terminating_ones_included() -> None:
    seen = observed(
        vmms=[make_vmm_body("finance"), make_vmm_body("sales")],
        vms=[make_vm_body("finance"), make_vm_body("sales")],
        vmis=[
            make_vmi_body("finance", overhead="200Mi"),
            make_vmi_body("sales", node="other", overhead="100Mi"),  # its launcher pod is not in the view
        ],
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("other", allocatable="4Gi")],
        pods=[
            make_pod_body("virt-launcher-finance", launcher=True, requests=["1224Mi"], domain="finance"),
            # a migration's source launcher on its way out: counted until the pod object is gone
            {
                **make_pod_body("virt-launcher-old", launcher=True, requests=["2Gi"], domain="finance"),
                "metadata": {
                    "name": "virt-launcher-old",
                    "namespace": NS,
                    "deletionTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {"kubevirt.io": "virt-launcher"},
                    "annotations": {"kubevirt.io/domain": "finance"},
                },
            },
            make_pod_body("job", requests=["1Gi"], phase="Succeeded"),  # finished: not counted
            make_pod_body("db", node="other", requests=["512Mi"]),
        ],
    )
    signals = GuestSignals(available=GI, usable=10 * MI, swap_bps=3e6, major_faults_ps=50.0)
    demand = DemandReading(
        by_vm={ObjectKey(NS, "finance"): 1014 * MI, ObjectKey(NS, "sales"): 300 * MI},
        signals={ObjectKey(NS, "finance"): signals},
    )
    cluster = build_snapshot(seen, demand, reserve=256 * MI).cluster
    assert cluster.nodes == (
        # 1224Mi + 2Gi launchers on host; sales at 1Gi + 100Mi overhead (no pod seen) + db 512Mi on other;
        # CPU as the scheduler counts it too: 8 cores each, 100m per unfinished pod (sales' CPU unknown)
        ClusterNode("host", 8 * GI - 256 * MI, 1224 * MI + 2 * GI, others=(("cpu", 8000, 200),)),
        ClusterNode("other", 4 * GI - 256 * MI, GI + 100 * MI + 512 * MI, others=(("cpu", 8000, 100),)),
    )
    finance, sales = cluster.vms
    assert (finance.name, finance.node, finance.assigned, finance.request) == (
        f"{NS}/finance",
        "host",
        GI,
        GI + 200 * MI,
    )
    assert (finance.used, finance.available, finance.usable) == (1014 * MI, GI, 10 * MI)
    assert (finance.swap_bps, finance.major_faults_ps) == (3e6, 50.0)
    assert (sales.node, sales.used, sales.usable, sales.swap_bps) == ("other", 300 * MI, None, 0.0)
    # its target pod asks what its launcher on its node asks; sales' launcher is not in view: CPU not counted
    assert finance.others == (("cpu", 100), ("pods", 1))
    assert sales.others == (("pods", 1),)


def test_room_in_devices_and_ephemeral_storage_is_counted_as_in_cpu() -> None:
    """A node without KVM (virt-handler advertises no healthy ``devices.kubevirt.io/kvm``) has none to give,
    however much memory it has; a node's ephemeral storage is what its pods did not request; the VM asks
    what its launcher asks."""
    launcher = make_pod_body("virt-launcher-web", launcher=True, requests=["1124Mi"], domain="web")
    launcher["spec"]["containers"][0]["resources"]["requests"] |= {
        "devices.kubevirt.io/kvm": "1",
        "ephemeral-storage": "50M",
    }
    nodes = [make_node_body(name, allocatable="8Gi") for name in ("host", "nokvm")]
    for node, kvm in zip(nodes, ("1k", "0"), strict=True):
        node["status"]["allocatable"] |= {
            "devices.kubevirt.io/kvm": kvm,
            "ephemeral-storage": "1G",
            "pods": "9",
        }
    seen = observed(
        vmms=[make_vmm_body("web")],
        vms=[make_vm_body("web")],
        vmis=[make_vmi_body("web")],
        nodes=nodes,
        pods=[launcher],
    )
    cluster = build_snapshot(seen, DemandReading(by_vm={}), reserve=0).cluster
    assert [node.others for node in cluster.nodes] == [
        (
            ("cpu", 8000, 100),
            ("devices.kubevirt.io/kvm", 1000, 1),
            ("ephemeral-storage", 10**9, 50_000_000),
            ("pods", 9, 1),
        ),
        (
            ("cpu", 8000, 0),
            ("devices.kubevirt.io/kvm", 0, 0),
            ("ephemeral-storage", 10**9, 0),
            ("pods", 9, 0),
        ),
    ]
    (web,) = cluster.vms
    assert web.others == (
        ("cpu", 100),
        ("devices.kubevirt.io/kvm", 1),
        ("ephemeral-storage", 50_000_000),
        ("pods", 1),
    )


def test_a_launchers_overhead_is_what_its_pod_asks_beyond_its_guest_where_the_vmi_reports_none() -> None:
    """v1.7.0 reports no overhead: it is read from the launcher on the VMI's node (not from a migration
    target elsewhere, nor a finished pod); a reported one wins; a launcher asking less than its guest
    where no ``memoryOvercommit`` says why has none; with hugepages its whole ``memory`` request is
    overhead."""
    vmis = {
        ObjectKey(NS, name): vmi_view(make_vmi_body(name, guest=guest, current=guest, overhead=reported))
        for name, guest, reported in (
            ("web", "2Gi", None),
            ("db", "1Gi", "300Mi"),
            ("lean", "3Gi", None),
            ("far", "1Gi", None),
        )
    }
    pages = make_vmi_body("big", guest="4Gi", current="4Gi")
    pages["spec"]["domain"]["memory"]["hugepages"] = {"pageSize": "2Mi"}
    vmis[ObjectKey(NS, "big")] = vmi_view(pages)
    pods = [
        pod_view(make_pod_body("l-web", launcher=True, requests=["2432Mi"], domain="web")),
        pod_view(make_pod_body("t-web", node="other", launcher=True, requests=["4Gi"], domain="web")),
        pod_view(make_pod_body("l-db", launcher=True, requests=["2Gi"], domain="db")),
        pod_view(make_pod_body("l-lean", launcher=True, requests=["2Gi"], domain="lean")),
        pod_view(make_pod_body("l-far", launcher=True, requests=["2Gi"], domain="far", phase="Failed")),
        pod_view(make_pod_body("l-big", launcher=True, requests=["200Mi"], domain="big")),
    ]
    assert launcher_overheads(current_launchers(pods, vmis), vmis) == {
        ObjectKey(NS, "web"): 384 * MI,
        ObjectKey(NS, "db"): 300 * MI,
        ObjectKey(NS, "lean"): 0,
        ObjectKey(NS, "big"): 200 * MI,
    }
    seen = observed(
        vmms=[make_vmm_body("web")],
        vms=[make_vm_body("web", guest="2Gi")],
        vmis=[make_vmi_body("web", guest="2Gi", current="2Gi", at_boot="2Gi")],
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("other", allocatable="8Gi")],
        pods=[make_pod_body("l-web", launcher=True, requests=["2432Mi"], domain="web")],
    )
    (web,) = build_snapshot(seen, DemandReading()).cluster.vms
    assert web.request == 2432 * MI  # its next target asks its new size + 384Mi


def test_a_vm_goes_only_where_its_volumes_let_its_launcher_go() -> None:
    """A VMI's claim bound to a volume in zone a: its target may go to the nodes of zone a (``VolumeZone``)
    and of the volume's node affinity (``VolumeBinding``); a claim not bound or not in view is not judged."""
    zone = "topology.kubernetes.io/zone"
    web = make_vmi_body("web", node="n1")
    web["spec"]["volumes"] = [
        {"name": "root", "dataVolume": {"name": "root"}},
        {"name": "new", "persistentVolumeClaim": {"claimName": "unbound"}},
    ]
    claims = [
        {"metadata": {"name": "root", "namespace": NS}, "spec": {"volumeName": "pv-root"}},
        {"metadata": {"name": "unbound", "namespace": NS}, "spec": {}},
    ]
    volume = {
        "metadata": {"name": "pv-root", "labels": {zone: "a"}},
        "spec": {
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["r9"]}]}
                    ]
                }
            }
        },
    }
    nodes = [
        make_node_body("n1", labels={**SCHEDULABLE, zone: "a"}),
        make_node_body("n2", labels={**SCHEDULABLE, zone: "b"}),
        make_node_body("n3", labels={**SCHEDULABLE, zone: "a"}),
        make_node_body("n4", labels={**SCHEDULABLE, zone: "a", "rack": "r9"}),
    ]
    seen = observed(
        vmms=[make_vmm_body("web")],
        vms=[make_vm_body("web")],
        vmis=[web],
        nodes=nodes,
        claims=claims,
        volumes=[volume],
    )
    (vm,) = build_snapshot(seen, DemandReading()).cluster.vms
    assert vm.allowed_nodes == frozenset({"n1", "n3"})
    unseen = observed(
        vmms=[make_vmm_body("web")], vms=[make_vm_body("web")], vmis=[web], nodes=nodes, claims=claims
    )
    (vm,) = build_snapshot(unseen, DemandReading()).cluster.vms
    assert vm.allowed_nodes == frozenset({"n1", "n2", "n3", "n4"})


def test_unfinished_migrations_are_in_flight_from_their_vmis_node() -> None:
    def migration(name: str, vmi: str, phase: str | None) -> dict[str, object]:
        body: dict[str, object] = {
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"vmiName": vmi},
        }
        if phase:
            body["status"] = {"phase": phase}
        return body

    seen = observed(
        vmms=[make_vmm_body("finance"), make_vmm_body("sales")],
        vms=[make_vm_body("finance"), make_vm_body("sales", guest="2Gi")],
        vmis=[make_vmi_body("finance"), make_vmi_body("sales", guest="2Gi", hotplug="True")],
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("b", allocatable="8Gi")],
    )
    seen = type(seen)(
        vmms=seen.vmms,
        vms=seen.vms,
        vmis=seen.vmis,
        nodes=seen.nodes,
        pods=seen.pods,
        migrations=[
            migration_view(migration("m1", "sales", "Scheduling")),
            migration_view(migration("m0", "finance", "Succeeded")),
        ],
    )
    cluster = build_snapshot(seen, DemandReading()).cluster
    assert cluster.in_flight == (InFlight(vm=f"{NS}/sales", source="host", target=None),)
    sales = next(vm for vm in cluster.vms if vm.name == f"{NS}/sales")
    assert sales.in_flight_to == 2 * GI  # the plan holds it where and as it is


def _memory_only(nodes: tuple[ClusterNode, ...]) -> tuple[ClusterNode, ...]:
    """The nodes without their CPU and pod room (test_room_is_allocatable_less_every_unfinished_pod_...)."""
    return tuple(replace(n, others=()) for n in nodes)


def test_a_cordoned_node_has_no_room() -> None:
    cordoned = make_node_body("b", allocatable="8Gi")
    cordoned.setdefault("spec", {})["unschedulable"] = True
    seen = observed(nodes=[make_node_body("host", allocatable="8Gi"), cordoned])
    nodes = build_snapshot(seen, DemandReading()).cluster.nodes
    assert _memory_only(nodes) == (ClusterNode("b", 8 * GI, 8 * GI), ClusterNode("host", 8 * GI, 0))


def test_a_sample_taken_at_another_size_says_nothing_of_the_guest_now() -> None:
    from dynamem.controller.cluster_state import sampled_at

    # a 1Gi guest fitted to real ones: MemTotal 895Mi (its kernel keeps 128Mi)
    paging = GuestSignals(available=895 * MI, usable=10 * MI, used_peak=885 * MI, swap_bps=3e6)
    assert sampled_at(paging, GI)
    assert sampled_at(GuestSignals(), GI)  # MemTotal unknown: taken as it is
    # the last scrape is of the 1Gi guest, the VM has 1920Mi since its migration: held until a new sample
    assert not sampled_at(paging, 1920 * MI)
    assert not sampled_at(paging, GI + 128 * MI)  # the least grow
    assert not sampled_at(paging, 768 * MI)  # MemTotal above the size


def test_a_guest_whose_kernel_keeps_more_is_read_once_its_size_has_settled() -> None:
    """A RHEL-like 4Gi guest with a kdump reservation shows MemTotal 372Mi under its size, more than the
    fitted share (128Mi + 5 %, 333Mi): read as a sample of another size, it was held as "demand unknown"
    for ever, never grown however it paged. Ten minutes after its last change every sample is of its size.
    Right after a change, a sample of the old size is still refused, and beyond the reservation's share
    too."""
    from dynamem.controller.cluster_state import sampled_at

    rhel = GuestSignals(available=4 * GI - 372 * MI, usable=40 * MI, used_peak=3 * GI, swap_bps=5e6)
    assert not sampled_at(rhel, 4 * GI)  # just changed: it could be the old size's sample
    assert sampled_at(rhel, 4 * GI, settled=True)
    old = GuestSignals(available=GI - 300 * MI, usable=10 * MI)  # a 1Gi kdump guest's sample
    assert not sampled_at(old, 2 * GI, settled=True)  # the 2Gi it was grown to never showed up in the guest
    assert not sampled_at(old, 700 * MI, settled=True)  # never above the size


def test_a_settled_paging_guest_with_a_kdump_reservation_is_planned_not_held() -> None:
    """Round level: the RHEL-like guest of the test above, paging at 4Gi, is held as "demand unknown" within
    ten minutes of its last change and grown once its size has settled."""
    changed = "2026-03-02T12:00:00Z"
    at = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()
    seen = observed(
        vmms=[make_vmm_body("finance", maximum="16Gi", status={"lastChangeTime": changed})],
        vms=[make_vm_body("finance", guest="4Gi", max_guest="16Gi")],
        vmis=[make_vmi_body("finance", guest="4Gi", current="4Gi", max_guest="16Gi")],
        nodes=[make_node_body("host", allocatable="32Gi"), make_node_body("other", allocatable="32Gi")],
    )
    signals = GuestSignals(available=4 * GI - 372 * MI, usable=40 * MI, used_peak=3 * GI, swap_bps=5e6)
    demand = DemandReading(
        by_vm={ObjectKey(NS, "finance"): 4 * GI - 412 * MI}, signals={ObjectKey(NS, "finance"): signals}
    )
    for after, grown in ((300.0, False), (SETTLED_AFTER_S + 1, True)):
        cluster = build_snapshot(seen, demand, now=at + after).cluster
        (finance,) = cluster.vms
        assert (finance.used is not None) is grown, after
        (decision,) = plan_cluster(cluster, BalanceConfig(), at + after).decisions
        assert (decision.assigned > 4 * GI) is grown, (after, decision.reason)
    # a change lands when its migration ends, which may be long after it was asked (a target pod pending for
    # minutes): settled counts from the later of the two
    later = at + SETTLED_AFTER_S + 1
    moved = make_vmi_body("finance", guest="4Gi", current="4Gi", max_guest="16Gi")
    moved["status"]["migrationState"] = {
        "startTimestamp": "2026-03-02T12:09:00Z",
        "endTimestamp": "2026-03-02T12:09:30Z",  # 31 s before `later`
        "completed": True,
    }
    seen = observed(
        vmms=[make_vmm_body("finance", maximum="16Gi", status={"lastChangeTime": changed})],
        vms=[make_vm_body("finance", guest="4Gi", max_guest="16Gi")],
        vmis=[moved],
        nodes=[make_node_body("host", allocatable="32Gi"), make_node_body("other", allocatable="32Gi")],
    )
    (finance,) = build_snapshot(seen, demand, now=later).cluster.vms
    assert finance.used is None


def test_a_vmis_node_selector_limits_where_the_plan_may_send_it() -> None:
    vmi = make_vmi_body("finance")
    vmi["spec"]["nodeSelector"] = {"dynamem.io/pool": "mine"}
    mine = make_node_body(
        "b",
        labels={"dynamem.io/pool": "mine", "kubernetes.io/hostname": "b", "kubevirt.io/schedulable": "true"},
    )
    seen = observed(
        vmms=[make_vmm_body("finance")],
        vms=[make_vm_body("finance")],
        vmis=[vmi],
        nodes=[make_node_body("host", allocatable="8Gi"), mine, make_node_body("other", allocatable="8Gi")],
    )
    (finance,) = build_snapshot(seen, DemandReading()).cluster.vms
    assert finance.allowed_nodes == frozenset({"b"})


def test_where_a_vm_may_go_is_where_the_schedulers_filters_let_its_target_pod() -> None:
    gpu = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    tolerant = make_vmi_body("tolerant")
    tolerant["spec"]["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    picky = make_vmi_body("picky")
    picky["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["free"]}]}
                ]
            }
        }
    }
    seen = observed(
        vmms=[make_vmm_body(n) for n in ("plain", "tolerant", "picky")],
        vms=[make_vm_body(n) for n in ("plain", "tolerant", "picky")],
        vmis=[make_vmi_body("plain"), tolerant, picky],
        nodes=[
            make_node_body("host"),
            make_node_body("free"),
            make_node_body("tainted", taints=[gpu]),
            make_node_body("cordoned", unschedulable=True),
            make_node_body("unserved", labels={"kubernetes.io/hostname": "unserved"}),  # no virt-handler
        ],
    )
    vms = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    assert vms["plain"].allowed_nodes == frozenset({"host", "free"})
    assert vms["tolerant"].allowed_nodes == frozenset({"host", "free", "tainted"})
    assert vms["picky"].allowed_nodes == frozenset({"host"})


def test_vms_that_share_a_placement_are_judged_against_the_nodes_once(monkeypatch: Any) -> None:
    """The scheduler's filters run once per distinct target pod and node, not once per VM and node: at 10,000
    VMs on 500 nodes that was five million filter runs a round, most of a live round's CPU."""
    from dynamem.controller import eligibility

    runs = 0
    real = eligibility.eligible

    def counted(pod: Any, node: Any) -> str | None:
        nonlocal runs
        runs += 1
        return real(pod, node)

    monkeypatch.setattr(eligibility, "eligible", counted)
    names = [f"vm-{i}" for i in range(30)]
    picky = make_vmi_body("vm-0")
    picky["spec"]["nodeSelector"] = {"dynamem.io/pool": "mine"}
    seen = observed(
        vmms=[make_vmm_body(n) for n in names],
        vms=[make_vm_body(n) for n in names],
        vmis=[picky, *(make_vmi_body(n) for n in names[1:])],
        nodes=[make_node_body("host", allocatable="64Gi"), *(make_node_body(f"n{i}") for i in range(9))],
    )
    vms = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    assert runs == 2 * 10  # two placements (vm-0's own, everyone else's), ten nodes
    assert vms["vm-0"].allowed_nodes == frozenset()
    assert all(vms[n].allowed_nodes == frozenset({"host", *(f"n{i}" for i in range(9))}) for n in names[1:])


def test_the_plan_never_sends_a_vm_to_a_node_its_target_pod_could_not_go_to() -> None:
    """A paging VM on a full node, two idle nodes the scheduler would refuse and one it would take: the plan
    chooses the one, though the others are the fuller nodes a best fit picks."""
    seen = observed(
        vmms=[make_vmm_body("finance")],
        vms=[make_vm_body("finance")],
        vmis=[make_vmi_body("finance", overhead="100Mi")],
        nodes=[
            make_node_body("host", allocatable="8Gi"),
            make_node_body("tainted", allocatable="3584Mi", taints=[{"key": "k", "effect": "NoExecute"}]),
            make_node_body("cordoned", allocatable="3584Mi", unschedulable=True),
            make_node_body("open", allocatable="64Gi"),
        ],
    )
    signals = GuestSignals(available=GI, usable=10 * MI, swap_bps=3e6, major_faults_ps=50.0)
    demand = DemandReading(
        by_vm={ObjectKey(NS, "finance"): 1014 * MI}, signals={ObjectKey(NS, "finance"): signals}
    )
    cluster = build_snapshot(seen, demand).cluster
    plan = plan_cluster(cluster, BalanceConfig(), now=0.0)
    (change,) = plan.changes
    assert change.assigned > GI and change.target_node == "open"


def hugepage_vmi(name: str, node: str, overhead: str = "200Mi") -> dict[str, Any]:
    vmi = make_vmi_body(name, node=node, overhead=overhead)
    vmi["spec"]["domain"]["memory"]["hugepages"] = {"pageSize": "2Mi"}
    return vmi


def test_a_hugepage_vms_guest_counts_against_its_hugepages_and_its_overhead_against_memory() -> None:
    """KubeVirt v1.7.0 (``renderresources.go``, ``WithHugePages``) asks ``hugepages-2Mi: <guest>`` and
    ``memory: <overhead>`` for a hugepage VMI; the scheduler counts each against its own allocatable."""
    launcher = make_pod_body("virt-launcher-db", launcher=True, requests=["200Mi"], domain="db")
    launcher["spec"]["containers"][0]["resources"]["requests"]["hugepages-2Mi"] = "1Gi"
    host = make_node_body("host", allocatable="8Gi")
    host["status"]["allocatable"]["hugepages-2Mi"] = "4Gi"
    other = make_node_body("other", allocatable="8Gi")
    other["status"]["allocatable"].update({"hugepages-2Mi": "2Gi", "hugepages-1Gi": "0"})
    seen = observed(
        vmms=[make_vmm_body("db"), make_vmm_body("cache")],
        vms=[make_vm_body("db"), make_vm_body("cache")],
        vmis=[hugepage_vmi("db", "host"), hugepage_vmi("cache", "other", overhead="100Mi")],  # cache: no pod
        nodes=[host, other],
        pods=[launcher],
    )
    cluster = build_snapshot(seen, DemandReading()).cluster
    assert _memory_only(cluster.nodes) == (
        # host: db's launcher asks 200Mi of memory and 1Gi of hugepages-2Mi
        ClusterNode("host", 8 * GI, 200 * MI, (("hugepages-2Mi", 4 * GI, GI),)),
        # other: cache has no launcher pod in the view: its overhead in memory, its 1Gi guest in hugepages
        ClusterNode("other", 8 * GI, 100 * MI, (("hugepages-1Gi", 0, 0), ("hugepages-2Mi", 2 * GI, GI))),
    )
    cache, db = sorted(cluster.vms, key=lambda vm: vm.name)
    assert (db.pages, db.request, db.overhead) == ("hugepages-2Mi", GI + 200 * MI, 200 * MI)
    assert cache.pages == "hugepages-2Mi"


def test_a_hugepage_vm_is_moved_where_hugepages_have_room() -> None:
    """A paging hugepage VM; "wide" has memory but no hugepages, "paged" has hugepages: the plan picks it."""
    host = make_node_body("host", allocatable="8Gi")
    host["status"]["allocatable"]["hugepages-2Mi"] = "1Gi"
    paged = make_node_body("paged", allocatable="2Gi")
    paged["status"]["allocatable"]["hugepages-2Mi"] = "8Gi"
    seen = observed(
        vmms=[make_vmm_body("db")],
        vms=[make_vm_body("db")],
        vmis=[hugepage_vmi("db", "host")],
        nodes=[host, paged, make_node_body("wide", allocatable="64Gi")],
    )
    signals = GuestSignals(available=GI, usable=10 * MI, swap_bps=3e6, major_faults_ps=50.0)
    demand = DemandReading(by_vm={ObjectKey(NS, "db"): 1014 * MI}, signals={ObjectKey(NS, "db"): signals})
    (change,) = plan_cluster(build_snapshot(seen, demand).cluster, BalanceConfig(), now=0.0).changes
    assert change.assigned > GI and change.target_node == "paged"


def test_a_vm_changed_within_the_shrink_window_is_neither_shrunk_nor_grown_again_for_a_buffer() -> None:
    """Grown from 1Gi to 1920Mi a minute ago (paging), its guest now uses 960Mi: its use has not stayed low
    for a window, so it keeps 1920Mi. Taking its size itself as its peak would ask for a 20 % buffer on top
    (2400Mi, a "grow to restore buffer") and a second migration after every change."""

    changed = "2026-03-02T12:00:00Z"
    now = dt.datetime(2026, 3, 2, 12, 1, tzinfo=dt.UTC).timestamp()
    seen = observed(
        vmms=[make_vmm_body("finance", buffer=20, status={"lastChangeTime": changed})],
        vms=[make_vm_body("finance", guest="1920Mi")],
        vmis=[make_vmi_body("finance", guest="1920Mi", current="1920Mi", overhead="200Mi")],
        nodes=[make_node_body("host", allocatable="16Gi"), make_node_body("other", allocatable="16Gi")],
        pods=[make_pod_body("virt-launcher-finance", launcher=True, requests=["2120Mi"], domain="finance")],
    )
    signals = GuestSignals(available=1800 * MI, usable=840 * MI, used_peak=960 * MI)
    demand = DemandReading(
        by_vm={ObjectKey(NS, "finance"): 960 * MI}, signals={ObjectKey(NS, "finance"): signals}
    )
    cluster = build_snapshot(seen, demand, now=now, shrink_window_s=3600).cluster
    (finance,) = cluster.vms
    assert finance.used_peak == served_use(1920 * MI, 20) == 1536 * MI
    assert finance.used_peak_seen == 960 * MI  # what a needed shrink (room for a paging VM) goes by
    (decision,) = plan_cluster(cluster, BalanceConfig(grow_headroom_percent=0), now).decisions
    assert (decision.current, decision.assigned, decision.target_node) == (1920 * MI, 1920 * MI, None)

    # once the window has passed, use that stayed low shrinks it (where the cluster's spare is not kept
    # from shrinks: 32Gi of nodes is far more than its 4Gi maximum could ask)
    later = now + 3600
    cluster = build_snapshot(seen, demand, now=later, shrink_window_s=3600).cluster
    config = BalanceConfig(grow_headroom_percent=0, idle_spare_ranges=None)
    (decision,) = plan_cluster(cluster, config, later).decisions
    assert decision.assigned < 1920 * MI


def test_served_use_is_the_use_whose_target_is_the_size() -> None:

    for size in (GI, 1920 * MI, 2700 * MI, 4 * GI - 2 * MI):
        for buffer in (5, 20, 33, 95):
            limits = VmLimits(startup=GI, minimum=512 * MI, maximum=8 * GI, buffer=buffer, priority=5000)
            probe = VmState("x", limits, size, served_use(size, buffer))
            assert vm_levels(probe, BalanceConfig())[4] == max(size, 512 * MI), (size, buffer)


def _anti_db(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (a VMI or pod) labelled app=db with a required anti-affinity to app=db on the hostname."""
    body["metadata"].setdefault("labels", {})["app"] = "db"
    body["spec"]["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
    return body


def test_a_vm_goes_nowhere_a_pod_it_is_anti_affine_to_runs_nor_a_pod_anti_affine_to_it() -> None:
    """Two database VMs kept apart by their required pod anti-affinity: neither may be sent to the other's
    node; a plain VM may go anywhere, except where a (non-VM) pod's own anti-affinity refuses it."""
    guard = make_pod_body("guard", node="n3")
    guard["metadata"]["labels"] = {"role": "guard"}
    guard["spec"]["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"tier": "batch"}}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }
    batch = make_vmi_body("batch", node="n1")
    batch["metadata"]["labels"] = {"tier": "batch"}
    names = ("db-a", "db-b", "plain", "batch")
    seen = observed(
        vmms=[make_vmm_body(n) for n in names],
        vms=[make_vm_body(n) for n in names],
        vmis=[
            _anti_db(make_vmi_body("db-a", node="n1")),
            _anti_db(make_vmi_body("db-b", node="n2")),
            make_vmi_body("plain", node="n1"),
            batch,
        ],
        pods=[_anti_db(make_pod_body("virt-launcher-db-a", node="n1", launcher=True, domain="db-a")), guard],
        nodes=[make_node_body(n) for n in ("n1", "n2", "n3")],
    )
    vms = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    # db-a's launcher pod is on n1; db-b's own pod on n2 refuses n2 too (its source, never a target anyway)
    assert vms["db-b"].allowed_nodes == frozenset({"n3"})
    assert vms["plain"].allowed_nodes == frozenset({"n1", "n2", "n3"})
    assert vms["batch"].allowed_nodes == frozenset({"n1", "n2"})  # the guard pod refuses tier=batch
    # db-a and db-b are tied: one of them moves per round; the others are in no group
    assert vms["db-a"].group == vms["db-b"].group is not None
    assert vms["plain"].group is None and vms["batch"].group is None


def test_a_change_in_flight_counts_on_its_target_before_its_pod_is_bound() -> None:
    """dynamem sent db-a to n3 and its target pod is not bound yet: the scheduler will count it there, so
    db-b may not be sent to n3 meanwhile; once bound, it is a pod on n3 like any."""
    seen = observed(
        vmms=[make_vmm_body(n) for n in ("db-a", "db-b")],
        vms=[make_vm_body(n) for n in ("db-a", "db-b")],
        vmis=[_anti_db(make_vmi_body("db-a", node="n1")), _anti_db(make_vmi_body("db-b", node="n2"))],
        nodes=[make_node_body(n) for n in ("n1", "n2", "n3", "n4")],
    )
    promised = {ObjectKey(NS, "db-a"): "n3"}
    vms = {
        vm.name.split("/")[1]: vm
        for vm in build_snapshot(seen, DemandReading(), promised=promised).cluster.vms
    }
    assert vms["db-b"].allowed_nodes == frozenset({"n4"})  # db-a on n1 and soon n3, db-b itself on n2
    vms = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    assert vms["db-b"].allowed_nodes == frozenset({"n3", "n4"})


def test_kubevirts_own_migration_term_is_no_inter_pod_rule() -> None:
    """A migration's target pod keeps KubeVirt's anti-affinity to its own VMI's pods: it refuses only that
    VM's own node, which no plan picks, so it is left out and a cluster with no other term judges none."""
    target = make_pod_body("virt-launcher-plain-x", node="n2", launcher=True, domain="plain")
    target["metadata"]["labels"]["kubevirt.io/created-by"] = "uid-plain"
    target["spec"]["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"kubevirt.io/created-by": "uid-plain"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    assert pod_view(target).anti == ()
    target["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"
    ] = "topology.kubernetes.io/zone"
    assert len(pod_view(target).anti) == 1


def test_a_vm_goes_nowhere_its_topology_spread_would_be_skewed_beyond_its_max() -> None:
    """Two web VMs spread over hostnames with maxSkew 1, on n1 and n2: n3 is the only node web-b may go to
    (on n1 the skew would be 2), and the two are tied (one moves per round)."""
    spread = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
        }
    ]
    vmis = []
    for name, node in (("web-a", "n1"), ("web-b", "n2")):
        vmi = make_vmi_body(name, node=node)
        vmi["metadata"]["labels"] = {"app": "web"}
        vmi["spec"]["topologySpreadConstraints"] = spread
        vmis.append(vmi)
    seen = observed(
        vmms=[make_vmm_body(n) for n in ("web-a", "web-b")],
        vms=[make_vm_body(n) for n in ("web-a", "web-b")],
        vmis=vmis,
        nodes=[make_node_body(n) for n in ("n1", "n2", "n3")],
    )
    vms = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    assert vms["web-b"].allowed_nodes == frozenset({"n3"})
    assert vms["web-a"].allowed_nodes == frozenset({"n3"})
    assert vms["web-a"].group == vms["web-b"].group is not None


SCHEDULABLE = {"kubevirt.io/schedulable": "true"}


def migration_body(name: str, vmi: str, added: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"vmiName": vmi, "addedNodeSelector": added},
        "status": {"phase": "Succeeded"},
    }


def _launcher(vmi: str, node: str, selector: dict[str, str], migration: str | None = None) -> dict[str, Any]:
    pod = make_pod_body(f"virt-launcher-{vmi}", node=node, launcher=True, domain=vmi)
    pod["spec"]["nodeSelector"] = selector
    if migration is not None:
        pod["metadata"]["annotations"]["kubevirt.io/migrationJobName"] = migration
    return pod


def test_a_vm_goes_only_where_its_launchers_selector_would_take_its_next_target() -> None:
    """What KubeVirt rendered on the launcher pod beyond the VMI's spec (a CPU model) is on its next target
    too; the hostname its last migration pinned is not, nor a pin the VMI has since dropped. A host-model VM
    that never migrated gets its node's host model: only nodes that can host it."""
    gold = "cpu-model.node.kubevirt.io/Gold"
    nodes = [
        make_node_body("n1", labels={**SCHEDULABLE, "kubernetes.io/hostname": "n1", gold: "true"}),
        make_node_body("n2", labels={**SCHEDULABLE, "kubernetes.io/hostname": "n2", gold: "true"}),
        make_node_body("n3", labels={**SCHEDULABLE, "kubernetes.io/hostname": "n3"}),
    ]
    host = make_node_body(
        "h1",
        labels={
            **SCHEDULABLE,
            "host-model-cpu.node.kubevirt.io/Skylake": "true",
            "kubernetes.io/hostname": "h1",
        },
    )
    fits = make_node_body(
        "h2", labels={**SCHEDULABLE, "cpu-model-migration.node.kubevirt.io/Skylake": "true", gold: "true"}
    )
    moved = migration_body("web-move", "web", added={"kubernetes.io/hostname": "n1"})
    db = make_vmi_body("db", node="h1")
    db["spec"]["domain"]["cpu"] = {"model": "host-model"}
    names = ("web", "db", "app")
    seen = observed(
        vmms=[make_vmm_body(n) for n in names],
        vms=[make_vm_body(n) for n in names],
        vmis=[make_vmi_body("web", node="n1"), db, make_vmi_body("app", node="n3")],
        pods=[
            _launcher("web", "n1", {**SCHEDULABLE, gold: "true", "kubernetes.io/hostname": "n1"}, "web-move"),
            _launcher("db", "h1", SCHEDULABLE),
            # app started pinned to n3 by its own selector, which the running VMI has since dropped
            _launcher("app", "n3", {**SCHEDULABLE, "kubernetes.io/hostname": "n3"}),
        ],
        nodes=[*nodes, host, fits],
        migrations=[moved],
    )
    vms = {vm.name.split("/")[1]: vm for vm in build_snapshot(seen, DemandReading()).cluster.vms}
    assert vms["web"].allowed_nodes == frozenset({"n1", "n2", "h2"})  # its CPU model, not pinned to n1
    assert vms["db"].allowed_nodes == frozenset({"h2"})
    assert vms["app"].allowed_nodes == frozenset({"n1", "n2", "n3", "h1", "h2"})


def test_a_term_that_matches_no_vm_ties_no_vms_together() -> None:
    """Three VMs kept away from a daemon's pods (no VM has its label): moving one does not change where the
    others may go, so none is held back for another; the launcher labels KubeVirt sets are theirs."""
    vmis = []
    for name in ("a", "b", "c"):
        vmi = make_vmi_body(name, node="n1")
        vmi["spec"]["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {"app": "noisy"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
        vmis.append(vmi)
    seen = observed(
        vmms=[make_vmm_body(n) for n in "abc"],
        vms=[make_vm_body(n) for n in "abc"],
        vmis=vmis,
        nodes=[make_node_body(n) for n in ("n1", "n2")],
    )
    vms = build_snapshot(seen, DemandReading()).cluster.vms
    assert [vm.group for vm in vms] == [None, None, None]


def test_the_target_pod_labels_are_kubevirts() -> None:
    body = make_vmi_body("db.prod")
    assert dict(vmi_view(body).pod_labels)["vm.kubevirt.io/name"] == "db"
    body["spec"]["hostname"] = "primary"
    labels = dict(vmi_view(body).pod_labels)
    assert (labels["vm.kubevirt.io/name"], labels["vmi.kubevirt.io/id"]) == ("primary", "db.prod")
    long = "x" * 70
    assert (
        dict(vmi_view(make_vmi_body(long)).pod_labels)["vmi.kubevirt.io/id"]
        == f"{'x' * 54}-" + (hashlib.sha1(long.encode()).hexdigest()[:8])
    )


def test_the_kubevirt_crs_cluster_wide_selector_holds_for_every_target() -> None:
    """developerConfiguration.nodeSelectors: every launcher pod selects them under its VMI's own."""
    seen = observed(
        vmms=[make_vmm_body("web")],
        vms=[make_vm_body("web")],
        vmis=[make_vmi_body("web", node="n1")],
        nodes=[
            make_node_body("n1", labels={**SCHEDULABLE, "pool": "vms"}),
            make_node_body("n2", labels={**SCHEDULABLE, "pool": "vms"}),
            make_node_body("n3", labels=SCHEDULABLE),
        ],
    )
    (vm,) = build_snapshot(seen, DemandReading(), launcher_node_selectors=(("pool", "vms"),)).cluster.vms
    assert vm.allowed_nodes == frozenset({"n1", "n2"})
    config = {"developerConfiguration": {"nodeSelectors": {"pool": "vms"}}, "migrations": {}}
    assert (launcher_node_selectors_of(config), parallel_migrations_of(config)) == ({"pool": "vms"}, None)


def test_a_launchers_overhead_right_after_its_migration_is_not_the_grow() -> None:
    """Once a grow's migration completes the VMI is on the new launcher and asks the new size
    (``guestRequested``) before its guest reports it (``guestCurrent``): the overhead is the pod's request
    beyond the size it was rendered for. A launcher on its way out (terminating) is not read."""
    body = make_vmi_body("web", guest="6Gi", current="2Gi", requested="6Gi", at_boot="2Gi")
    vmis = {ObjectKey(NS, "web"): vmi_view(body)}
    old = make_pod_body("l-old", launcher=True, requests=["9Gi"], domain="web")
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    # the terminating one listed last: it would win were it read
    pods = [pod_view(make_pod_body("l-web", launcher=True, requests=["6528Mi"], domain="web")), pod_view(old)]
    assert launcher_overheads(current_launchers(pods, vmis), vmis) == {ObjectKey(NS, "web"): 384 * MI}
    seen = observed(
        vmms=[make_vmm_body("web")],
        vms=[make_vm_body("web", guest="6Gi")],
        vmis=[body],
        nodes=[make_node_body("host", allocatable="16Gi")],
        pods=[make_pod_body("l-web", launcher=True, requests=["6528Mi"], domain="web"), old],
    )
    (web,) = build_snapshot(seen, DemandReading()).cluster.vms
    assert web.launcher_memory == 6528 * MI


def test_a_vm_whose_peak_prometheus_did_not_give_is_not_shrunk_on_one_sample() -> None:
    """The peak query (the dearest: a subquery over the window) failed or left the VM out while the use query
    answered: a guest at 8Gi using 1Gi right now may have used 7Gi a minute ago, so it keeps its size. With
    the peak read, use that stayed low for the window shrinks it."""

    now = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC).timestamp()
    seen = observed(
        vmms=[make_vmm_body("db", buffer=20, maximum="16Gi")],
        vms=[make_vm_body("db", guest="8Gi")],
        vmis=[make_vmi_body("db", guest="8Gi", current="8Gi", overhead="200Mi")],
        nodes=[make_node_body("host", allocatable="32Gi"), make_node_body("other", allocatable="32Gi")],
        pods=[make_pod_body("virt-launcher-db", launcher=True, requests=["8392Mi"], domain="db")],
    )
    config = BalanceConfig(grow_headroom_percent=0, idle_spare_ranges=None)
    key = ObjectKey(NS, "db")

    def plan(peak: int | None) -> tuple[int | None, int]:
        signals = GuestSignals(available=8000 * MI, usable=7000 * MI, used_peak=peak)
        demand = DemandReading(by_vm={key: 1 * GI}, signals={key: signals})
        cluster = build_snapshot(seen, demand, now=now, shrink_window_s=3600).cluster
        (vm,) = cluster.vms
        (decision,) = plan_cluster(cluster, config, now).decisions
        return vm.used_peak, decision.assigned

    peak, assigned = plan(None)
    assert (peak, assigned) == (served_use(8 * GI, 20), 8 * GI)  # no peak measured: none to go by either
    peak, assigned = plan(1 * GI)  # the window's peak read: it stayed low, so it shrinks
    assert peak == 1 * GI and assigned < 8 * GI


def test_a_target_pod_rejects_the_nodes_kubevirt_renders_its_cpu_to_reject() -> None:
    """KubeVirt v1.7.0 adds to every launcher pod's required node affinity (``template.go``,
    ``setNodeAffinityForPod``): a host-model CPU (or none given) rejects nodes labelled
    ``obsolete-host-model``; each forbidden feature rejects nodes that have it. Added to each of the VMI's own
    terms, or as a term of its own when it has none. dynamem picked such nodes, and the migration failed."""
    from dynamem.controller.eligibility import eligible_nodes
    from dynamem.kube.objects import NodeView, node_view, vmi_view

    def node(name: str, **labels: str) -> NodeView:
        return node_view(
            make_node_body(name, allocatable="8Gi", labels={"kubevirt.io/schedulable": "true", **labels})
        )

    nodes = [
        node("plain"),
        node("old", **{"node-labeller.kubevirt.io/obsolete-host-model": "true"}),
        node("avx", **{"cpu-feature.node.kubevirt.io/avx512f": "true"}),
    ]
    default = make_vmi_body("web")  # no CPU model: host-model
    assert eligible_nodes(vmi_view(default), nodes) == {"plain", "avx"}
    forbidding = make_vmi_body("db")
    forbidding["spec"]["domain"]["cpu"] = {
        "model": "Skylake",
        "features": [{"name": "avx512f", "policy": "forbid"}],
    }
    forbidding["spec"]["affinity"] = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubevirt.io/schedulable", "operator": "Exists"}]},
                    {"matchExpressions": [{"key": "other", "operator": "Exists"}]},
                ]
            }
        }
    }
    assert eligible_nodes(vmi_view(forbidding), nodes) == {"plain", "old"}  # each term rejects avx


def test_a_pod_nominated_to_a_node_counts_there_as_the_scheduler_counts_it() -> None:
    """A 4Gi pod that preempted pods on b is nominated there (``status.nominatedNodeName``) while they
    terminate; the scheduler counts it on b for the pods it places next (``addGENominatedPods``). Counted
    nowhere, b looked 4Gi roomier than the scheduler finds it, and a target placed there was refused."""
    preemptor = make_pod_body("big", node=None, requests=["4Gi"])
    preemptor["status"]["nominatedNodeName"] = "b"
    waiting = make_pod_body("virt-launcher-new", node=None, launcher=True, requests=["1Gi"], domain="new")
    waiting["status"]["nominatedNodeName"] = "b"  # a launcher waiting to start keeps a hole of its own
    seen = observed(
        nodes=[make_node_body("host", allocatable="8Gi"), make_node_body("b", allocatable="8Gi")],
        pods=[preemptor, waiting],
    )
    nodes = _memory_only(build_snapshot(seen, DemandReading()).cluster.nodes)
    assert nodes == (ClusterNode("b", 8 * GI, 4 * GI), ClusterNode("host", 8 * GI, 0))


def test_vmis_with_the_same_placement_but_other_cpu_rejects_do_not_share_their_nodes() -> None:
    """The round judges each distinct placement once (``EligibleNodes``); a VMI that forbids a CPU feature
    has the same own placement as one that does not, but its target pod rejects more nodes."""
    from dynamem.controller.eligibility import EligibleNodes
    from dynamem.kube.objects import node_view, vmi_view

    def node(name: str, **labels: str) -> Any:
        return node_view(
            make_node_body(name, allocatable="8Gi", labels={"kubevirt.io/schedulable": "true", **labels})
        )

    nodes = EligibleNodes([node("plain"), node("avx", **{"cpu-feature.node.kubevirt.io/avx512f": "true"})])
    plain = make_vmi_body("web")
    plain["spec"]["domain"]["cpu"] = {"model": "Skylake"}
    forbidding = make_vmi_body("db")
    forbidding["spec"]["domain"]["cpu"] = {
        "model": "Skylake",
        "features": [{"name": "avx512f", "policy": "forbid"}],
    }
    assert nodes.of(vmi_view(plain)) == {"plain", "avx"}
    assert nodes.of(vmi_view(forbidding)) == {"plain"}
