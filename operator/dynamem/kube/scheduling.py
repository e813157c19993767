"""Which nodes a pod may go to, as the kube-scheduler's filters decide it (Kubernetes v1.34).

A VMI's launcher pod, and every migration target pod, carries what KubeVirt v1.7.0 copies from the VMI
(``pkg/virt-controller/services/template.go``, ``renderLaunchManifest``): ``vmi.Spec.Tolerations``,
``vmi.Spec.Affinity`` (deep-copied), and a node selector rendered by ``NewNodeSelectorRenderer``
(``services/nodeselectorrenderer.go``): ``kubevirt.io/schedulable: "true"`` (the label virt-handler keeps on
the nodes it serves), the cluster-wide ``nodeSelectors`` of the KubeVirt CR, then the VMI's ``nodeSelector``.
A migration target is rendered the same way from the VMI's current spec (``RenderMigrationManifest``) with a
pod anti-affinity to the VMI's pods added (``watch/migration/migration.go``,
``createMigrationPodAntiAffinityRule``, appended to the VMI's affinity) and the migration's
``addedNodeSelector`` merged under the pod's own selector.

The filters read here, each as the scheduler and its helpers implement it:

- ``NodeUnschedulable`` (``pkg/scheduler/framework/plugins/nodeunschedulable``): a node with
  ``spec.unschedulable`` is refused unless the pod tolerates ``node.kubernetes.io/unschedulable:NoSchedule``;
- ``TaintToleration`` (``plugins/tainttoleration``, ``Filter``): every taint with effect ``NoSchedule`` or
  ``NoExecute`` must be tolerated (``k8s.io/api/core/v1``, ``Toleration.ToleratesTaint``: an effect and a key
  that are empty match any; operator ``Exists`` matches any value, ``Equal`` or empty the same value);
  ``PreferNoSchedule`` only scores;
- ``NodeAffinity`` (``plugins/nodeaffinity``; ``k8s.io/component-helpers/scheduling/corev1/nodeaffinity``,
  ``GetRequiredNodeAffinity``): every ``nodeSelector`` label, and, when the pod has required node affinity,
  at least one of its ``nodeSelectorTerms`` (ORed; an empty term matches nothing). Within a term every
  ``matchExpressions`` requirement on the node's labels (``In``, ``NotIn`` (true when the label is absent),
  ``Exists``, ``DoesNotExist``, ``Gt``/``Lt`` (the label and the one value compared as integers; a label
  that is not one does not match)) and every ``matchFields`` requirement (only ``metadata.name``, ``In`` or
  ``NotIn`` one value) must hold. A term the scheduler cannot parse (an unknown operator, ``Gt`` with two
  values) matches nothing.

Room (``NodeResourcesFit``: memory, hugepages, CPU, pod count) is counted elsewhere
(``dynamem.controller.cluster_state``, the plan's ``_Room``); inter-pod affinity and topology spread are
:mod:`dynamem.kube.pod_affinity` and :mod:`dynamem.kube.topology_spread`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "UNSCHEDULABLE_TAINT",
    "NodeRequirement",
    "NodeSelectorTerm",
    "PodPlacement",
    "SchedulingNode",
    "Taint",
    "Toleration",
    "eligible",
    "node_affinity_refusal",
    "node_requirement",
    "node_selector_term",
    "pod_placement",
    "taint",
    "toleration",
    "untolerated_taint",
]

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
# The effects the TaintToleration filter refuses a node for (helper.DoNotScheduleTaintsFilterFunc).
_FILTERED_EFFECTS = frozenset({"NoSchedule", "NoExecute"})
_LABEL_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
_FIELD_OPERATORS = frozenset({"In", "NotIn"})
_NODE_NAME_FIELD = "metadata.name"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = ""


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod's toleration; empty ``key`` with ``Exists`` tolerates every taint, empty ``effect`` every
    effect."""

    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """``Toleration.ToleratesTaint`` (``k8s.io/api/core/v1/toleration.go``)."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator in ("", "Equal"):
            return self.value == taint.value
        return self.operator == "Exists"


@dataclass(frozen=True, slots=True)
class NodeRequirement:
    """One ``matchExpressions`` or ``matchFields`` entry of a node selector term."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches_label(self, labels: Mapping[str, str]) -> bool:
        """``labels.Requirement.Matches`` for the operators a node selector allows."""
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator in ("Gt", "Lt") and present and len(self.values) == 1:
            have, bound = _integer(labels[self.key]), _integer(self.values[0])
            if have is None or bound is None:
                return False
            return have > bound if self.operator == "Gt" else have < bound
        return False

    def parses(self, fields: bool) -> bool:
        """Whether the scheduler can parse it (``nodeSelectorRequirementsAsSelector`` /
        ``...AsFieldSelector``)."""
        if fields:
            return (
                self.operator in _FIELD_OPERATORS and len(self.values) == 1 and self.key == _NODE_NAME_FIELD
            )
        if self.operator not in _LABEL_OPERATORS:
            return False
        if self.operator in ("In", "NotIn"):
            return len(self.values) >= 1
        if self.operator in ("Exists", "DoesNotExist"):
            return not self.values
        return len(self.values) == 1 and _integer(self.values[0]) is not None


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    match_expressions: tuple[NodeRequirement, ...] = ()
    match_fields: tuple[NodeRequirement, ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if not self.match_expressions and not self.match_fields:
            return False  # "nil or empty term selects no objects"
        if not all(r.parses(fields=False) for r in self.match_expressions):
            return False
        if not all(r.parses(fields=True) for r in self.match_fields):
            return False
        if not all(r.matches_label(labels) for r in self.match_expressions):
            return False
        if not name:  # no fields to match (a volume's node affinity is checked against labels alone:
            return True  # CheckNodeAffinity, and nodeSelectorTerm.match skips matchFields then)
        return all((name == r.values[0]) == (r.operator == "In") for r in self.match_fields)


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """What of a pod the filters read: its node selector, tolerations, and required node affinity (None:
    none; an empty tuple: terms that match no node)."""

    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    required_terms: tuple[NodeSelectorTerm, ...] | None = None


@dataclass(frozen=True, slots=True)
class SchedulingNode:
    """What of a node the filters read."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


def eligible(pod: PodPlacement, node: SchedulingNode) -> str | None:
    """None when the filters let ``pod`` go to ``node``, else the filter that refuses it and why."""
    if node.unschedulable and not any(
        t.tolerates(Taint(UNSCHEDULABLE_TAINT, effect="NoSchedule")) for t in pod.tolerations
    ):
        return "NodeUnschedulable: cordoned"
    return untolerated_taint(pod, node) or node_affinity_refusal(pod, node)


def untolerated_taint(pod: PodPlacement, node: SchedulingNode) -> str | None:
    """``TaintToleration``: the first ``NoSchedule``/``NoExecute`` taint of ``node`` ``pod`` does not
    tolerate, or None."""
    for found in node.taints:
        if found.effect in _FILTERED_EFFECTS and not any(t.tolerates(found) for t in pod.tolerations):
            return f"TaintToleration: untolerated taint {found.key}={found.value}:{found.effect}"
    return None


def node_affinity_refusal(pod: PodPlacement, node: SchedulingNode) -> str | None:
    """``NodeAffinity`` (``GetRequiredNodeAffinity``: the node selector and the required terms): why it
    refuses ``node`` to ``pod``, or None."""
    for key, value in pod.node_selector:
        if node.labels.get(key) != value:
            return f"NodeAffinity: nodeSelector {key}={value} not matched"
    if pod.required_terms is not None and not any(
        term.matches(node.name, node.labels) for term in pod.required_terms
    ):
        return "NodeAffinity: required node affinity not matched"
    return None


_INT64 = re.compile(r"[+-]?[0-9]+")


def _integer(text: str) -> int | None:
    """``strconv.ParseInt(text, 10, 64)``: an optional sign and ASCII digits, within int64 (Python's ``int``
    also takes ``1_0``, spaces and other scripts' digits, which the scheduler refuses)."""
    if not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def _strings(items: object) -> tuple[str, ...]:
    return tuple(str(v) for v in items) if isinstance(items, Sequence) and not isinstance(items, str) else ()


def taint(body: Mapping[str, Any]) -> Taint:
    return Taint(str(body.get("key") or ""), str(body.get("value") or ""), str(body.get("effect") or ""))


def toleration(body: Mapping[str, Any]) -> Toleration:
    return Toleration(
        key=str(body.get("key") or ""),
        operator=str(body.get("operator") or ""),
        value=str(body.get("value") or ""),
        effect=str(body.get("effect") or ""),
    )


def node_requirement(body: Mapping[str, Any]) -> NodeRequirement:
    return NodeRequirement(
        key=str(body.get("key") or ""),
        operator=str(body.get("operator") or ""),
        values=_strings(body.get("values")),
    )


def node_selector_term(body: Mapping[str, Any]) -> NodeSelectorTerm:
    return NodeSelectorTerm(
        match_expressions=tuple(
            node_requirement(r) for r in body.get("matchExpressions") or () if isinstance(r, Mapping)
        ),
        match_fields=tuple(
            node_requirement(r) for r in body.get("matchFields") or () if isinstance(r, Mapping)
        ),
    )


def pod_placement(spec: Mapping[str, Any], extra_selector: Mapping[str, str] | None = None) -> PodPlacement:
    """From a pod spec or a VMI spec (the same field names): ``nodeSelector``, ``tolerations``, and
    ``affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution``. ``extra_selector``: labels the
    pod selects beyond the spec's (KubeVirt's ``kubevirt.io/schedulable``); the spec's win."""
    selector = dict(extra_selector or {})
    selector.update({str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()})
    tolerations: Iterable[Any] = spec.get("tolerations") or ()
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    terms = None
    if isinstance(required, Mapping):
        terms = tuple(
            node_selector_term(t) for t in required.get("nodeSelectorTerms") or () if isinstance(t, Mapping)
        )
    return PodPlacement(
        node_selector=tuple(sorted(selector.items())),
        tolerations=tuple(toleration(t) for t in tolerations if isinstance(t, Mapping)),
        required_terms=terms,
    )
