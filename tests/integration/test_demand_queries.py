"""The operator's paging-signal queries against a real Prometheus: what they answer is what they claim.

The slope of used memory is read every round without a subquery
(:func:`dynamem.controller.demand.signal_queries`): ``deriv(available[w]) - deriv(usable[w])`` over the raw
samples, which equals the least-squares slope of ``available - usable`` because both series come from the
same scrape; it is bounded by the rise the samples can show (sqrt(12) standard deviations over the window),
so a young series (a fresh Prometheus, a VM just migrated) does not turn a wobble into a rise of gigabytes an
hour. Here two guests' series start together: one whose use climbs 1 MiB a second, one whose use moves by
1 % in its first seconds and then holds. Their answers are checked against the raw samples themselves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dynamem.controller.demand import DEMAND_QUERY, LAST_SAMPLE_WINDOW, RATE_WINDOW, signal_queries
from dynamem.kube.objects import GI, MI
from dynamem.policy.model import BalanceConfig
from dynamem.testing.controlplane import free_port
from dynamem.testing.prometheus import Prometheus

LABELS = ["node", "namespace", "name"]
WINDOW_S = 3600  # the operator's default shrink window


class Guests(Collector):
    """Two 1 GiB guests as KubeVirt exports them: ``climbing`` uses 300 MiB plus 1 MiB a second; ``settling``
    uses 700 MiB less 1 %, moving up to 700 MiB plus 1 % over its first 20 scrapes, then holds."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.scrapes = 0

    def collect(self) -> Iterable[Any]:
        self.scrapes += 1
        used = {
            "climbing": 300 * MI + (time.monotonic() - self.started) * MI,
            "settling": 700 * MI * (0.99 + 0.02 * min(1.0, self.scrapes / 20)),
        }
        available = GaugeMetricFamily("kubevirt_vmi_memory_available_bytes", "guest memory", labels=LABELS)
        usable = GaugeMetricFamily("kubevirt_vmi_memory_usable_bytes", "MemAvailable", labels=LABELS)
        for name, value in used.items():
            available.add_metric(["host", "office", name], GI)
            usable.add_metric(["host", "office", name], GI - value)
        yield from (available, usable)


def raw_samples(prometheus: Prometheus, series: str, at: float) -> dict[float, float]:
    """The raw samples of ``series`` in the window ending at ``at``, by timestamp."""
    body = httpx.get(
        f"{prometheus.url}/api/v1/query",
        params={"query": f"{series}[{WINDOW_S}s]", "time": repr(at)},
        timeout=10,
    ).json()
    (result,) = body["data"]["result"]
    return {float(t): float(v) for t, v in result["values"]}


def least_squares_slope(points: dict[float, float]) -> float:
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def spread(values: Iterable[float]) -> float:
    """Population standard deviation, as Prometheus' stddev_over_time."""
    found = list(values)
    mean = sum(found) / len(found)
    return math.sqrt(sum((v - mean) ** 2 for v in found) / len(found))


def test_the_rise_is_the_samples_slope_bounded_by_what_they_show_and_the_peak_their_highest(
    prometheus: Prometheus,
) -> None:
    registry = CollectorRegistry()
    registry.register(Guests())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    queries = signal_queries(shrink_window_s=WINDOW_S)
    used: dict[str, dict[float, float]] = {}
    rise: dict[str, float] = {}
    peak: dict[str, float] = {}
    try:
        prometheus.set_targets([f"127.0.0.1:{port}"])
        # the session's Prometheus also holds series of earlier tests: these guests' own, by their labels
        settling = 'kubevirt_vmi_memory_usable_bytes{namespace="office", name="settling"}'
        prometheus.wait_for(f"count_over_time({settling}[1h]) >= 25", timeout=60)
        at = time.time()
        for query, found in ((queries["used_rise_bps"], rise), (queries["used_peak"], peak)):
            found.update({s.labels["name"]: s.value for s in prometheus.query(query, at=at)})
        for name in ("climbing", "settling"):
            mine = f'{{namespace="office", name="{name}"}}'
            available = raw_samples(prometheus, f"kubevirt_vmi_memory_available_bytes{mine}", at)
            usable = raw_samples(prometheus, f"kubevirt_vmi_memory_usable_bytes{mine}", at)
            assert available.keys() == usable.keys()  # one scrape, one timestamp for both series
            used[name] = {t: available[t] - usable[t] for t in available}
    finally:
        prometheus.set_targets([])
        server.shutdown()
        thread.join(5)
    for name, points in used.items():
        slope = least_squares_slope(points)
        bound = math.sqrt(12) * spread(points.values()) / WINDOW_S
        assert rise[name] == pytest.approx(min(slope, bound), rel=1e-6)
        # the subquery's steps (15 s over an hour) see a sample at least every 15 s: the peak is one of them
        assert max(points.values()) - 16 * MI <= peak[name] <= max(points.values())
    # a young series rises only by what it has shown: the climb so far, not its slope over the hour
    climbing = used["climbing"]
    assert rise["climbing"] < least_squares_slope(climbing) / 10
    assert rise["climbing"] * WINDOW_S == pytest.approx(math.sqrt(12) * spread(climbing.values()), rel=1e-6)
    # 1 % of a 700 MiB guest is no rise the plan grows ahead of (over an hour, its slope alone said gigabytes)
    band = BalanceConfig().dead_band_bytes
    assert least_squares_slope(used["settling"]) * WINDOW_S > 4 * band
    assert rise["settling"] * WINDOW_S < band / 4


