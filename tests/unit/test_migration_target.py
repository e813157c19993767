"""The node selector KubeVirt v1.7.0 gives a migration target beyond the VMI's spec (``migration.go``:
``createTargetPod``, ``prepareNodeSelectorForHostCpuModel``, ``getHostCpuModelFromMap``), as
:mod:`dynamem.kube.migration_target` reads it."""

from __future__ import annotations

from dynamem.kube.migration_target import carried_selector, host_model_selector

SKYLAKE = {
    "host-model-cpu.node.kubevirt.io/Skylake-Client-IBRS": "true",
    "host-model-required-features.node.kubevirt.io/vmx": "true",
    "kubernetes.io/hostname": "n1",
}


def test_a_first_migration_takes_the_host_model_of_the_source_node() -> None:
    assert host_model_selector({"kubevirt.io/schedulable": "true"}, SKYLAKE) == {
        "cpu-model-migration.node.kubevirt.io/Skylake-Client-IBRS": "true",
        "cpu-feature.node.kubevirt.io/vmx": "true",
    }


def test_a_vm_that_migrated_before_keeps_the_keys_of_its_pod_not_its_nodes() -> None:
    carried = {"cpu-model-migration.node.kubevirt.io/Haswell": "true", "kubevirt.io/schedulable": "true"}
    assert host_model_selector(carried, SKYLAKE) == {"cpu-model-migration.node.kubevirt.io/Haswell": "true"}


def test_no_host_model_label_on_the_source_node_makes_no_target() -> None:
    assert host_model_selector({}, {"kubernetes.io/hostname": "n1"}) is None


def test_what_kubevirt_renders_is_passed_on_not_the_pin_nor_a_selector_the_vmi_dropped() -> None:
    model = "cpu-model.node.kubevirt.io/Skylake"
    pod = {
        "kubevirt.io/schedulable": "true",
        "kubernetes.io/hostname": "n2",
        "gpu": "a100",
        "zone": "z1",
        model: "true",
    }
    # the migration pinned n2; the VMI's own selector sets zone, which the added zone would not override;
    # gpu was the VMI's when the pod was made and is no longer
    added = {"kubernetes.io/hostname": "n2", "zone": "z9"}
    assert carried_selector(pod, added, {"zone": "z1"}) == {
        "kubevirt.io/schedulable": "true",
        "zone": "z1",
        model: "true",
    }
    # a key KubeVirt renders that the migration added too, with the pod's value, was the migration's: dropped;
    # the VMI's own zone, added with the same value, stays (the template's keys win)
    added = {model: "true", "zone": "z1"}
    assert carried_selector(pod, added, {"zone": "z1"}) == {"kubevirt.io/schedulable": "true", "zone": "z1"}
