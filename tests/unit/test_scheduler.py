"""The kube-scheduler stand-in: NodeResourcesFit filter, LeastAllocated score, ties by name, FitError text."""

from __future__ import annotations

import pytest

from dynamem.policy import GiB
from dynamem.sim.scheduler import least_allocated_score, place_pod


@pytest.mark.parametrize(
    ("requested", "allocatable", "score"),
    [
        pytest.param(0, 8 * GiB, 100, id="empty"),
        pytest.param(2 * GiB, 8 * GiB, 75, id="quarter"),  # (8 - 2) * 100 // 8
        pytest.param(3 * GiB, 8 * GiB, 62, id="truncates"),  # 500 // 8 = 62.5 -> 62, as upstream (int64)
        pytest.param(8 * GiB, 8 * GiB, 0, id="full"),
        pytest.param(9 * GiB, 8 * GiB, 0, id="over"),
        pytest.param(1, 0, 0, id="no-capacity"),
    ],
)
def test_least_allocated_score(requested: int, allocatable: int, score: int) -> None:
    assert least_allocated_score(requested, allocatable) == score


def test_picks_the_least_allocated_node_that_fits() -> None:
    # 2Gi pod: a (8Gi, 5Gi used) -> (8-7)*100//8 = 12; b (8Gi, 1Gi) -> 62; c (4Gi, 3Gi) does not fit.
    memory = {"a": 8 * GiB, "b": 8 * GiB, "c": 4 * GiB}
    used = {"a": 5 * GiB, "b": GiB, "c": 3 * GiB}
    placement = place_pod(2 * GiB, memory, used)
    assert placement.node == "b" and "score 62" in placement.reason


def test_ties_go_to_the_first_name_and_the_source_is_never_chosen() -> None:
    memory = {"z": 8 * GiB, "m": 8 * GiB, "a": 8 * GiB}
    assert place_pod(GiB, memory, {}).node == "a"
    assert place_pod(GiB, memory, {}, avoid="a").node == "m"
    assert place_pod(GiB, memory, {}, avoid="a", only="z").node == "z"


def test_unschedulable_says_why_like_the_scheduler() -> None:
    memory = {"a": 8 * GiB, "b": 2 * GiB, "c": 8 * GiB}
    placement = place_pod(4 * GiB, memory, {"c": 6 * GiB}, avoid="a")
    assert placement.node is None
    assert placement.reason == (
        "0/3 nodes are available: 2 Insufficient memory, 1 node(s) didn't match pod anti-affinity rules."
    )
    only = place_pod(GiB, memory, {}, avoid="a", only="a")
    assert only.node is None and "didn't match Pod's node affinity/selector" in only.reason
