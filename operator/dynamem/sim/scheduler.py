"""Where the kube-scheduler puts a virt-launcher pod, counting memory requests only.

The simulator's kubevirt model places every launcher pod (a VM's first pod and each migration's target pod) as
a kube-scheduler with its default plugins would (kubernetes v1.34, ``k8s.io/kubernetes`` as pinned for the
control plane):

- Filter ``NodeResourcesFit`` (``pkg/scheduler/framework/plugins/noderesources/fit.go``, ``Fit.Filter`` ->
  ``fitsRequest``): the pod's memory request must fit in the node's allocatable less the requests of every pod
  already on it ("Insufficient memory").
- Filter ``InterPodAffinity``: a migration target pod carries KubeVirt's required anti-affinity to the VMI's
  own pods on ``kubernetes.io/hostname`` (``pkg/virt-controller/watch/migration/migration.go``,
  ``createMigrationPodAntiAffinityRule``), so the source node never passes ("didn't match pod anti-affinity
  rules"). ``NodeAffinity``: a migration's ``spec.addedNodeSelector`` (copied into the target pod by
  ``createTargetPod``) leaves only the node it names ("didn't match Pod's node affinity/selector").
- Score ``NodeResourcesFit`` with the default ``LeastAllocated`` strategy
  (``plugins/noderesources/least_allocated.go``, ``leastRequestedScore``):
  ``(allocatable - requested) * 100 // allocatable`` with the pod's own request counted, integer arithmetic as
  upstream. Only memory is modelled, so the CPU half of the score and ``NodeResourcesBalancedAllocation`` are
  the same on every node and change no choice.
- Ties: ``selectHost`` (``pkg/scheduler/schedule_one.go``) picks one of the best nodes at random (reservoir
  sampling); the simulator takes the first by name so that a run is reproducible.

An unschedulable pod gets the scheduler's ``FitError`` message, e.g. ``0/3 nodes are available: 1 node(s)
didn't match pod anti-affinity rules, 2 Insufficient memory.``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Placement", "least_allocated_score", "place_pod"]

_MAX_NODE_SCORE = 100
_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
_SELECTOR = "node(s) didn't match Pod's node affinity/selector"
_MEMORY = "Insufficient memory"


@dataclass(frozen=True, slots=True)
class Placement:
    """The node chosen for a pod, or None with the scheduler's reason."""

    node: str | None
    reason: str


def least_allocated_score(requested: int, allocatable: int) -> int:
    """kube-scheduler's ``leastRequestedScore``: 0..100, more free memory scores higher."""
    if allocatable <= 0 or requested > allocatable:
        return 0
    return (allocatable - requested) * _MAX_NODE_SCORE // allocatable


def place_pod(
    request: int,
    allocatable: Mapping[str, int],
    requested: Mapping[str, int],
    *,
    avoid: str | None = None,
    only: str | None = None,
) -> Placement:
    """Filter and score the nodes for a pod requesting ``request`` bytes of memory.

    ``allocatable``/``requested``: per node, its memory and the requests of the pods on it. ``avoid``: the
    node a required anti-affinity excludes (a migration's source). ``only``: the node a selector requires.
    """
    best: tuple[int, str] | None = None
    why: dict[str, int] = {}
    for name in sorted(allocatable):
        if name == avoid:
            why[_ANTI_AFFINITY] = why.get(_ANTI_AFFINITY, 0) + 1
            continue
        if only is not None and name != only:
            why[_SELECTOR] = why.get(_SELECTOR, 0) + 1
            continue
        memory = allocatable[name]
        used = requested.get(name, 0)
        if used + request > memory:
            why[_MEMORY] = why.get(_MEMORY, 0) + 1
            continue
        score = least_allocated_score(used + request, memory)
        if best is None or score > best[0]:
            best = (score, name)
    if best is not None:
        return Placement(best[1], f"scheduled on {best[1]} (least allocated, score {best[0]})")
    parts = ", ".join(f"{count} {text}" for text, count in sorted(why.items()))
    return Placement(None, f"0/{len(allocatable)} nodes are available: {parts}.")
