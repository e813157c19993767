"""Where a VM may be moved: the nodes the kube-scheduler would let its migration target pod go to.

The plan (:func:`dynamem.policy.cluster.plan_cluster`) chooses a target among the VM's ``allowed_nodes`` only;
this module computes them. A target the scheduler would refuse stays Pending, KubeVirt fails the migration
after its pending timeout (300 s) and the change is taken back: a change wasted, and the VM held. So the
target pod is judged here as the scheduler's filters will judge it (:mod:`dynamem.kube.scheduling`:
``NodeUnschedulable``, ``TaintToleration``, ``NodeAffinity``), from what KubeVirt v1.7.0 puts on it
(``pkg/virt-controller/services/template.go``, ``renderLaunchManifest``, also used by
``RenderMigrationManifest`` for a migration target): the VMI's ``spec.tolerations`` and ``spec.affinity``, and
the node selector of ``NewNodeSelectorRenderer`` (``services/nodeselectorrenderer.go``):
``kubevirt.io/schedulable: "true"``, which virt-handler keeps on the nodes it serves (and sets to ``false``
when its heartbeat stops), then the VMI's ``spec.nodeSelector``.

Inter-pod affinity (``InterPodAffinity``, :mod:`dynamem.kube.pod_affinity`) is judged per VM, against the pods
bound to the nodes and the target pods of dynamem's own changes not bound yet (the scheduler will count them
as soon as they are): the VMI's required pod affinity and anti-affinity, and the anti-affinity of the pods
placed, against the labels KubeVirt gives the target pod (the VMI's, and its own). Topology spread
(``PodTopologySpread``, :mod:`dynamem.kube.topology_spread`) is judged the same way for the VMI's
``DoNotSchedule`` constraints, without dynamem's pin to the target node, which would leave the scheduler one
domain to count and let any target break the spread. VMs that such terms or constraints tie together (one's
selector matches another's pods) form a group, and the plan moves one VM of a group per round: two targets
placed in one round would each be judged without the other.

The KubeVirt CR's cluster-wide ``developerConfiguration.nodeSelectors`` (read at start and with every
periodic LIST) go under every target's selector. The rest of it, which KubeVirt renders from the VMI and its
status (architecture, CPU model and features, machine type, SEV/TDX; a ``host-model`` CPU's migration
labels), is read from the VMI's launcher pod (:mod:`dynamem.kube.migration_target`, passed in as
``carried``). Room in every resource
(memory, hugepages, CPU, pods, ephemeral storage, devices) is the plan's
(:mod:`dynamem.controller.cluster_state`). The volumes of a VMI's claims narrow its nodes to those their
node affinity and zone allow (:mod:`dynamem.kube.volumes`). Not read: CSI attach limits, host ports, DRA
claims; a target they refuse still fails after the pending timeout and is taken back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from dynamem.kube.objects import NodeView, ObjectKey, VmiView
from dynamem.kube.pod_affinity import AffinityTerm, InterPodAffinity, PlacedPod
from dynamem.kube.scheduling import NodeRequirement, NodeSelectorTerm, PodPlacement, SchedulingNode, eligible
from dynamem.kube.topology_spread import TopologySpread
from dynamem.kube.volumes import VolumeView, volumes_allow

__all__ = [
    "SCHEDULABLE_LABEL",
    "EligibleNodes",
    "affinity_groups",
    "eligible_nodes",
    "refusals",
    "target_pod_placement",
]

# v1.NodeSchedulable (staging/src/kubevirt.io/api/core/v1/types.go): every launcher pod selects it.
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"


def target_pod_placement(
    vmi: VmiView, carried: tuple[tuple[str, str], ...] = (), cluster_wide: tuple[tuple[str, str], ...] = ()
) -> PodPlacement:
    """What the filters read of a migration target pod of ``vmi``: KubeVirt's selector under the VMI's;
    ``carried``: what else of its launcher pod's selector its next target gets (kube.migration_target);
    ``cluster_wide``: the KubeVirt CR's ``developerConfiguration.nodeSelectors``, under both."""
    own = vmi.placement
    selector = {SCHEDULABLE_LABEL: "true", **dict(cluster_wide), **dict(carried), **dict(own.node_selector)}
    return PodPlacement(
        node_selector=tuple(sorted(selector.items())),
        tolerations=own.tolerations,
        required_terms=_rejecting(own.required_terms, vmi.cpu_rejects),
    )


