"""Topology spread as :mod:`dynamem.kube.topology_spread` plays the kube-scheduler's ``PodTopologySpread``
filter, case by case against Kubernetes v1.34.4's ``podtopologyspread/filtering.go`` (``calPreFilterState``,
``Filter``) and ``common.go`` (``filterTopologySpreadConstraints``, ``countPodsMatchSelector``)."""

from __future__ import annotations

from typing import Any

from dynamem.kube.pod_affinity import PlacedPod
from dynamem.kube.scheduling import PodPlacement, SchedulingNode, Taint, Toleration
from dynamem.kube.topology_spread import SpreadConstraint, TopologySpread, spread_constraints

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
WEB = {"app": "web"}


def node(name: str, zone: str | None = None, *taints: Taint, **labels: str) -> SchedulingNode:
    found = {HOST: name, **labels}
    if zone is not None:
        found[ZONE] = zone
    return SchedulingNode(name, found, taints)


NODES = [node("n1", "z1"), node("n2", "z1"), node("n3", "z2")]
ANYWHERE = PodPlacement()


def constraint(key: str = HOST, skew: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "maxSkew": skew,
        "topologyKey": key,
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": WEB},
        **extra,
    }


def refused(
    pods: list[PlacedPod],
    *constraints: dict[str, Any],
    nodes: list[SchedulingNode] = NODES,
    labels: dict[str, str] = WEB,
    placement: PodPlacement = ANYWHERE,
) -> set[str]:
    parsed = spread_constraints({"topologySpreadConstraints": list(constraints)}, labels)
    return set(TopologySpread(nodes, pods).refusals("vms", labels, parsed, placement))


def web(node_name: str, ns: str = "vms", terminating: bool = False) -> PlacedPod:
    return PlacedPod(node_name, ns, WEB, terminating=terminating)


def test_a_pod_goes_only_where_the_skew_stays_within_max_skew() -> None:
    # n1 (the VM itself, its source) and n2 have one web pod each, n3 none: min 0, a web pod on n1 or n2 -> 2
    assert refused([web("n1"), web("n2")], constraint()) == {"n1", "n2"}
    assert refused([web("n1"), web("n2")], constraint(skew=2)) == set()


def test_zones_are_counted_over_their_nodes() -> None:
    # z1 has two, z2 none: a third web pod may go to z2 only
    assert refused([web("n1"), web("n2")], constraint(ZONE)) == {"n1", "n2"}
    assert refused([web("n1"), web("n3")], constraint(ZONE)) == set()


def test_a_node_without_the_key_is_refused_and_its_pods_not_counted() -> None:
    nodes = [*NODES, node("bare")]
    # bare has no zone: refused, and its two web pods count nowhere
    assert refused([web("bare"), web("bare"), web("n3")], constraint(ZONE), nodes=nodes) == {"bare", "n3"}
    # and is no domain: an empty bare would otherwise make the minimum 0, and refuse every zone that has one
    assert refused([web("n1"), web("n3")], constraint(ZONE), nodes=nodes) == {"bare"}


def test_with_two_constraints_a_node_without_either_key_is_no_domain_of_the_other() -> None:
    # a web pod on each zoned node; zoneless has a hostname but no zone: refused, and no host domain either
    # (nodeLabelsMatchSpreadConstraints), else its 0 pods would make every zoned host's 1 a skew of 2
    nodes = [*NODES, node("zoneless")]
    pods = [web("n1"), web("n2"), web("n3")]
    assert refused(pods, constraint(ZONE), constraint(), nodes=nodes) == {"n1", "n2", "zoneless"}


def test_fewer_domains_than_min_domains_make_the_minimum_zero() -> None:
    one_zone = [node("n1", "z1"), node("n2", "z1")]
    assert refused([web("n1")], constraint(ZONE), nodes=one_zone) == set()  # one domain, its own minimum
    assert refused([web("n1")], constraint(ZONE, minDomains=2), nodes=one_zone) == {"n1", "n2"}


def test_only_pods_of_its_namespace_and_not_terminating_count() -> None:
    assert refused([web("n1", ns="other"), web("n2", terminating=True)], constraint()) == set()


def test_a_pod_its_own_selector_does_not_match_adds_nothing_to_the_skew() -> None:
    assert refused([web("n1")], constraint(), labels={"app": "db"}) == set()


