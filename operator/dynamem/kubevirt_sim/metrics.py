"""virt-handler's guest memory metrics, for the simulated guests.

Names, labels and meanings are KubeVirt's (``shared/KUBEVIRT.md``): labels ``node``, ``namespace``, ``name``;
``kubevirt_vmi_memory_available_bytes`` is the memory the guest sees, ``..._usable_bytes`` its MemAvailable,
so ``available - usable`` is what the guest uses. A guest cannot use more than it has: when its demand is
higher, it uses all but a sliver and pages, which shows as swap traffic and major faults, as a real guest's
would.
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

from dynamem.kube.objects import MI, ObjectKey
from dynamem.kubevirt_sim.controller import GuestState

FLOOR_FREE = 32 * MI  # a guest under pressure still shows a little MemAvailable


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


class GuestMetricsCollector(Collector):
    """Reads the simulator's guests and the demand feed at scrape time."""

    def __init__(self, guests: Callable[[], Iterable[GuestState]], feed: DemandFeed) -> None:
        self.guests = guests
        self.feed = feed
        self.swapped: dict[ObjectKey, float] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        labels = ["node", "namespace", "name"]
        available = GaugeMetricFamily(
            "kubevirt_vmi_memory_available_bytes",
            "Amount of usable memory as seen by the domain.",
            labels=labels,
        )
        usable = GaugeMetricFamily(
            "kubevirt_vmi_memory_usable_bytes",
            "The amount of memory which can be reclaimed by balloon without pushing the guest to swap.",
            labels=labels,
        )
        unused = GaugeMetricFamily(
            "kubevirt_vmi_memory_unused_bytes",
            "The amount of memory left completely unused by the system.",
            labels=labels,
        )
        domain = GaugeMetricFamily(
            "kubevirt_vmi_memory_domain_bytes", "The amount of memory allocated to the domain.", labels=labels
        )
        swap_out = CounterMetricFamily(
            "kubevirt_vmi_memory_swap_out_traffic_bytes",
            "The total amount of memory swapped out.",
            labels=labels,
        )
        if self.feed.paused:
            return
        families: dict[str, Metric] = {f.name: f for f in (available, usable, unused, domain, swap_out)}
        with self.lock:
            for guest in list(self.guests()):
                real = self.feed.real.get(guest.key)
                if real is not None:
                    self._add_real(families, real, [guest.node, guest.key.namespace, guest.key.name])
                    continue
                demand = self.feed.demand(guest.key)
                if demand is None:
                    continue
                values = [guest.node, guest.key.namespace, guest.key.name]
                used = min(demand, max(0, guest.current - FLOOR_FREE))
                if demand > used:
                    self.swapped[guest.key] = self.swapped.get(guest.key, 0.0) + float(demand - used)
                available.add_metric(values, guest.current)
                usable.add_metric(values, guest.current - used)
                unused.add_metric(values, max(0, (guest.current - used) // 2))
                domain.add_metric(values, guest.current)
                swap_out.add_metric(values, self.swapped.get(guest.key, 0.0))
        yield from families.values()

    @staticmethod
    def _add_real(families: dict[str, Metric], real: RealGuest, values: list[str]) -> None:
        for name, kind, text, value in real.series():
            if kind == "counter":
                name = name.removesuffix("_total")  # prometheus_client adds it back
            family = families.get(name)
            if family is None:
                maker = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = families[name] = maker(name, text, labels=["node", "namespace", "name"])
            family.add_metric(values, value)  # type: ignore[attr-defined]


@dataclass
class MetricsServer:
    server: WSGIServer
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(
    guests: Callable[[], Iterable[GuestState]], feed: DemandFeed, *, port: int = 0, addr: str = "127.0.0.1"
) -> MetricsServer:
    """Serve the guests' metrics on ``addr:port`` (0: a free port); returns the server and its port."""
    registry = CollectorRegistry()
    registry.register(GuestMetricsCollector(guests, feed))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread, int(server.server_port))


def guests_of(states: Mapping[ObjectKey, GuestState]) -> Callable[[], Iterable[GuestState]]:
    return lambda: list(states.values())
