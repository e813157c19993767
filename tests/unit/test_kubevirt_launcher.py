"""virt-launcher pods as KubeVirt v1.7.0 renders them (template.go, renderresources.go, migration.go)."""

from __future__ import annotations

from typing import Any

import pytest

from dynamem.kube.launcher_resources import start_requests
from dynamem.kube.objects import MI, counted_resources
from dynamem.kubevirt_sim.launcher import Rendering, launcher_devices, launcher_pod, launcher_requests
from dynamem.kubevirt_sim.play import vm_body
from dynamem.sim.scenario import parse_scenario


def vmi(memory: dict[str, Any], resources: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    domain: dict[str, Any] = {"memory": memory}
    if resources:
        domain["resources"] = resources
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-1", "labels": {"kubevirt.io/vm": "web"}},
        "spec": {"domain": domain, **spec},
    }


def test_the_request_is_the_guest_plus_the_overhead() -> None:
    assert launcher_requests(vmi({"guest": "2Gi"})["spec"], 256 * MI) == {
        "memory": "2304Mi",
        "cpu": "100m",
        "ephemeral-storage": "50M",
    }


def test_an_explicit_request_wins_over_the_guest() -> None:
    spec = vmi({"guest": "4Gi"}, {"requests": {"memory": "3Gi"}})["spec"]
    assert launcher_requests(spec, 0) == {"memory": "3Gi", "cpu": "100m", "ephemeral-storage": "50M"}


def test_under_memory_overcommit_a_vmi_without_a_request_asks_its_guest_over_the_ratio() -> None:
    """``WithMemoryRequests``: memory.guest x 100 / memoryOvercommit, then the overhead; a VMI's own request
    or limit is asked as it is."""
    assert (
        launcher_requests(vmi({"guest": "4Gi"})["spec"], 100 * MI, Rendering(memory_overcommit=200))["memory"]
        == "2148Mi"
    )
    assert (
        launcher_requests(vmi({"guest": "3Gi"})["spec"], 0, Rendering(memory_overcommit=150))["memory"]
        == "2Gi"
    )
    asked = vmi({"guest": "4Gi"}, {"requests": {"memory": "3Gi"}})["spec"]
    assert launcher_requests(asked, 0, Rendering(memory_overcommit=200))["memory"] == "3Gi"
    capped = vmi({"guest": "4Gi"}, {"limits": {"memory": "4Gi"}})["spec"]
    assert launcher_requests(capped, 0, Rendering(memory_overcommit=200))["memory"] == "4Gi"
    target = launcher_pod(
        vmi({"guest": "4Gi"}),
        overhead=0,
        rendering=Rendering(memory_overcommit=200),
        migration={"metadata": {}},
    )
    assert target["spec"]["containers"][0]["resources"]["requests"]["memory"] == "2Gi"


def test_the_cpu_request_is_the_vms_or_its_vcpus_over_the_allocation_ratio() -> None:
    """``WithoutDedicatedCPU``: vCPUs / cpuAllocationRatio (10); an explicit request wins."""
    assert launcher_requests(vmi({"guest": "1Gi"})["spec"], 0)["cpu"] == "100m"
    four = vmi({"guest": "1Gi"})
    four["spec"]["domain"]["cpu"] = {"cores": 2, "sockets": 2}
    assert launcher_requests(four["spec"], 0)["cpu"] == "400m"
    assert launcher_requests(four["spec"], 0, Rendering(cpu_allocation_ratio=3))["cpu"] == "1334m"
    asked = vmi({"guest": "1Gi"}, {"requests": {"cpu": "2"}})
    assert launcher_requests(asked["spec"], 0)["cpu"] == "2"


def test_kubevirt_refuses_a_ratio_of_zero_and_so_does_the_rendering() -> None:
    for field in ("memory_overcommit", "cpu_allocation_ratio"):
        with pytest.raises(ValueError, match=f"{field}: 0 must be greater than 0"):
            Rendering(**{field: 0})


def test_hugepages_carry_the_guest_and_memory_the_overhead() -> None:
    spec = vmi({"guest": "2Gi", "hugepages": {"pageSize": "2Mi"}})["spec"]
    assert launcher_requests(spec, 200 * MI) == {
        "hugepages-2Mi": "2Gi",
        "memory": "200Mi",
        "cpu": "100m",
        "ephemeral-storage": "50M",
    }


