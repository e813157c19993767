"""The typed views of raw bodies (:mod:`dynamem.kube.objects`): every field dynamem reads, parsed once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dynamem.controller.cluster_state import launcher_overcommit
from dynamem.kube.objects import (
    GI,
    MI,
    ObjectKey,
    desired_running,
    hugepage_bytes,
    node_view,
    pod_requests,
    pod_view,
    quantity_bytes,
    to_quantity,
    vm_view,
    vmi_view,
)

from .builders_k8s import NS, make_node_body, make_pod_body, make_vm_body, make_vmi_body

KI = 1024


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1Gi", GI, id="binary-gi"),
        pytest.param("3584Mi", 3584 * MI, id="binary-mi"),  # 3.5 x 1024 Mi
        pytest.param("1G", 10**9, id="decimal-g"),
        pytest.param("0.5Gi", 512 * MI, id="fraction-exact"),
        # 2.4 x 1073741824 = 2576980377.6 -> rounded up to the next whole byte
        pytest.param("2.4Gi", 2576980378, id="fraction-rounds-up"),
        pytest.param("1.5", 2, id="plain-fraction-rounds-up"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param(4096, 4096, id="int"),
        pytest.param(" 1Gi", GI, id="leading-space"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("abc", None, id="malformed"),
        pytest.param("1Gx", None, id="unknown-suffix"),
        pytest.param("1GiB", None, id="unit-with-b"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param(float("inf"), None, id="infinite"),
        pytest.param({"memory": "1Gi"}, None, id="mapping"),
        pytest.param([], None, id="list"),
    ],
)
def test_quantity_bytes(value: object, expected: int | None) -> None:
    assert quantity_bytes(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(3 * GI, "3Gi", id="gi"),
        pytest.param(3584 * MI, "3584Mi", id="mi-not-fractional-gi"),  # 3.5Gi is 3584Mi, never "3.5Gi"
        pytest.param(1536 * KI, "1536Ki", id="ki"),  # 1.5Mi
        pytest.param(1024**4, "1Ti", id="ti"),
        pytest.param(1024**4 + MI, "1048577Mi", id="ti-plus-one-mi"),  # 1024 x 1024 + 1
        pytest.param(GI + 1, "1073741825", id="odd-bytes"),
        pytest.param(1023, "1023", id="below-ki"),
        pytest.param(0, "0", id="zero"),
    ],
)
def test_to_quantity_is_shortest_exact(value: int, expected: str) -> None:
    assert to_quantity(value) == expected
    assert quantity_bytes(expected) == value  # exact round trip


@pytest.mark.parametrize(
    "value", [GI, 3584 * MI, 1536 * KI, 2576980378, 2 * MI + 1, 7 * GI + 4 * KI, 1, 999_999_999_999]
)
def test_to_quantity_round_trips(value: int) -> None:
    assert quantity_bytes(to_quantity(value)) == value


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"runStrategy": "Always"}, True, id="always"),
        pytest.param({"runStrategy": "RerunOnFailure"}, True, id="rerun-on-failure"),
        pytest.param({"runStrategy": "Once"}, True, id="once"),
        pytest.param({"runStrategy": "Halted"}, False, id="halted"),
        pytest.param({"runStrategy": "Manual"}, False, id="manual"),
        pytest.param({"running": True}, True, id="running-true"),
        pytest.param({"running": False}, False, id="running-false"),
        pytest.param({}, False, id="neither"),
        # runStrategy wins over the deprecated running field, both ways
        pytest.param({"runStrategy": "Halted", "running": True}, False, id="strategy-over-running-true"),
        pytest.param({"runStrategy": "Always", "running": False}, True, id="strategy-over-running-false"),
    ],
)
def test_desired_running(spec: dict[str, Any], expected: bool) -> None:
    assert desired_running({"spec": spec}) is expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        pytest.param({"memory": {"hugepages": {"pageSize": "1Gi"}}}, GI, id="1gi-pages"),
        pytest.param({"memory": {"hugepages": {"pageSize": "2Mi"}}}, 2 * MI, id="2mi-pages"),
        pytest.param({"memory": {"guest": "1Gi"}}, 2 * MI, id="no-hugepages"),
        pytest.param({"memory": {"hugepages": {"pageSize": "huge"}}}, 2 * MI, id="malformed-page-size"),
        pytest.param({}, 2 * MI, id="empty-domain"),
        pytest.param(None, 2 * MI, id="no-domain"),
    ],
)
def test_hugepage_bytes(domain: dict[str, Any] | None, expected: int) -> None:
    assert hugepage_bytes(domain) == expected


def test_vm_view_reads_every_field() -> None:
    body = make_vm_body(
        "finance",
        guest="3584Mi",
        max_guest="8Gi",
        page_size="1Gi",
        request="2Gi",
        node_selector={"kubernetes.io/hostname": "host"},
        restart_required=True,
    )
    view = vm_view(body)
    assert view.key == ObjectKey(NS, "finance")
    assert str(view.key) == f"{NS}/finance"
    assert view.uid == "uid-finance"
    assert (view.guest, view.max_guest, view.request) == (3584 * MI, 8 * GI, 2 * GI)
    assert view.hugepage == GI
    assert view.node_selector == {"kubernetes.io/hostname": "host"}
    assert view.desired_running is True
    assert view.restart_required is True


def test_vm_view_of_a_bare_vm() -> None:
    view = vm_view(make_vm_body("bare", guest=None, max_guest=None, run_strategy=None))
    assert (view.guest, view.max_guest, view.request) == (None, None, None)
    assert view.hugepage == 2 * MI
    assert view.node_selector == {}
    assert view.desired_running is False
    assert view.restart_required is False


def test_vm_view_of_an_empty_body() -> None:
    view = vm_view({})
    assert view.key == ObjectKey("", "")
    assert view.guest is None and view.desired_running is False


def test_vm_view_restart_required_false_is_not_required() -> None:
    body = make_vm_body("finance")
    body["status"]["conditions"].append({"type": "RestartRequired", "status": "False"})
    assert vm_view(body).restart_required is False


def test_a_vm_is_off_since_its_ready_condition_says_its_vmi_went_away() -> None:
    # KubeVirt's VM controller: Ready False, reason VMINotExists, kept while the VM has no VMI
    off = make_vm_body("payroll", run_strategy="Halted", off_since="2026-11-27T18:00:00Z")
    assert vm_view(off).off_since == "2026-11-27T18:00:00Z"
    # a VM whose VMI is there (or was a moment ago: Ready False for another reason) is not off
    assert vm_view(make_vm_body("finance")).off_since is None
    starting = make_vm_body("finance")
    starting["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "GuestNotRunning",
            "lastTransitionTime": "2026-11-27T18:00:00Z",
        }
    ]
    assert vm_view(starting).off_since is None
    # no Ready condition (not synced yet): not known to be off for long, whenever it was made
    made = make_vm_body("new", run_strategy="Halted")
    made["status"] = {}
    made["metadata"]["creationTimestamp"] = "2026-01-01T09:00:00Z"
    assert vm_view(made).off_since is None


def test_vmi_view_reads_status_memory() -> None:
    body = make_vmi_body(
        "finance", guest="3Gi", at_boot="1Gi", current="2Gi", requested="3Gi", overhead="200M", hotplug="True"
    )
    view = vmi_view(body)
    assert view.key == ObjectKey(NS, "finance")
    assert view.node == "host"
    assert view.phase == "Running"
    assert (view.spec_guest, view.guest_at_boot, view.guest_current, view.guest_requested) == (
        3 * GI,
        GI,
        2 * GI,
        3 * GI,
    )
    assert view.overhead == 200 * 10**6  # decimal M
    assert (view.hotplug_in_progress, view.hotplug_failed) == (True, False)
    assert view.active is True
    assert view.current == 2 * GI  # guestCurrent, not the spec's 3Gi


@pytest.mark.parametrize(
    ("overrides", "active", "current", "hotplug"),
    [
        # no guestCurrent yet: current falls back to the spec's guest
        pytest.param({"current": None, "guest": "2Gi"}, True, 2 * GI, (False, False), id="current-from-spec"),
        pytest.param({"current": None, "guest": None}, True, None, (False, False), id="nothing-known"),
        pytest.param({"node": None, "phase": "Pending"}, False, GI, (False, False), id="not-placed"),
        pytest.param({"phase": "Succeeded"}, False, GI, (False, False), id="succeeded"),
        pytest.param({"phase": "Failed"}, False, GI, (False, False), id="failed"),
        pytest.param({"phase": "Scheduled"}, True, GI, (False, False), id="scheduled-counts"),
        pytest.param({"hotplug": "False"}, True, GI, (False, True), id="hotplug-failed"),
    ],
)
def test_vmi_view_cases(
    overrides: dict[str, Any], active: bool, current: int | None, hotplug: tuple[bool, bool]
) -> None:
    view = vmi_view(make_vmi_body("vm", **overrides))
    assert view.active is active
    assert view.current == current
    assert (view.hotplug_in_progress, view.hotplug_failed) == hotplug


def test_vmi_view_without_phase_is_pending() -> None:
    view = vmi_view(make_vmi_body("vm", node=None, phase=None))
    assert view.phase == "Pending"
    assert view.node is None


@pytest.mark.parametrize(
    ("body", "allocatable", "schedulable"),
    [
        pytest.param(make_node_body(allocatable="8Gi", capacity="9Gi"), 8 * GI, True, id="allocatable"),
        pytest.param(make_node_body(allocatable=None, capacity="9Gi"), 9 * GI, True, id="capacity-fallback"),
        pytest.param(make_node_body(allocatable="junk", capacity="9Gi"), 9 * GI, True, id="malformed-alloc"),
        pytest.param(make_node_body(allocatable=None), 0, True, id="nothing-known"),
        # kubelets report kilobytes: 8167808Ki = 7976.375Mi
        pytest.param(make_node_body(allocatable="8167808Ki"), 8167808 * KI, True, id="kubelet-ki"),
        pytest.param(make_node_body(unschedulable=True), 8 * GI, False, id="cordoned"),
    ],
)
def test_node_view(body: dict[str, Any], allocatable: int, schedulable: bool) -> None:
    view = node_view(body)
    assert view.name == "host"
    assert view.allocatable == allocatable
    assert view.schedulable is schedulable


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(make_pod_body("p", requests=["256Mi"]), 256 * MI, id="one-container"),
        # 256 + 512 + 0 (no request)
        pytest.param(make_pod_body("p", requests=["256Mi", "512Mi", None]), 768 * MI, id="sum-of-containers"),
        # containers 256 + 256 = 512 < init peak 1Gi: the pod needs 1Gi
        pytest.param(
            make_pod_body("p", requests=["256Mi", "256Mi"], init_requests=["1Gi", "128Mi"]),
            GI,
            id="init-peak-wins",
        ),
        # init containers run one at a time: peak 300Mi (not 300 + 300), below the containers' 512Mi
        pytest.param(
            make_pod_body("p", requests=["512Mi"], init_requests=["300Mi", "300Mi"]), 512 * MI, id="init-low"
        ),
        # max(256, 0) + 64 overhead (a RuntimeClass's pod overhead)
        pytest.param(make_pod_body("p", requests=["256Mi"], overhead="64Mi"), 320 * MI, id="overhead-added"),
        # max(256, 1024) + 64
        pytest.param(
            make_pod_body("p", requests=["256Mi"], init_requests=["1Gi"], overhead="64Mi"),
            GI + 64 * MI,
            id="init-peak-plus-overhead",
        ),
        pytest.param(make_pod_body("p", requests=[None]), 0, id="best-effort"),
        pytest.param(make_pod_body("p", requests=["junk", "1Gi"]), GI, id="malformed-request-ignored"),
    ],
)
def test_pod_view_request(pod: dict[str, Any], expected: int) -> None:
    assert pod_view(pod).request == expected


@pytest.mark.parametrize(
    ("pod", "node", "launcher", "finished"),
    [
        pytest.param(make_pod_body("p"), "host", False, False, id="plain-running"),
        pytest.param(make_pod_body("p", launcher=True), "host", True, False, id="virt-launcher"),
        pytest.param(make_pod_body("p", node=None, phase="Pending"), None, False, False, id="unscheduled"),
        pytest.param(make_pod_body("p", phase="Succeeded"), "host", False, True, id="succeeded"),
        pytest.param(make_pod_body("p", phase="Failed"), "host", False, True, id="failed"),
        pytest.param(make_pod_body("p", phase="Pending"), "host", False, False, id="pending-placed"),
    ],
)
def test_pod_view_flags(pod: dict[str, Any], node: str | None, launcher: bool, finished: bool) -> None:
    view = pod_view(pod)
    assert view.key == ObjectKey(NS, "p")
    assert (view.node, view.launcher, view.finished) == (node, launcher, finished)


def test_pod_view_launcher_label_needs_the_exact_value() -> None:
    body = make_pod_body("p")
    body["metadata"]["labels"] = {"kubevirt.io": "virt-handler"}
    assert pod_view(body).launcher is False


def test_hugepages_are_read_per_resource_from_pods_nodes_and_vmis() -> None:
    pod = make_pod_body("virt-launcher-db", requests=["200Mi", "10Mi"], init_requests=["50Mi"])
    pod["spec"]["containers"][0]["resources"]["requests"]["hugepages-2Mi"] = "1Gi"
    pod["spec"]["containers"][1]["resources"]["requests"]["hugepages-2Mi"] = "64Mi"
    pod["spec"]["initContainers"][0]["resources"]["requests"]["hugepages-1Gi"] = "1Gi"
    view = pod_view(pod)
    assert view.request == 210 * MI  # memory only
    assert view.hugepages == (("hugepages-1Gi", GI), ("hugepages-2Mi", GI + 64 * MI))
    node = make_node_body("host")
    node["status"]["allocatable"]["hugepages-2Mi"] = "2Gi"
    assert node_view(node).hugepages == (("hugepages-2Mi", 2 * GI),)
    vmi = make_vmi_body("db")
    assert vmi_view(vmi).pages is None
    vmi["spec"]["domain"]["memory"]["hugepages"] = {"pageSize": "1Gi"}
    assert vmi_view(vmi).pages == "hugepages-1Gi"


def test_who_last_wrote_memory_guest_and_when() -> None:
    guest = {"f:spec": {"f:template": {"f:spec": {"f:domain": {"f:memory": {"f:guest": {}}}}}}}
    body = make_vm_body("x")
    # the latest writer of the field listed before an earlier one: the time decides, not the order
    body["metadata"]["managedFields"] = [
        {"manager": "dynamem", "operation": "Apply", "time": "2026-11-28T10:00:00Z", "fieldsV1": {}},
        {
            "manager": "my-controller",
            "operation": "Update",
            "time": "2026-11-28T11:30:00Z",
            "fieldsV1": guest,
        },
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-11-28T09:00:00Z", "fieldsV1": guest},
    ]
    vm = vm_view(body)
    assert vm.guest_from_others() and vm.guest_written_by_others == "2026-11-28T11:30:00Z"
    body["metadata"]["managedFields"][0]["fieldsV1"] = guest  # dynamem owns it too (the same value applied)
    assert not vm_view(body).guest_from_others()
    del body["metadata"]["managedFields"]
    assert not vm_view(body).guest_from_others() and vm_view(body).guest_written_by_others is None


def test_a_pods_requests_are_counted_as_the_scheduler_counts_them() -> None:
    """``PodRequests``: containers and sidecars (restartable init containers) add up; a plain init container
    runs with the sidecars started before it, and the larger wins; pod-level requests replace the sum of
    what they name; the overhead is added."""

    def container(cpu: str, memory: str, **extra: str) -> dict[str, object]:
        return {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}, **extra}

    spec: dict[str, object] = {
        "containers": [container("500m", "1Gi"), container("250m", "512Mi")],
        "initContainers": [
            container("100m", "256Mi", restartPolicy="Always"),  # a sidecar: runs beside the others
            container("1", "256Mi"),  # runs before them, beside the sidecar: 1100m
        ],
        "overhead": {"cpu": "10m", "memory": "64Mi"},
    }
    assert pod_requests(spec) == {"cpu": 1110, "memory": 1856 * MI}
    spec["resources"] = {"requests": {"cpu": "2"}}  # pod-level: cpu from here, memory from the containers
    assert pod_requests(spec) == {"cpu": 2010, "memory": 1856 * MI}


def test_a_container_resized_in_place_asks_the_most_of_its_spec_status_and_allocation() -> None:
    """``InPlacePodVerticalScaling`` (on by default since 1.33): the scheduler reads each container's
    requests as the most of its spec, its status' ``resources.requests`` and ``allocatedResources``
    (``determineContainerReqs``): a 4Gi container being shrunk to 1Gi still holds 4Gi until the kubelet has
    done it; an infeasible resize counts the status alone. Read from the spec, the node looked 3Gi roomier."""
    spec: dict[str, object] = {"containers": [{"name": "app", "resources": {"requests": {"memory": "1Gi"}}}]}
    status: dict[str, object] = {
        "containerStatuses": [
            {
                "name": "app",
                "resources": {"requests": {"memory": "4Gi"}},
                "allocatedResources": {"memory": "4Gi"},
            }
        ]
    }
    assert pod_requests(spec) == {"memory": GI}
    assert pod_requests(spec, status) == {"memory": 4 * GI}
    spec["containers"] = [{"name": "app", "resources": {"requests": {"memory": "6Gi"}}}]  # a grow asked
    assert pod_requests(spec, status) == {"memory": 6 * GI}
    status["conditions"] = [{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}]
    assert pod_requests(spec, status) == {"memory": 4 * GI}  # it will not happen: what the kubelet holds
    body = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {**spec, "nodeName": "n1"},
        "status": status,
    }
    assert pod_view(body).request == 4 * GI
    # a plain init container's status is not read (it has run), a sidecar's is (AggregateContainerRequests)
    init = {"name": "init", "resources": {"requests": {"memory": "1Gi"}}}
    side = {"name": "side", "resources": {"requests": {"memory": "1Gi"}}, "restartPolicy": "Always"}
    spec = {"containers": [], "initContainers": [init, side]}
    status = {
        "initContainerStatuses": [
            {"name": "init", "resources": {"requests": {"memory": "3Gi"}}},
            {"name": "side", "resources": {"requests": {"memory": "2Gi"}}},
        ]
    }
    assert pod_requests(spec, status) == {"memory": 2 * GI}
    # a malformed status reads as none
    for odd in ("x", {"containerStatuses": 5, "conditions": "x"}):
        assert pod_requests(spec, odd) == {"memory": GI}  # type: ignore[arg-type]


def test_the_other_resources_are_those_the_scheduler_counts_each_in_its_unit() -> None:
    """``fitsRequest``: cpu in millicores, pods, ephemeral-storage and every name with a ``/`` (extended
    resources such as KubeVirt's device plugins, prefixed native ones) in units; memory and hugepages are
    counted on their own; a name the scheduler does not count is left out. A node keeps a resource it has
    none of (nothing asking it fits there); a pod's request of 0 is checked by no one."""
    node = make_node_body("n1", allocatable="8Gi")
    node["status"]["allocatable"] |= {
        "pods": "110",
        "ephemeral-storage": "100Gi",
        "devices.kubevirt.io/kvm": "0",
        "devices.kubevirt.io/tun": "1k",
        "hugepages-2Mi": "1Gi",
        "storage": "5",
    }
    assert node_view(node).others == (
        ("cpu", 8000),
        ("devices.kubevirt.io/kvm", 0),
        ("devices.kubevirt.io/tun", 1000),
        ("ephemeral-storage", 100 * GI),
        ("pods", 110),
    )
    pod = make_pod_body("virt-launcher-a", requests=["1Gi"])
    pod["spec"]["containers"][0]["resources"]["requests"] |= {
        "ephemeral-storage": "50M",
        "devices.kubevirt.io/kvm": "1",
        "nvidia.com/gpu": "0",
        "storage": "1",
    }
    assert pod_view(pod).others == (
        ("cpu", 100),
        ("devices.kubevirt.io/kvm", 1),
        ("ephemeral-storage", 50_000_000),
    )


GUEST_FIELDS = {"f:spec": {"f:template": {"f:spec": {"f:domain": {"f:memory": {"f:guest": {}}}}}}}


@pytest.mark.parametrize(
    ("manager", "operation", "last_applied", "declarative"),
    [
        pytest.param("argocd-controller", "Apply", None, True, id="server-side-apply"),
        pytest.param("kubectl-client-side-apply", "Update", None, True, id="kubectl-apply"),
        pytest.param("helm", "Update", None, True, id="helm"),
        pytest.param("helm-controller", "Update", None, True, id="flux-helm-controller"),
        pytest.param(
            "argocd-controller",
            "Update",
            {"spec": {"template": {"spec": {"domain": {"memory": {"guest": "1Gi"}}}}}},
            True,
            id="client-side-sync-naming-guest",
        ),
        pytest.param(
            "argocd-controller",
            "Update",
            {"spec": {"template": {"spec": {"domain": {"cpu": {"cores": 2}}}}}, "guest": "x"},
            False,
            id="client-side-sync-not-naming-guest",
        ),
        pytest.param("argocd-controller", "Update", '{not json, "guest"', False, id="annotation-not-json"),
        pytest.param("kubectl-create", "Update", None, False, id="one-off-create"),
        pytest.param("kubectl-edit", "Update", None, False, id="one-off-edit"),
    ],
)
def test_which_owner_of_memory_guest_re_applies_it(
    manager: str, operation: str, last_applied: object, declarative: bool
) -> None:
    """A declarative owner sets memory.guest back at its next sync: server-side apply, kubectl's and Argo
    CD's client-side apply (told by the last-applied-configuration annotation naming the field), Helm."""
    body = make_vm_body("finance")
    body["metadata"]["managedFields"] = [
        {"manager": manager, "operation": operation, "fieldsV1": GUEST_FIELDS}
    ]
    if last_applied is not None:
        text = last_applied if isinstance(last_applied, str) else json.dumps(last_applied)
        body["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": text}
    view = vm_view(body)
    assert view.applied_by_others() == ((manager,) if declarative else ())
    assert view.foreign_owners() == (manager,)


@pytest.mark.parametrize(
    ("state", "migrating"),
    [
        pytest.param({"startTimestamp": "2026-11-30T10:00:00Z"}, True, id="copying"),
        pytest.param(
            {"startTimestamp": "2026-11-30T10:00:00Z", "endTimestamp": "2026-11-30T10:01:00Z"},
            False,
            id="ended-only",
        ),
        pytest.param({"startTimestamp": "2026-11-30T10:00:00Z", "completed": True}, False, id="completed"),
        pytest.param({"startTimestamp": "2026-11-30T10:00:00Z", "failed": True}, False, id="failed"),
        pytest.param({}, False, id="none"),
    ],
)
def test_a_vmi_is_migrating_from_its_start_to_its_end(state: dict[str, Any], migrating: bool) -> None:
    """KubeVirt's ``IsMigrating``: a start and no ``endTimestamp`` (a copy that failed mid-way has an end
    and no ``completed``)."""
    body = make_vmi_body("web")
    body["status"]["migrationState"] = state
    assert vmi_view(body).migrating is migrating


@pytest.mark.parametrize(
    ("resources", "own"),
    [
        pytest.param({"requests": {"memory": "2Gi"}}, True, id="request"),
        pytest.param({"limits": {"memory": "2Gi"}}, True, id="limit-only"),
        pytest.param({"requests": {"cpu": "1"}}, False, id="cpu-only"),
        pytest.param({}, False, id="none"),
    ],
)
def test_a_vmi_with_its_own_memory_request_or_limit_is_not_overcommitted(
    resources: dict[str, Any], own: bool
) -> None:
    """KubeVirt's ``WithMemoryRequests``: the request, else the limit, else memory.guest x 100 /
    memoryOvercommit: only a VMI with neither is rendered under the CR's overcommit."""
    body = make_vmi_body("web")
    body["spec"]["domain"]["resources"] = resources
    view = vmi_view(body)
    assert view.own_request is own
    assert launcher_overcommit(view, 150) == (100 if own else 150)