def _rejecting(
    terms: tuple[NodeSelectorTerm, ...] | None, labels: tuple[str, ...]
) -> tuple[NodeSelectorTerm, ...] | None:
    """The VMI's required node affinity as KubeVirt renders it on its launcher pods: each label its CPU
    rejects (``VmiView.cpu_rejects``) added as ``DoesNotExist`` to every term, or one term of them when there
    is none (v1.7.0 ``template.go``, ``modifyNodeAffintyToRejectLabel``)."""
    if not labels:
        return terms
    rejects = tuple(NodeRequirement(label, "DoesNotExist") for label in labels)
    if terms is None:
        return (NodeSelectorTerm(match_expressions=rejects),)
    return tuple(replace(t, match_expressions=(*t.match_expressions, *rejects)) for t in terms)


def _scheduling_node(node: NodeView) -> SchedulingNode:
    return SchedulingNode(
        name=node.name, labels=dict(node.labels), taints=node.taints, unschedulable=not node.schedulable
    )


def refusals(vmi: VmiView, nodes: Iterable[NodeView]) -> dict[str, str]:
    """The nodes ``vmi``'s target pod may not go to, each with the filter that refuses it."""
    pod = target_pod_placement(vmi)
    found: dict[str, str] = {}
    for node in nodes:
        why = eligible(pod, _scheduling_node(node))
        if why is not None:
            found[node.name] = why
    return found


def eligible_nodes(vmi: VmiView, nodes: Iterable[NodeView]) -> frozenset[str]:
    """The nodes ``vmi``'s migration target pod passes every filter read here on (its own node included: the
    plan never picks the source, and KubeVirt's anti-affinity keeps a target off it)."""
    listed = list(nodes)
    refused = refusals(vmi, listed)
    return frozenset(node.name for node in listed if node.name not in refused)


