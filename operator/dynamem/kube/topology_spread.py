"""Topology spread as the kube-scheduler's ``PodTopologySpread`` filter decides it (Kubernetes v1.34.4),
for a migration target as KubeVirt would make it without dynamem's pin.

A VMI's ``spec.topologySpreadConstraints`` are copied to its launcher pods (KubeVirt v1.7.0
``renderLaunchManifest``). Only ``whenUnsatisfiable: DoNotSchedule`` constraints filter (``ScheduleAnyway``
and the scheduler's system defaults only score). Read from ``pkg/scheduler/framework/plugins/
podtopologyspread/filtering.go`` (``calPreFilterState``, ``Filter``) and ``common.go``
(``filterTopologySpreadConstraints``, ``matchNodeInclusionPolicies``, ``countPodsMatchSelector``):

- the domains counted are the values of the constraint's ``topologyKey`` on the nodes that have the key of
  every constraint, that match the pod's required node affinity (``nodeAffinityPolicy: Honor``, the
  default) and, with ``nodeTaintsPolicy: Honor`` (default ``Ignore``), whose taints it tolerates;
- a domain's count is the pods on its nodes in the pod's namespace, not terminating, that the selector
  matches (an empty selector counts none); ``matchLabelKeys`` are merged from the pod's labels;
- a node is refused when it lacks a constraint's key, or when its domain's count, plus one if the pod
  matches the selector itself, less the smallest count of any domain (0 while there are fewer domains than
  ``minDomains``, default 1), is above ``maxSkew``.

dynamem pins its migration target with ``spec.addedNodeSelector`` (the target's hostname), which KubeVirt
merges into the target pod's node selector; under ``nodeAffinityPolicy: Honor`` the scheduler then counts
the target's domain alone, its own minimum, and a constraint with ``minDomains`` 1 never refuses. So the
scheduler would let a pinned target break the spread the user asked for: dynamem judges the target as
KubeVirt's own migrations are judged, without the pin (the VMI's node selector and affinity only), and
keeps the spread. With ``minDomains`` over 1 the pinned target also meets the scheduler's own view: one
domain, fewer than ``minDomains``, so the smallest count is 0 and the node's own matching pods plus the pod
must stay within ``maxSkew``; a node that fails that is refused too. The VM's pod on its source node
counts, as it does for the scheduler during a migration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynamem.kube.pod_affinity import LabelSelector, PlacedPod, label_selector
from dynamem.kube.scheduling import PodPlacement, SchedulingNode, node_affinity_refusal, untolerated_taint

__all__ = ["SpreadConstraint", "TopologySpread", "spread_constraints"]

_LABEL_MISSING = (
    "PodTopologySpread: node(s) didn't match pod topology spread constraints (missing required label)"
)
_SKEW = "PodTopologySpread: node(s) didn't match pod topology spread constraints"


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    """A ``DoNotSchedule`` topology spread constraint, defaults applied."""

    max_skew: int
    topology_key: str
    selector: LabelSelector
    min_domains: int = 1
    honor_node_affinity: bool = True
    honor_taints: bool = False


def _int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return default
    try:
        return int(value)
    except ValueError:
        return default


def spread_constraints(spec: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[SpreadConstraint, ...]:
    """The ``DoNotSchedule`` constraints of a pod spec or VMI spec, for a pod with ``labels``."""
    found = []
    for body in spec.get("topologySpreadConstraints") or ():
        if not isinstance(body, Mapping) or body.get("whenUnsatisfiable") != "DoNotSchedule":
            continue
        found.append(
            SpreadConstraint(
                max_skew=_int(body.get("maxSkew"), 1),
                topology_key=str(body.get("topologyKey") or ""),
                selector=label_selector(body, labels),
                min_domains=_int(body.get("minDomains"), 1),
                honor_node_affinity=body.get("nodeAffinityPolicy", "Honor") != "Ignore",
                honor_taints=body.get("nodeTaintsPolicy", "Ignore") == "Honor",
            )
        )
    return tuple(found)


class TopologySpread:
    """The filter for many pods against one cluster: its nodes and the pods placed on them. A domain's
    counts are made once per distinct (namespace, constraints, node placement) of a round."""

    def __init__(self, nodes: Sequence[SchedulingNode], pods: Iterable[PlacedPod]) -> None:
        self.nodes = nodes
        self._on_node: dict[str, list[PlacedPod]] = defaultdict(list)
        for pod in pods:
            if not pod.terminating:
                self._on_node[pod.node].append(pod)
        self._counts: dict[tuple[str, tuple[SpreadConstraint, ...], PodPlacement], list[dict[str, int]]] = {}
        self._matched: dict[tuple[str, str, LabelSelector], int] = {}

    def refusals(
        self,
        namespace: str,
        labels: Mapping[str, str],
        constraints: tuple[SpreadConstraint, ...],
        placement: PodPlacement,
    ) -> dict[str, str]:
        """The nodes a pod in ``namespace`` with ``labels``, ``constraints`` and node ``placement`` (its node
        selector, affinity and tolerations) may not go to, with why."""
        if not constraints:
            return {}
        key = (namespace, constraints, placement)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = self._count(namespace, constraints, placement)
        minimum = [
            min(domains.values()) if domains and len(domains) >= c.min_domains else 0
            for c, domains in zip(constraints, counts, strict=True)
        ]
        itself = [1 if c.selector.matches(labels) else 0 for c in constraints]
        refused: dict[str, str] = {}
        for node in self.nodes:
            for i, c in enumerate(constraints):
                value = node.labels.get(c.topology_key)
                if value is None:
                    refused[node.name] = _LABEL_MISSING
                    break
                if counts[i].get(value, 0) + itself[i] - minimum[i] > c.max_skew:
                    refused[node.name] = _SKEW
                    break
                if (
                    c.honor_node_affinity
                    and c.min_domains > 1
                    and self._pinned_skew(node, c, itself[i], namespace, placement)
                ):
                    refused[node.name] = _SKEW  # as the scheduler sees the pinned target (module docstring)
                    break
        return refused

    def _pinned_skew(
        self, node: SchedulingNode, c: SpreadConstraint, itself: int, namespace: str, placement: PodPlacement
    ) -> bool:
        """Whether the scheduler refuses the target pinned to ``node`` (``addedNodeSelector``) for ``c``: with
        ``nodeAffinityPolicy: Honor`` it counts that node alone, one domain, fewer than ``minDomains`` (over
        1), so the smallest count is 0 and the node's own matching pods plus the pod itself must stay within
        ``maxSkew`` (``minMatchNum``). Refused there, dynamem's migration would fail after 300 s."""
        if c.honor_taints and untolerated_taint(placement, node) is not None:
            return False  # not counted: no domain, nothing refused for the skew
        return self._matching(node.name, namespace, c) + itself > c.max_skew

    def _matching(self, node: str, namespace: str, c: SpreadConstraint) -> int:
        """The pods on ``node`` in ``namespace`` that ``c``'s selector counts (an empty selector counts none,
        ``countPodsMatchSelector``), counted once a round per node, namespace and selector."""
        if c.selector.requirements == ():
            return 0
        key = (node, namespace, c.selector)
        found = self._matched.get(key)
        if found is None:
            found = self._matched[key] = sum(
                1
                for p in self._on_node.get(node, ())
                if p.namespace == namespace and c.selector.matches(p.labels)
            )
        return found

    def _count(
        self, namespace: str, constraints: tuple[SpreadConstraint, ...], placement: PodPlacement
    ) -> list[dict[str, int]]:
        """``calPreFilterState``: per constraint, the matching pods per domain of the nodes counted."""
        counts: list[dict[str, int]] = [{} for _ in constraints]
        for node in self.nodes:
            if any(c.topology_key not in node.labels for c in constraints):
                continue  # nodeLabelsMatchSpreadConstraints
            affine = node_affinity_refusal(placement, node) is None
            tolerated = untolerated_taint(placement, node) is None
            for i, c in enumerate(constraints):
                if (c.honor_node_affinity and not affine) or (c.honor_taints and not tolerated):
                    continue
                value = node.labels[c.topology_key]
                counts[i][value] = counts[i].get(value, 0) + self._matching(node.name, namespace, c)
        return counts
