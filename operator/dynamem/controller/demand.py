"""Reading each guest's memory demand from Prometheus.

Demand is what KubeVirt itself calls used memory: ``kubevirt_vmi_memory_available_bytes -
kubevirt_vmi_memory_usable_bytes`` (memory the guest sees, less its MemAvailable), as virt-handler exports it
from the balloon driver's statistics. A VM with no fresh sample has unknown demand, and the policy then holds
its memory: shrinking a guest we cannot see would be blind. A guest whose target's last scrape failed keeps
its last sample for two minutes (:func:`_now_or_last`). When Prometheus cannot be reached at all, every
demand is unknown, the round still runs, and nothing is shrunk.

Used memory never exceeds the guest's size, so a guest short of memory shows it by paging. The cluster plan
(:func:`dynamem.policy.cluster.is_paging`) reads what KubeVirt's own alert reads: ``available`` and
``usable``, the rate of ``kubevirt_vmi_memory_swap_in_traffic_bytes`` and of
``kubevirt_vmi_memory_pgmajfault_total``, the highest use over the shrink window (a VM shrinks only on use
that stayed low) and how fast use rose over it (``deriv``: a steady rise is grown ahead of). These come from
:data:`SIGNAL_QUERIES`, one instant query each, sent together with the demand query (the slow peak once a
minute, :data:`SLOW_SIGNALS`); a signal Prometheus cannot give is left out (no paging seen), while the demand
query alone decides whether demand is known. A well-formed answer is validated in one pass; one with a
malformed sample, sample by sample.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from dynamem.controller.ports import DemandReading, DemandSource, GuestSignals
from dynamem.kube.objects import ObjectKey
from dynamem.kube.retry import RETRIED_STATUSES, Backoff, retry_after_of, with_backoff

logger = logging.getLogger("dynamem.demand")

__all__ = [
    "DEMAND_QUERY",
    "DemandReading",
    "DemandSource",
    "PrometheusDemand",
    "parse_response",
    "parse_series",
    "signal_queries",
    "with_signals",
]

# Only samples younger than 90 s: an instant query otherwise looks back five minutes, and a guest whose
# metrics stopped would keep its old demand (and could be shrunk on it). More than a minute: a sample is
# stamped when its scrape starts and seen once it ends, so at a 1 m scrape interval the last one seen is a
# minute old and more while each scrape runs, and every guest of that virt-handler (its target up, so no
# fallback to the last sample either) would lose its demand for a round.
FRESH_S = 90
_FRESH = f"and (time() - timestamp(kubevirt_vmi_memory_usable_bytes) < {FRESH_S})"
# How long after its last sample a guest keeps it while its target's scrapes fail: counted from that sample,
# not from the failure, so it must outlast the scrape interval: 120 s keeps a guest through one failed scrape
# at Prometheus' default interval (1 m) and three at kube-prometheus' 30 s. A grow or a shrink on a sample up
# to 2 minutes old is no worse than on one 60 s old, and a shrink needs use low for the whole shrink window.
LAST_SAMPLE_WINDOW = "120s"


def _now_or_last(now: str, last: str) -> str:
    """``now`` (an expression of the series as scraped now), or for a guest that has none because its
    target's scrapes are failing, ``last``, its last sample of the past two minutes.

    A failed scrape marks every series of its target stale, and an instant query then has nothing for each
    guest on that node: one missed scrape of a virt-handler would leave twenty guests without demand for a
    round (memory held, their DemandKnown flipped and flipped back). A range selection skips stale markers,
    so ``last_over_time`` over :data:`LAST_SAMPLE_WINDOW` still has the guest's last sample. It is only the
    fallback, and only for a target whose last scrape failed (``up == 0``, matched on ``instance``, the label
    Prometheus puts on every series of a target): a guest with a series now is read from it alone, never
    mixed with a series that ended in the window (after a migration the source's series is such one, of the
    guest at its old size), and a guest a healthy virt-handler no longer reports has no demand at once.
    """
    return f"(({now}) or on (namespace, name) (({last}) and on (instance) (up == 0)))"


def _last(series: str) -> str:
    return f"last_over_time({series}[{LAST_SAMPLE_WINDOW}])"


def _fresh_series(series: str) -> str:
    """``series`` per VM as now scraped, or its last sample when its target's scrape failed."""
    return f"max by (namespace, name) {_now_or_last(f'{series} {_FRESH}', _last(series))}"


