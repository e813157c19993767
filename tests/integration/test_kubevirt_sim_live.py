"""The KubeVirt stand-in on a real API server, kube-scheduler and kwok: launcher pods, and memory changes that
go the way KubeVirt v1.7.0 takes them (a live migration to a pod the scheduler placed on another node).

Every test makes its own nodes (unique names) labelled with a pool of its own that its VMs select, so
migration targets never go to the nodes of other tests (the session shares one control plane).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from kubernetes import client as k8s_client

from dynamem.kube.objects import GI, MI, quantity_bytes
from dynamem.kubevirt_sim.controller import SimulatorOptions
from dynamem.kubevirt_sim.metrics import DemandFeed
from dynamem.kubevirt_sim.migrations import MigrationOptions
from dynamem.kubevirt_sim.runner import SimulatorRunner
from dynamem.sim.scenario import parse_scenario
from dynamem.testing.controlplane import ControlPlane

from .operator_harness import KubeVirtReads

LIVE_MIGRATE = {"workloadUpdateMethods": ["LiveMigrate"]}  # as docs/install.md patches KubeVirt's CR
FAST = MigrationOptions(bandwidth=8 * GI, updater_delay_s=0.3, pending_timeout_s=2.0, backoff_s=30.0)


def wait(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Live(KubeVirtReads):
    def __init__(
        self, cp: ControlPlane, namespace: str, nodes: Mapping[str, str], vms: Mapping[str, Any], pool: str
    ) -> None:
        self.namespace = namespace
        self.api = cp.api_client()
        self.custom = k8s_client.CustomObjectsApi(self.api)
        self.core = k8s_client.CoreV1Api(self.api)
        first = next(iter(nodes))
        scenario = parse_scenario(
            {
                "step": "1m",
                "nodes": [{"name": n, "memory": m} for n, m in nodes.items()],
                "vms": [
                    {"name": name, "node": spec.pop("node", first), **spec} for name, spec in vms.items()
                ],
                "demand": {name: ["512Mi"] for name in vms},
            }
        )
        self.sim = SimulatorRunner(
            cp.kubeconfig_path,
            SimulatorOptions(namespace=namespace, poll_s=0.1, overhead=128 * MI, migration=FAST),
            DemandFeed(speed=0.0),
        )
        self.sim.start(scenario, namespace, pool=pool)

    def close(self) -> None:
        self.sim.stop()
        self.api.close()

    def pods(self) -> list[k8s_client.V1Pod]:
        return list(
            self.core.list_namespaced_pod(self.namespace, label_selector="kubevirt.io=virt-launcher").items
        )

    def running_on(self, name: str) -> str | None:
        try:
            vmi = self.vmi(name)
        except k8s_client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        status = vmi.get("status", {})
        return status.get("nodeName") if status.get("phase") == "Running" else None

    def vm(self, name: str) -> Mapping[str, Any]:
        return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
            "kubevirt.io", "v1", self.namespace, "virtualmachines", name
        )

    def pin_migration(self, name: str, vmi: str, node: str) -> None:
        """A migration of ``vmi`` pinned to ``node``, as dynamem makes one (spec.addedNodeSelector)."""
        self.custom.create_namespaced_custom_object(
            "kubevirt.io", "v1", self.namespace, "virtualmachineinstancemigrations",
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
             "metadata": {"name": name},
             "spec": {"vmiName": vmi, "addedNodeSelector": {"kubernetes.io/hostname": node}}},
        )  # fmt: skip

    def set_run_strategy(self, name: str, strategy: str) -> None:
        self.custom.patch_namespaced_custom_object(
            "kubevirt.io", "v1", self.namespace, "virtualmachines", name, {"spec": {"runStrategy": strategy}}
        )

    def set_guest(self, name: str, guest: str) -> None:
        self.custom.patch_namespaced_custom_object(
            "kubevirt.io", "v1", self.namespace, "virtualmachines", name,
            {"spec": {"template": {"spec": {"domain": {"memory": {"guest": guest}}}}}},
        )  # fmt: skip


@pytest.fixture
def live(
    control_plane: ControlPlane, namespace: str, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., Live]]:
    made: list[Live] = []

    def make(nodes: Mapping[str, str], vms: Mapping[str, Any]) -> Live:
        world = Live(control_plane, namespace, nodes, vms, unique_name("pool"))
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


def names(unique_name: Callable[[str], str], count: int) -> list[str]:
    return [unique_name(f"kv{i}") for i in range(count)]


# getRequiredResources' device limits, which the API server made requests too (defaults.go, SetDefaults_Pod)
DEVICES = {"devices.kubevirt.io/kvm": "1", "devices.kubevirt.io/tun": "1"}


def test_a_vm_starts_in_a_launcher_pod_on_its_starting_node(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": b, "startup": "1Gi", "maximum": "4Gi"}})
    assert wait("web running", lambda: world.running_on("web")) == b
    vmi = world.vmi("web")
    (pod,) = world.pods()
    assert pod.spec.node_name == b and pod.status.phase == "Running"
    assert pod.metadata.labels["kubevirt.io"] == "virt-launcher"
    assert pod.metadata.labels["kubevirt.io/created-by"] == vmi["metadata"]["uid"]
    assert pod.metadata.annotations["kubevirt.io/domain"] == "web"
    # guest + overhead; one vCPU over cpuAllocationRatio 10
    assert pod.spec.containers[0].resources.requests == {
        "memory": "1152Mi",
        "cpu": "100m",
        "ephemeral-storage": "50M",
        **DEVICES,
    }
    # the start node is no selector; the pool is the VM's own selector
    assert pod.spec.node_selector == {"kubevirt.io/schedulable": "true", "dynamem.io/pool": ANY}
    assert vmi["status"]["memory"]["guestAtBoot"] == "1Gi"


def test_a_vmi_shows_its_memory_from_its_creation_before_it_runs(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    """The VMI mutator sets status.memory when the VMI is made (defaults.go, setGuestMemoryStatus), so a VMI
    whose launcher pod waits for room shows it too; the stand-in used to set it only once the VM ran."""
    (a,) = names(unique_name, 1)
    world = live({a: "2Gi"}, {"big": {"node": a, "startup": "4Gi", "maximum": "8Gi"}})

    def scheduling() -> dict[str, Any] | None:
        try:
            vmi = world.vmi("big")
        except k8s_client.ApiException:
            return None  # not made yet
        return vmi if vmi.get("status", {}).get("phase") == "Scheduling" else None

    vmi = wait("big's VMI waiting for room", scheduling)
    assert vmi["status"]["memory"] == {"guestAtBoot": "4Gi", "guestCurrent": "4Gi", "guestRequested": "4Gi"}
    assert world.running_on("big") is None


def test_a_memory_change_is_a_migration_to_another_node(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    source_pod = world.pods()[0].metadata.name
    world.set_guest("web", "2Gi")

    def moved() -> Mapping[str, Any] | None:
        vmi = world.vmi("web")
        memory = vmi["status"]["memory"]
        return vmi if memory["guestCurrent"] == "2Gi" and vmi["status"]["nodeName"] == b else None

    vmi = wait("web on the other node with 2Gi", moved)
    assert vmi["status"]["memory"]["guestRequested"] == "2Gi"
    assert vmi["status"]["migrationState"]["completed"] is True
    assert vmi["status"]["migrationState"]["sourceNode"] == a
    assert "HotMemoryChange" not in {c["type"] for c in vmi["status"].get("conditions", [])}

    # the migration's phase follows the VMI's move (virt-handler finalizes the VMI, then the controller
    # updates the migration): read it once it has
    def succeeded() -> list[Mapping[str, Any]] | None:
        found = world.migrations()
        return found if all(m.get("status", {}).get("phase") == "Succeeded" for m in found) else None

    (migration,) = wait("the migration Succeeded", succeeded)
    assert migration["metadata"]["name"].startswith("kubevirt-workload-update-")
    # the source pod goes; the target pod was placed by the scheduler, away from the source
    pods = wait("source pod gone", lambda: [p for p in world.pods()] if len(world.pods()) == 1 else None)
    assert pods[0].metadata.name != source_pod and pods[0].spec.node_name == b
    assert pods[0].spec.containers[0].resources.requests == {
        "memory": "2176Mi",
        "cpu": "100m",
        "ephemeral-storage": "50M",
        **DEVICES,
    }
    terms = pods[0].spec.affinity.pod_anti_affinity.required_during_scheduling_ignored_during_execution
    assert terms[0].label_selector.match_labels == {"kubevirt.io/created-by": vmi["metadata"]["uid"]}
    assert terms[0].topology_key == "kubernetes.io/hostname"


def test_a_migration_made_by_someone_else_carries_the_change_where_it_says(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    a, b, c = names(unique_name, 3)
    world = live({a: "8Gi", b: "8Gi", c: "4Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    world.set_guest("web", "3Gi")
    wait(
        "HotMemoryChange",
        lambda: any(x["type"] == "HotMemoryChange" for x in world.vmi("web")["status"].get("conditions", [])),
    )
    # the least-allocated choice would be b (8Gi); the selector sends it to c
    world.pin_migration("dynamem-web", "web", c)
    wait(
        "web on c",
        lambda: (
            world.running_on("web") == c and world.vmi("web")["status"]["memory"]["guestCurrent"] == "3Gi"
        ),
    )
    # the workload-updater saw a migration in flight and made none of its own
    assert [m["metadata"]["name"] for m in world.migrations()] == ["dynamem-web"]


def test_a_change_with_nowhere_to_go_fails_after_the_pending_timeout(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "2Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    world.set_guest("web", "3Gi")  # 3Gi + overhead fits a, which it must leave, and not b

    def failed() -> list[Mapping[str, Any]]:
        return [m for m in world.migrations() if m.get("status", {}).get("phase") == "Failed"]

    (migration,) = wait("the migration to fail", failed, timeout=30)
    vmi = world.vmi("web")
    # v1.7.0 leaves the VMI as it was: on its node, its old size, HotMemoryChange still True, the new spec
    assert vmi["status"]["nodeName"] == a
    assert vmi["status"]["memory"]["guestCurrent"] == "1Gi"
    assert {c["type"]: c["status"] for c in vmi["status"]["conditions"]}["HotMemoryChange"] == "True"
    assert quantity_bytes(vmi["spec"]["domain"]["memory"]["guest"]) == 3 * GI
    assert [
        p.spec.node_name
        for p in wait("target pod deleted", lambda: world.pods() if len(world.pods()) == 1 else None)
    ] == [a]
    # the updater makes a new migration (without any addedNodeSelector); the migration controller holds its
    # target pod back for the backoff after a failure (20 s in KubeVirt, 30 s here)
    retry = wait(
        "a retry",
        lambda: [m for m in world.migrations() if m["metadata"]["name"] != migration["metadata"]["name"]],
    )
    time.sleep(1.0)
    assert [m.get("status", {}).get("phase", "Pending") for m in retry] == ["Pending"]
    assert "addedNodeSelector" not in retry[0]["spec"]
    assert len(world.pods()) == 1


def test_a_one_node_cluster_cannot_change_memory(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    (a,) = names(unique_name, 1)
    world = live({a: "16Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    world.set_guest("web", "2Gi")

    def refusal() -> str | None:
        for pod in world.pods():
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.reason == "Unschedulable":
                    return str(c.message)
        return None

    assert "didn't match pod anti-affinity rules" in wait("an unschedulable target", refusal)
    wait(
        "a failed migration",
        lambda: any(m.get("status", {}).get("phase") == "Failed" for m in world.migrations()),
    )
    assert world.vmi("web")["status"]["memory"]["guestCurrent"] == "1Gi"


def test_limits_hold_migrations_back(live: Callable[..., Live], unique_name: Callable[[str], str]) -> None:
    a, b = names(unique_name, 2)
    vms = {f"vm{i}": {"node": a, "startup": "1Gi", "maximum": "4Gi"} for i in range(3)}
    world = live({a: "16Gi", b: "16Gi"}, vms)
    wait("all running", lambda: all(world.running_on(n) for n in vms))
    world.sim.options.migration.bandwidth = GI // 2  # each takes 2 s: long enough to see the limit
    peak = 0
    for name in vms:
        world.set_guest(name, "2Gi")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        running = [
            m
            for m in world.migrations()
            if m.get("status", {}).get("phase") not in (None, "Pending", "Succeeded", "Failed")
        ]
        peak = max(peak, len(running))
        if all(world.running_on(n) == b for n in vms):
            break
        time.sleep(0.1)
    assert all(world.running_on(n) == b for n in vms)
    assert peak == 2  # parallelOutboundMigrationsPerNode: 2 out of node a at once


@pytest.fixture
def kubevirt_cr(control_plane: ControlPlane, namespace: str) -> Iterator[Callable[..., None]]:
    """Sets the cluster's KubeVirt CR's ``spec.configuration`` and its ``workloadUpdateStrategy`` (LiveMigrate
    unless given; created in the test's namespace on first use, deleted after the test)."""
    api = control_plane.api_client()
    custom = k8s_client.CustomObjectsApi(api)
    made = False

    def configure(configuration: dict[str, Any], updates: dict[str, Any] = LIVE_MIGRATE) -> None:
        nonlocal made
        body = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"}}
        if not made:
            custom.create_namespaced_custom_object(
                "kubevirt.io",
                "v1",
                namespace,
                "kubevirts",
                {**body, "spec": {"configuration": configuration, "workloadUpdateStrategy": updates}},
            )
            made = True
            return
        current = custom.get_namespaced_custom_object("kubevirt.io", "v1", namespace, "kubevirts", "kubevirt")
        current["spec"] = {"configuration": configuration, "workloadUpdateStrategy": updates}
        custom.replace_namespaced_custom_object(
            "kubevirt.io", "v1", namespace, "kubevirts", "kubevirt", current
        )

    yield configure
    if made:
        custom.delete_namespaced_custom_object("kubevirt.io", "v1", namespace, "kubevirts", "kubevirt")
    api.close()


def test_launchers_are_rendered_under_the_kubevirt_cr_and_a_change_of_it_holds_for_the_next_ones(
    live: Callable[..., Live],
    unique_name: Callable[[str], str],
    kubevirt_cr: Callable[[dict[str, Any]], None],
) -> None:
    """virt-controller renders every launcher under the CR's memoryOvercommit, cpuAllocationRatio and
    nodeSelectors (the VMI's own selector wins a key), as the operator reads them."""
    kubevirt_cr(
        {
            "developerConfiguration": {
                "memoryOvercommit": 200,
                "cpuAllocationRatio": 4,
                "nodeSelectors": {"dynamem.io/simulated": "true", "dynamem.io/pool": "elsewhere"},
            }
        }
    )
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "2Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    (first,) = world.pods()
    assert first.spec.containers[0].resources.requests == {
        "memory": "1152Mi",  # half the guest, and the overhead whole
        "cpu": "250m",
        "ephemeral-storage": "50M",
        **DEVICES,
    }
    pool = world.vm("web")["spec"]["template"]["spec"]["nodeSelector"]["dynamem.io/pool"]
    assert first.spec.node_selector == {
        "kubevirt.io/schedulable": "true",
        "dynamem.io/simulated": "true",
        "dynamem.io/pool": pool,
    }
    kubevirt_cr({})  # back to KubeVirt's defaults: the running launcher keeps what it asked
    world.set_guest("web", "3Gi")
    wait("web on the other node", lambda: world.running_on("web") == b and len(world.pods()) == 1)
    (target,) = world.pods()
    assert target.spec.containers[0].resources.requests["memory"] == "3200Mi"
    assert target.spec.containers[0].resources.requests["cpu"] == "100m"


def test_guest_metrics_follow_the_guest_model(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    world.sim.set_demand(world.namespace, "web", 3 * GI)  # more than its 1Gi: it pages
    url = f"http://{world.sim.metrics_target}/metrics"

    def with_web() -> str | None:
        # the VMI shows Running before the stand-in's tick ends and its metrics include the guest
        text = httpx.get(url).text
        return text if 'name="web"' in text else None

    first = wait("web's guest in the metrics", with_web)
    time.sleep(0.5)
    text = httpx.get(url).text
    for name in (
        "kubevirt_vmi_memory_available_bytes", "kubevirt_vmi_memory_usable_bytes",
        "kubevirt_vmi_memory_used_bytes", "kubevirt_vmi_memory_unused_bytes",
        "kubevirt_vmi_memory_cached_bytes",
        "kubevirt_vmi_memory_actual_balloon_bytes", "kubevirt_vmi_memory_domain_bytes",
        "kubevirt_vmi_memory_resident_bytes", "kubevirt_vmi_launcher_memory_overhead_bytes",
        "kubevirt_vmi_memory_swap_in_traffic_bytes", "kubevirt_vmi_memory_swap_out_traffic_bytes",
        "kubevirt_vmi_memory_pgmajfault_total", "kubevirt_vmi_memory_pgminfault_total",
    ):  # fmt: skip
        assert f"\n{name}{{" in text, name

    def value(body: str, name: str) -> float:
        line = next(x for x in body.splitlines() if x.startswith(name + "{") and 'name="web"' in x)
        return float(line.rsplit(" ", 1)[1])

    assert value(text, "kubevirt_vmi_memory_used_bytes") < GI  # never more than it has
    assert value(text, "kubevirt_vmi_memory_domain_bytes") == GI
    assert value(text, "kubevirt_vmi_launcher_memory_overhead_bytes") == 128 * MI
    assert value(text, "kubevirt_vmi_memory_pgmajfault_total") > value(
        first, "kubevirt_vmi_memory_pgmajfault_total"
    )
    assert value(text, "kubevirt_vmi_memory_swap_in_traffic_bytes") > value(
        first, "kubevirt_vmi_memory_swap_in_traffic_bytes"
    )
    assert "# TYPE kubevirt_vmi_memory_swap_in_traffic_bytes gauge" in text
    assert "# TYPE kubevirt_vmi_memory_pgmajfault_total counter" in text


def test_a_cr_that_lists_evict_without_live_migrate_restarts_a_vm_to_change_its_memory(
    live: Callable[..., Live], unique_name: Callable[[str], str], kubevirt_cr: Callable[..., None]
) -> None:
    """KubeVirt's workload-updater (workload-updater.go, getUpdateData): with Evict and no LiveMigrate, a
    VMI whose memory changed and has no migration is evicted, and the VM controller starts a new one at the
    new size: the change costs a restart. With neither method, nothing carries the change out."""
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    kubevirt_cr({}, {"workloadUpdateMethods": []})
    first = world.vmi("web")["metadata"]["uid"]
    world.set_guest("web", "2Gi")
    wait("the VMI showing the change", lambda: world.vmi("web")["spec"]["domain"]["memory"]["guest"] == "2Gi")
    time.sleep(1.5)  # five updater delays: no migration, no eviction
    vmi = world.vmi("web")
    assert vmi["metadata"]["uid"] == first and vmi["status"]["memory"]["guestCurrent"] == "1Gi"
    assert not world.custom.list_namespaced_custom_object(
        "kubevirt.io", "v1", world.namespace, "virtualmachineinstancemigrations"
    )["items"]

    kubevirt_cr({}, {"workloadUpdateMethods": ["Evict"]})

    def restarted() -> Mapping[str, Any] | None:
        try:
            vmi = world.vmi("web")
        except k8s_client.ApiException:
            return None
        running = vmi.get("status", {}).get("phase") == "Running"
        return vmi if vmi["metadata"]["uid"] != first and running else None

    vmi = wait("web restarted", restarted)
    assert vmi["status"]["memory"]["guestAtBoot"] == "2Gi"
    assert not world.custom.list_namespaced_custom_object(
        "kubevirt.io", "v1", world.namespace, "virtualmachineinstancemigrations"
    )["items"]

    # an eviction strategy that migrates: KubeVirt's eviction webhook refuses the eviction and the
    # evacuation controller migrates the VMI instead (pod-eviction-admitter.go, watch/drain/evacuation)
    # the CR's batchEvictionInterval: the next batch of evictions 2 s after the last, not a minute
    kubevirt_cr(
        {"evictionStrategy": "LiveMigrate"},
        {"workloadUpdateMethods": ["Evict"], "batchEvictionInterval": "2s", "batchEvictionSize": 1},
    )
    assert world.vmi("web")["spec"]["evictionStrategy"] == "None"  # stamped at its creation, kept
    world.set_run_strategy("web", "Halted")  # a VMI created from now on gets the CR's LiveMigrate
    wait("web stopped", lambda: world.running_on("web") is None)
    world.set_run_strategy("web", "Always")
    vmi = wait("web started again", lambda: world.running_on("web") and world.vmi("web"))
    assert vmi["spec"]["evictionStrategy"] == "LiveMigrate"
    second = vmi["metadata"]["uid"]
    home = vmi["status"]["nodeName"]
    world.set_guest("web", "3Gi")
    moved = wait(  # the updater's next batch of evictions: 2 s after the last (the default: a minute)
        "web grown by an evacuation migration",
        lambda: ((v := world.vmi("web"))["status"]["memory"]["guestCurrent"] == "3Gi" and v) or None,
        timeout=40,
    )
    assert moved["metadata"]["uid"] == second and moved["status"]["nodeName"] != home
    (evacuation,) = world.custom.list_namespaced_custom_object(
        "kubevirt.io", "v1", world.namespace, "virtualmachineinstancemigrations"
    )["items"]
    assert evacuation["metadata"]["name"].startswith("kubevirt-evacuation-")
    assert evacuation["metadata"]["annotations"]["kubevirt.io/evacuationMigration"] == home


def test_only_the_newest_five_finished_migrations_of_a_vmi_are_kept(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    """KubeVirt's migration controller deletes all but the newest five finished migrations of a VMI
    (migration.go, garbageCollectFinalizedMigrations), so whoever counts failures sees at most five."""
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))

    def migrations() -> list[Mapping[str, Any]]:
        listed = world.custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", world.namespace, "virtualmachineinstancemigrations"
        )
        return [m for m in listed["items"] if not m["metadata"].get("deletionTimestamp")]

    def done(size: str) -> bool:
        status = world.vmi("web")["status"]
        settled = all(m.get("status", {}).get("phase") == "Succeeded" for m in migrations())
        return status["memory"]["guestCurrent"] == size and settled

    for step, size in enumerate(["2Gi", "1Gi", "2Gi", "1Gi", "2Gi", "1Gi", "2Gi"]):
        world.set_guest("web", size)
        wait(f"change {step + 1} to {size} done", lambda size=size: done(size), timeout=60)
    wait("the older migrations collected", lambda: len(migrations()) == 5)
    assert all(m["status"]["phase"] == "Succeeded" for m in migrations())