SWAP_OUT_BPS = 4 * MI  # the guest on A writes to swap and reads nothing back
FAULTS_PS = 10.0


class VirtHandler(Collector):
    """virt-handler on ``node``, exporting the guest ``flaky`` (using ``used`` bytes) at ``size`` bytes while
    it runs there (``size`` None: it does not), with its swap traffic and major faults as KubeVirt's
    cumulative series (``paging``: swap-out at :data:`SWAP_OUT_BPS`, faults at :data:`FAULTS_PS`); while
    ``failing``, every scrape fails (the exporter answers 500), as a virt-handler that times out does."""

    def __init__(self, node: str, size: int | None, used: int = 600 * MI, paging: bool = False) -> None:
        self.node = node
        self.size = size
        self.used = used
        self.paging = paging
        self.started = time.time()
        self.failing = False

    def collect(self) -> Iterable[Any]:
        if self.failing:
            raise RuntimeError("virt-handler did not answer")
        available = GaugeMetricFamily("kubevirt_vmi_memory_available_bytes", "guest memory", labels=LABELS)
        usable = GaugeMetricFamily("kubevirt_vmi_memory_usable_bytes", "MemAvailable", labels=LABELS)
        swap_in = GaugeMetricFamily("kubevirt_vmi_memory_swap_in_traffic_bytes", "swap read", labels=LABELS)
        swap_out = GaugeMetricFamily(
            "kubevirt_vmi_memory_swap_out_traffic_bytes", "swap written", labels=LABELS
        )
        faults = CounterMetricFamily("kubevirt_vmi_memory_pgmajfault", "major faults", labels=LABELS)
        if self.size is not None:
            labels = [self.node, "scrapes", "flaky"]
            elapsed = time.time() - self.started if self.paging else 0.0
            available.add_metric(labels, self.size)
            usable.add_metric(labels, self.size - self.used)
            swap_in.add_metric(labels, 0.0)
            swap_out.add_metric(labels, SWAP_OUT_BPS * elapsed)
            faults.add_metric(labels, FAULTS_PS * elapsed)
        yield from (available, usable, swap_in, swap_out, faults)