_AVAILABLE = "kubevirt_vmi_memory_available_bytes"
_USABLE = "kubevirt_vmi_memory_usable_bytes"
DEMAND_QUERY = "max by (namespace, name) " + _now_or_last(
    f"({_AVAILABLE} - {_USABLE}) {_FRESH}", f"{_last(_AVAILABLE)} - {_last(_USABLE)}"
)

# The window of the rates: long enough for two scrapes at Prometheus' usual 30 s interval.
RATE_WINDOW = "2m"


def signal_queries(shrink_window_s: float = 3600.0) -> dict[str, str]:
    """One instant query per paging signal, by the :class:`GuestSignals` field it fills."""
    seconds = max(60, int(shrink_window_s))
    window = f"{seconds}s"
    subquery = f"{window}:{_step(seconds)}"
    return {
        "available": _fresh_series(_AVAILABLE),
        "usable": _fresh_series(_USABLE),
        # A subquery with an explicit step: without one it is evaluated at Prometheus' evaluation_interval,
        # which may be as short as the scrape (1 s in the tests: 3,600 points per series over an hour, seconds
        # per query at a thousand VMs). 240 points over the window; the default evaluation_interval (1 m)
        # gives fewer.
        "used_peak": (
            "max by (namespace, name) (max_over_time("
            f"(kubevirt_vmi_memory_available_bytes - kubevirt_vmi_memory_usable_bytes)[{subquery}]))"
        ),
        # KubeVirt's swap traffic is in plus out (v1.8.0 recordingrules/vmi.go,
        # vmi:kubevirt_vmi_swap_traffic_bytes, which its KubeVirtVMGuestMemoryPressure alert compares with
        # 1 MiB/s)
        "swap_bps": _fresh_rate(
            "kubevirt_vmi_memory_swap_in_traffic_bytes", "kubevirt_vmi_memory_swap_out_traffic_bytes"
        ),
        "major_faults_ps": _fresh_rate("kubevirt_vmi_memory_pgmajfault_total"),
        "used_rise_bps": _rise(window, seconds),
    }


def _rise(window: str, seconds: int) -> str:
    """How fast used memory rose over the window, per second of the window: what the plan multiplies by the
    window to tell a rise from noise, and by its horizon to grow ahead of it.

    The least-squares slope, read fresh every round and without a subquery: a slope is linear in the samples,
    and both series come from the same scrape (the same timestamps), so deriv(available - usable) =
    deriv(available) - deriv(usable), each over the raw samples in the window.

    Bounded by the rise the samples can show: a slope over a young series (an operator started on a fresh
    Prometheus, a VM just migrated: its series are per node) is the slope of a few samples, and +-1 % of noise
    over a minute, taken over an hour, is gigabytes (a VM at rest grown to its maximum). A least-squares line
    rises over evenly spaced samples by at most sqrt(12) standard deviations of them, whatever their span; a
    steady ramp over the whole window rises by exactly that, so only what the window has not seen is cut. The
    standard deviation of used memory is at most the sum of those of ``available`` and ``usable`` (raw
    samples again). Only rises: a VM left out has none.
    """
    used = ("kubevirt_vmi_memory_available_bytes", "kubevirt_vmi_memory_usable_bytes")
    slope = f"(deriv({used[0]}[{window}]) - deriv({used[1]}[{window}]))"
    spread = f"(stddev_over_time({used[0]}[{window}]) + stddev_over_time({used[1]}[{window}]))"
    bound = f"({spread} * {math.sqrt(12) / seconds:.9g})"
    # per series the smaller of the two: the slope where it is below the bound, else the bound
    return f"max by (namespace, name) (({slope} < {bound}) or {bound}) > 0"


def _step(window_s: int) -> str:
    """The step of a subquery over ``window_s``: 240 points over the window, at least a second apart."""
    return f"{max(1, window_s // 240)}s"