def test_the_cpu_request_of_dedicated_cpus_of_a_limit_and_of_a_ratio_that_does_not_divide() -> None:
    """``WithCPUPinning``: a whole CPU per vCPU, one more for an isolated emulator thread; a limit alone is
    the request; vCPUs over the ratio round up to the millicore, as a quantity does."""
    pinned = vmi({"guest": "1Gi"})
    pinned["spec"]["domain"]["cpu"] = {"cores": 2, "sockets": 2, "dedicatedCpuPlacement": True}
    assert launcher_requests(pinned["spec"], 0)["cpu"] == "4"
    pinned["spec"]["domain"]["cpu"]["isolateEmulatorThread"] = True
    assert launcher_requests(pinned["spec"], 0)["cpu"] == "5"
    capped = vmi({"guest": "1Gi"}, {"limits": {"cpu": "2"}})
    assert launcher_requests(capped["spec"], 0)["cpu"] == "2"
    assert dict(start_requests(vmi({"guest": "1Gi"})["spec"], ratio=3))["cpu"] == 334


def test_a_vm_that_is_off_asks_to_start_what_its_first_launcher_will() -> None:
    """``start_requests``: what the operator counts for a VM with no launcher yet, in the scheduler's units:
    CPU as vCPUs over the KubeVirt CR's cpuAllocationRatio (or the VM's own request), 50M of ephemeral
    storage, one of each device; the same as the stand-in's launcher asks."""
    four = vmi({"guest": "1Gi"})
    four["spec"]["domain"]["cpu"] = {"cores": 2, "sockets": 2}
    kvm, tun = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun"
    scratch = ("ephemeral-storage", 50_000_000)
    assert start_requests(four["spec"]) == (("cpu", 400), (kvm, 1), (tun, 1), scratch)
    assert dict(start_requests(four["spec"], ratio=4))["cpu"] == 1000
    asked = vmi({"guest": "1Gi"}, {"requests": {"cpu": "1500m"}})
    assert dict(start_requests(asked["spec"], ratio=4))["cpu"] == 1500
    rendered = launcher_pod(four, overhead=0)["spec"]["containers"][0]["resources"]
    assert dict(start_requests(four["spec"])) == {
        k: v for k, v in counted_resources({**rendered["requests"], **rendered["limits"]}).items()
    }


def test_the_devices_are_kvm_and_those_of_its_interfaces() -> None:
    """``getRequiredResources``: kvm always (no emulation), tun unless no pod interface is attached,
    vhost-net for a virtio interface (no model is virtio), vhost-vsock when asked; as limits."""
    kvm, tun, vhost = "devices.kubevirt.io/kvm", "devices.kubevirt.io/tun", "devices.kubevirt.io/vhost-net"
    plain = vmi({"guest": "1Gi"})
    assert launcher_devices(plain["spec"]) == {kvm: "1", tun: "1"}
    assert launcher_pod(plain, overhead=0)["spec"]["containers"][0]["resources"]["limits"] == {
        kvm: "1",
        tun: "1",
    }
    plain["spec"]["domain"]["devices"] = {"interfaces": [{"name": "default", "masquerade": {}}]}
    assert launcher_devices(plain["spec"]) == {kvm: "1", tun: "1", vhost: "1"}
    plain["spec"]["domain"]["devices"] = {"interfaces": [{"name": "default", "model": "e1000"}]}
    assert launcher_devices(plain["spec"]) == {kvm: "1", tun: "1"}
    plain["spec"]["domain"]["devices"] = {"autoattachPodInterface": False, "autoattachVSOCK": True}
    assert launcher_devices(plain["spec"]) == {kvm: "1", "devices.kubevirt.io/vhost-vsock": "1"}