def test_the_migrations_of_a_vmi_that_is_gone_are_deleted(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    """migration.go, sync: a migration whose VMI does not exist is deleted, whatever its phase: the finished
    ones of a VM that stopped, and one made for a VMI that is not there (the stand-in used to fail it)."""
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))

    def migrations() -> dict[str, str]:
        listed = world.custom.list_namespaced_custom_object(
            "kubevirt.io", "v1", world.namespace, "virtualmachineinstancemigrations"
        )
        return {
            m["metadata"]["name"]: m.get("status", {}).get("phase", "Pending")
            for m in listed["items"]
            if not m["metadata"].get("deletionTimestamp")
        }

    world.pin_migration("moved", "web", b)
    wait("web moved", lambda: migrations() == {"moved": "Succeeded"})
    world.pin_migration("ghost", "nobody", a)
    wait("the ghost's migration deleted", lambda: "ghost" not in migrations())
    world.set_run_strategy("web", "Halted")
    wait("web's finished migration deleted with its VMI", lambda: migrations() == {})


def test_a_failed_migration_of_someone_else_delays_no_retry_of_the_updater(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    """handleMigrationBackoff counts workload-update and evacuation migrations only
    (listBackoffEligibleMigrations): after dynamem's pinned migration fails, the updater's retry goes at
    once, not after the backoff (30 s here)."""
    a, b, c = names(unique_name, 3)
    world = live({a: "8Gi", b: "8Gi", c: "1Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    world.pin_migration("dynamem-web", "web", c)
    world.set_guest("web", "3Gi")  # the updater waits: a migration of web is under way
    wait(
        "dynamem's migration failed (nowhere to go on c)",
        lambda: any(
            m["metadata"]["name"] == "dynamem-web" and m.get("status", {}).get("phase") == "Failed"
            for m in world.migrations()
        ),
    )
    failed = time.monotonic()
    wait(
        "web grown on b by the updater's retry",
        lambda: (
            world.running_on("web") == b and world.vmi("web")["status"]["memory"]["guestCurrent"] == "3Gi"
        ),
        timeout=20,
    )
    assert time.monotonic() - failed < FAST.backoff_s
    retries = [m for m in world.migrations() if m["metadata"]["name"] != "dynamem-web"]
    assert [m["metadata"]["annotations"].get("kubevirt.io/workloadUpdateMigration") for m in retries] == [""]


def test_a_size_kubevirt_cannot_hotplug_asks_a_restart(
    live: Callable[..., Live], unique_name: Callable[[str], str]
) -> None:
    """vm.go, handleMemoryHotplugRequest -> ValidateLiveUpdateMemory (liveupdate/memory/memory.go): a guest
    size not 2Mi aligned gets RestartRequired, and nothing is migrated."""
    a, b = names(unique_name, 2)
    world = live({a: "8Gi", b: "8Gi"}, {"web": {"node": a, "startup": "1Gi", "maximum": "4Gi"}})
    wait("web running", lambda: world.running_on("web"))
    world.set_guest("web", "1025Mi")

    def restart() -> str | None:
        found = [
            c
            for c in world.vm("web").get("status", {}).get("conditions", [])
            if c["type"] == "RestartRequired"
        ]
        return found[0]["message"] if found else None

    assert (
        wait("RestartRequired", restart) == "memory hotplug not supported, Guest memory must be 2Mi aligned"
    )
    assert world.vmi("web")["spec"]["domain"]["memory"]["guest"] == "1Gi" and not world.migrations()