def _fresh_rate(*series: str) -> str:
    """The rate of ``series`` per VM (of several, their sum per series: swap in plus out), from series still
    scraped now only, or from the last samples while their target's scrapes fail, as the use is read
    (:func:`_now_or_last`): the use kept and the paging lost, a thrashing guest read as one at rest.

    virt-handler's series carry the node: after a migration (every change is one) the source's series ends,
    but its samples stay in a range window for its length, and its rate (paging before the change) would
    keep the VM "paging" at its new size. ``and series`` keeps the series with a sample now (an ended one
    is marked stale at the first scrape without it). Only rates above zero: a VM left out has a rate of 0, and
    at rest that is every VM, so the answer stays small (each sample costs a round CPU to read).
    """
    now = " + ".join(f"(rate({s}[{RATE_WINDOW}]) and {s})" for s in series)
    last = " + ".join(f"rate({s}[{RATE_WINDOW}])" for s in series)
    return f"max by (namespace, name) {_now_or_last(now, last)} > 0"


class _Sample(BaseModel):
    metric: dict[str, str]
    value: tuple[float, str]


class _Data(BaseModel):
    resultType: str
    result: list[dict[str, Any]]


class _Response(BaseModel):
    status: str
    data: _Data | None = None
    error: str | None = None


def parse_response(payload: object) -> DemandReading:
    """Turn a Prometheus instant-query response into demand per VM; malformed samples are dropped."""
    series = parse_series(payload)
    if isinstance(series, str):
        return DemandReading(error=series)
    return DemandReading(by_vm={key: int(value) for key, value in series.items()})


def parse_series(payload: object) -> dict[ObjectKey, float] | str:
    """A Prometheus instant-query response as a value per VM, or the error; malformed, NaN, infinite and
    negative samples are dropped."""
    found = _well_formed_values(payload)
    if found is not None:
        return found
    # some sample is malformed, or the query failed: validated sample by sample
    try:
        response = _Response.model_validate(payload)
    except ValidationError as exc:
        return f"unexpected Prometheus response: {exc.errors()[0]['msg']}"
    if response.status != "success" or response.data is None:
        return f"Prometheus query failed: {response.error or response.status}"
    samples = []
    for raw in response.data.result:
        try:  # each sample on its own: one malformed sample must not hide the others
            samples.append(_Sample.model_validate(raw))
        except ValidationError:
            continue
    return _values(samples)


def _well_formed_values(payload: object) -> dict[ObjectKey, float] | None:
    """The values of a successful response whose every sample is well formed (what :class:`_Sample` accepts:
    string labels, a numeric timestamp and a string value), read in one plain pass; None otherwise.

    A plain loop, not a pydantic model: a live round reads seven answers of one sample per VM, and validating
    10,000 samples through a model took 0.4 s each, most of a round's CPU at 10,000 VMs.
    """
    if not isinstance(payload, dict) or payload.get("status") != "success":
        return None
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("resultType"), str):
        return None
    result = data.get("result")
    if not isinstance(result, list):
        return None
    found: dict[ObjectKey, float] = {}
    for item in result:
        metric = item.get("metric") if isinstance(item, dict) else None
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
            return None
        stamp, text = value
        if not isinstance(text, str) or isinstance(stamp, bool) or not isinstance(stamp, int | float):
            return None
        if not all(isinstance(label, str) for label in metric.values()):
            return None
        namespace, name = metric.get("namespace"), metric.get("name")
        try:
            number = float(text)
        except ValueError:
            continue
        if namespace and name and math.isfinite(number) and number >= 0:
            found[ObjectKey(namespace, name)] = number
    return found


def _values(samples: list[_Sample]) -> dict[ObjectKey, float]:
    found: dict[ObjectKey, float] = {}
    for sample in samples:
        try:
            value = float(sample.value[1])
        except ValueError:
            continue
        namespace, name = sample.metric.get("namespace"), sample.metric.get("name")
        if not namespace or not name:
            continue
        if not math.isfinite(value) or value < 0:  # NaN, infinite or negative: no usable reading
            continue
        found[ObjectKey(namespace, name)] = value
    return found


def with_signals(reading: DemandReading, series: dict[str, dict[ObjectKey, float]]) -> DemandReading:
    """The reading with each VM's :class:`GuestSignals` from the signal queries' answers (by field)."""
    signals: dict[ObjectKey, GuestSignals] = {}
    for key in reading.by_vm:

        def count(name: str, key: ObjectKey = key) -> int | None:
            value = series.get(name, {}).get(key)
            return None if value is None else int(value)

        signals[key] = GuestSignals(
            available=count("available"),
            usable=count("usable"),
            used_peak=count("used_peak"),
            swap_bps=series.get("swap_bps", {}).get(key, 0.0),
            major_faults_ps=series.get("major_faults_ps", {}).get(key, 0.0),
            used_rise_bps=series.get("used_rise_bps", {}).get(key, 0.0),
        )
    return DemandReading(by_vm=reading.by_vm, error=reading.error, signals=signals)


