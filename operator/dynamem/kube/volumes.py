"""Which nodes a VM's volumes let its launcher pod go to, as the kube-scheduler's volume filters decide it
(Kubernetes v1.34).

A VMI's ``persistentVolumeClaim``, ``dataVolume`` (its claim has its name) and ``ephemeral`` volumes become
volumes of its launcher pod, and of every migration target (KubeVirt v1.7.0
``pkg/virt-controller/services/rendervolumes.go``, ``withVMIVolumes``); a live migration needs them shared
(ReadWriteMany), and such storage is often zonal. For a claim bound to a PersistentVolume the scheduler
refuses a node:

- ``VolumeBinding`` (``plugins/volumebinding/binder.go``, ``checkBoundClaims``;
  ``k8s.io/component-helpers/storage/volume``, ``CheckNodeAffinity``): when the volume's
  ``spec.nodeAffinity.required`` has no term that matches the node's labels. The node is matched by its
  labels alone, so a ``matchFields`` ``metadata.name`` requirement sees an empty name;
- ``VolumeZone`` (``plugins/volumezone/volume_zone.go``, ``Filter``): when the node has any zone or region
  label (``topology.kubernetes.io/zone``/``region`` or their ``failure-domain.beta`` forms) and, for a
  label of those the volume has, the node's value of that label (or of its GA form) is not one of the
  volume's (``__``-separated, ``LabelZonesToSet``). A node without any of them takes any volume.

A target the volumes refuse stays Pending until KubeVirt fails its migration after the pending timeout. A
claim not in view, not yet bound, or whose volume is not in view is not judged here. Hotplugged volumes
(``hotpluggable``) are attached through pods of their own, not the launcher, and are not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dynamem.kube.objects import Body, ObjectKey, dig
from dynamem.kube.scheduling import NodeSelectorTerm, node_selector_term

__all__ = [
    "ClaimView",
    "VolumeView",
    "claim_view",
    "volume_allows",
    "volume_view",
    "volumes_allow",
]

_ZONE = "topology.kubernetes.io/zone"
_REGION = "topology.kubernetes.io/region"
_BETA_ZONE = "failure-domain.beta.kubernetes.io/zone"
_BETA_REGION = "failure-domain.beta.kubernetes.io/region"
_TOPOLOGY_LABELS = (_BETA_ZONE, _BETA_REGION, _ZONE, _REGION)  # volumezone's topologyLabels, in its order
_GA = {_BETA_ZONE: _ZONE, _BETA_REGION: _REGION}
_MULTI_ZONE_DELIMITER = "__"


@dataclass(frozen=True, slots=True)
class ClaimView:
    """A PersistentVolumeClaim: the volume it is bound to (``spec.volumeName``; None: none yet)."""

    key: ObjectKey
    volume: str | None


@dataclass(frozen=True, slots=True)
class VolumeView:
    """A PersistentVolume as the volume filters read it: its required node affinity (None: none) and its
    zone and region labels, each with the set of values it allows."""

    key: ObjectKey
    terms: tuple[NodeSelectorTerm, ...] | None = None
    zones: tuple[tuple[str, frozenset[str]], ...] = ()


def claim_view(body: Body) -> ClaimView:
    return ClaimView(key=ObjectKey.of(body), volume=str(dig(body, "spec", "volumeName") or "") or None)


def volume_view(body: Body) -> VolumeView:
    required = dig(body, "spec", "nodeAffinity", "required")
    terms = None
    if isinstance(required, Mapping):
        terms = tuple(
            node_selector_term(t) for t in required.get("nodeSelectorTerms") or () if isinstance(t, Mapping)
        )
    labels = dig(body, "metadata", "labels") or {}
    zones = []
    for key in _TOPOLOGY_LABELS:
        value = labels.get(key)
        if value is None:
            continue
        values = [v.strip() for v in str(value).split(_MULTI_ZONE_DELIMITER)]
        if any(not v for v in values):
            continue  # LabelZonesToSet refuses an empty zone: volumezone ignores the label
        zones.append((key, frozenset(values)))
    return VolumeView(key=ObjectKey.of(body), terms=terms, zones=tuple(zones))


def volume_allows(volume: VolumeView, labels: Mapping[str, str]) -> bool:
    """Whether a node with ``labels`` may take a pod mounting ``volume`` (``CheckNodeAffinity`` and
    ``VolumeZone``)."""
    if volume.terms is not None and not any(term.matches("", labels) for term in volume.terms):
        return False
    if not volume.zones or not any(key in labels for key in _TOPOLOGY_LABELS):
        return True
    for key, values in volume.zones:
        value = labels.get(key)
        if value is None:
            value = labels.get(_GA.get(key, key))
        if value is None or value not in values:
            return False
    return True


def volumes_allow(volumes: Iterable[VolumeView], labels: Mapping[str, str]) -> bool:
    return all(volume_allows(volume, labels) for volume in volumes)
