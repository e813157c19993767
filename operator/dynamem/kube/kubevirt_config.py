"""The KubeVirt CR's settings that bound what dynamem may do (``spec.configuration`` of the cluster's
KubeVirt CR, KubeVirt v1.7.0 ``pkg/virt-config/virt-config.go``):

- ``migrations.parallelMigrationsPerCluster`` (default 5, ``ParallelMigrationsPerClusterDefault``) and
  ``migrations.parallelOutboundMigrationsPerNode`` (default 2, ``ParallelOutboundMigrationsPerNodeDefault``):
  KubeVirt holds back every target pod beyond them (``watch/migration/migration.go``,
  ``handleTargetPodCreation``), so the plan keeps its migrations in flight within them;
- ``developerConfiguration.nodeSelectors``: the selector every launcher pod gets under its VMI's own
  (``GetNodeSelectors``; ``services/nodeselectorrenderer.go``), so a target must match it too;
- ``developerConfiguration.memoryOvercommit`` (percent, default 100, ``DefaultMemoryOvercommit``): a VMI with
  no memory request (or limit) of its own has its launcher ask ``memory.guest`` x 100 / memoryOvercommit
  (``services/renderresources.go``, ``WithMemoryRequests``, run by ``services/template.go``
  ``VMIResourcePredicates`` for every launcher, a migration's target included), so a target of a given size
  asks that of the node the scheduler counts;
- ``developerConfiguration.cpuAllocationRatio`` (default 10, ``DefaultCPUAllocationRatio``): a launcher asks
  its vCPUs / that of CPU (``WithoutDedicatedCPU``), which a VM that is off needs free to start;
- ``spec.workloadUpdateStrategy.workloadUpdateMethods`` (beside ``configuration`` in the CR's spec; unset in
  KubeVirt's own CR, ``manifests/generated/kubevirt-cr.yaml.in``): KubeVirt's workload-updater carries out a
  VMI's memory hotplug by a migration only when the list has ``LiveMigrate``; with ``Evict`` and without
  ``LiveMigrate`` it EVICTS the VMI instead, a restart (``watch/workload-updater/workload-updater.go``,
  ``getUpdateData``: ``migratableOutdatedVMIs`` / ``evictOutdatedVMIs``), through the Eviction API, for
  any VMI whose hotplug has no unfinished migration (in the seconds before dynamem's own migration exists,
  and after that migration failed). KubeVirt's eviction webhook (``pod-eviction-admitter.go``,
  ``admitLauncherPod``) then decides by the VMI's eviction strategy (``spec.evictionStrategy``, else
  ``configuration.evictionStrategy``, else ``None``, ``virt-config/configuration.go``): ``LiveMigrate``,
  and ``LiveMigrateIfPossible`` for a migratable VMI, refuse the eviction and migrate the VMI instead;
  ``External`` leaves it to another controller; ``None`` lets the launcher pod go, which stops the VM (a
  restart under runStrategy Always). So under such a CR dynamem changes no running VM whose strategy is not
  one of the two that migrate (:attr:`KubeVirtSettings.evicts`, ``controller/balancer.py`` ``update_hold``);
- ``configuration.evictionStrategy``: the eviction strategy KubeVirt stamps on a VMI that sets none when
  it is created (``pkg/defaults/defaults.go``, ``setDefaultEvictionStrategy``); dynamem reads it for a VMI
  whose spec shows none;
- ``configuration.vmRolloutStrategy`` (default ``LiveUpdate``) and ``liveUpdateConfiguration.maxGuest`` and
  ``maxHotplugRatio`` (default 4, ``DefaultMaxHotplugRatio``): the ``maxGuest`` KubeVirt gives a VMI whose
  spec has none when it is created (``defaults.go``, ``setupMemoryHotplug``: the CR's ``maxGuest``, else the
  guest x the ratio; none under ``Stage``, nor when ``ValidateLiveUpdateMemory`` refuses it). A VMI without
  ``maxGuest`` cannot have its memory changed while it runs; the stand-in stamps it as KubeVirt does.

Pure: the operator reads the CR (:meth:`dynamem.kube.api.KubeApi.kubevirt_configuration`) at start and with
every periodic LIST, and follows what this module makes of it (:mod:`dynamem.controller.kubevirt_follower`);
the KubeVirt stand-in renders its launchers and holds its migrations by it too
(:meth:`dynamem.kubevirt_sim.controller.KubeVirtSimulator.follow_kubevirt_cr`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynamem.kube.objects import quantity_bytes

__all__ = [
    "DEFAULT_MAX_HOTPLUG_RATIO",
    "MIGRATING_EVICTIONS",
    "KubeVirtSettings",
    "configuration_of",
    "cpu_allocation_ratio_of",
    "kubevirt_settings",
    "launcher_node_selectors_of",
    "memory_overcommit_of",
    "parallel_migrations_of",
    "parallel_outbound_migrations_of",
    "update_methods_of",
]


# eviction strategies whose eviction KubeVirt's webhook turns into a migration (pod-eviction-admitter.go)
MIGRATING_EVICTIONS = frozenset({"LiveMigrate", "LiveMigrateIfPossible"})
DEFAULT_MAX_HOTPLUG_RATIO = 4  # virt-config.go DefaultMaxHotplugRatio


@dataclass(frozen=True, slots=True)
class KubeVirtSettings:
    """What the KubeVirt CR sets (None, empty: not set, KubeVirt's default applies)."""

    per_cluster: int | None = None
    outbound_per_node: int | None = None
    node_selectors: tuple[tuple[str, str], ...] = ()
    memory_overcommit: int | None = None
    cpu_allocation_ratio: int | None = None
    update_methods: tuple[str, ...] = ()  # spec.workloadUpdateStrategy.workloadUpdateMethods
    eviction_strategy: str | None = None  # configuration.evictionStrategy
    rollout_strategy: str | None = None  # configuration.vmRolloutStrategy (LiveUpdate or Stage)
    max_guest: int | None = None  # configuration.liveUpdateConfiguration.maxGuest, bytes
    max_hotplug_ratio: int | None = None  # configuration.liveUpdateConfiguration.maxHotplugRatio
    batch_eviction_size: int | None = None  # spec.workloadUpdateStrategy.batchEvictionSize
    batch_eviction_interval_s: float | None = None  # spec.workloadUpdateStrategy.batchEvictionInterval

    def default_max_guest(self, guest: int | None) -> int | None:
        """The ``maxGuest`` KubeVirt gives a new VMI of ``guest`` bytes whose spec sets none, before its
        ``ValidateLiveUpdateMemory`` check (``defaults.go``, ``setupMemoryHotplug``); None under ``Stage``."""
        if self.rollout_strategy not in {None, "LiveUpdate"}:
            return None
        if self.max_guest is not None:
            return self.max_guest
        return guest * (self.max_hotplug_ratio or DEFAULT_MAX_HOTPLUG_RATIO) if guest else None

    @property
    def evicts(self) -> bool:
        """KubeVirt's workload-updater would carry out a VMI's memory change by evicting it."""
        return "Evict" in self.update_methods and "LiveMigrate" not in self.update_methods


def kubevirt_settings(config: Mapping[str, Any]) -> KubeVirtSettings:
    """The settings of a KubeVirt CR's ``spec.configuration``."""
    return KubeVirtSettings(
        per_cluster=parallel_migrations_of(config),
        outbound_per_node=parallel_outbound_migrations_of(config),
        node_selectors=tuple(sorted(launcher_node_selectors_of(config).items())),
        memory_overcommit=memory_overcommit_of(config),
        cpu_allocation_ratio=cpu_allocation_ratio_of(config),
        update_methods=update_methods_of(config),
        eviction_strategy=str(config.get("evictionStrategy") or "") or None,
        rollout_strategy=str(config.get("vmRolloutStrategy") or "") or None,
        max_guest=_live_update(config, "maxGuest"),
        max_hotplug_ratio=_positive(config, "liveUpdateConfiguration", "maxHotplugRatio"),
        batch_eviction_size=_batch_eviction_size(config),
        batch_eviction_interval_s=_batch_eviction_interval(config),
    )


def _batch_eviction_size(config: Mapping[str, Any]) -> int | None:
    """``workloadUpdateStrategy.batchEvictionSize``: how many VMIs the workload-updater evicts per batch (0:
    none; KubeVirt takes the pointer as it is)."""
    strategy = config.get(WORKLOAD_UPDATE_STRATEGY)
    value = strategy.get("batchEvictionSize") if isinstance(strategy, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_seconds(text: object) -> float | None:
    """A Go ``time.Duration`` string as a ``metav1.Duration`` holds it (``1m0s``, ``90s``, ``1h30m``), in
    seconds; None when it is none."""
    if not isinstance(text, str) or not text:
        return None
    parts = _GO_DURATION.findall(text)
    if "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


def _batch_eviction_interval(config: Mapping[str, Any]) -> float | None:
    """``workloadUpdateStrategy.batchEvictionInterval``: the workload-updater's wait between batches."""
    strategy = config.get(WORKLOAD_UPDATE_STRATEGY)
    return (
        go_duration_seconds(strategy.get("batchEvictionInterval")) if isinstance(strategy, Mapping) else None
    )


def _live_update(config: Mapping[str, Any], key: str) -> int | None:
    found = config.get("liveUpdateConfiguration")
    return quantity_bytes(found.get(key)) if isinstance(found, Mapping) else None


WORKLOAD_UPDATE_STRATEGY = "workloadUpdateStrategy"


def configuration_of(listed: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``spec.configuration`` of the first KubeVirt CR in a LIST of them (a cluster has one), or empty:
    KubeVirt's defaults; with the spec's ``workloadUpdateStrategy`` beside its keys (KubeVirt's configuration
    has no key of that name), the one other part of the spec dynamem follows."""
    for item in listed.get("items") or []:
        spec = item.get("spec") if isinstance(item, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        found = spec.get("configuration")
        config = dict(found) if isinstance(found, Mapping) else {}
        strategy = spec.get(WORKLOAD_UPDATE_STRATEGY)
        if isinstance(strategy, Mapping):
            config[WORKLOAD_UPDATE_STRATEGY] = strategy
        return config
    return {}


def update_methods_of(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``spec.workloadUpdateStrategy.workloadUpdateMethods``, as :func:`configuration_of` carries it."""
    strategy = config.get(WORKLOAD_UPDATE_STRATEGY)
    methods = strategy.get("workloadUpdateMethods") if isinstance(strategy, Mapping) else None
    return tuple(sorted({str(m) for m in methods})) if isinstance(methods, list) else ()


def _positive(config: Mapping[str, Any], section: str, key: str) -> int | None:
    found = config.get(section)
    value = found.get(key) if isinstance(found, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parallel_migrations_of(config: Mapping[str, Any]) -> int | None:
    """``migrations.parallelMigrationsPerCluster`` of a KubeVirt CR's ``spec.configuration``, if set."""
    return _positive(config, "migrations", "parallelMigrationsPerCluster")


def parallel_outbound_migrations_of(config: Mapping[str, Any]) -> int | None:
    """``migrations.parallelOutboundMigrationsPerNode`` of a KubeVirt CR's ``spec.configuration``, if set."""
    return _positive(config, "migrations", "parallelOutboundMigrationsPerNode")


def launcher_node_selectors_of(config: Mapping[str, Any]) -> dict[str, str]:
    """``developerConfiguration.nodeSelectors`` of a KubeVirt CR's ``spec.configuration``: the cluster-wide
    selector every launcher pod gets under its VMI's own (``virt-config.go``, ``GetNodeSelectors``;
    ``nodeselectorrenderer.go``)."""
    developer = config.get("developerConfiguration")
    found = developer.get("nodeSelectors") if isinstance(developer, Mapping) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}


def memory_overcommit_of(config: Mapping[str, Any]) -> int | None:
    """``developerConfiguration.memoryOvercommit`` of a KubeVirt CR's ``spec.configuration``, if set: the
    percent of a launcher's request its guest may have (KubeVirt refuses a value of 0 or less,
    ``configuration.go``, ``validateConfig``, so such a value is not taken)."""
    return _positive(config, "developerConfiguration", "memoryOvercommit")


def cpu_allocation_ratio_of(config: Mapping[str, Any]) -> int | None:
    """``developerConfiguration.cpuAllocationRatio`` of a KubeVirt CR's ``spec.configuration``, if set
    (KubeVirt refuses 0 and below, ``validateConfig``)."""
    return _positive(config, "developerConfiguration", "cpuAllocationRatio")