@dataclass
class EligibleNodes:
    """:func:`eligible_nodes` of every VMI of a round, against the same nodes: each distinct placement (the
    VMI's node selector, tolerations and affinity; most VMIs share one) is judged against the nodes once, and
    the VMIs that share it share its answer. A round then costs VMIs + placements x nodes filter runs, not
    VMIs x nodes (10,000 VMs on 500 nodes: five million a round, most of a live round's CPU)."""

    nodes: Iterable[NodeView]
    pods: Iterable[PlacedPod] = ()  # the pods placed, for inter-pod affinity (none: not judged)
    cluster_wide: tuple[tuple[str, str], ...] = ()  # the KubeVirt CR's launcher node selector
    # the PersistentVolume each claim (namespace/name) is bound to, where both are in view (kube.volumes)
    volumes: Mapping[ObjectKey, VolumeView] = field(default_factory=dict)
    _scheduling: list[SchedulingNode] = field(init=False)
    # by placement, and for a VMI's own placement the labels its CPU rejects (which its target pod adds)
    _known: dict[tuple[PodPlacement, tuple[str, ...]], frozenset[str]] = field(
        init=False, default_factory=dict
    )
    _pods: InterPodAffinity = field(init=False)
    _spread: TopologySpread = field(init=False)
    _narrowed: dict[tuple[tuple[PodPlacement, tuple[str, ...]], int], frozenset[str]] = field(
        init=False, default_factory=dict
    )
    _by_volumes: dict[tuple[ObjectKey, ...], frozenset[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._scheduling = [_scheduling_node(node) for node in self.nodes]
        placed = list(self.pods)
        self._pods = InterPodAffinity({n.name: n.labels for n in self._scheduling}, placed)
        self._spread = TopologySpread(self._scheduling, placed)

    def of(self, vmi: VmiView, carried: tuple[tuple[str, str], ...] = ()) -> frozenset[str]:
        """The nodes ``vmi``'s target may go to; ``carried``: the selector its launcher pod passes on."""
        # VMIs with nothing beyond their own spec share the answer of their own placement
        target = (
            target_pod_placement(vmi, carried, self.cluster_wide) if carried or self.cluster_wide else None
        )
        placement = (vmi.placement, vmi.cpu_rejects) if target is None else (target, ())
        found = self._known.get(placement)
        if found is None:
            target = target or target_pod_placement(vmi)
            found = frozenset(node.name for node in self._scheduling if eligible(target, node) is None)
            self._known[placement] = found
        if vmi.claims and self.volumes:
            found = found.intersection(self._volumes_allow(vmi))
        if not (vmi.affinity.terms or vmi.spread or self._pods.any_anti):
            return found
        labels = dict(vmi.pod_labels)
        if vmi.affinity.terms or self._pods.any_anti:
            refused = self._pods.refusals(vmi.key.namespace, labels, vmi.affinity)
            if refused:  # the same answer object for every VM it is the same for, kept for the round
                key = (placement, id(refused))
                narrowed = self._narrowed.get(key)
                if narrowed is None:
                    narrowed = self._narrowed[key] = found.difference(refused)
                found = narrowed
        if vmi.spread:
            # judged without dynamem's pin, as KubeVirt's own migrations are (kube.topology_spread)
            target = target or target_pod_placement(vmi)
            found = found.difference(self._spread.refusals(vmi.key.namespace, labels, vmi.spread, target))
        return found

    def _volumes_allow(self, vmi: VmiView) -> frozenset[str]:
        """The nodes the volumes of ``vmi``'s claims let its launcher go to (``VolumeBinding``'s node
        affinity, ``VolumeZone``), judged once per set of volumes."""
        claims = tuple(ObjectKey(vmi.key.namespace, claim) for claim in vmi.claims)
        bound = tuple(sorted(self.volumes[c].key for c in claims if c in self.volumes))
        allowed = self._by_volumes.get(bound)
        if allowed is None:
            volumes = [self.volumes[c] for c in claims if c in self.volumes]
            allowed = frozenset(n.name for n in self._scheduling if volumes_allow(volumes, n.labels))
            self._by_volumes[bound] = allowed
        return allowed


def affinity_groups(vmis: Iterable[VmiView]) -> dict[str, str]:
    """The VMs (``namespace/name``) that required pod (anti-)affinity or a topology spread constraint ties to
    others, each to its group's name (the first member's): VMs whose terms or spread selectors match
    another's launcher pods, and those pods' VMs, joined transitively. A VM whose terms match only itself or
    no VM is in no group. Each distinct term is matched once, for all the VMs that have it."""
    listed = list(vmis)
    by_label: dict[tuple[str, str], list[VmiView]] = defaultdict(list)
    having: dict[AffinityTerm, list[str]] = defaultdict(list)
    for vmi in listed:
        for pair in vmi.pod_labels:
            by_label[pair].append(vmi)
        for term in vmi.affinity.terms:
            having[term].append(str(vmi.key))
        for constraint in vmi.spread:  # VMs spread by one selector: each one's move changes the others' skew
            spread = AffinityTerm(
                constraint.selector, constraint.topology_key, frozenset({vmi.key.namespace})
            )
            having[spread].append(str(vmi.key))
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.get(name, name) != name:
            parent[name] = parent.get(parent[name], parent[name])  # halve the path
            name = parent[name]
        return name

    def join(a: str, b: str) -> None:
        first, second = sorted((root(a), root(b)))
        parent[first] = first
        parent[second] = first

    for term, owners in having.items():
        indexed = term.selector.pair()
        matched = [
            str(other.key)
            for other in (listed if indexed is None else by_label.get(indexed, ()))
            if term.matches(other.key.namespace, _labels(other))
        ]
        if not matched:  # a term matching no VM ties its owners to nothing (their moves are independent)
            continue
        tied = set(owners).union(matched)
        if len(tied) > 1:
            first = min(tied)
            for name in tied:
                join(first, name)
    return {name: root(name) for name in parent}


def _labels(vmi: VmiView) -> Mapping[str, str]:
    return dict(vmi.pod_labels)
