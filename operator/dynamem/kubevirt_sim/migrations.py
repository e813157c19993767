"""KubeVirt v1.7.0's workload-updater and migration controller, played against a real API server.

Every change of a running VM's memory is a live migration (``shared/KUBEVIRT.md``, "A change is a move").
This module carries a VMI's pending change (``HotMemoryChange=True``) to another node, as these parts of
kubevirt/kubevirt v1.7.0 do:

- :meth:`MigrationController.run_updater` is the workload-updater
  (``pkg/virt-controller/watch/workload-updater/workload-updater.go``, ``getUpdateData`` and ``sync``): a
  running VMI with ``HotMemoryChange=True`` that is not migrating and has no unfinished migration (whoever
  made it) gets a ``VirtualMachineInstanceMigration`` named ``kubevirt-workload-update-*`` with annotation
  ``kubevirt.io/workloadUpdateMigration``. Its work queue holds one key (the KubeVirt CR's): every update of a
  VMI whose hotplug is in progress and that is not migrating, and every migration added, updated or deleted,
  and every change of the KubeVirt CR, adds it ``updater_delay_s`` ahead (KubeVirt's
  ``defaultThrottleInterval``, 5 s; ``AddAfter``, and the delaying queue keeps the earliest time), so a pass
  comes within 5 s of a VMI showing its change, sooner while other migrations move; a pass that found VMIs to
  update adds the key again at once (``periodicReEnqueueIntervalSeconds`` is 30 as a ``time.Duration``: 30
  ns), unless it made migrations: that pass returns early until they are observed (``migrationExpectations``),
  and their ``addMigration`` queues the next 5 s ahead. A pass creates at most ``per_cluster`` minus the
  running migrations, for VMIs that are live-migratable (``LiveMigratable`` True), while the KubeVirt CR's
  ``workloadUpdateMethods`` list ``LiveMigrate`` (``update_methods``; with no CR, as the documented install
  sets it); with ``Evict`` (and without ``LiveMigrate``, or for a VMI that is not migratable) it evicts the
  VMI instead (the launcher pod's eviction ends the VMI, and the VM controller starts a new one: a restart,
  ``evictOutdatedVMIs``); with neither, it does nothing. An eviction goes as KubeVirt's eviction webhook lets
  it (``pod-eviction-admitter.go``, ``admitLauncherPod``) by the VMI's eviction strategy (its own, else the
  CR's, else ``None``): ``LiveMigrate``/``LiveMigrateIfPossible`` refuse it and the evacuation controller
  migrates the VMI (``watch/drain/evacuation``, a ``kubevirt-evacuation-*`` migration); ``External`` leaves it
  to another controller (nothing here); ``None`` lets the pod go. Evictions go in batches: the CR's
  ``batchEvictionSize`` every ``batchEvictionInterval`` (else 10 a minute).
- :meth:`MigrationController.sync` is the migration controller (``watch/migration/migration.go``):
  ``handleTargetPodCreation`` holds a new target while running migrations >= ``per_cluster`` (5) or outbound
  migrations from the source node >= ``outbound_per_node`` (2), counting every migration whoever made it;
  ``handleMigrationBackoff`` delays a workload-update migration after failed ones (20 s, doubling);
  ``createTargetPod`` renders the target pod from the VMI's current spec (:func:`.launcher.launcher_pod`);
  ``handlePendingPodTimeout`` deletes a target pod that stayed unschedulable for the pending timeout
  (``defaultUnschedulablePendingTimeoutSeconds`` 300 s, or the migration's annotation
  ``kubevirt.io/migrationUnschedulablePodTimeoutSeconds``), and ``updateStatus`` then fails the migration
  ("target pod was removed"): the VMI is left as it was, ``HotMemoryChange`` stays True, and the updater
  tries again later without any ``addedNodeSelector``.
- Once the target pod runs, the migration runs for (the guest's current size / ``bandwidth``); then, as
  virt-handler does (``pkg/virt-handler/migration-target.go``, ``finalizeMigration`` -> ``hotplugMemory``),
  the VMI's ``nodeName`` and ``migrationState`` move to the target, ``status.memory.guestCurrent`` and
  ``guestRequested`` take the spec's size and ``HotMemoryChange`` goes; the source pod is deleted. A VM in
  ``failing`` plays a failure of ``SyncVirtualMachineMemory`` on the target: the VM moves, its memory does
  not, and the VMI gets ``HotMemoryChange=False`` with reason "Memory Hotplug Failed".

Phases (``staging/src/kubevirt.io/api/core/v1/types.go``): Pending, Scheduling, Scheduled, Running,
Succeeded, Failed (the target-preparation phases in between are not played). Only Pending and the final
phases do not count as running, as ``IsRunning`` says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynamem.kube.api import now_rfc3339
from dynamem.kube.kubevirt_config import MIGRATING_EVICTIONS
from dynamem.kube.migration_target import HOST_MODEL, host_model_selector
from dynamem.kube.objects import GI, ObjectKey, condition_is, dig, quantity_bytes, to_quantity
from dynamem.kubevirt_sim.launcher import CREATED_BY_LABEL, KUBEVIRT_DEFAULTS, Rendering, launcher_pod

logger = logging.getLogger("dynamem.kubevirt_sim.migrations")

WORKLOAD_UPDATE_ANNOTATION = "kubevirt.io/workloadUpdateMigration"
EVACUATION_ANNOTATION = "kubevirt.io/evacuationMigration"
EVICTION_BATCH = 10  # workload-updater.go: defaultBatchDeletionCount per defaultBatchDeletionIntervalSeconds
EVICTION_BATCH_S = 60.0
UNSCHEDULABLE_TIMEOUT_ANNOTATION = "kubevirt.io/migrationUnschedulablePodTimeoutSeconds"
MIGRATION_JOB_LABEL = "kubevirt.io/migrationJobUID"
TARGET_NODE_LABEL = "kubevirt.io/migrationTargetNodeName"
NODE_NAME_LABEL = "kubevirt.io/nodeName"
MEMORY_CHANGE = "HotMemoryChange"
HOTPLUG_FAILED_REASON = "Memory Hotplug Failed"

PENDING = "Pending"
SCHEDULING = "Scheduling"
SCHEDULED = "Scheduled"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
FINAL = frozenset({SUCCEEDED, FAILED})


@dataclass
class MigrationOptions:
    """KubeVirt's migration settings (``pkg/virt-config/virt-config.go``), with test-friendly overrides.

    ``bandwidth``: bytes per second a migration copies (KubeVirt's default is unlimited; 1Gi/s is a 10 GbE
    link). ``pending_timeout_s``: how long an unschedulable target may stay Pending (300 s).
    ``updater_delay_s``: the workload-updater's throttle (5 s). ``backoff_s``: the first backoff after a
    failed workload-update migration (20 s, doubling).
    """

    bandwidth: int = GI
    per_cluster: int = 5
    outbound_per_node: int = 2
    pending_timeout_s: float = 300.0
    updater_delay_s: float = 5.0
    backoff_s: float = 20.0

    def __post_init__(self) -> None:
        for name in ("bandwidth", "per_cluster", "outbound_per_node"):
            if getattr(self, name) <= 0:
                raise ValueError(f"migration option {name}: {getattr(self, name)!r} must be greater than 0")
        for name in ("pending_timeout_s", "updater_delay_s", "backoff_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"migration option {name}: {getattr(self, name)!r} must not be negative")


class KubeVirtWrites(Protocol):
    """The API writes the migration controller makes (the simulator's async client implements them)."""

    async def create_migration(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]: ...

    async def patch_migration_status(self, key: ObjectKey, status: Mapping[str, Any]) -> None: ...

    async def patch_vmi(self, key: ObjectKey, patch: Mapping[str, Any]) -> None: ...

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Mapping[str, Any]: ...

    async def delete_pod(self, key: ObjectKey) -> None: ...

    async def delete_vmi(self, key: ObjectKey) -> None: ...

    async def delete_migration(self, key: ObjectKey) -> None: ...


KEPT_FINISHED = 5  # migration.go, defaultFinalizedMigrationGarbageCollectionBuffer


@dataclass(frozen=True)
class World:
    """One tick's reading of the cluster: VMIs, their launcher pods and every migration, by key."""

    vmis: Mapping[ObjectKey, Mapping[str, Any]]
    pods: Sequence[Mapping[str, Any]]
    migrations: Sequence[Mapping[str, Any]]
    node_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def migrations_of(self, vmi: ObjectKey) -> list[Mapping[str, Any]]:
        return [m for m in self.migrations if migration_vmi(m) == vmi]

    def target_pod(self, migration: Mapping[str, Any]) -> Mapping[str, Any] | None:
        uid = dig(migration, "metadata", "uid")
        return next(
            (p for p in self.pods if (dig(p, "metadata", "labels") or {}).get(MIGRATION_JOB_LABEL) == uid),
            None,
        )

    def source_pod(self, vmi: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The launcher pod on the VMI's node (``controller.CurrentVMIPod``)."""
        uid, node = dig(vmi, "metadata", "uid"), dig(vmi, "status", "nodeName")
        for pod in self.pods:
            labels = dig(pod, "metadata", "labels") or {}
            same = labels.get("kubevirt.io/created-by") == uid and dig(pod, "spec", "nodeName") == node
            if same and dig(pod, "metadata", "deletionTimestamp") is None:
                return pod
        return None


def migration_phase(migration: Mapping[str, Any]) -> str:
    return str(dig(migration, "status", "phase") or PENDING)


def migration_vmi(migration: Mapping[str, Any]) -> ObjectKey:
    return ObjectKey(str(dig(migration, "metadata", "namespace")), str(dig(migration, "spec", "vmiName")))


def is_running(migration: Mapping[str, Any]) -> bool:
    """``VirtualMachineInstanceMigration.IsRunning``: accepted and not ended."""
    return migration_phase(migration) not in FINAL | {PENDING}


def _hotplug_in_progress(vmi: Mapping[str, Any]) -> bool:
    """``workload-updater.go`` ``isHotplugInProgress`` (memory): ``HotMemoryChange`` True, VMI not final."""
    return dig(vmi, "status", "phase") not in {"Succeeded", "Failed"} and condition_is(
        vmi, MEMORY_CHANGE, "True"
    )


def vmi_migrating(vmi: Mapping[str, Any]) -> bool:
    """``migrations.IsMigrating``: the VMI's migration has started and not ended."""
    state = dig(vmi, "status", "migrationState") or {}
    return bool(state.get("startTimestamp")) and not state.get("endTimestamp")


def pod_unschedulable(pod: Mapping[str, Any]) -> bool:
    """``isPodPendingUnschedulable``."""
    if dig(pod, "status", "phase") not in (None, "Pending") or dig(pod, "metadata", "deletionTimestamp"):
        return False
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in dig(pod, "status", "conditions") or []
    )


def pod_running_on(pod: Mapping[str, Any]) -> str | None:
    node = dig(pod, "spec", "nodeName")
    return str(node) if node and dig(pod, "status", "phase") == "Running" else None


def _backoff_eligible(migration: Mapping[str, Any]) -> bool:
    """A migration handleMigrationBackoff counts: the workload-updater's or the evacuation controller's."""
    annotations = dig(migration, "metadata", "annotations") or {}
    return WORKLOAD_UPDATE_ANNOTATION in annotations or EVACUATION_ANNOTATION in annotations


def _uid(migration: Mapping[str, Any]) -> str:
    return str(dig(migration, "metadata", "uid"))


def _created(migration: Mapping[str, Any]) -> tuple[str, str]:
    """Creation order as KubeVirt sorts migrations (``vmimCollection``: by creation time), then name."""
    return str(dig(migration, "metadata", "creationTimestamp")), str(dig(migration, "metadata", "name"))


@dataclass
class _Timers:
    """What KubeVirt reads from timestamps with one-second resolution, kept here to the millisecond."""

    queue_ready: float | None = None  # when the workload-updater's queued key is due (None: not queued)
    seen_versions: dict[tuple[str, str, str], str] = field(default_factory=dict)  # what its handlers saw
    failed_at: dict[str, float] = field(default_factory=dict)  # by migration uid
    batch_started: float = float("-inf")  # the workload-updater's last eviction batch
    refused: set[str] = field(default_factory=set)  # migrations the webhook would have refused (by uid)
    target_created: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)