def test_a_failed_scrape_keeps_the_last_sample_and_a_moved_guest_is_read_from_its_new_node_only(
    prometheus: Prometheus,
) -> None:
    """Two virt-handlers, two targets (two ``instance`` labels), as on two nodes."""
    # on B the guest uses less than on A: what is read after the move says which node it came from
    handlers = {
        "a": VirtHandler("host-a", 2 * GI, paging=True),
        "b": VirtHandler("host-b", None, used=500 * MI),
    }
    servers = []
    for handler in handlers.values():
        registry = CollectorRegistry()
        registry.register(handler)
        port = free_port()
        servers.append((port, *start_http_server(port, addr="127.0.0.1", registry=registry)))
    instance = {name: f"127.0.0.1:{port}" for name, (port, _, _) in zip(handlers, servers, strict=True)}
    queries = signal_queries(shrink_window_s=WINDOW_S)
    window_s = int(LAST_SAMPLE_WINDOW.removesuffix("s"))

    def read(query: str, at: float | None = None) -> float | None:
        found = [s.value for s in prometheus.query(query, at=at) if s.labels.get("namespace") == "scrapes"]
        assert len(found) <= 1, found
        return found[0] if found else None

    def assert_paging_read_as_prometheus_rates_it() -> None:
        at = time.time()
        window = RATE_WINDOW
        out = read(f'rate(kubevirt_vmi_memory_swap_out_traffic_bytes{{name="flaky"}}[{window}])', at=at)
        faults = read(f'rate(kubevirt_vmi_memory_pgmajfault_total{{name="flaky"}}[{window}])', at=at)
        assert out is not None and out > 0 and faults is not None and faults > 0
        assert read(queries["swap_bps"], at=at) == pytest.approx(out)
        assert read(queries["major_faults_ps"], at=at) == pytest.approx(faults)

    def wait_gone(series: str) -> None:
        deadline = time.monotonic() + 15
        while read(series) is not None:
            assert time.monotonic() < deadline, f"{series} never went stale"
            time.sleep(0.2)

    try:
        prometheus.set_targets(list(instance.values()))
        prometheus.wait_for('kubevirt_vmi_memory_usable_bytes{name="flaky", node="host-a"}', timeout=30)
        assert read(DEMAND_QUERY) == 600 * MI
        # swap traffic is in plus out, as KubeVirt's alert counts it: this guest only writes to swap
        # (a rate over a series younger than its window is Prometheus' own extrapolation: compared with it)
        prometheus.wait_for(queries["swap_bps"], timeout=15)
        prometheus.wait_for(queries["major_faults_ps"], timeout=15)
        assert_paging_read_as_prometheus_rates_it()

        # A's scrapes fail: Prometheus marks its series stale, and a plain instant query has nothing
        handlers["a"].failing = True
        prometheus.wait_for(f'up{{instance="{instance["a"]}"}} == 0', timeout=15)
        wait_gone('kubevirt_vmi_memory_usable_bytes{name="flaky"}')
        failed_at = time.time()
        assert read(DEMAND_QUERY) == 600 * MI
        assert read(queries["available"]) == 2 * GI
        assert read(queries["usable"]) == 2 * GI - 600 * MI
        # and its paging too, read from the same last samples: the use kept with the paging lost was a
        # thrashing guest read as one at rest
        assert_paging_read_as_prometheus_rates_it()
        # a guest whose scrapes keep failing has no demand once its last sample is older than the window:
        # memory is held, nothing is shrunk on it
        for query in (DEMAND_QUERY, queries["available"], queries["usable"]):
            assert read(query, at=failed_at + window_s + 1) is None

        # the guest moves to B (every change is a migration) and shrinks to 1 GiB while A still fails: A's
        # last sample (2 GiB) is in the window, and its target is down, yet B's series is read alone
        handlers["a"].size, handlers["b"].size = None, GI
        prometheus.wait_for('kubevirt_vmi_memory_available_bytes{name="flaky", node="host-b"}', timeout=15)
        assert [s.value for s in prometheus.query(f'up{{instance="{instance["a"]}"}}')] == [0]
        assert read(queries["available"]) == GI  # never A's 2 GiB, though it is the larger
        assert read(queries["usable"]) == GI - 500 * MI
        assert read(DEMAND_QUERY) == 500 * MI  # never A's last 600 MiB, though it is the larger

        # A answers again (without the guest), and B, healthy, stops reporting it: no demand at once
        handlers["a"].failing = False
        prometheus.wait_for(f'up{{instance="{instance["a"]}"}} == 1', timeout=15)
        handlers["b"].size = None
        wait_gone('kubevirt_vmi_memory_usable_bytes{name="flaky"}')
        for query in (DEMAND_QUERY, queries["available"], queries["usable"]):
            assert read(query) is None
    finally:
        prometheus.set_targets([])
        for _, server, thread in servers:
            server.shutdown()
            thread.join(5)


def test_at_a_one_minute_scrape_interval_the_last_sample_is_fresh_while_the_next_scrape_runs(
    tmp_path: Path,
) -> None:
    """A sample is stamped when its scrape starts and seen once it ends: at Prometheus' default 1 m interval
    the newest sample seen is a minute old and more while a scrape runs, and with a freshness limit of 60 s
    every guest of that virt-handler (its target up, no fallback) lost its demand for those rounds. By
    promtool's own evaluation: 70 s old still counts; 100 s old (the virt-handler stopped reporting) does
    not."""
    from .test_manifests import promtool

    labels = 'node="host", namespace="office", name="db", instance="vh:8443"'
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": []}))
    series = [
        {"series": f"kubevirt_vmi_memory_available_bytes{{{labels}}}", "values": f"{2 * GI}x3"},
        {"series": f"kubevirt_vmi_memory_usable_bytes{{{labels}}}", "values": f"{2 * GI - 600 * MI}x3"},
        {"series": 'up{instance="vh:8443"}', "values": "1x6"},
    ]
    expected = [{"labels": '{namespace="office", name="db"}', "value": 600 * MI}]
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {"expr": DEMAND_QUERY, "eval_time": "4m10s", "exp_samples": expected},
                    {"expr": DEMAND_QUERY, "eval_time": "4m40s", "exp_samples": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    promtool(["test", "rules", str(tmp_path / "tests.yml")])
