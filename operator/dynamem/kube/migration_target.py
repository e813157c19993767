"""The node selector KubeVirt v1.7.0 gives a migration's target pod beyond the VMI's own spec.

A target pod is rendered like the VMI's first launcher pod (``pkg/virt-controller/services/template.go``,
``renderLaunchManifest``), whose node selector is ``NewNodeSelectorRenderer``'s
(``services/nodeselectorrenderer.go``): ``kubevirt.io/schedulable``, ``kubernetes.io/arch`` for the VMI's
architecture, the KubeVirt CR's cluster-wide ``developerConfiguration.nodeSelectors``, the VMI's own, and
labels for a named CPU model and its required features, the machine type, dedicated CPUs, TSC frequency,
realtime, SEV and TDX. Then ``createTargetPod`` (``watch/migration/migration.go``) merges the migration's
``addedNodeSelector`` under it, and for a ``host-model`` CPU adds ``prepareNodeSelectorForHostCpuModel``'s:
the ``cpu-model-migration.node.kubevirt.io/*`` and ``cpu-feature.node.kubevirt.io/*`` keys of the source
pod's selector if it has any (the VMI migrated before), else those made from the source node's
``host-model-cpu.node.kubevirt.io/<model>`` and ``host-model-required-features.node.kubevirt.io/<feature>``
labels (``getHostCpuModelFromMap``). A node whose CPU cannot host the source's model lacks the
``cpu-model-migration`` label and the scheduler refuses the target there.

Everything but the migration's own part is therefore already on the VMI's launcher pod: its selector, less
the ``addedNodeSelector`` of the migration that made it (:func:`carried_selector`), is the next target's,
with the host-model keys added when the pod has none (:func:`host_model_selector`).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CPU_FEATURE_LABEL",
    "HOST_MODEL",
    "HOST_MODEL_CPU_LABEL",
    "HOST_MODEL_FEATURES_LABEL",
    "MIGRATION_CPU_LABEL",
    "carried_selector",
    "host_model_selector",
    "rendered",
]

HOST_MODEL = "host-model"  # v1.CPUModeHostModel
CPU_FEATURE_LABEL = "cpu-feature.node.kubevirt.io/"  # v1.CPUFeatureLabel
MIGRATION_CPU_LABEL = "cpu-model-migration.node.kubevirt.io/"  # v1.SupportedHostModelMigrationCPU
HOST_MODEL_CPU_LABEL = "host-model-cpu.node.kubevirt.io/"  # v1.HostModelCPULabel
HOST_MODEL_FEATURES_LABEL = (
    "host-model-required-features.node.kubevirt.io/"  # v1.HostModelRequiredFeaturesLabel
)


def host_model_selector(
    source_selector: Mapping[str, str], source_node_labels: Mapping[str, str]
) -> dict[str, str] | None:
    """``prepareNodeSelectorForHostCpuModel`` for a ``host-model`` VMI: the source pod's host-model keys if
    it has any, else those made from its node's labels; None when the node has no host model label (KubeVirt
    then makes no target pod at all)."""
    carried = {k: v for k, v in source_selector.items() if CPU_FEATURE_LABEL in k or MIGRATION_CPU_LABEL in k}
    if carried:
        return carried
    found: dict[str, str] = {}
    model: tuple[str, str] | None = None
    for key, value in source_node_labels.items():
        if key.startswith(HOST_MODEL_CPU_LABEL):
            model = (key.removeprefix(HOST_MODEL_CPU_LABEL), value)
        if key.startswith(HOST_MODEL_FEATURES_LABEL):
            found[CPU_FEATURE_LABEL + key.removeprefix(HOST_MODEL_FEATURES_LABEL)] = value
    if model is None:
        return None
    found[MIGRATION_CPU_LABEL + model[0]] = model[1]
    return found


def rendered(key: str) -> bool:
    """Whether ``NewNodeSelectorRenderer`` or the host-model rule makes ``key``: ``kubevirt.io/*``
    (schedulable, realtime, SEV, TDX, s390-pv), ``*.node.kubevirt.io/*`` (CPU model, feature and migration
    model, machine type, Hyper-V, TSC frequency), ``cpumanager``, ``kubernetes.io/arch``."""
    return key.startswith("kubevirt.io/") or ".node.kubevirt.io/" in key or key in _RENDERED


_RENDERED = frozenset({"cpumanager", "kubernetes.io/arch"})


def carried_selector(
    pod_selector: Mapping[str, str], added: Mapping[str, str], own: Mapping[str, str]
) -> dict[str, str]:
    """The node selector of a VMI's launcher pod as its next target gets it: the keys KubeVirt renders
    (:func:`rendered`) and the VMI's ``own``, less each key the migration that made the pod added (its
    ``addedNodeSelector``) that ``own`` does not set (the template's keys win over the added ones). Other
    keys are the VMI's own of the time the pod was made, which a running VMI may since have dropped
    (KubeVirt v1.7.0 updates a VMI's nodeSelector live, ``vm.go``), or the KubeVirt CR's cluster-wide
    ``nodeSelectors``, which are not read: neither is passed on."""
    return {
        k: v
        for k, v in pod_selector.items()
        if (rendered(k) or k in own) and not (k in added and k not in own and added[k] == v)
    }
