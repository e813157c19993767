"""The operator's view of the cluster: kopf's watch events, reconciled with fresh LISTs, so no ghost stays.

kopf watches each resource and hands every event to :meth:`ClusterView.apply_event`; after a watch breaks
(410 Gone, an API server restart) kopf lists again and replays what the list holds, but it never says which
objects vanished meanwhile. A view that only applies events keeps those forever: deleted launcher pods
shrinking a node, deleted VMIs counted as running, a deleted VirtualMachineMemory's VM still written.

So the view is reconciled the way client-go's informers do it (``tools/cache/reflector.go``,
``ListAndWatch`` then ``Replace``): :meth:`ClusterView.replace` takes a fresh LIST at a resourceVersion and
makes it the truth, keeping only what a watch event newer than that list says (an update or a deletion that
arrived while the list was on its way). The loop calls it at start, when this replica becomes leader, after
kopf re-lists (a listing event once the view is synced), after a round hit an API error, and every resync
period. Resource versions are compared as the integers etcd makes them; one that is not is treated as oldest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from dynamem.controller.migrations import migration_view, with_failed_migrations
from dynamem.controller.snapshot import Observed, vmm_view
from dynamem.kube.objects import Body, ObjectKey, dig, node_view, pod_view, vm_view, vmi_view

V = TypeVar("V")


class Kind(StrEnum):
    VMM = "virtualmachinememories"
    VM = "virtualmachines"
    VMI = "virtualmachineinstances"
    NODE = "nodes"
    POD = "pods"
    MIGRATION = "virtualmachineinstancemigrations"


def resource_version(body: Body) -> int:
    try:
        return int(str(dig(body, "metadata", "resourceVersion")))
    except ValueError:
        return 0


def _key(body: Body) -> ObjectKey:
    return ObjectKey.of(body)


@dataclass
class Store(Generic[V]):
    """Views of one resource by key, each with the resourceVersion it was made from, and recent deletions."""

    make: Callable[[Body], V]
    items: dict[ObjectKey, tuple[int, V]] = field(default_factory=dict)
    deleted: dict[ObjectKey, int] = field(default_factory=dict)  # tombstones: key -> deletion's version

    def put(self, body: Body) -> None:
        key, version = _key(body), resource_version(body)
        held = self.items.get(key)
        if held is not None and held[0] > version:
            return  # an older copy than the one we have (a re-list replaying the past)
        if self.deleted.get(key, -1) >= version:
            return  # deleted after this copy was made
        self.deleted.pop(key, None)
        self.items[key] = (version, self.make(body))

    def delete(self, body: Body) -> None:
        key, version = _key(body), resource_version(body)
        held = self.items.get(key)
        if held is None or held[0] <= version:
            self.items.pop(key, None)
        self.deleted[key] = max(version, self.deleted.get(key, -1))

    def replace(self, list_version: int, bodies: Iterable[Body]) -> int:
        """Make a LIST taken at ``list_version`` the truth; returns how many ghosts were dropped."""
        fresh: dict[ObjectKey, tuple[int, V]] = {}
        for body in bodies:
            key, version = _key(body), resource_version(body)
            held = self.items.get(key)
            # the same resourceVersion is the same object: keep its view (a LIST of 40,000 objects would
            # otherwise parse every one again, and every VM's join would be made again next round)
            same = held is not None and version > 0 and held[0] == version
            fresh[key] = held if same and held is not None else (version, self.make(body))
        for key, (version, view) in self.items.items():
            if version > list_version:  # a watch event newer than the list
                fresh[key] = (version, view)
        for key, version in self.deleted.items():
            if version > list_version:
                fresh.pop(key, None)
        ghosts = sum(1 for key in self.items if key not in fresh)
        self.items = fresh
        self.deleted = {k: v for k, v in self.deleted.items() if v > list_version}
        return ghosts

    def values(self) -> list[V]:
        return [view for _, view in self.items.values()]

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class ClusterView:
    """The six resources a round reads, kept as small typed views."""

    stores: Mapping[Kind, Store[Any]] = field(
        default_factory=lambda: {
            Kind.VMM: Store(vmm_view),
            Kind.VM: Store(vm_view),
            Kind.VMI: Store(vmi_view),
            Kind.NODE: Store(node_view),
            Kind.POD: Store(pod_view),
            Kind.MIGRATION: Store(migration_view),
        }
    )
    synced: bool = False  # a full LIST has been applied
    needs_resync: bool = True

    def apply_event(self, kind: Kind, event_type: str | None, body: Body) -> None:
        """One kopf event. A listing event (type None) once synced means kopf re-listed: resync."""
        store = self.stores[kind]
        if event_type == "DELETED":
            store.delete(body)
        else:
            store.put(body)
        if event_type is None and self.synced:
            self.needs_resync = True

    def replace(self, lists: Mapping[Kind, tuple[int, Iterable[Body]]]) -> dict[Kind, int]:
        """Fresh LISTs of every kind; returns the ghosts dropped per kind."""
        ghosts = {
            kind: self.stores[kind].replace(version, bodies) for kind, (version, bodies) in lists.items()
        }
        self.synced = True
        self.needs_resync = False
        return ghosts

    def observed(self) -> Observed:
        return Observed(
            vmms=self.stores[Kind.VMM].values(),
            vms=self.stores[Kind.VM].values(),
            vmis=with_failed_migrations(self.stores[Kind.VMI].values(), self.stores[Kind.MIGRATION].values()),
            nodes=self.stores[Kind.NODE].values(),
            pods=[pod for pod in self.stores[Kind.POD].values() if pod.node],
            migrations=self.stores[Kind.MIGRATION].values(),
        )
