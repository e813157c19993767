"""The kube-scheduler's filters as :mod:`dynamem.kube.scheduling` plays them, case by case, each against the
Kubernetes v1.34 source it follows (``Toleration.ToleratesTaint``, ``TaintToleration.Filter``,
``NodeUnschedulable.Filter``, ``nodeaffinity.GetRequiredNodeAffinity``)."""

from __future__ import annotations

from typing import Any

import pytest

from dynamem.kube.scheduling import (
    NodeRequirement,
    NodeSelectorTerm,
    PodPlacement,
    SchedulingNode,
    Taint,
    Toleration,
    eligible,
    pod_placement,
)

GPU = Taint("dedicated", "gpu", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "taint", "tolerated"),
    [
        pytest.param(Toleration("dedicated", "Equal", "gpu", "NoSchedule"), GPU, True, id="equal-same-value"),
        pytest.param(Toleration("dedicated", "", "gpu"), GPU, True, id="empty-operator-is-equal-any-effect"),
        pytest.param(
            Toleration("dedicated", "Equal", "db", "NoSchedule"), GPU, False, id="equal-other-value"
        ),
        pytest.param(Toleration("dedicated", "Exists"), GPU, True, id="exists-any-value"),
        pytest.param(Toleration("", "Exists"), GPU, True, id="empty-key-exists-tolerates-all"),
        pytest.param(Toleration("other", "Exists"), GPU, False, id="other-key"),
        pytest.param(Toleration("dedicated", "Exists", effect="NoExecute"), GPU, False, id="other-effect"),
        pytest.param(
            Toleration("dedicated", "Gt", "1"), Taint("dedicated", "2", "NoSchedule"), False, id="bad-op"
        ),
        # an operator Kubernetes does not know tolerates nothing, not even a taint of the same value
        pytest.param(
            Toleration("dedicated", "Gt", "2"), Taint("dedicated", "2", "NoSchedule"), False, id="bad-op-same"
        ),
        # an empty operator is Equal, not Exists
        pytest.param(Toleration("dedicated", "", "db"), GPU, False, id="empty-operator-other-value"),
    ],
)
def test_a_toleration_tolerates_a_taint_as_kubernetes_says(
    toleration: Toleration, taint: Taint, tolerated: bool
) -> None:
    assert toleration.tolerates(taint) is tolerated


def node(
    name: str = "a", labels: dict[str, str] | None = None, *taints: Taint, cordoned: bool = False
) -> SchedulingNode:
    return SchedulingNode(name, labels or {}, taints, cordoned)


@pytest.mark.parametrize(
    ("pod", "target", "refused_by"),
    [
        pytest.param(PodPlacement(), node(), None, id="nothing-asked-anything-goes"),
        pytest.param(PodPlacement(), node("a", None, GPU), "TaintToleration", id="untolerated-noschedule"),
        pytest.param(
            PodPlacement(), node("a", None, Taint("k", "v", "NoExecute")), "TaintToleration", id="noexecute"
        ),
        pytest.param(
            PodPlacement(),
            node("a", None, Taint("k", "v", "PreferNoSchedule")),
            None,
            id="prefer-only-scores",
        ),
        pytest.param(
            PodPlacement(tolerations=(Toleration("dedicated", "Exists"),)),
            node("a", None, GPU),
            None,
            id="tolerated",
        ),
        pytest.param(PodPlacement(), node(cordoned=True), "NodeUnschedulable", id="cordoned"),
        pytest.param(
            PodPlacement(
                tolerations=(Toleration("node.kubernetes.io/unschedulable", "Exists", effect="NoSchedule"),)
            ),
            node(cordoned=True),
            None,
            id="cordon-tolerated",
        ),
        pytest.param(
            PodPlacement(tolerations=(Toleration("dedicated", "Exists"),)),
            node(cordoned=True),
            "NodeUnschedulable",
            id="cordon-not-tolerated-by-another",
        ),
        pytest.param(
            PodPlacement(node_selector=(("pool", "x"),)),
            node("a", {"pool": "y"}),
            "NodeAffinity",
            id="selector",
        ),
        pytest.param(
            PodPlacement(node_selector=(("pool", "x"),)), node("a", {"pool": "x"}), None, id="selected"
        ),
        pytest.param(PodPlacement(required_terms=()), node(), "NodeAffinity", id="no-terms-match-nothing"),
        pytest.param(
            PodPlacement(required_terms=(NodeSelectorTerm(),)),
            node(),
            "NodeAffinity",
            id="empty-term-nothing",
        ),
    ],
)
def test_the_filters_refuse_a_node_as_the_scheduler_does(
    pod: PodPlacement, target: SchedulingNode, refused_by: str | None
) -> None:
    why = eligible(pod, target)
    assert (why is None) if refused_by is None else (why is not None and why.startswith(refused_by))


LABELS = {"zone": "a", "cores": "16", "gen": "x"}


