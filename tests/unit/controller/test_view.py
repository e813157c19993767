"""The operator's view (:mod:`dynamem.controller.view`): no ghost survives a fresh LIST (issue 10, item 2).

Bodies carry resourceVersions as etcd makes them (integers); a LIST is taken "at" a version.
"""

from __future__ import annotations

from pytest import MonkeyPatch

from dynamem.controller import view
from dynamem.controller.view import ClusterView, Kind, Store
from dynamem.kube.objects import ObjectKey, pod_view

from .builders_k8s import make_node_body, make_vmm_body


def pod(name: str, version: int, node: str = "n1") -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(version)},
        "spec": {"nodeName": node, "containers": []},
    }


def names(store: Store[object]) -> set[str]:
    return {key.name for key in store.items}


def test_a_fresh_list_drops_what_was_deleted_while_the_watch_was_down() -> None:
    store = Store(pod_view)
    for i, name in enumerate(("a", "b", "c"), start=1):
        store.put(pod(name, i))
    # the watch breaks; "b" is deleted meanwhile; kopf re-lists and replays a and c (no DELETED for b)
    store.put(pod("a", 1))
    store.put(pod("c", 3))
    assert names(store) == {"a", "b", "c"}  # the ghost a re-list alone leaves
    ghosts = store.replace(10, [pod("a", 1), pod("c", 3)])
    assert (ghosts, names(store)) == (1, {"a", "c"})


def test_events_newer_than_the_list_win() -> None:
    store = Store(pod_view)
    store.put(pod("a", 1))
    store.put(pod("old", 2))
    store.put(pod("new", 12))  # created after the list was taken at 10
    store.delete(pod("a", 11))  # deleted after the list
    store.replace(10, [pod("a", 1), pod("old", 7, node="n2")])  # "old" changed while the watch was down
    assert names(store) == {"old", "new"}
    assert store.items[ObjectKey("ns", "old")][1].node == "n2"  # the list's copy


def test_a_fresh_list_keeps_the_view_of_an_unchanged_object_and_remakes_a_changed_one() -> None:
    store = Store(pod_view)
    store.put(pod("same", 1))
    store.put(pod("moved", 2))
    kept = store.items[ObjectKey("ns", "same")][1]
    store.replace(10, [pod("same", 1), pod("moved", 8, node="n2")])
    assert store.items[ObjectKey("ns", "same")][1] is kept  # same resourceVersion: not parsed again
    assert store.items[ObjectKey("ns", "moved")] == (8, pod_view(pod("moved", 8, node="n2")))


def test_a_fresh_list_remakes_views_whose_resource_version_is_not_a_number() -> None:
    store = Store(pod_view)
    store.put({**pod("odd", 1), "metadata": {"name": "odd", "namespace": "ns", "resourceVersion": "x"}})
    store.replace(10, [{**pod("odd", 1, node="n2"), "metadata": {"name": "odd", "namespace": "ns"}}])
    assert store.items[ObjectKey("ns", "odd")][1].node == "n2"


def test_an_older_copy_never_replaces_a_newer_one_nor_revives_a_deleted_one() -> None:
    store = Store(pod_view)
    store.put(pod("a", 5, node="n2"))
    store.put(pod("a", 3, node="n1"))  # a replay of the past
    assert store.items[ObjectKey("ns", "a")][1].node == "n2"
    store.delete(pod("a", 6))
    store.put(pod("a", 5))
    assert names(store) == set()


def test_a_listing_event_after_the_first_sync_asks_for_a_list_of_its_kind() -> None:
    now = [100.0]
    view = ClusterView(clock=lambda: now[0])
    vmm = make_vmm_body("x")
    vmm["metadata"]["resourceVersion"] = "4"
    view.apply_event(Kind.VMM, None, vmm)  # kopf's initial listing: before our own first LIST
    assert view.kinds_to_list() == set(Kind)  # not synced yet: everything
    view.replace({kind: (5, [vmm] if kind is Kind.VMM else []) for kind in Kind})
    assert not view.needs_resync and view.kinds_to_list() == set()
    now[0] += 60
    view.apply_event(Kind.VMM, "MODIFIED", vmm)
    assert view.kinds_to_list() == set()
    view.apply_event(Kind.VMM, None, vmm)  # kopf listed again: its watch broke or ended
    assert view.kinds_to_list() == {Kind.VMM}
    assert view.kinds_to_list() == set()  # asked once


def vm(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "3"}}


def test_a_replay_of_many_objects_asks_once_and_a_later_re_list_asks_again() -> None:
    now = [100.0]
    view = ClusterView(clock=lambda: now[0])
    view.replace({kind: (5, []) for kind in Kind})
    now[0] += 300
    for i in range(1000):  # one re-list replayed over 20 s, the loop listing once in the middle of it
        view.apply_event(Kind.VM, None, vm(f"vm{i}"))
        if i == 500:
            assert view.kinds_to_list() == {Kind.VM}
        now[0] += 0.02
    assert view.kinds_to_list() == set()  # the rest of that replay is older than the LIST just taken
    now[0] += 300
    view.apply_event(Kind.VM, None, vm("vm0"))
    assert view.kinds_to_list() == {Kind.VM}


