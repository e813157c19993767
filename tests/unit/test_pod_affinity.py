"""Inter-pod affinity as :mod:`dynamem.kube.pod_affinity` plays the kube-scheduler's ``InterPodAffinity``
filter, case by case against Kubernetes v1.34.4's ``interpodaffinity/filtering.go`` (``satisfyPodAffinity``,
``satisfyPodAntiAffinity``, ``satisfyExistingPodsAntiAffinity``) and ``framework/types.go``
(``getNamespacesFromPodAffinityTerm``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from dynamem.kube.objects import pod_view
from dynamem.kube.pod_affinity import InterPodAffinity, LabelRequirement, PlacedPod, PodAffinity, pod_affinity

HOST = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
# three nodes in two zones; node-c has no zone label
NODES = {
    "node-a": {HOST: "node-a", ZONE: "z1"},
    "node-b": {HOST: "node-b", ZONE: "z1"},
    "node-c": {HOST: "node-c"},
    "node-d": {HOST: "node-d", ZONE: "z2"},
}


def term(selector: dict[str, Any] | None, key: str = HOST, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"topologyKey": key, **extra}
    if selector is not None:
        body["labelSelector"] = selector
    return body


def spec(required: Sequence[dict[str, Any]] = (), anti: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    affinity: dict[str, Any] = {}
    if required:
        affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": list(required)}
    if anti:
        affinity["podAntiAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": list(anti)}
    return {"affinity": affinity}


def placed(
    node: str, labels: dict[str, str], anti: Sequence[dict[str, Any]] = (), ns: str = "vms"
) -> PlacedPod:
    return PlacedPod(node, ns, labels, pod_affinity(spec(anti=anti), ns, labels).anti)


def refused(
    pods: list[PlacedPod], labels: dict[str, str], own: dict[str, Any] | None = None, ns: str = "vms"
) -> set[str]:
    return set(InterPodAffinity(NODES, pods).refusals(ns, labels, pod_affinity(own or {}, ns, labels)))


DB = {"app": "db"}


def test_a_pod_without_terms_is_refused_nowhere_without_placed_terms() -> None:
    assert refused([placed("node-a", DB)], DB) == set()


def test_anti_affinity_on_hostname_refuses_the_nodes_with_a_matching_pod() -> None:
    own = spec(anti=[term({"matchLabels": DB})])
    assert refused([placed("node-a", DB), placed("node-b", {"app": "web"})], DB, own) == {"node-a"}


def test_anti_affinity_on_a_zone_refuses_the_zone_and_not_a_node_without_the_key() -> None:
    own = spec(anti=[term({"matchLabels": DB}, ZONE)])
    # node-c lacks the zone label: satisfyPodAntiAffinity skips the term there
    assert refused([placed("node-a", DB)], DB, own) == {"node-a", "node-b"}


def test_a_placed_pods_anti_affinity_refuses_its_domain_to_a_pod_it_matches() -> None:
    guard = placed("node-b", {"app": "web"}, anti=[term({"matchLabels": DB}, ZONE)])
    assert refused([guard], DB) == {"node-a", "node-b"}
    assert refused([guard], {"app": "cache"}) == set()


def test_terms_match_pods_of_their_own_namespace_unless_told_otherwise() -> None:
    own = spec(anti=[term({"matchLabels": DB})])
    assert refused([placed("node-a", DB, ns="other")], DB, own) == set()
    listed = spec(anti=[term({"matchLabels": DB}, namespaces=["other"])])
    assert refused([placed("node-a", DB, ns="other")], DB, listed) == {"node-a"}
    # an empty namespaceSelector selects every namespace; one with labels is read as every namespace too
    for selector in ({}, {"matchLabels": {"team": "x"}}):
        every = spec(anti=[term({"matchLabels": DB}, namespaceSelector=selector)])
        assert refused([placed("node-a", DB, ns="other")], DB, every) == {"node-a"}


def test_a_missing_selector_matches_nothing_and_an_empty_one_everything() -> None:
    assert refused([placed("node-a", DB)], DB, spec(anti=[term(None)])) == set()
    assert refused([placed("node-a", {"x": "y"})], DB, spec(anti=[term({})])) == {"node-a"}


@pytest.mark.parametrize(
    ("requirement", "labels", "matches"),
    [
        (LabelRequirement("app", "In", frozenset({"db", "web"})), {"app": "web"}, True),
        (LabelRequirement("app", "In", frozenset({"db"})), {}, False),
        (LabelRequirement("app", "NotIn", frozenset({"db"})), {}, True),
        (LabelRequirement("app", "NotIn", frozenset({"db"})), {"app": "db"}, False),
        (LabelRequirement("app", "Exists"), {"app": ""}, True),
        (LabelRequirement("app", "DoesNotExist"), {"app": ""}, False),
        (LabelRequirement("app", "Gt", frozenset({"1"})), {"app": "2"}, False),
    ],
)
def test_a_label_requirement_matches_as_labels_requirement_does(
    requirement: LabelRequirement, labels: dict[str, str], matches: bool
) -> None:
    assert requirement.matches(labels) is matches


def test_affinity_needs_a_matching_pod_in_the_domain_and_the_key_on_the_node() -> None:
    own = spec(required=[term({"matchLabels": {"app": "web"}}, ZONE)])
    pods = [placed("node-a", {"app": "web"})]
    # z1 has the web pod: node-a and node-b; node-c has no zone label; z2 has none
    assert refused(pods, DB, own) == {"node-c", "node-d"}


def test_the_first_pod_of_a_group_may_go_anywhere_with_the_key() -> None:
    own = spec(required=[term({"matchLabels": DB}, ZONE)])
    # no pod anywhere matches and the pod matches its own term: allowed where the key is
    assert refused([], DB, own) == {"node-c"}
    # it does not match its own term: refused everywhere
    assert refused([], {"app": "web"}, own) == set(NODES)


def test_match_label_keys_are_merged_from_the_pods_own_labels() -> None:
    own = spec(anti=[term({"matchLabels": DB}, matchLabelKeys=["tenant"])])
    pods = [placed("node-a", {**DB, "tenant": "a"}), placed("node-b", {**DB, "tenant": "b"})]
    assert refused(pods, {**DB, "tenant": "a"}, own) == {"node-a"}
    mismatch = spec(anti=[term({"matchLabels": DB}, mismatchLabelKeys=["tenant"])])
    assert refused(pods, {**DB, "tenant": "a"}, mismatch) == {"node-b"}


def test_pods_on_nodes_not_known_count_nowhere() -> None:
    own = spec(anti=[term({"matchLabels": DB})])
    assert refused([placed("gone", DB)], DB, own) == set()


def test_an_unindexed_selector_is_checked_against_every_pod() -> None:
    # matchExpressions Exists has no single label to look up: every placed pod is checked
    own = spec(anti=[term({"matchExpressions": [{"key": "app", "operator": "Exists"}]})])
    pods = [placed("node-a", DB), placed("node-d", {"app": "web"}), placed("node-b", {"x": "y"})]
    assert refused(pods, DB, own) == {"node-a", "node-d"}
    guard = placed(
        "node-c", {"x": "y"}, anti=[term({"matchExpressions": [{"key": "app", "operator": "Exists"}]})]
    )
    assert refused([guard], DB) == {"node-c"}


def test_no_terms_read_from_a_spec_without_required_ones() -> None:
    preferred = {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{}]}}}
    assert pod_affinity(preferred, "vms", DB) == PodAffinity()
    assert pod_affinity({}, "vms", DB) == PodAffinity()


def test_an_affinity_whose_namespaces_are_selected_by_labels_counts_only_the_listed_ones() -> None:
    """dynamem reads no Namespace: for affinity a labelled namespaceSelector selects none but the listed
    namespaces (fewer nodes admitted than the scheduler may), for anti-affinity every one (more refused)."""
    selector = {"matchLabels": {"team": "a"}}
    own = spec(required=[term({"matchLabels": {"app": "cache"}}, namespaceSelector=selector)])
    cache = [placed("node-a", {"app": "cache"}, ns="other")]
    assert refused(cache, DB, own) == set(NODES)  # not even the first of a group: it is not selected either
    listed = spec(
        required=[term({"matchLabels": {"app": "cache"}}, namespaceSelector=selector, namespaces=["other"])]
    )
    assert refused(cache, DB, listed) == set(NODES) - {"node-a"}


def test_a_pods_terms_are_read_as_created_not_merged_again_with_labels_it_has_now() -> None:
    """The API server merged matchLabelKeys into the term when it made the pod (ver=v1); the pod's label is
    v2 now: its term still refuses a ver=v1 pod."""
    body = {
        "metadata": {"name": "web-1", "namespace": "vms", "labels": {"app": "web", "ver": "v2"}},
        "spec": spec(anti=[term({"matchLabels": {"app": "web"}}, matchLabelKeys=["ver"])]),
    }
    body["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "labelSelector"
    ]["matchExpressions"] = [{"key": "ver", "operator": "In", "values": ["v1"]}]
    (anti,) = pod_view(body).anti
    assert anti.matches("vms", {"app": "web", "ver": "v1"})
