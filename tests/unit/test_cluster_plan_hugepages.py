"""Room per resource in the cluster plan: a hugepage VM's guest is requested as ``hugepages-<size>`` (KubeVirt
v1.7.0 ``renderresources.go``, ``WithHugePages``), its ``memory`` request is its overhead only. So its growth
needs hugepage room on the target and none of the node's ``memory``; a plain VM's growth needs ``memory``
and no hugepages. Builders take GiB; each case says its arithmetic."""

from __future__ import annotations

from dynamem.policy import BalanceConfig, GiB, VmLimits
from dynamem.policy.cluster import ClusterNode, ClusterState, ClusterVm, plan_cluster

CONFIG = BalanceConfig()
PAGES = "hugepages-2Mi"


def make_vm(
    name: str, node: str, *, size: float = 2, demand: float = 3, pages: str | None = PAGES
) -> ClusterVm:
    """A VM of ``size`` GiB whose true demand is ``demand`` GiB, with 0.25 GiB of launcher overhead."""
    assigned = round(size * GiB)
    return ClusterVm(
        name=name,
        node=node,
        limits=VmLimits(GiB, GiB, 16 * GiB, 10, 50),
        assigned=assigned,
        request=assigned + GiB // 4,
        boot_memory=GiB,
        used=assigned,
        demand=round(demand * GiB),
        pages=pages,
    )


def node(name: str, memory: float, requested: float, pages: tuple[float, float] | None = None) -> ClusterNode:
    """``pages``: (allocatable, requested) GiB of hugepages-2Mi."""
    hugepages = () if pages is None else ((PAGES, round(pages[0] * GiB), round(pages[1] * GiB)),)
    return ClusterNode(name, round(memory * GiB), round(requested * GiB), hugepages)


def target_of(state: ClusterState, vm: str) -> tuple[str | None, int]:
    (decision,) = [d for d in plan_cluster(state, CONFIG, now=0.0).decisions if d.name == vm]
    return decision.target_node, decision.assigned


def test_a_hugepage_vm_grows_only_where_hugepages_have_room_not_where_memory_does() -> None:
    # db: 2Gi of hugepages on "home" (its memory request 0.25Gi), demand 3Gi: wants 3Gi + 10 % buffer.
    # "wide": 60Gi of memory free, no hugepages; "paged": 1Gi of memory free, 8Gi of hugepages free.
    db = make_vm("db", "home")
    state = ClusterState(
        nodes=(
            node("home", 8, 0.25, pages=(2, 2)),
            node("paged", 8, 7, pages=(8, 0)),
            node("wide", 64, 4),
        ),
        vms=(db,),
    )
    target, size = target_of(state, "db")
    assert target == "paged"  # its guest takes no memory there: 0.25Gi of overhead fits in 1Gi free
    assert size > 3 * GiB


def test_a_hugepage_vm_is_not_grown_where_the_overhead_does_not_fit() -> None:
    # "paged": 8Gi of hugepages free, 0.125Gi of memory: the launcher's 0.25Gi overhead does not fit
    db = make_vm("db", "home")
    state = ClusterState(
        nodes=(
            node("home", 8, 0.25, pages=(2, 2)),
            node("paged", 8, 7.875, pages=(8, 0)),
            node("wide", 64, 4),
        ),
        vms=(db,),
    )
    target, size = target_of(state, "db")
    assert target is None and size == 2 * GiB


def test_a_plain_vm_does_not_take_hugepage_room() -> None:
    # web (plain) pages: "paged" has 8Gi of hugepages but 1Gi of memory; "wide" has 60Gi of memory
    web = make_vm("web", "home", pages=None)
    state = ClusterState(
        nodes=(node("home", 8, 2.25), node("paged", 8, 7, pages=(8, 0)), node("wide", 64, 4)), vms=(web,)
    )
    target, size = target_of(state, "web")
    assert target == "wide" and size > 3 * GiB


def test_a_hugepage_vm_is_sized_against_the_clusters_hugepages_and_grown_as_far_as_they_go() -> None:
    # db wants 6Gi (+ buffer); the cluster's other node has 3Gi of hugepages free and plenty of memory:
    # it is sized against the cluster's 5Gi of hugepages (against its memory it would want 6.67Gi) and grows
    # to 3Gi there, the most that fits; its guest never counts against the 64Gi of memory
    db = make_vm("db", "home", demand=6)
    state = ClusterState(
        nodes=(node("home", 8, 0.25, pages=(2, 2)), node("other", 64, 0, pages=(3, 0))),
        vms=(db,),
    )
    (decision,) = plan_cluster(state, CONFIG, now=0.0).decisions
    assert decision.target_node == "other" and decision.assigned == 3 * GiB
    assert "as much as fits: 3Gi of 5Gi" in decision.reason


def test_memory_vms_and_hugepage_vms_are_sized_apart() -> None:
    # 16Gi of memory, 0.5Gi of it overheads. db (hugepages) wants 12Gi, web (plain) 3Gi: counted together,
    # 15Gi of demand plus buffers would not fit 15.5Gi and web's buffer would be shared out with db's. Apart,
    # web has the memory to itself, db only the 2Gi of hugepages free: web's plan is as if db were not there
    db = make_vm("db", "home", demand=12)
    web = make_vm("web", "home", pages=None)
    nodes = (node("home", 8, 2.5, pages=(2, 2)), node("other", 8, 0, pages=(2, 0)))
    decisions = {d.name: d for d in plan_cluster(ClusterState(nodes, (db, web)), CONFIG, now=0.0).decisions}
    alone = plan_cluster(ClusterState(nodes, (web,)), CONFIG, now=0.0).decisions[0]
    assert decisions["web"].assigned == alone.assigned and decisions["web"].target_node == "other"
    assert decisions["web"].assigned > 3 * GiB
    assert decisions["db"].assigned <= 2 * GiB  # no more hugepages than the cluster has free