def test_every_kind_is_listed_after_an_error_until_a_list_of_all_of_them_lands() -> None:
    view = ClusterView()
    view.replace({kind: (5, []) for kind in Kind})
    view.needs_resync = True  # a round met an API error
    assert view.kinds_to_list() == set(Kind)
    view.replace({Kind.VM: (6, [])})
    assert view.needs_resync  # one kind is not all of them
    view.replace({kind: (7, []) for kind in Kind})
    assert not view.needs_resync


def test_a_copy_that_changes_nothing_dynamem_reads_keeps_the_view_and_says_so() -> None:
    store = Store(pod_view)
    assert store.put(pod("a", 1))  # new
    held = store.items[ObjectKey("ns", "a")][1]
    assert not store.put(pod("a", 2))  # a new version, the same view (a heartbeat): not news
    assert store.items[ObjectKey("ns", "a")] == (2, pod_view(pod("a", 2)))
    assert store.items[ObjectKey("ns", "a")][1] is held
    assert store.put(pod("a", 3, node="n2"))  # what dynamem reads changed
    assert not store.put(pod("a", 2))  # older
    assert store.delete(pod("a", 4))
    assert not store.delete(pod("a", 4))  # already gone


def test_a_node_heartbeat_does_not_change_the_view_but_a_new_allocatable_does() -> None:
    view = ClusterView()
    node = make_node_body("n1", allocatable="8Gi")
    node["metadata"]["resourceVersion"] = "1"
    assert view.apply_event(Kind.NODE, "ADDED", node)
    heartbeat = {**node, "metadata": {**node["metadata"], "resourceVersion": "2"}}
    heartbeat["status"] = {**node["status"], "conditions": [{"type": "Ready", "lastHeartbeatTime": "now"}]}
    assert not view.apply_event(Kind.NODE, "MODIFIED", heartbeat)
    bigger = make_node_body("n1", allocatable="16Gi")
    bigger["metadata"]["resourceVersion"] = "3"
    assert view.apply_event(Kind.NODE, "MODIFIED", bigger)


def test_a_round_at_rest_gets_the_same_observed_again_and_a_change_or_list_makes_it_anew() -> None:
    """A round's ``observed`` is kept while no view changed (10,000 VMs are not listed again every round);
    an event that changes a view, a deletion, or a LIST that drops or replaces one makes it anew."""
    view = ClusterView()
    view.apply_event(Kind.POD, "ADDED", pod("a", 1))
    view.apply_event(Kind.POD, "ADDED", pod("b", 2))
    first = view.observed()
    assert view.observed() is first
    assert not view.apply_event(Kind.POD, "MODIFIED", pod("a", 3))  # the same view at a new version
    assert view.observed() is first
    assert view.apply_event(Kind.POD, "MODIFIED", pod("a", 4, node="n2"))
    moved = view.observed()
    assert moved is not first and {p.node for p in moved.pods} == {"n1", "n2"}
    view.stores[Kind.POD].replace(10, [pod("a", 4, node="n2"), pod("b", 2)])  # the same objects
    assert view.observed() is moved
    view.stores[Kind.POD].replace(11, [pod("a", 4, node="n2")])  # b deleted while a watch was down
    assert [p.key.name for p in view.observed().pods] == ["a"]
    view.apply_event(Kind.POD, "DELETED", pod("a", 12, node="n2"))
    assert list(view.observed().pods) == []


def test_a_list_that_changes_nothing_keeps_the_observed_even_with_newer_events_held() -> None:
    """A LIST older than an event the store holds keeps that event's view as it was: no view changed."""
    view = ClusterView()
    view.apply_event(Kind.POD, "ADDED", pod("a", 5))
    view.apply_event(Kind.POD, "ADDED", pod("b", 6))  # newer than the LIST below
    first = view.observed()
    view.stores[Kind.POD].replace(5, [pod("a", 5)])
    assert view.observed() is first


def test_a_pod_with_no_node_yet_is_observed() -> None:
    """A launcher waiting to start (unschedulable while no node has room) has no node: a round must see it,
    to keep or make the hole it needs (the operator once left such pods out, so it never made room)."""
    view = ClusterView()
    waiting = pod("virt-launcher-big", 1)
    waiting["spec"] = {"containers": []}
    view.apply_event(Kind.POD, "ADDED", waiting)
    view.apply_event(Kind.POD, "ADDED", pod("virt-launcher-web", 2))
    assert sorted((p.key.name, p.node) for p in view.observed().pods) == [
        ("virt-launcher-big", None),
        ("virt-launcher-web", "n1"),
    ]


def test_a_standby_that_never_lists_keeps_a_bounded_number_of_tombstones(monkeypatch: MonkeyPatch) -> None:
    """A standby replica watches every pod of the cluster but lists only once it leads: each deleted pod
    left a tombstone for ever (12.5 MiB per 50,000 pods). The newest are kept, the oldest go."""
    monkeypatch.setattr(view, "MAX_TOMBSTONES", 100)
    store = Store(pod_view)
    for i in range(1, 1001):
        store.put(pod(f"p{i}", 2 * i))
        store.delete(pod(f"p{i}", 2 * i + 1))
    assert len(store.deleted) <= 100 and len(store.items) == 0
    assert ObjectKey("ns", "p1000") in store.deleted  # the newest deletion is remembered
    assert not store.put(pod("p1000", 2000))  # and a stale copy of it is still refused
