"""The operator's paging-signal queries against a real Prometheus: what they answer is what they claim.

The slope of used memory is read every round without a subquery
(:func:`dynamem.controller.demand.signal_queries`): ``deriv(available[w]) - deriv(usable[w])`` over the raw
samples, which equals the least-squares slope of ``available - usable`` because both series come from the
same scrape. Here a guest's use climbs 1 MiB per second; the slope Prometheus answers must be the
least-squares slope of the raw samples' difference, computed here from the samples themselves, and the
window's peak (a subquery with an explicit step) the highest use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dynamem.controller.demand import signal_queries
from dynamem.kube.objects import GI, MI
from dynamem.testing.controlplane import free_port
from dynamem.testing.prometheus import Prometheus

LABELS = ["node", "namespace", "name"]


class ClimbingGuest(Collector):
    """One guest of 1 GiB whose use climbs by 1 MiB a second from 300 MiB, as KubeVirt exports it."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def collect(self) -> Iterable[Any]:
        used = 300 * MI + (time.monotonic() - self.started) * MI
        available = GaugeMetricFamily("kubevirt_vmi_memory_available_bytes", "guest memory", labels=LABELS)
        usable = GaugeMetricFamily("kubevirt_vmi_memory_usable_bytes", "MemAvailable", labels=LABELS)
        available.add_metric(["host", "office", "climbing"], GI)
        usable.add_metric(["host", "office", "climbing"], GI - used)
        yield from (available, usable)


def raw_samples(prometheus: Prometheus, series: str, window: str, at: float) -> dict[float, float]:
    """The raw samples of ``series`` in the window ending at ``at``, by timestamp."""
    body = httpx.get(
        f"{prometheus.url}/api/v1/query",
        params={"query": f"{series}[{window}]", "time": repr(at)},
        timeout=10,
    ).json()
    (result,) = body["data"]["result"]
    return {float(t): float(v) for t, v in result["values"]}


def least_squares_slope(points: dict[float, float]) -> float:
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def test_the_fresh_slope_is_the_least_squares_slope_of_use_and_the_peak_its_highest(
    prometheus: Prometheus,
) -> None:
    registry = CollectorRegistry()
    registry.register(ClimbingGuest())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    queries = signal_queries(shrink_window_s=60)
    try:
        prometheus.set_targets([f"127.0.0.1:{port}"])
        prometheus.wait_for("count_over_time(kubevirt_vmi_memory_usable_bytes[60s]) >= 12", timeout=40)
        at = time.time()
        (slope,) = prometheus.query(queries["used_rise_bps"], at=at)
        (peak,) = prometheus.query(queries["used_peak"], at=at)
        available = raw_samples(prometheus, "kubevirt_vmi_memory_available_bytes", "60s", at)
        usable = raw_samples(prometheus, "kubevirt_vmi_memory_usable_bytes", "60s", at)
    finally:
        prometheus.set_targets([])
        server.shutdown()
        thread.join(5)
    assert available.keys() == usable.keys()  # one scrape, one timestamp for both series
    used = {t: available[t] - usable[t] for t in available}
    assert slope.labels == {"namespace": "office", "name": "climbing"}
    assert abs(slope.value - least_squares_slope(used)) <= 1e-6 * abs(slope.value)
    assert 0.8 * MI < slope.value < 1.2 * MI  # 1 MiB a second, give or take the scrapes' jitter
    # the subquery's steps (1 s for a minute's window) see every sample but the last one or two (a step
    # aligned before them): its peak is the highest use, give or take two seconds of the climb
    assert max(used.values()) - 2 * MI <= peak.value <= max(used.values())