@dataclass
class MigrationController:
    """The workload-updater and the migration controller: :meth:`run_updater`, then :meth:`sync`, each
    tick."""

    api: KubeVirtWrites
    options: MigrationOptions = field(default_factory=MigrationOptions)
    overhead: int = 0
    failing: set[str] = field(default_factory=set)
    clock: Callable[[], float] = time.monotonic
    timers: _Timers = field(default_factory=_Timers)
    succeeded: int = 0
    failed: int = 0
    rendering: Rendering = KUBEVIRT_DEFAULTS  # the KubeVirt CR's settings target pods are rendered under
    # the KubeVirt CR's spec.workloadUpdateStrategy.workloadUpdateMethods (no CR: the documented install's)
    update_methods: tuple[str, ...] = ("LiveMigrate",)
    eviction_strategy: str | None = None  # the KubeVirt CR's configuration.evictionStrategy
    eviction_batch: int = EVICTION_BATCH  # workloadUpdateStrategy.batchEvictionSize
    eviction_batch_s: float = EVICTION_BATCH_S  # workloadUpdateStrategy.batchEvictionInterval
    evicted: int = 0

    # -- workload-updater ----------------------------------------------------------------------------------

    def _enqueue_on_events(self, world: World, now: float) -> None:
        """The workload-updater's event handlers (``updateVmi``, ``addMigration``, ``updateMigration``,
        ``deleteMigration``), from what changed since the last tick: each adds the key
        ``updater_delay_s`` ahead, and the delaying queue keeps the earliest."""
        versions: dict[tuple[str, str, str], str] = {}
        for m in world.migrations:
            key = ObjectKey.of(m)
            versions[("migration", key.namespace, key.name)] = str(dig(m, "metadata", "resourceVersion"))
        for key, vmi in world.vmis.items():
            if _hotplug_in_progress(vmi) and not vmi_migrating(vmi):
                versions[("vmi", key.namespace, key.name)] = str(dig(vmi, "metadata", "resourceVersion"))
        seen = self.timers.seen_versions
        gone = any(k[0] == "migration" and k not in versions for k in seen)
        if gone or any(seen.get(k) != v for k, v in versions.items()):
            self._queue(now + self.options.updater_delay_s)
        self.timers.seen_versions = versions

    def kubevirt_changed(self) -> None:
        """The KubeVirt CR changed (``updateKubeVirt``): the workload-updater's pass is queued 5 s ahead."""
        self._queue(self.clock() + self.options.updater_delay_s)

    def _queue(self, due: float) -> None:
        ready = self.timers.queue_ready
        self.timers.queue_ready = due if ready is None else min(ready, due)

    async def run_updater(self, world: World) -> None:
        """One pass of the workload-updater when its queued key is due (``execute`` -> ``sync``)."""
        now = self.clock()
        self._enqueue_on_events(world, now)
        ready = self.timers.queue_ready
        if ready is None or now < ready:
            return
        self.timers.queue_ready = None
        unfinished = [m for m in world.migrations if migration_phase(m) not in FINAL]
        busy = {migration_vmi(m) for m in unfinished}
        room = self.options.per_cluster - sum(1 for m in unfinished if is_running(m))
        migratable: list[ObjectKey] = []
        evictions: list[tuple[ObjectKey, Mapping[str, Any]]] = []
        for key, vmi in sorted(world.vmis.items(), key=lambda kv: str(kv[0])):
            running = dig(vmi, "status", "phase") == "Running"
            if not running or not condition_is(vmi, MEMORY_CHANGE, "True"):
                continue
            if key in busy or vmi_migrating(vmi):
                continue
            if "LiveMigrate" in self.update_methods and condition_is(vmi, "LiveMigratable", "True"):
                migratable.append(key)
            elif "Evict" in self.update_methods:
                evictions.append((key, vmi))
        made = migratable[: max(room, 0)]
        for key in made:
            body = {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstanceMigration",
                "metadata": {
                    "generateName": "kubevirt-workload-update-",
                    "namespace": key.namespace,
                    "annotations": {WORKLOAD_UPDATE_ANNOTATION: ""},
                },
                "spec": {"vmiName": key.name},
            }
            created = await self.api.create_migration(key.namespace, body)
            logger.info("%s: workload-updater created migration %s", key, dig(created, "metadata", "name"))
        # one batch of evictions, then none until the batch interval has passed
        if evictions and now - self.timers.batch_started > self.eviction_batch_s:
            self.timers.batch_started = now
            for key, vmi in evictions[: self.eviction_batch]:
                await self._evict(key, vmi, world)
        if made:
            # migrationExpectations: the re-pass 30 ns on returns early until the updater's own migrations
            # are observed, and their addMigration events queue the next pass 5 s ahead (next tick's events)
            return
        if migratable or evictions:
            self.timers.queue_ready = now  # periodicReEnqueueIntervalSeconds: 30 ns, the next tick

    async def _evict(self, key: ObjectKey, vmi: Mapping[str, Any], world: World) -> None:
        """``evictOutdatedVMIs``, through the eviction webhook: a strategy that migrates has the evacuation
        controller migrate the VMI; ``External`` leaves it; ``None`` lets the launcher pod go, which ends the
        VMI, and the VM controller starts a new one (runStrategy Always) at the VM's memory: a restart."""
        strategy = str(dig(vmi, "spec", "evictionStrategy") or self.eviction_strategy or "None")
        migratable = not condition_is(vmi, "LiveMigratable", "False")
        if strategy == "LiveMigrate" and not migratable:
            logger.info("%s: eviction refused: LiveMigrate, but the VMI is not live-migratable", key)
            return
        if strategy in MIGRATING_EVICTIONS and migratable:
            body = {
                "apiVersion": "kubevirt.io/v1",
                "kind": "VirtualMachineInstanceMigration",
                "metadata": {
                    "generateName": "kubevirt-evacuation-",
                    "namespace": key.namespace,
                    "annotations": {EVACUATION_ANNOTATION: str(dig(vmi, "status", "nodeName") or "")},
                },
                "spec": {"vmiName": key.name},
            }
            created = await self.api.create_migration(key.namespace, body)
            logger.info(
                "%s: eviction refused (%s): evacuation %s", key, strategy, dig(created, "metadata", "name")
            )
            return
        if strategy == "External":
            logger.info("%s: eviction refused (%s): left to another controller", key, strategy)
            return
        uid = dig(vmi, "metadata", "uid")
        for pod in world.pods:
            if (dig(pod, "metadata", "labels") or {}).get(CREATED_BY_LABEL) == uid:
                await self.api.delete_pod(ObjectKey(key.namespace, str(dig(pod, "metadata", "name"))))
        await self.api.delete_vmi(key)
        self.evicted += 1
        logger.info(
            "%s: workload-updater evicted the VMI (workloadUpdateMethods %s)", key, self.update_methods
        )

    # -- migration controller ------------------------------------------------------------------------------

    async def sync(self, world: World) -> None:
        await self._collect_finished(world)
        running = [m for m in world.migrations if is_running(m)]
        for migration in sorted(world.migrations, key=lambda m: str(dig(m, "metadata", "creationTimestamp"))):
            key = migration_vmi(migration)
            vmi = world.vmis.get(key)
            if vmi is None:
                # migration.go, sync: a migration of a VMI that does not exist is deleted, whatever its phase
                if not dig(migration, "metadata", "deletionTimestamp"):
                    name = str(dig(migration, "metadata", "name"))
                    await self.api.delete_migration(ObjectKey(key.namespace, name))
                    logger.info("%s: migration %s deleted: its VMI is gone", key, name)
                continue
            phase = migration_phase(migration)
            if phase in FINAL:
                continue
            if dig(vmi, "metadata", "deletionTimestamp"):
                await self._fail(migration, key, "Migration failed because vmi does not exist.")
                continue
            if self._conflicts(world, migration):
                # The admission webhook (admitters/migration-create-admitter.go, ensureNoMigrationConflict)
                # refuses a second migration of a VMI; no webhook runs here, so the later one fails instead.
                await self._fail(migration, key, "in-flight migration detected", count=False)
                continue
            if phase == PENDING:
                if await self._start_target(world, migration, vmi, running):
                    running.append(migration)
            elif phase in (SCHEDULING, SCHEDULED):
                await self._follow_target(world, migration, vmi)
            elif phase == RUNNING:
                await self._finish_if_copied(world, migration, vmi)

    async def _collect_finished(self, world: World) -> None:
        """``garbageCollectFinalizedMigrations``: of a VMI's finished migrations only the newest
        :data:`KEPT_FINISHED` stay (by creation time); KubeVirt deletes older ones as each one finishes."""
        finished: dict[ObjectKey, list[Mapping[str, Any]]] = {}
        for migration in world.migrations:
            if migration_phase(migration) in FINAL and not dig(migration, "metadata", "deletionTimestamp"):
                finished.setdefault(migration_vmi(migration), []).append(migration)
        for key, done in finished.items():
            done.sort(key=_created)
            for old in done[: max(0, len(done) - KEPT_FINISHED)]:
                await self.api.delete_migration(ObjectKey(key.namespace, str(dig(old, "metadata", "name"))))
                self.timers.failed_at.pop(_uid(old), None)
                self.timers.refused.discard(_uid(old))

    async def _start_target(
        self,
        world: World,
        migration: Mapping[str, Any],
        vmi: Mapping[str, Any],
        running: list[Mapping[str, Any]],
    ) -> bool:
        """``handleTargetPodCreation`` and ``createTargetPod``: True when the target pod was created."""
        if dig(vmi, "status", "phase") != "Running":
            return False
        if len(running) >= self.options.per_cluster:
            return False
        source = dig(vmi, "status", "nodeName")
        outbound = sum(1 for m in running if self._source_node(world, m) == source)
        if outbound >= self.options.outbound_per_node:
            return False
        if self._backing_off(world, migration):
            return False
        host_model = None
        if dig(vmi, "spec", "domain", "cpu", "model") == HOST_MODEL:
            source_pod = world.source_pod(vmi)
            source_selector = dig(source_pod, "spec", "nodeSelector") or {} if source_pod else {}
            host_model = host_model_selector(source_selector, world.node_labels.get(str(source), {}))
            if host_model is None:  # createTargetPod fails, the migration is requeued and stays Pending
                logger.warning("%s: unable to locate host cpu model on %s", migration_vmi(migration), source)
                return False
        pod = launcher_pod(
            vmi,
            overhead=self.overhead,
            rendering=self.rendering,
            migration=migration,
            host_model=host_model,
        )
        created = await self.api.create_pod(str(dig(vmi, "metadata", "namespace")), pod)
        self.timers.target_created[str(dig(migration, "metadata", "uid"))] = self.clock()
        await self._set_phase(migration, SCHEDULING, {"migrationState": {"sourceNode": source}})
        logger.info(
            "%s: migration %s: target pod %s for %s",
            migration_vmi(migration),
            dig(migration, "metadata", "name"),
            dig(created, "metadata", "name"),
            _requests(pod),
        )
        return True

    @staticmethod
    def _conflicts(world: World, migration: Mapping[str, Any]) -> bool:
        """Another unfinished migration of the same VMI was created before this one."""
        mine = (str(dig(migration, "metadata", "creationTimestamp")), str(dig(migration, "metadata", "name")))
        for other in world.migrations_of(migration_vmi(migration)):
            theirs = (str(dig(other, "metadata", "creationTimestamp")), str(dig(other, "metadata", "name")))
            if migration_phase(other) not in FINAL and theirs < mine:
                return True
        return False

    def _source_node(self, world: World, migration: Mapping[str, Any]) -> str | None:
        node = dig(migration, "status", "migrationState", "sourceNode")
        if node:
            return str(node)
        vmi = world.vmis.get(migration_vmi(migration))
        return str(dig(vmi, "status", "nodeName")) if vmi is not None else None

    def _backing_off(self, world: World, migration: Mapping[str, Any]) -> bool:
        """``handleMigrationBackoff``: the newest of a VMI's workload-update migrations waits 20 s after the
        failure of the one before it, doubling with each failed one since the last that succeeded. Only
        workload-update and evacuation migrations count (``listBackoffEligibleMigrations``): a failed
        migration of dynamem's delays no retry, nor does one the webhook would have refused (it would not
        exist)."""
        if not _backoff_eligible(migration):
            return False
        key = migration_vmi(migration)
        eligible = [
            m
            for m in world.migrations
            if migration_vmi(m) == key and _backoff_eligible(m) and _uid(m) not in self.timers.refused
        ]
        if len(eligible) < 2:
            return False
        eligible.sort(key=_created, reverse=True)
        if _uid(eligible[0]) != _uid(migration):
            return False
        backoff = 0.0
        for older in eligible[1:]:
            phase = migration_phase(older)
            if phase == SUCCEEDED:
                break
            if phase == FAILED and not dig(older, "metadata", "deletionTimestamp"):
                backoff = backoff * 2 if backoff else self.options.backoff_s
        failed_at = self.timers.failed_at.get(_uid(eligible[1]))
        return bool(backoff and failed_at is not None and self.clock() - failed_at < backoff)

    async def _follow_target(
        self, world: World, migration: Mapping[str, Any], vmi: Mapping[str, Any]
    ) -> None:
        uid = str(dig(migration, "metadata", "uid"))
        key = migration_vmi(migration)
        pod = world.target_pod(migration)
        if pod is None:
            await self._fail(migration, key, "Migration target pod was removed during active migration.")
            return
        target = pod_running_on(pod)
        if target is None:
            created = self.timers.target_created.setdefault(uid, self.clock())
            if pod_unschedulable(pod) and self.clock() - created >= self._pending_timeout(migration):
                name = str(dig(pod, "metadata", "name"))
                await self.api.delete_pod(ObjectKey(key.namespace, name))
                logger.info("%s: unschedulable pod %s timeout period exceeded", key, name)
                await self._fail(
                    migration, key, f"unschedulable pod {key.namespace}/{name} timeout period exceeded"
                )
            return
        source = world.source_pod(vmi)
        state = {
            "migrationUid": uid,
            "sourceNode": dig(vmi, "status", "nodeName"),
            "sourcePod": dig(source, "metadata", "name") if source else None,
            "targetNode": target,
            "targetPod": dig(pod, "metadata", "name"),
            "startTimestamp": now_rfc3339(),
            "mode": "PreCopy",
            "completed": False,
            "failed": False,
        }
        await self.api.patch_vmi(
            key, {"metadata": {"labels": {TARGET_NODE_LABEL: target}}, "status": {"migrationState": state}}
        )
        self.timers.started[uid] = self.clock()
        await self._set_phase(migration, RUNNING, {"migrationState": state})
        logger.info("%s: migrating %s -> %s", key, state["sourceNode"], target)

    async def _finish_if_copied(
        self, world: World, migration: Mapping[str, Any], vmi: Mapping[str, Any]
    ) -> None:
        uid = str(dig(migration, "metadata", "uid"))
        key = migration_vmi(migration)
        size = quantity_bytes(dig(vmi, "status", "memory", "guestCurrent")) or GI
        started = self.timers.started.setdefault(uid, self.clock())
        if self.clock() - started < size / self.options.bandwidth:
            return
        state = dict(dig(vmi, "status", "migrationState") or dig(migration, "status", "migrationState") or {})
        target = str(state.get("targetNode"))
        state.update({"endTimestamp": now_rfc3339(), "completed": True})
        spec_guest = quantity_bytes(dig(vmi, "spec", "domain", "memory", "guest"))
        memory = dict(dig(vmi, "status", "memory") or {})
        conditions = [c for c in dig(vmi, "status", "conditions") or [] if c.get("type") != MEMORY_CHANGE]
        if key.name in self.failing and spec_guest != quantity_bytes(memory.get("guestCurrent")):
            conditions.append(
                {
                    "type": MEMORY_CHANGE,
                    "status": "False",
                    "reason": HOTPLUG_FAILED_REASON,
                    "message": "simulated failure of SyncVirtualMachineMemory on the target",
                    "lastTransitionTime": now_rfc3339(),
                }
            )
        elif spec_guest is not None:
            memory.update(
                {"guestCurrent": to_quantity(spec_guest), "guestRequested": to_quantity(spec_guest)}
            )
        await self.api.patch_vmi(
            key,
            {
                "metadata": {"labels": {NODE_NAME_LABEL: target, TARGET_NODE_LABEL: None}},
                "status": {
                    "nodeName": target,
                    "migrationState": state,
                    "memory": memory,
                    "conditions": conditions,
                },
            },
        )
        source = state.get("sourcePod")
        if source:
            await self.api.delete_pod(ObjectKey(key.namespace, str(source)))
        await self._set_phase(migration, SUCCEEDED, {"migrationState": state})
        self.succeeded += 1
        logger.info("%s: migrated to %s with %s", key, target, memory.get("guestCurrent"))

    def _pending_timeout(self, migration: Mapping[str, Any]) -> float:
        value = (dig(migration, "metadata", "annotations") or {}).get(UNSCHEDULABLE_TIMEOUT_ANNOTATION)
        try:
            return float(value) if value is not None else self.options.pending_timeout_s
        except ValueError:
            return self.options.pending_timeout_s

    async def _fail(
        self, migration: Mapping[str, Any], key: ObjectKey, message: str, *, count: bool = True
    ) -> None:
        if not count:
            self.timers.refused.add(_uid(migration))
        await self._set_phase(migration, FAILED, {})
        if count:
            self.timers.failed_at[_uid(migration)] = self.clock()
            self.failed += 1
        logger.info("%s: migration %s failed: %s", key, dig(migration, "metadata", "name"), message)

    async def _set_phase(self, migration: Mapping[str, Any], phase: str, extra: Mapping[str, Any]) -> None:
        stamps = list(dig(migration, "status", "phaseTransitionTimestamps") or [])
        stamps.append({"phase": phase, "phaseTransitionTimestamp": now_rfc3339()})
        status = {"phase": phase, "phaseTransitionTimestamps": stamps, **extra}
        await self.api.patch_migration_status(
            ObjectKey(str(dig(migration, "metadata", "namespace")), str(dig(migration, "metadata", "name"))),
            status,
        )


def _requests(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = dig(pod, "spec", "containers") or [{}]
    return dict(dig(containers[0], "resources", "requests") or {})
