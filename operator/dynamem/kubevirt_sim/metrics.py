"""virt-handler's guest memory metrics for the simulated guests, from the shared guest model.

Names, types, help texts and labels (``node``, ``namespace``, ``name``) are KubeVirt v1.7.0's
(``docs/observability/metrics.md``; collected in ``pkg/monitoring/metrics/virt-handler/domainstats``). What
each guest shows comes from one :class:`GuestStatsSource`: by default :data:`dynamem.sim.guest.DEFAULT_GUEST`,
the model both simulators share, so a guest never shows more use than it has; when its demand is larger it
pages, which shows as swap traffic and major faults. A real guest (the QEMU lab) plugs in as another source
for the VMs it serves (:attr:`GuestMetricsCollector.sources`).

Cumulative series integrate the model's rates between scrapes: ``kubevirt_vmi_memory_pgmajfault_total`` and
``..._pgminfault_total`` are counters; ``..._swap_in_traffic_bytes`` and ``..._swap_out_traffic_bytes`` are
declared gauges by KubeVirt but hold running totals, as in KubeVirt (use ``rate()`` on them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dynamem.kube.objects import ObjectKey
from dynamem.kubevirt_sim.controller import GuestState
from dynamem.sim.guest import DEFAULT_GUEST, GuestModel, GuestObservation

LABELS = ["node", "namespace", "name"]


class RealGuest(Protocol):
    """A VM whose statistics come from a real guest instead of the model (``dynamem.testing.guest``'s QEMU
    lab): each scrape asks it for its ``kubevirt_vmi_memory_*`` series as (name, "gauge" or "counter", help,
    value), already converted as libvirt and virt-handler do (``dynamem.testing.guest_metrics``)."""

    def series(self) -> Iterable[tuple[str, str, str, float]]: ...


@dataclass
class DemandFeed:
    """Demand per guest: a trace of one value per step (played at ``speed``), or a value set directly."""

    step_s: float = 60.0
    speed: float = 1.0
    traces: dict[ObjectKey, Sequence[int | None]] = field(default_factory=dict)
    overrides: dict[ObjectKey, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    clock: Callable[[], float] = time.monotonic
    paused: bool = False
    real: dict[ObjectKey, RealGuest] = field(default_factory=dict)  # their metrics come from real guests

    def step(self) -> int:
        return int((self.clock() - self.started) * self.speed // self.step_s)

    def set(self, key: ObjectKey, demand: int) -> None:
        self.overrides[key] = demand

    def demand(self, key: ObjectKey) -> int | None:
        if key in self.overrides:
            return self.overrides[key]
        trace = self.traces.get(key)
        if not trace:
            return None
        return trace[min(self.step(), len(trace) - 1)]


class GuestStatsSource(Protocol):
    """Where one guest's statistics come from: the model, or a real guest's balloon driver."""

    def observe(self, guest: GuestState, demand: int) -> GuestObservation: ...


@dataclass(frozen=True)
class ModelSource:
    """Statistics from the shared guest model (:mod:`dynamem.sim.guest`)."""

    model: GuestModel = DEFAULT_GUEST

    def observe(self, guest: GuestState, demand: int) -> GuestObservation:
        return self.model.observe(demand, guest.current)


@dataclass
class _Totals:
    at: float
    swap_in: float = 0.0
    swap_out: float = 0.0
    major: float = 0.0
    minor: float = 0.0


class GuestMetricsCollector(Collector):
    """Reads the simulator's guests and the demand feed at scrape time."""

    def __init__(
        self,
        guests: Callable[[], Iterable[GuestState]],
        feed: DemandFeed,
        source: GuestStatsSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guests = guests
        self.feed = feed
        self.source: GuestStatsSource = source or ModelSource()
        self.sources: dict[ObjectKey, GuestStatsSource] = {}  # per-guest overrides (a real guest)
        self.clock = clock
        self.totals: dict[ObjectKey, _Totals] = {}
        self.lock = threading.Lock()

    def _accumulate(self, key: ObjectKey, seen: GuestObservation) -> _Totals:
        now = self.clock()
        totals = self.totals.setdefault(key, _Totals(at=now))
        elapsed = max(0.0, now - totals.at)
        totals.at = now
        totals.swap_in += seen.swap_in_bps * elapsed
        totals.swap_out += seen.swap_out_bps * elapsed
        totals.major += seen.major_faults_ps * elapsed
        totals.minor += seen.minor_faults_ps * elapsed
        return totals

    def collect(self) -> Iterable[Metric]:
        def gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=LABELS)

        available = gauge(
            "kubevirt_vmi_memory_available_bytes", "Amount of usable memory as seen by the domain."
        )
        usable = gauge(
            "kubevirt_vmi_memory_usable_bytes",
            "The amount of memory which can be reclaimed by balloon without pushing the guest system to "
            "swap, corresponds to 'Available' in /proc/meminfo.",
        )
        used = gauge("kubevirt_vmi_memory_used_bytes", "Amount of `used` memory as seen by the domain.")
        unused = gauge(
            "kubevirt_vmi_memory_unused_bytes", "The amount of memory left completely unused by the system."
        )
        cached = gauge(
            "kubevirt_vmi_memory_cached_bytes",
            "The amount of memory that is being used to cache I/O and is available to be reclaimed.",
        )
        balloon = gauge("kubevirt_vmi_memory_actual_balloon_bytes", "Current balloon size in bytes.")
        domain = gauge(
            "kubevirt_vmi_memory_domain_bytes", "The amount of memory in bytes allocated to the domain."
        )
        resident = gauge(
            "kubevirt_vmi_memory_resident_bytes", "Resident set size of the process running the domain."
        )
        overhead = gauge(
            "kubevirt_vmi_launcher_memory_overhead_bytes",
            "Estimation of the memory amount required for virt-launcher's infrastructure components.",
        )
        swap_in = gauge(
            "kubevirt_vmi_memory_swap_in_traffic_bytes",
            "The total amount of data read from swap space of the guest.",
        )
        swap_out = gauge(
            "kubevirt_vmi_memory_swap_out_traffic_bytes",
            "The total amount of memory written out to swap space of the guest.",
        )
        major = CounterMetricFamily(
            "kubevirt_vmi_memory_pgmajfault",
            "The number of page faults when disk IO was required.",
            labels=LABELS,
        )
        minor = CounterMetricFamily(
            "kubevirt_vmi_memory_pgminfault",
            "The number of other page faults, when disk IO was not required.",
            labels=LABELS,
        )
        if self.feed.paused:
            return
        every: tuple[Metric, ...] = (available, usable, used, unused, cached, balloon, domain, resident)
        families: dict[str, Metric] = {f.name: f for f in (*every, overhead, swap_in, swap_out, major, minor)}
        with self.lock:
            for guest in list(self.guests()):
                real = self.feed.real.get(guest.key)
                if real is not None:
                    self._add_real(families, real, [guest.node, guest.key.namespace, guest.key.name])
                    continue
                demand = self.feed.demand(guest.key)
                if demand is None:
                    continue
                seen = self.sources.get(guest.key, self.source).observe(guest, demand)
                totals = self._accumulate(guest.key, seen)
                values = [guest.node, guest.key.namespace, guest.key.name]
                available.add_metric(values, seen.available)
                usable.add_metric(values, seen.usable)
                used.add_metric(values, seen.used)
                unused.add_metric(values, seen.unused)
                cached.add_metric(values, seen.cached)
                balloon.add_metric(
                    values, seen.size
                )  # no balloon target in KubeVirt: the balloon is the size
                domain.add_metric(values, seen.size)
                resident.add_metric(values, min(seen.size, seen.used + seen.cached + guest.overhead))
                overhead.add_metric(values, guest.overhead)
                swap_in.add_metric(values, totals.swap_in)
                swap_out.add_metric(values, totals.swap_out)
                major.add_metric(values, totals.major)
                minor.add_metric(values, totals.minor)
        yield from families.values()

    @staticmethod
    def _add_real(families: dict[str, Metric], real: RealGuest, values: list[str]) -> None:
        for name, kind, text, value in real.series():
            if kind == "counter":
                name = name.removesuffix("_total")  # prometheus_client adds it back
            family = families.get(name)
            if family is None:
                maker = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = families[name] = maker(name, text, labels=LABELS)
            family.add_metric(values, value)  # type: ignore[attr-defined]


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread
    port: int
    collector: GuestMetricsCollector

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(
    guests: Callable[[], Iterable[GuestState]],
    feed: DemandFeed,
    *,
    port: int = 0,
    addr: str = "127.0.0.1",
    source: GuestStatsSource | None = None,
) -> MetricsServer:
    """Serve the guests' metrics on ``addr:port`` (0: a free port); returns the server and its port."""
    registry = CollectorRegistry()
    collector = GuestMetricsCollector(guests, feed, source)
    registry.register(collector)
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread, int(server.server_port), collector)


def guests_of(states: Mapping[ObjectKey, GuestState]) -> Callable[[], Iterable[GuestState]]:
    return lambda: list(states.values())