@pytest.mark.parametrize(
    ("requirement", "matches"),
    [
        pytest.param(NodeRequirement("zone", "In", ("a", "b")), True, id="in"),
        pytest.param(NodeRequirement("zone", "In", ("b",)), False, id="in-other"),
        pytest.param(NodeRequirement("absent", "In", ("a",)), False, id="in-absent"),
        pytest.param(NodeRequirement("zone", "NotIn", ("b",)), True, id="notin"),
        pytest.param(NodeRequirement("zone", "NotIn", ("a",)), False, id="notin-same"),
        pytest.param(NodeRequirement("absent", "NotIn", ("a",)), True, id="notin-absent-label-matches"),
        pytest.param(NodeRequirement("zone", "Exists"), True, id="exists"),
        pytest.param(NodeRequirement("absent", "Exists"), False, id="exists-absent"),
        pytest.param(NodeRequirement("absent", "DoesNotExist"), True, id="doesnotexist"),
        pytest.param(NodeRequirement("zone", "DoesNotExist"), False, id="doesnotexist-present"),
        pytest.param(NodeRequirement("cores", "Gt", ("8",)), True, id="gt-16>8"),
        pytest.param(NodeRequirement("cores", "Gt", ("16",)), False, id="gt-16>16-no"),
        pytest.param(NodeRequirement("cores", "Lt", ("32",)), True, id="lt-16<32"),
        pytest.param(NodeRequirement("gen", "Gt", ("1",)), False, id="gt-label-not-integer"),
        pytest.param(NodeRequirement("absent", "Lt", ("1",)), False, id="lt-absent"),
        pytest.param(NodeRequirement("cores", "Gt", ("1", "2")), False, id="gt-two-values-unparsable"),
        # strconv.ParseInt: a sign and ASCII digits within int64; Python's int() also took these
        pytest.param(NodeRequirement("cores", "Gt", ("1_0",)), False, id="gt-underscore-not-integer"),
        pytest.param(NodeRequirement("cores", "Gt", (" 8",)), False, id="gt-space-not-integer"),
        pytest.param(NodeRequirement("cores", "Gt", ("+8",)), True, id="gt-signed"),
        pytest.param(NodeRequirement("cores", "Lt", (str(2**63),)), False, id="lt-beyond-int64"),
        pytest.param(NodeRequirement("zone", "Near", ("a",)), False, id="unknown-operator"),
        # a requirement the scheduler cannot parse matches nothing, even where its operator alone would match
        pytest.param(NodeRequirement("absent", "NotIn", ()), False, id="notin-no-values-unparsable"),
        pytest.param(NodeRequirement("zone", "Exists", ("a",)), False, id="exists-with-values-unparsable"),
    ],
)
def test_a_match_expression_on_node_labels(requirement: NodeRequirement, matches: bool) -> None:
    term = NodeSelectorTerm(match_expressions=(requirement,))
    assert term.matches("a", LABELS) is matches


def test_terms_are_ored_expressions_and_fields_anded() -> None:
    in_zone_a = NodeRequirement("zone", "In", ("a",))
    named_b = NodeRequirement("metadata.name", "In", ("b",))
    not_named_a = NodeRequirement("metadata.name", "NotIn", ("a",))
    pod = PodPlacement(
        required_terms=(
            NodeSelectorTerm(match_expressions=(in_zone_a,), match_fields=(not_named_a,)),
            NodeSelectorTerm(match_fields=(named_b,)),
        )
    )
    assert eligible(pod, node("a", {"zone": "a"})) is not None  # zone a but named a; not named b
    assert eligible(pod, node("c", {"zone": "a"})) is None  # first term
    assert eligible(pod, node("b", {"zone": "z"})) is None  # second term
    assert eligible(pod, node("d", {"zone": "z"})) is not None
    wrong_field = NodeSelectorTerm(match_fields=(NodeRequirement("metadata.uid", "In", ("b",)),))
    assert eligible(PodPlacement(required_terms=(wrong_field,)), node("b")) is not None  # only metadata.name


def test_a_vmi_spec_read_for_placement() -> None:
    spec: dict[str, Any] = {
        "nodeSelector": {"pool": "x"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]},
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [],
            }
        },
    }
    placement = pod_placement(spec, {"kubevirt.io/schedulable": "true", "pool": "ignored"})
    assert placement.node_selector == (("kubevirt.io/schedulable", "true"), ("pool", "x"))
    assert placement.tolerations == (Toleration("dedicated", "Exists", "", "NoSchedule"),)
    assert placement.required_terms == (
        NodeSelectorTerm(match_expressions=(NodeRequirement("cores", "Gt", ("8",)),)),
        NodeSelectorTerm(match_fields=(NodeRequirement("metadata.name", "In", ("b",)),)),
    )
    assert pod_placement({}).required_terms is None  # no node affinity: no constraint
    assert pod_placement({"affinity": {"podAntiAffinity": {}}}).required_terms is None
