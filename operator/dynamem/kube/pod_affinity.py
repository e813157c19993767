"""Inter-pod affinity as the kube-scheduler's ``InterPodAffinity`` filter decides it (Kubernetes v1.34.4).

A VM's launcher pods carry the VMI's ``spec.affinity`` (KubeVirt v1.7.0 ``renderLaunchManifest``), so a VM
with a required pod anti-affinity (two database VMs never on one node) or pod affinity can be moved only where
the scheduler lets its migration target go: elsewhere the target stays Pending and KubeVirt fails the
migration after its 300 s pending timeout. Read from ``pkg/scheduler/framework/plugins/interpodaffinity/
filtering.go`` (``PreFilter``, ``Filter``) and ``pkg/scheduler/framework/types.go`` (``newAffinityTerm``,
``getNamespacesFromPodAffinityTerm``); only the ``requiredDuringSchedulingIgnoredDuringExecution`` terms
filter (preferred ones only score). A node is refused when:

- the pod has required affinity terms, and the node lacks a term's ``topologyKey`` label, or no pod in the
  node's domain of some term matches every term (``satisfyPodAffinity``); unless no pod anywhere matches
  them all and the pod matches its own terms (the first pod of a group);
- a pod in the node's domain of one of the pod's required anti-affinity terms matches that term
  (``satisfyPodAntiAffinity``); a node without the term's ``topologyKey`` label is not refused by it;
- a placed pod's required anti-affinity term matches the pod, and the node shares that term's
  ``topologyKey`` label value with the placed pod's node (``satisfyExistingPodsAntiAffinity``).

A term matches a pod when the pod's namespace is among the term's (none listed and no ``namespaceSelector``:
the namespace of the pod that has the term) or the term's ``namespaceSelector`` selects it, and its
``labelSelector`` matches the pod's labels (``metav1.LabelSelectorAsSelector``: a missing selector matches
nothing, an empty one everything). dynamem reads no Namespace objects, so a ``namespaceSelector`` with
labels is read as selecting every namespace for anti-affinity (which then refuses more nodes than the
scheduler would) and none but the listed ones for affinity (which then admits fewer): a move not made,
never one refused. ``matchLabelKeys`` and ``mismatchLabelKeys``
are merged into the selector from the pod's own labels, as the API server does when it creates the pod
(``pkg/registry/core/pod/strategy.go``, ``applyMatchLabelKeysAndMismatchLabelKeys``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AffinityTerm",
    "InterPodAffinity",
    "LabelRequirement",
    "LabelSelector",
    "PlacedPod",
    "PodAffinity",
    "label_selector",
    "pod_affinity",
]

_Pair = tuple[str, str]
_AFFINITY = "InterPodAffinity: node(s) didn't match pod affinity rules"
_ANTI = "InterPodAffinity: node(s) didn't match pod anti-affinity rules"
_EXISTING = "InterPodAffinity: node(s) didn't satisfy existing pods anti-affinity rules"


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One requirement of a label selector (``In``, ``NotIn``, ``Exists``, ``DoesNotExist``)."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """``labels.Requirement.Matches``; an operator the API does not allow matches nothing."""
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        return False


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A ``metav1.LabelSelector``: every requirement must hold; None: a missing selector, which matches
    nothing."""

    requirements: tuple[LabelRequirement, ...] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.requirements is None:
            return False
        return all(r.matches(labels) for r in self.requirements)

    def pair(self) -> _Pair | None:
        """A label (key, value) every pod it matches has, if there is one: what an index looks it up by."""
        for r in self.requirements or ():
            if r.operator == "In" and len(r.values) == 1:
                return r.key, next(iter(r.values))
        return None


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A ``PodAffinityTerm`` with its namespaces resolved: ``namespaces`` (the pod's own when the term names
    none), ``every_namespace`` (an empty ``namespaceSelector``), ``selected_namespaces`` (a
    ``namespaceSelector`` with labels: which namespaces it selects is not known here)."""

    selector: LabelSelector
    topology_key: str
    namespaces: frozenset[str] = frozenset()
    every_namespace: bool = False
    selected_namespaces: bool = False

    def matches(self, namespace: str, labels: Mapping[str, str], selected: bool = True) -> bool:
        """``AffinityTerm.Matches``; ``selected``: whether a namespace its ``namespaceSelector`` may select is
        taken as selected (yes for anti-affinity, which then refuses more; no for affinity, which then
        admits less: either way no node the scheduler refuses)."""
        known = self.every_namespace or namespace in self.namespaces
        return (known or (selected and self.selected_namespaces)) and self.selector.matches(labels)


@dataclass(frozen=True, slots=True)
class PodAffinity:
    """A pod's required pod affinity and anti-affinity terms."""

    required: tuple[AffinityTerm, ...] = ()
    anti: tuple[AffinityTerm, ...] = ()

    @property
    def terms(self) -> tuple[AffinityTerm, ...]:
        return self.required + self.anti