# Signals read again only this often (seconds): the highest use over the shrink window (an hour by default)
# is Prometheus' dearest query (a subquery over every VM's series), and moves slowly. The slope is not kept: a
# rise that has turned must stop counting at once (the plan grows ahead of a rise only while use is at its
# peak), and it is cheap (a range over raw samples). A kept peak errs on the
# side of memory: use that has left the window still counts, and use since is taken as the peak whenever it
# is above it (:func:`dynamem.controller.cluster_state.cluster_state`, the plan's ``estimate_demand``).
SLOW_SIGNALS: dict[str, float] = {"used_peak": 60.0}

# A round would rather hold memory than wait long for Prometheus.
PROMETHEUS_BACKOFF = Backoff(attempts=3, base_s=0.2, cap_s=1.0)


class PrometheusDemand:
    """Demand from a Prometheus server's HTTP API (``/api/v1/query``).

    ``token_file``: a bearer token, read at every query (service-account tokens are rotated); ``ca_file``:
    the CA bundle that signed the server's certificate. OpenShift's Thanos querier needs both. Every query
    has a timeout; 429, 5xx and dropped connections are retried with backoff and jitter, briefly, since a
    round would rather hold memory than wait.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        query: str = DEMAND_QUERY,
        token_file: str | None = None,
        ca_file: str | None = None,
        backoff: Backoff = PROMETHEUS_BACKOFF,
        signals: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.clock = clock
        self.kept: dict[str, tuple[float, dict[ObjectKey, float]]] = {}  # slow signals: when read, answer
        self.query = query
        self.signals = signal_queries() if signals is None else signals
        self.token_file = token_file
        self.backoff = backoff
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        token = Path(self.token_file).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    async def _query(self, query: str) -> httpx.Response:
        response = await self._client.get(
            f"{self.url}/api/v1/query", params={"query": query}, headers=self._headers()
        )
        response.raise_for_status()
        return response

    async def _ask(self, query: str) -> object:
        response = await with_backoff(
            lambda: self._query(query), retryable=_retryable, what="Prometheus query", backoff=self.backoff
        )
        return response.json()

    async def read(self) -> DemandReading:
        now = self.clock()
        names = [
            name
            for name in self.signals
            if name not in self.kept or now - self.kept[name][0] >= SLOW_SIGNALS.get(name, 0.0)
        ]
        signals = asyncio.gather(*(self._signal(n, self.signals[n]) for n in names))
        demand, answers = await asyncio.gather(self._demand(), signals)
        if isinstance(demand, str):
            return DemandReading(error=demand)
        if demand.error or not self.signals:
            return demand
        for name, found in zip(names, answers, strict=True):
            if found is not None and name in SLOW_SIGNALS:
                self.kept[name] = (now, found)
            elif name in SLOW_SIGNALS:
                self.kept.pop(name, None)
        series = {name: found for name, found in zip(names, answers, strict=True) if found is not None}
        series.update({name: found for name, (_, found) in self.kept.items() if name not in names})
        return with_signals(demand, series)

    async def _demand(self) -> DemandReading | str:
        try:
            return parse_response(await self._ask(self.query))
        except (httpx.HTTPError, ValueError, ArithmeticError, OSError) as exc:
            return f"Prometheus at {self.url} unreachable: {exc!r}"

    async def _signal(self, name: str, query: str) -> dict[ObjectKey, float] | None:
        """One signal query (they go out together); None when Prometheus cannot give it (no paging is then
        seen through it, and without the peak no VM shrinks for idleness)."""
        try:
            found = parse_series(await self._ask(query))
        except (httpx.HTTPError, ValueError, ArithmeticError, OSError) as exc:
            logger.warning("signal %s unknown this round: Prometheus at %s: %r", name, self.url, exc)
            return None
        if isinstance(found, str):
            logger.warning("signal %s unknown this round: %s", name, found)
            return None
        return found

    async def close(self) -> None:
        await self._client.aclose()


def _retryable(exc: BaseException) -> tuple[bool, float | None]:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status in RETRIED_STATUSES, retry_after_of(exc.response.headers)
    return isinstance(exc, httpx.TransportError), None
