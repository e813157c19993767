"""The KubeVirt CR's settings, followed while the operator runs.

Read at start and again with every periodic LIST (``--resync-period``) on the leader: a change of the CR
(``kubectl edit kubevirt``, or its operator's GitOps) applies from the next round, with no restart. What it
sets and why: :mod:`dynamem.kube.kubevirt_config`. ``--max-parallel-migrations``, when given, wins over the
CR's ``parallelMigrationsPerCluster``. A CR that cannot be read now (the API server restarting, not allowed)
leaves the settings as they were; one that is gone (or has no CRD) brings back KubeVirt's defaults. Until
the CR has been read once, no running VM's memory is changed (``RoundOptions.kubevirt_unread``: whether
KubeVirt would evict a VM to carry a change out is not known yet), and the loop reads it before rounds,
each failed read waiting twice as long as the one before (:meth:`KubeVirtFollower.due`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from dynamem.controller.balancer import RoundOptions
from dynamem.kube.kubevirt_config import KubeVirtSettings, kubevirt_settings
from dynamem.kube.launcher_resources import CPU_ALLOCATION_RATIO

__all__ = ["KubeVirtFollower"]

logger = logging.getLogger("dynamem.operator")

MAX_RETRY_S = 300.0  # the default --resync-period: the periodic LIST reads the CR as often anyway


class KubeVirtFollower:
    """The round options as the KubeVirt CR last read says (``options``), from ``base``: the operator's
    flags, which hold where the CR sets nothing."""

    def __init__(
        self,
        read: Callable[[], Awaitable[Mapping[str, Any] | None]],
        base: RoundOptions,
        *,
        migrations_given: bool = False,
        retry_base_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._base = base
        self._migrations_given = migrations_given
        self.settings = KubeVirtSettings()
        self.options = replace(base, kubevirt_unread=True)
        self.read_once = False
        self._retry_base_s, self._clock = retry_base_s, clock
        self._retry_s = 0.0
        self._next_try = float("-inf")

    def due(self) -> bool:
        """Whether the loop should try to read a CR not read yet before this round: each failed read waits
        twice as long as the one before (from ``retry_base_s``, at most :data:`MAX_RETRY_S`), so a CR that
        stays unreadable (403: no list on kubevirts) is not asked, and warned of, every round."""
        return not self.read_once and self._clock() >= self._next_try

    async def refresh(self) -> bool:
        """Read the CR again; whether the options changed."""
        config = await self._read()
        if config is None:
            if not self.read_once:
                self._retry_s = min(max(self._retry_s * 2, self._retry_base_s), MAX_RETRY_S)
                self._next_try = self._clock() + self._retry_s
            return False
        settings = kubevirt_settings(config)
        first, self.read_once = not self.read_once, True
        if settings == self.settings and not first:
            return False
        logger.info(
            "KubeVirt CR: parallelMigrationsPerCluster %s, parallelOutboundMigrationsPerNode %s, "
            "launcher nodeSelectors %s, memoryOvercommit %s, cpuAllocationRatio %s, "
            "workloadUpdateMethods %s, evictionStrategy %s",
            settings.per_cluster or "unset",
            settings.outbound_per_node or "unset",
            dict(settings.node_selectors) or "none",
            settings.memory_overcommit or "unset",
            settings.cpu_allocation_ratio or "unset",
            list(settings.update_methods) or "unset",
            settings.eviction_strategy or "unset",
        )
        if settings.evicts:
            logger.warning(
                "the KubeVirt CR's workloadUpdateMethods %s have Evict without LiveMigrate: KubeVirt would "
                "evict a VM to carry out its memory change, so dynamem changes no running VM whose eviction "
                "strategy is not LiveMigrate or LiveMigrateIfPossible until the CR lists LiveMigrate",
                list(settings.update_methods),
            )
        self.settings = settings
        self.options = self.applied(settings)
        return True

    def applied(self, settings: KubeVirtSettings) -> RoundOptions:
        """The base options under ``settings``."""
        balance = self._base.balance
        if settings.per_cluster is not None and not self._migrations_given:
            balance = replace(balance, max_parallel_migrations=settings.per_cluster)
        if settings.outbound_per_node is not None:
            balance = replace(balance, max_outbound_migrations=settings.outbound_per_node)
        return replace(
            self._base,
            balance=balance,
            launcher_node_selectors=settings.node_selectors,
            memory_overcommit=settings.memory_overcommit or 100,
            cpu_allocation_ratio=settings.cpu_allocation_ratio or CPU_ALLOCATION_RATIO,
            evict_updates=settings.evicts,
            eviction_strategy=settings.eviction_strategy,
            kubevirt_unread=False,
        )
