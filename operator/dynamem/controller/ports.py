"""The ports of the balancing round: what it reads and what it writes, as Protocols and plain data.

The round (:mod:`dynamem.controller.balancer`) and the status book (:mod:`dynamem.controller.status`) depend
on these, never on each other or on a client library: :class:`dynamem.kube.api.KubeApi` is the real
``ClusterWriter``, :class:`dynamem.controller.demand.PrometheusDemand` the real ``DemandSource``, and the unit
tests and benchmarks plug in their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dynamem.kube.objects import ObjectKey


@dataclass(frozen=True, slots=True)
class GuestSignals:
    """What a guest shows beyond its used memory: KubeVirt's ``available``/``usable`` gauges (MemTotal and
    MemAvailable as the balloon driver reports them), the highest use over the shrink window, its paging
    rates (swap traffic in and out, bytes/s, as KubeVirt counts it; major faults/s), and how fast its use
    rose over the window (bytes/s, least
    squares). None or 0.0 where Prometheus had no sample."""

    available: int | None = None
    usable: int | None = None
    used_peak: int | None = None
    swap_bps: float = 0.0
    major_faults_ps: float = 0.0
    used_rise_bps: float = 0.0


@dataclass(frozen=True, slots=True)
class DemandReading:
    """Demand (used memory) per VM in bytes, the paging signals of each guest that has them, and ``error``:
    why nothing could be read, when that happened."""

    by_vm: Mapping[ObjectKey, int] = field(default_factory=dict)
    error: str | None = None
    signals: Mapping[ObjectKey, GuestSignals] = field(default_factory=dict)

    def of(self, key: ObjectKey) -> int | None:
        return self.by_vm.get(key)

    def signals_of(self, key: ObjectKey) -> GuestSignals:
        return self.signals.get(key, NO_SIGNALS)


NO_SIGNALS = GuestSignals()


class DemandSource(Protocol):
    """Where a balancing round gets guest demand from: Prometheus in a cluster, a trace in the simulator."""

    async def read(self) -> DemandReading: ...


class ClusterWriter(Protocol):
    """The writes a round makes; :class:`dynamem.kube.api.KubeApi` is the real one."""

    async def apply_vm_memory(
        self,
        namespace: str,
        name: str,
        guest: str,
        max_guest: str | None,
        *,
        resource_version: str | None,
        force: bool = False,
        dry_run: bool = False,
        placement: str | None = None,
        hold: str | None = None,
    ) -> Mapping[str, Any]: ...

    async def patch_vmm_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...

    async def create_event(
        self,
        regarding: Mapping[str, Any],
        *,
        type_: str,
        reason: str,
        note: str,
        action: str,
        now: float | None = None,
    ) -> None: ...

    async def create_migration(
        self, namespace: str, vmi: str, node: str, *, reason: str, dry_run: bool = False
    ) -> str: ...
