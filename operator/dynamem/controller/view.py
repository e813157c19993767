"""The operator's view of the cluster: kopf's watch events, reconciled with fresh LISTs, so no ghost stays.

kopf watches each resource and hands every event to :meth:`ClusterView.apply_event`; after a watch breaks
(410 Gone, an API server restart) kopf lists again and replays what the list holds, but it never says which
objects vanished meanwhile. A view that only applies events keeps those forever: deleted launcher pods
shrinking a node, deleted VMIs counted as running, a deleted VirtualMachineMemory's VM still written.

So the view is reconciled the way client-go's informers do it (``tools/cache/reflector.go``,
``ListAndWatch`` then ``Replace``): :meth:`ClusterView.replace` takes a fresh LIST at a resourceVersion and
makes it the truth, keeping only what a watch event newer than that list says (an update or a deletion that
arrived while the list was on its way). The loop lists every kind at start, when this replica becomes leader,
after a round hit an API error, and every resync period; and a kind kopf re-listed (the first listing event
after a pause of :data:`RELIST_GAP_S`, once the view is synced) once per re-list. A LIST that keeps an
object at the resourceVersion already held keeps its view, so a round after it joins nothing again.
Resource versions are compared as the integers etcd makes them; one that is not is treated as oldest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from dynamem.controller.migrations import migration_view, with_failed_migrations
from dynamem.controller.snapshot import Observed, vmm_view
from dynamem.kube.objects import Body, ObjectKey, dig, node_view, pod_view, vm_view, vmi_view
from dynamem.kube.volumes import claim_view, volume_view

V = TypeVar("V")


class Kind(StrEnum):
    VMM = "virtualmachinememories"
    VM = "virtualmachines"
    VMI = "virtualmachineinstances"
    NODE = "nodes"
    POD = "pods"
    MIGRATION = "virtualmachineinstancemigrations"
    CLAIM = "persistentvolumeclaims"
    VOLUME = "persistentvolumes"


def resource_version(body: Body) -> int:
    try:
        return int(str(dig(body, "metadata", "resourceVersion")))
    except ValueError:
        return 0


def _key(body: Body) -> ObjectKey:
    return ObjectKey.of(body)


MAX_TOMBSTONES = 20_000  # deletions remembered per kind between LISTs (:meth:`Store.delete`)


@dataclass
class Store(Generic[V]):
    """Views of one resource by key, each with the resourceVersion it was made from, and recent deletions."""

    make: Callable[[Body], V]
    items: dict[ObjectKey, tuple[int, V]] = field(default_factory=dict)
    deleted: dict[ObjectKey, int] = field(default_factory=dict)  # tombstones: key -> deletion's version
    changes: int = 0  # how many times the views changed: what :meth:`values` gave stands while this does
    _values: tuple[int, tuple[V, ...]] | None = None

    def put(self, body: Body) -> bool:
        """Keep this copy unless it is older than the one held; returns whether the view changed."""
        key, version = _key(body), resource_version(body)
        held = self.items.get(key)
        if held is not None and held[0] > version:
            return False  # an older copy than the one we have (a re-list replaying the past)
        if self.deleted.get(key, -1) >= version:
            return False  # deleted after this copy was made
        self.deleted.pop(key, None)
        view = self.make(body)
        if held is not None and held[1] == view:
            # what dynamem reads is the same (a node's heartbeat, a replayed copy): keep the view held
            self.items[key] = (version, held[1])
            return False
        self.items[key] = (version, view)
        self.changes += 1
        return True

    def delete(self, body: Body) -> bool:
        """Forget the object (unless a newer copy is held); returns whether the view changed."""
        key, version = _key(body), resource_version(body)
        held = self.items.get(key)
        dropped = held is not None and held[0] <= version
        if dropped:
            self.items.pop(key, None)
            self.changes += 1
        self.deleted[key] = max(version, self.deleted.pop(key, -1))  # re-inserted: the newest last
        if len(self.deleted) > MAX_TOMBSTONES:
            self._drop_oldest_tombstones()
        return dropped

    def _drop_oldest_tombstones(self) -> None:
        """Keep the newer half of the tombstones. A LIST (:meth:`replace`) drops the tombstones it covers,
        but a standby replica lists only when it leads, while every pod of a busy cluster that goes leaves
        one: without a bound they would grow for ever. A copy older than a dropped tombstone could come back
        only from a re-list replay, which a leader's periodic LIST corrects, and a new leader lists first."""
        keep = list(self.deleted.items())[len(self.deleted) // 2 :]
        self.deleted = dict(keep)

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
        for key, entry in self.items.items():
            if entry[0] > list_version:  # a watch event newer than the list
                fresh[key] = entry
        for key, version in self.deleted.items():
            if version > list_version:
                fresh.pop(key, None)
        ghosts = sum(1 for key in self.items if key not in fresh)
        if (
            ghosts
            or len(fresh) != len(self.items)
            or any(self.items.get(k) is not v for k, v in fresh.items())
        ):
            self.changes += 1
        self.items = fresh
        self.deleted = {k: v for k, v in self.deleted.items() if v > list_version}
        return ghosts

    def values(self) -> tuple[V, ...]:
        """The views, in a tuple kept until they change (a round at rest at 10,000 VMs lists them again)."""
        if self._values is None or self._values[0] != self.changes:
            self._values = (self.changes, tuple(view for _, view in self.items.values()))
        return self._values[1]

    def __len__(self) -> int:
        return len(self.items)


# kopf replays a re-list as a burst of listing events, one per object (30,000 and more at 10,000 VMs, over
# tens of seconds when busy). The first listing event after a pause this long starts a new re-list.
RELIST_GAP_S = 5.0


@dataclass
class ClusterView:
    """The eight resources a round reads, kept as small typed views.

    ``needs_resync``: every kind is to be listed afresh (at start, a new term, after an API error).
    ``relisted``: the kinds kopf re-listed since: each is listed afresh once per re-list, not once per
    listing event, so a replay of 10,000 objects costs one LIST of that kind, not a LIST of everything
    every round while the replay lasts.
    """

    stores: Mapping[Kind, Store[Any]] = field(
        default_factory=lambda: {
            Kind.VMM: Store(vmm_view),
            Kind.VM: Store(vm_view),
            Kind.VMI: Store(vmi_view),
            Kind.NODE: Store(node_view),
            Kind.POD: Store(pod_view),
            Kind.MIGRATION: Store(migration_view),
            Kind.CLAIM: Store(claim_view),
            Kind.VOLUME: Store(volume_view),
        }
    )
    synced: bool = False  # a full LIST has been applied
    needs_resync: bool = True
    relisted: set[Kind] = field(default_factory=set)
    last_listing: dict[Kind, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[tuple[int, ...], Observed] | None = field(default=None, repr=False)

    def apply_event(self, kind: Kind, event_type: str | None, body: Body) -> bool:
        """One kopf event; returns whether what a round reads changed. A listing event (type None) once
        synced, after a pause, means kopf re-listed: that kind is listed afresh."""
        store = self.stores[kind]
        changed = store.delete(body) if event_type == "DELETED" else store.put(body)
        if event_type is None:
            now = self.clock()
            if self.synced and now - self.last_listing.get(kind, float("-inf")) > RELIST_GAP_S:
                self.relisted.add(kind)
            self.last_listing[kind] = now
        return changed

    def kinds_to_list(self) -> set[Kind]:
        """The kinds to list afresh now (all of them, or those kopf re-listed), forgetting the re-lists: one
        that starts while these LISTs are on their way asks again."""
        kinds = set(Kind) if self.needs_resync or not self.synced else set(self.relisted)
        self.relisted.clear()
        return kinds

    def replace(self, lists: Mapping[Kind, tuple[int, Iterable[Body]]]) -> dict[Kind, int]:
        """Fresh LISTs of some kinds (every kind: the view is synced); returns the ghosts dropped per kind."""
        ghosts = {
            kind: self.stores[kind].replace(version, bodies) for kind, (version, bodies) in lists.items()
        }
        if set(lists) == set(Kind):
            self.synced = True
            self.needs_resync = False
        return ghosts

    def observed_of(self, keys: Collection[ObjectKey]) -> Observed:
        """Just the VirtualMachineMemories and VMIs of ``keys``, and every migration: what carrying out a
        few placed changes between rounds reads, without making the whole :meth:`observed` again at every
        VMI event."""
        vmms, vmis = self.stores[Kind.VMM].items, self.stores[Kind.VMI].items
        return Observed(
            vmms=[vmms[key][1] for key in keys if key in vmms],
            vms=(),
            vmis=[vmis[key][1] for key in keys if key in vmis],
            nodes=(),
            pods=(),
            migrations=self.stores[Kind.MIGRATION].values(),
        )

    def observed(self) -> Observed:
        """What a round reads; the same object again while no view changed (a round at rest)."""
        changes = tuple(self.stores[kind].changes for kind in Kind)
        if self._observed is not None and self._observed[0] == changes:
            return self._observed[1]
        found = Observed(
            vmms=self.stores[Kind.VMM].values(),
            vms=self.stores[Kind.VM].values(),
            vmis=tuple(
                with_failed_migrations(self.stores[Kind.VMI].values(), self.stores[Kind.MIGRATION].values())
            ),
            nodes=self.stores[Kind.NODE].values(),
            # every pod, with no node too: a launcher waiting to start keeps a hole (snapshot ``pending``)
            pods=self.stores[Kind.POD].values(),
            migrations=self.stores[Kind.MIGRATION].values(),
            claims=self.stores[Kind.CLAIM].values(),
            volumes=self.stores[Kind.VOLUME].values(),
        )
        self._observed = (changes, found)
        return found
