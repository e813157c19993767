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
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dynamem.kube.objects import MI, ObjectKey
from dynamem.kubevirt_sim.controller import GuestState

FLOOR_FREE = 32 * MI  # a guest under pressure still shows a little MemAvailable


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
        with self.lock:
            for guest in list(self.guests()):
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
        yield from (available, usable, unused, domain, swap_out)


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
