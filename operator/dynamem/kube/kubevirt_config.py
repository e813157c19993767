"""The KubeVirt CR's settings that bound what dynamem may do (``spec.configuration`` of the cluster's
KubeVirt CR, KubeVirt v1.7.0 ``pkg/virt-config/virt-config.go``):

- ``migrations.parallelMigrationsPerCluster`` (default 5, ``ParallelMigrationsPerClusterDefault``) and
  ``migrations.parallelOutboundMigrationsPerNode`` (default 2, ``ParallelOutboundMigrationsPerNodeDefault``):
  KubeVirt holds back every target pod beyond them (``watch/migration/migration.go``,
  ``handleTargetPodCreation``), so the plan keeps its migrations in flight within them;
- ``developerConfiguration.nodeSelectors``: the selector every launcher pod gets under its VMI's own
  (``GetNodeSelectors``; ``services/nodeselectorrenderer.go``), so a target must match it too.

Pure: the operator reads the CR (:meth:`dynamem.kube.api.KubeApi.kubevirt_configuration`) at start and with
every periodic LIST, and follows what this module makes of it (:mod:`dynamem.controller.kubevirt_follower`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KubeVirtSettings",
    "kubevirt_settings",
    "launcher_node_selectors_of",
    "parallel_migrations_of",
    "parallel_outbound_migrations_of",
]


@dataclass(frozen=True, slots=True)
class KubeVirtSettings:
    """What the KubeVirt CR sets (None, empty: not set, KubeVirt's default applies)."""

    per_cluster: int | None = None
    outbound_per_node: int | None = None
    node_selectors: tuple[tuple[str, str], ...] = ()


def kubevirt_settings(config: Mapping[str, Any]) -> KubeVirtSettings:
    """The settings of a KubeVirt CR's ``spec.configuration``."""
    return KubeVirtSettings(
        per_cluster=parallel_migrations_of(config),
        outbound_per_node=parallel_outbound_migrations_of(config),
        node_selectors=tuple(sorted(launcher_node_selectors_of(config).items())),
    )


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