def test_a_first_pod_is_bound_to_its_start_node_without_a_selector() -> None:
    pod = launcher_pod(vmi({"guest": "1Gi"}, nodeSelector={"pool": "a"}), overhead=0, node_name="node-a")
    assert pod["spec"]["nodeName"] == "node-a"
    assert pod["spec"]["nodeSelector"] == {"pool": "a", "kubevirt.io/schedulable": "true"}
    # no affinity but KubeVirt's own for its host-model CPU (template.go, setNodeAffinityForPod)
    assert pod["spec"]["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "node-labeller.kubevirt.io/obsolete-host-model",
                                "operator": "DoesNotExist",
                            }
                        ]
                    }
                ]
            }
        }
    }
    labels = pod["metadata"]["labels"]
    assert labels["kubevirt.io"] == "virt-launcher" and labels["kubevirt.io/created-by"] == "uid-1"
    assert pod["metadata"]["annotations"] == {"kubevirt.io/domain": "web"}
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachineInstance"


def test_a_migration_target_keeps_off_the_source_and_takes_the_added_selector() -> None:
    migration = {
        "metadata": {"name": "m1", "uid": "mig-uid"},
        "spec": {"vmiName": "web", "addedNodeSelector": {"kubernetes.io/hostname": "node-b", "pool": "z"}},
    }
    pod = launcher_pod(vmi({"guest": "3Gi"}, nodeSelector={"pool": "a"}), overhead=0, migration=migration)
    # the VMI's own selector wins on a key clash (createTargetPod copies the added selector first)
    assert pod["spec"]["nodeSelector"] == {
        "kubernetes.io/hostname": "node-b",
        "pool": "a",
        "kubevirt.io/schedulable": "true",
    }
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {
        "labelSelector": {"matchLabels": {"kubevirt.io/created-by": "uid-1"}},
        "topologyKey": "kubernetes.io/hostname",
    }
    assert pod["metadata"]["labels"]["kubevirt.io/migrationJobUID"] == "mig-uid"
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {
        "memory": "3Gi",
        "cpu": "100m",
        "ephemeral-storage": "50M",
    }
    assert "nodeName" not in pod["spec"]


def test_a_migration_target_keeps_the_vmis_node_affinity_and_tolerations_beside_the_anti_affinity() -> None:
    """KubeVirt v1.7.0 ``createMigrationPodAntiAffinityRule`` appends to the affinity the target pod was
    rendered with from the VMI (``renderLaunchManifest``: ``vmi.Spec.Affinity``, ``vmi.Spec.Tolerations``)."""
    required = {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
    }
    vmi = {
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
        "spec": {
            "domain": {"memory": {"guest": "1Gi"}},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        },
    }
    migration = {"metadata": {"name": "m", "uid": "m1"}, "spec": {"addedNodeSelector": {"x": "y"}}}
    pod = launcher_pod(vmi, overhead=0, migration=migration)
    affinity = pod["spec"]["affinity"]
    obsolete = {"key": "node-labeller.kubevirt.io/obsolete-host-model", "operator": "DoesNotExist"}
    (zone,) = required["nodeSelectorTerms"][0]["matchExpressions"]
    assert affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [zone, obsolete]}]  # KubeVirt's own, in each term
    }
    (term,) = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"] == {"kubevirt.io/created-by": "u1"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert "podAntiAffinity" not in vmi["spec"]["affinity"]  # the VMI is not changed
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == [zone]


def test_a_scenario_vm_that_names_its_page_size_is_hugepage_backed_in_the_stand_in() -> None:
    """A scenario's ``hugepage`` key, when given, backs the VM with hugepages of that size; the launcher then
    asks ``hugepages-<size>`` for the guest and ``memory`` for the overhead only."""
    scenario = parse_scenario(
        {
            "step": "1m",
            "nodes": [{"name": "a", "memory": "8Gi"}],
            "vms": [
                {"name": "db", "node": "a", "startup": "1Gi", "maximum": "4Gi", "hugepage": "1Gi"},
                {"name": "web", "node": "a", "startup": "1Gi", "maximum": "4Gi"},
            ],
            "demand": {"db": ["512Mi"], "web": ["512Mi"]},
        }
    )
    db, web = (vm_body(vm, "ns", running=True) for vm in scenario.vms)
    memory = db["spec"]["template"]["spec"]["domain"]["memory"]
    assert memory["hugepages"] == {"pageSize": "1Gi"}
    assert "hugepages" not in web["spec"]["template"]["spec"]["domain"]["memory"]
    assert launcher_requests({"domain": {"memory": memory}}, overhead=200 * MI) == {
        "hugepages-1Gi": "1Gi",
        "memory": "200Mi",
        "cpu": "100m",
        "ephemeral-storage": "50M",
    }