def test_an_empty_selector_counts_no_pod() -> None:
    assert refused([web("n1"), web("n1")], constraint(labelSelector={})) == set()


def test_schedule_anyway_does_not_filter() -> None:
    assert refused([web("n1"), web("n2")], constraint(whenUnsatisfiable="ScheduleAnyway")) == set()


def test_nodes_its_node_affinity_refuses_are_no_domain_unless_the_policy_ignores_them() -> None:
    # n3 is outside the pod's node selector: its empty domain does not lower the minimum (Honor)
    pool = PodPlacement(node_selector=((ZONE, "z1"),))
    assert refused([web("n1")], constraint(), placement=pool) == {"n1"}
    assert refused([web("n1"), web("n2")], constraint(), placement=pool) == set()
    ignore = constraint(nodeAffinityPolicy="Ignore")
    assert refused([web("n1"), web("n2")], ignore, placement=pool) == {"n1", "n2"}


def test_tainted_nodes_count_unless_the_taints_policy_honors_them() -> None:
    taint = Taint("dedicated", "db", "NoSchedule")
    nodes = [node("n1"), node("n2"), node("n3", None, taint)]
    assert refused([web("n1"), web("n2")], constraint(), nodes=nodes) == {"n1", "n2"}
    honor = constraint(nodeTaintsPolicy="Honor")
    assert refused([web("n1"), web("n2")], honor, nodes=nodes) == set()  # n3's empty domain left out
    tolerant = PodPlacement(tolerations=(Toleration("dedicated", "Exists"),))
    assert refused([web("n1"), web("n2")], honor, nodes=nodes, placement=tolerant) == {"n1", "n2"}


def test_a_target_pinned_to_its_node_is_its_own_minimum_which_is_why_dynamem_judges_it_unpinned() -> None:
    """KubeVirt merges the migration's addedNodeSelector (the hostname dynamem picks) into the target pod's
    node selector: under nodeAffinityPolicy Honor the scheduler counts that node's domain alone and never
    refuses it, however skewed the spread becomes."""
    pinned = PodPlacement(node_selector=((HOST, "n2"),))
    assert "n2" not in refused([web("n1"), web("n2")], constraint(), placement=pinned)
    assert "n2" in refused([web("n1"), web("n2")], constraint())


def test_constraints_read_with_their_defaults() -> None:
    (parsed,) = spread_constraints(
        {
            "topologySpreadConstraints": [
                constraint(matchLabelKeys=["tier"]),
                constraint(whenUnsatisfiable="x"),
            ]
        },
        {**WEB, "tier": "gold"},
    )
    assert parsed == SpreadConstraint(
        max_skew=1,
        topology_key=HOST,
        selector=parsed.selector,
        min_domains=1,
        honor_node_affinity=True,
        honor_taints=False,
    )
    assert parsed.selector.matches({**WEB, "tier": "gold"}) and not parsed.selector.matches(WEB)


def test_with_min_domains_over_one_a_pinned_target_must_fit_its_node_alone() -> None:
    """Zones a, b, c with one node each and one web pod on each; maxSkew 1, minDomains 2, by zone. Unpinned
    every zone has 1 and the pod fits anywhere (1 + 1 - 1). Pinned to b1 (dynamem's addedNodeSelector),
    the scheduler counts b1 alone: one domain, fewer than minDomains, so the minimum is 0, and 1 + 1 - 0 is
    over 1: refused. dynamem refused nothing, and the migration failed after 300 s."""
    zones = [node("a1", "a"), node("b1", "b"), node("c1", "c")]
    pods = [web("a1"), web("b1"), web("c1")]
    assert refused(pods, constraint(ZONE, minDomains=2), nodes=zones) == {"a1", "b1", "c1"}
    assert refused(pods[:1], constraint(ZONE, minDomains=2), nodes=zones) == {"a1"}
    assert refused(pods, constraint(ZONE, skew=2, minDomains=2), nodes=zones) == set()
    # counted without the pin when the node affinity policy ignores it: the unpinned view is the scheduler's
    assert refused(pods, constraint(ZONE, minDomains=2, nodeAffinityPolicy="Ignore"), nodes=zones) == set()