def label_selector(body: Mapping[str, Any], labels: Mapping[str, str]) -> LabelSelector:
    """The ``labelSelector`` of a term or spread constraint ``body``, its ``matchLabelKeys`` (``In``) and
    ``mismatchLabelKeys`` (``NotIn``) merged from the pod's ``labels``."""
    return LabelSelector(_requirements(body, labels))


def _requirements(body: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[LabelRequirement, ...] | None:
    selector = body.get("labelSelector")
    if not isinstance(selector, Mapping):
        return None
    found = [
        LabelRequirement(str(k), "In", frozenset({str(v)}))
        for k, v in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or ():
        if isinstance(expression, Mapping):
            values = expression.get("values") or ()
            found.append(
                LabelRequirement(
                    str(expression.get("key") or ""),
                    str(expression.get("operator") or ""),
                    frozenset(str(v) for v in values) if isinstance(values, Sequence) else frozenset(),
                )
            )
    for keys, operator in (("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")):
        for key in body.get(keys) or ():
            if str(key) in labels:
                found.append(LabelRequirement(str(key), operator, frozenset({labels[str(key)]})))
    return tuple(found)


def _term(
    body: Mapping[str, Any], namespace: str, labels: Mapping[str, str], merge_label_keys: bool
) -> AffinityTerm:
    listed = frozenset(str(n) for n in body.get("namespaces") or ())
    selector = body.get("namespaceSelector")
    empty = (
        isinstance(selector, Mapping)
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    )
    return AffinityTerm(
        selector=label_selector(body, labels if merge_label_keys else {}),
        topology_key=str(body.get("topologyKey") or ""),
        namespaces=listed or (frozenset({namespace}) if selector is None else frozenset()),
        every_namespace=empty,
        selected_namespaces=isinstance(selector, Mapping) and not empty,
    )


def pod_affinity(
    spec: Mapping[str, Any], namespace: str, labels: Mapping[str, str], merge_label_keys: bool = True
) -> PodAffinity:
    """The required terms of a pod spec or a VMI spec (the same field names) of a pod in ``namespace`` with
    ``labels``. ``merge_label_keys``: merge ``matchLabelKeys``/``mismatchLabelKeys`` from ``labels``, as the
    API server does when it creates a pod (for a VMI's terms, its target pod's to come); not for a pod read
    back, whose terms were merged at its creation, with labels it may no longer have."""
    affinity = spec.get("affinity")
    if not isinstance(affinity, Mapping):
        return PodAffinity()

    def terms(kind: str) -> tuple[AffinityTerm, ...]:
        part = affinity.get(kind)
        required = (
            part.get("requiredDuringSchedulingIgnoredDuringExecution") if isinstance(part, Mapping) else ()
        )
        return tuple(
            _term(t, namespace, labels, merge_label_keys) for t in required or () if isinstance(t, Mapping)
        )

    return PodAffinity(required=terms("podAffinity"), anti=terms("podAntiAffinity"))


@dataclass(frozen=True, slots=True)
class PlacedPod:
    """A pod bound to ``node`` (or about to be), as the filter sees it."""

    node: str
    namespace: str
    labels: Mapping[str, str]
    anti: tuple[AffinityTerm, ...] = ()
    terminating: bool = False  # deleted, not gone yet: inter-pod affinity counts it, topology spread not


class InterPodAffinity:
    """The filter for many pods against one cluster: its nodes' labels and the pods placed on them, indexed
    by label so that each pod is checked against the pods and terms that can match it, not all of them. The
    placed pods' anti-affinity terms are kept once per distinct term with the domains it holds, and a term's
    own matches once per distinct term (HA pairs or replicas share theirs), so a round costs about the VMs
    plus the distinct terms, not VMs x pods."""

    def __init__(self, nodes: Mapping[str, Mapping[str, str]], pods: Iterable[PlacedPod]) -> None:
        self.nodes = nodes
        self._nodes_by_label: dict[_Pair, list[str]] = defaultdict(list)
        for name, node_labels in nodes.items():
            for pair in node_labels.items():
                self._nodes_by_label[pair].append(name)
        self.pods: list[PlacedPod] = []
        self._by_label: dict[_Pair, list[PlacedPod]] = defaultdict(list)
        # placed pods' anti-affinity terms, each with the domains (topology key, the node's value) it is in
        self._anti: dict[AffinityTerm, set[_Pair]] = defaultdict(set)
        self._anti_by_label: dict[_Pair, set[AffinityTerm]] = defaultdict(set)
        self._anti_unindexed: set[AffinityTerm] = set()
        for pod in pods:
            labels = self.nodes.get(pod.node)
            if labels is None:
                continue
            self.pods.append(pod)
            for pair in pod.labels.items():
                self._by_label[pair].append(pod)
            for term in pod.anti:
                value = labels.get(term.topology_key)
                if value is None:
                    continue  # topologyToMatchedTermCount.update: a node without the key counts nowhere
                self._anti[term].add((term.topology_key, value))
                indexed = term.selector.pair()
                (self._anti_by_label[indexed] if indexed else self._anti_unindexed).add(term)
        self._own_anti: dict[AffinityTerm, frozenset[_Pair]] = {}
        self._known: dict[tuple[str, PodAffinity, bool, frozenset[AffinityTerm]], dict[str, str]] = {}

    @property
    def any_anti(self) -> bool:
        """Whether some placed pod has a required anti-affinity term (else only a pod's own terms filter)."""
        return bool(self._anti)

    def _candidates(self, term: AffinityTerm) -> Iterable[PlacedPod]:
        pair = term.selector.pair()
        return self.pods if pair is None else self._by_label.get(pair, ())

    def refusals(self, namespace: str, labels: Mapping[str, str], own: PodAffinity) -> dict[str, str]:
        """The nodes a pod in ``namespace`` with ``labels`` and terms ``own`` may not go to, with why (shared
        by the pods it is the same for: not to be changed)."""
        candidates = set(self._anti_unindexed)
        for pair in labels.items():
            candidates.update(self._anti_by_label.get(pair, ()))
        matched = frozenset(t for t in candidates if t.matches(namespace, labels))
        # what else of the pod decides: whether it matches its own affinity terms (the first of a group)
        key = (
            namespace,
            own,
            all(t.matches(namespace, labels, selected=False) for t in own.required),
            matched,
        )
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = self._refusals(namespace, labels, own, matched)
        return found

    def _refusals(
        self, namespace: str, labels: Mapping[str, str], own: PodAffinity, matched: frozenset[AffinityTerm]
    ) -> dict[str, str]:
        # Filter's three checks, the last first so that a node keeps the first reason the scheduler gives
        refused = dict.fromkeys(self._domains(d for t in matched for d in self._anti[t]), _EXISTING)
        for term in own.anti:
            refused.update(dict.fromkeys(self._domains(self._anti_domains(term)), _ANTI))
        if own.required:
            refused.update(self._affinity_refusals(namespace, labels, own.required))
        return refused

    def _anti_domains(self, term: AffinityTerm) -> frozenset[_Pair]:
        """The domains of ``term``'s key that hold a pod it matches."""
        found = self._own_anti.get(term)
        if found is None:
            found = self._own_anti[term] = frozenset(
                (term.topology_key, self.nodes[pod.node][term.topology_key])
                for pod in self._candidates(term)
                if term.topology_key in self.nodes[pod.node] and term.matches(pod.namespace, pod.labels)
            )
        return found

    def _domains(self, pairs: Iterable[_Pair]) -> Iterator[str]:
        """The nodes labelled with any of ``pairs``."""
        for pair in pairs:
            yield from self._nodes_by_label.get(pair, ())

    def _affinity_refusals(
        self, namespace: str, labels: Mapping[str, str], required: tuple[AffinityTerm, ...]
    ) -> dict[str, str]:
        """``satisfyPodAffinity`` on every node: each term's key on the node, and a pod matching every term
        in each term's domain of the node; unless no pod anywhere matches them all and the pod matches its
        own terms (the first pod of a group)."""
        domains: set[_Pair] = set()
        for pod in self._candidates(required[0]):
            if all(t.matches(pod.namespace, pod.labels, selected=False) for t in required):
                on_node = self.nodes[pod.node]
                domains.update(
                    (t.topology_key, on_node[t.topology_key]) for t in required if t.topology_key in on_node
                )
        first_of_group = not domains and all(t.matches(namespace, labels, selected=False) for t in required)
        refused: dict[str, str] = {}
        for node, on_node in self.nodes.items():
            missing = next((t.topology_key for t in required if t.topology_key not in on_node), None)
            if missing is not None:
                refused[node] = f"InterPodAffinity: node has no {missing} label for pod affinity"
            elif not first_of_group and any(
                (t.topology_key, on_node[t.topology_key]) not in domains for t in required
            ):
                refused[node] = _AFFINITY
        return refused
